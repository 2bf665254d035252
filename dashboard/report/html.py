"""A model's report as ONE self-contained HTML file: card, shape flow, training curves, first-layer
filters, activations of a few test images, the channel atlases and the Representations page's map
and probes when added, confusion matrix and per-class report.

`build_report` is a pure function of things the app has already loaded (the model, what it is,
a split and the model's predictions on it), so the page can cache it and tests can check it.
The file must open anywhere, offline, years later: CSS is inline, plotly.js is embedded once in
the head and every figure is a bare `Plotly.newPlot` call after it, input images are PNG data
URIs. No URL outside the file is referenced. Every piece of text is escaped; numbers a reader
may want to re-use (the accuracy, the confusion counts) also sit in machine-readable form
(`data-value` attributes, a JSON block), which is how the tests read them back.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import PIL.Image
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from torch import nn

from dashboard import __version__, data, figures
from dashboard.analysis import atlas, confusion, metrics, probe, summary
from dashboard.analysis.atlas import ChannelAtlas
from dashboard.analysis.projections import Projection
from dashboard.analysis.representations import KNN_K, ProbeReport
from dashboard.base.errors import LensError
from dashboard.figures import representations as rfig
from dashboard.models import checkpoints
from dashboard.report import atlas_sheet
from dashboard.training import runs

# (id, heading) of every section, in reading order; the ids are the report's stable anchors.
SECTIONS = (
    ("model-card", "Model card"),
    ("shape-flow", "Shape flow"),
    ("training-curves", "Training curves"),
    ("first-layer-filters", "First-layer filters"),
    ("activations", "Activations"),
    ("channel-atlas", "Channel atlas"),
    ("representations", "Representations"),
    ("confusion-matrix", "Confusion matrix"),
    ("per-class-report", "Per-class report"),
)
EXAMPLES = 5  # test images in the activations section: the first image of each of 5 classes
ACTIVATION_LAYERS = 2  # how many of the first conv layers' maps are drawn per image
# Pixels per activation figure: hover records make each pixel ~20 bytes of JSON, and the report
# holds EXAMPLES of these figures, so a wide ResNet layer is thinned to keep the file small.
ACTIVATION_PIXELS = 24_000
ACTIVATION_WIDTH = 270  # mosaic width in pixels: three examples side by side on a wide screen
MATRIX_TABLE_MAX = 20  # confusion counts also as an HTML table up to this many classes
PLOT_CONFIG = {"displaylogo": False, "responsive": False}
HYPER_ORDER = ("optimizer", "lr", "schedule", "weight_decay", "batch_size", "epochs", "seed")


@dataclass(frozen=True)
class AtlasPart:
    """A layer's channel atlas as the Channels page computed it, for the report: `images` are
    the split's uint8 images the atlas indexes, `visualizations` (C, H, W, 3) uint8 or None."""

    atlas: ChannelAtlas
    images: Any
    classes: tuple[str, ...]
    visualizations: np.ndarray | None = None


@dataclass(frozen=True)
class RepresentationsPart:
    """The Representations page's map and probes, for the report: one layer's 2-D projection of
    a sample of the test split (`indices` into it, with their true and predicted classes) and,
    when they were run, the probes of every layer (`labels`: block → the page's name)."""

    layer: str  # the layer's name as the page shows it
    projection: Projection
    indices: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    classes: tuple[str, ...]
    colour_by: str = "true"
    probes: ProbeReport | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFacts:
    """What the report is about apart from its weights (the page's ModelView has these fields)."""

    label: str  # how the app names it: "lenet5-mnist", "lenet5 (untrained)"
    architecture: str
    untrained: bool  # fresh random weights: flagged in the card, accuracy is chance
    card: checkpoints.Card | None = None  # checkpoints only


def file_name(facts: ModelFacts) -> str:
    """The download's name: 'lenet5-mnist-report.html', 'tv-resnet18-report.html'."""
    stem = facts.card.name if facts.card is not None else facts.architecture
    if facts.untrained:
        stem += "-untrained"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") + "-report.html"


def example_indices(labels: np.ndarray, count: int = EXAMPLES) -> list[int]:
    """The first test image of each class, for the first `count` classes present."""
    labels = np.asarray(labels)
    return [int(np.flatnonzero(labels == cls)[0]) for cls in np.unique(labels)[:count]]


def build_report(
    model: nn.Module,
    facts: ModelFacts,
    split: data.Split,
    predictions: metrics.Predictions,
    *,
    flow: probe.ShapeFlow | None = None,
    examples: int = EXAMPLES,
    generated: str | None = None,
    atlases: Sequence[AtlasPart] = (),
    representations: RepresentationsPart | None = None,
) -> str:
    """The whole report as one HTML string; `predictions` must be the model's on `split`;
    `atlases`: the layers' channel atlases to include (the Channels page's "Add to report");
    `representations`: the Representations page's map and probes ("In the HTML report")."""
    if len(predictions.labels) != len(split) or not np.array_equal(
        predictions.labels, split.labels.numpy()
    ):
        raise LensError("the predictions were made on another split: measure them again")
    if flow is None:
        flow = probe.shape_flow(model, tuple(split.images.shape[1:]))
    plots = _Plots()
    sections = [
        _card_section(facts, split, predictions, flow),
        _flow_section(flow),
        _curves_section(facts, plots),
        _filters_section(model, plots),
        _activations_section(model, split, predictions, examples, plots),
        _atlas_section(atlases),
        _representations_section(representations, plots),
        _confusion_section(predictions, plots),
        _per_class_section(predictions),
    ]
    when = generated or datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = f"CNN Lens report — {facts.label}"
    nav = " · ".join(f'<a href="#{sid}">{_e(heading)}</a>' for sid, heading in SECTIONS)
    header = (
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="muted">Generated {_e(when)} by CNN Lens {_e(__version__)} · '
        f"{_e(split.info.title)} {_e(split.split)} split, {len(split):,} images · "
        f"{plots.count} interactive figures (hover for values; the file works offline)</p>"
        f"<nav>{nav}</nav></header>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="CNN Lens {_e(__version__)}">'
        f"<title>{_e(title)}</title><style>{CSS}</style>"
        # plotly.js once, inline: every figure below calls the global `Plotly`.
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{header}<main>{''.join(sections)}</main>"
        f'<footer class="muted">{_e(title)} · made with CNN Lens {_e(__version__)}</footer>'
        "</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------
# Sections


def _section(sid: str, body: str) -> str:
    heading = dict(SECTIONS)[sid]
    return f'<section id="{sid}"><h2>{_e(heading)}</h2>{body}</section>'


def _card_section(
    facts: ModelFacts, split: data.Split, pred: metrics.Predictions, flow: probe.ShapeFlow
) -> str:
    card = facts.card
    parts = []
    if facts.untrained:
        parts.append(
            '<p class="badge untrained" id="untrained">UNTRAINED — random weights: '
            "its answers are chance, not learning.</p>"
        )
    elif card is None:
        parts.append('<p class="badge">Pretrained weights from torchvision (ImageNet).</p>')
    measured = (
        f'<span id="measured-accuracy" data-value="{pred.accuracy!r}">'
        f"{_percent(pred.accuracy)}</span> — {int((pred.labels == pred.predicted).sum()):,} "
        f"of {len(pred.labels):,} {_e(split.split)} images right ({_e(pred.source)})"
    )
    rows: list[tuple[str, str]] = [
        ("Name", _e(card.name if card is not None else facts.label)),
        ("Architecture", _e(_architecture_text(facts))),
        ("Parameters", f"{flow.params_total:,} ({flow.params_trainable:,} trainable)"),
        ("Input", _e(summary.shape_text(flow.input_shape))),
        ("Measured for this report", measured),
    ]
    if card is not None:
        recorded = card.test_accuracy
        rows.append(
            ("Accuracy on the card", _percent(recorded) if recorded is not None else "not recorded")
        )
        training = card.training or {}
        epochs = len(card.history) or training.get("epochs")
        seconds = training.get("seconds")
        rows += [
            ("Trained on", _e(card.dataset or "—")),
            ("Dataset source", _e(card.dataset_source or "—")),
            ("Epochs", _e(str(epochs)) if epochs else "—"),
            ("Training time", f"{seconds:,.1f} s" if isinstance(seconds, (int, float)) else "—"),
            ("Created", _e(card.created or "—")),
            ("Hyper-parameters", _e(_hyperparameters(training)) or "—"),
            ("Made by", f"<pre><code>{_e(card.command)}</code></pre>" if card.command else "—"),
        ]
        if card.notes:
            rows.append(("Notes", _e(card.notes)))
        if card.versions:
            rows.append(("Versions", _e(", ".join(f"{k} {v}" for k, v in card.versions.items()))))
    else:
        rows += [
            ("Trained on", "— (untrained)" if facts.untrained else "ImageNet (torchvision)"),
            ("Made by", "— (fresh random weights)" if facts.untrained else "torchvision"),
        ]
    classes = ", ".join(pred.classes[:100]) + (" …" if len(pred.classes) > 100 else "")
    rows.append(("Classes", f"{len(pred.classes)}: {_e(classes)}"))
    parts.append(_facts_table(rows))
    if split.is_sample:
        parts.append(
            '<p class="badge">The full test set was not found: the bundled sample stands in.</p>'
        )
    return _section("model-card", "".join(parts))


def _architecture_text(facts: ModelFacts) -> str:
    options = (facts.card.model_args.get("options") or {}) if facts.card is not None else {}
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"{facts.architecture} ({shown})" if shown else facts.architecture


def _hyperparameters(training: dict[str, Any]) -> str:
    keys = [k for k in HYPER_ORDER if k in training]
    return " · ".join(f"{k.replace('_', ' ')} {training[k]}" for k in keys)


def _flow_section(flow: probe.ShapeFlow) -> str:
    rows = summary.display_rows(flow)
    columns = ["Layer", "Type", "Input", "Output", "K/S/P", "Params", "Mult-adds", "RF", "Formula"]
    numeric = {"Params", "Mult-adds"}
    head = "".join(f'<th class="{"num" if c in numeric else ""}">{_e(c)}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row[c]
            text = f"{value:,}" if c in numeric else _e(str(value))
            if c == "Formula" and row["Flag"]:
                text += f'<br><span class="flag">⚠ {_e(row["Flag"])}</span>'
            cells.append(f'<td class="{"num" if c in numeric else ""}">{text}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    totals = (
        f'<tr class="total"><td colspan="5">Total ({len(rows)} layers)</td>'
        f'<td class="num" id="total-params" data-value="{flow.params_total}">'
        f"{flow.params_total:,}</td>"
        f'<td class="num" id="total-mult-adds" data-value="{flow.mult_adds}">'
        f'{flow.mult_adds:,}</td><td colspan="2"></td></tr>'
    )
    output = summary.shape_text(flow.output_shape) if flow.output_shape else "—"
    lead = (
        f"<p>Input {_e(summary.shape_text(flow.input_shape))} → output {_e(output)} · "
        f"{flow.params_total:,} parameters ({flow.params_trainable:,} trainable) · "
        f"{flow.mult_adds:,} multiply-adds per image · RF = receptive field in input pixels</p>"
    )
    broken = ""
    if flow.broken is not None:
        broken = (
            f'<p class="badge untrained">{_e(flow.broken.layer)} breaks: '
            f"{_e(flow.broken.reason)}</p>"
        )
    table = (
        f'<div class="scroll"><table class="data" id="shape-flow-table"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody><tfoot>{totals}</tfoot></table></div>"
    )
    return _section("shape-flow", lead + broken + table)


def _curves_section(facts: ModelFacts, plots: _Plots) -> str:
    card = facts.card
    if card is None or not card.history:
        if facts.untrained:
            why = "an untrained architecture has never been trained"
        elif card is None:
            why = "torchvision's weights come without one"
        else:
            why = "the checkpoint's card records no per-epoch history"
        return _section(
            "training-curves", f'<p class="empty" id="no-history">No history: {_e(why)}.</p>'
        )
    charts = []
    for metric in ("accuracy", "loss"):
        fig = figures.training_curves(
            [runs.history_curve(card.history, card.name, metric)],
            metric=metric,
            title=f"Training {metric} per epoch",
        )
        fig.update_layout(width=520, height=360, showlegend=False)
        charts.append(plots.add(fig, f"curve-{metric}"))
    note = f"<p>{len(card.history)} epochs recorded on the card; solid = train, dashed = test.</p>"
    return _section("training-curves", note + f'<div class="row">{"".join(charts)}</div>')


def _filters_section(model: nn.Module, plots: _Plots) -> str:
    convs = probe.conv_layers(model)
    if not convs:
        return _section("first-layer-filters", '<p class="empty">The model has no conv layer.</p>')
    name, _ = convs[0]
    weights = probe.filter_weights(model, name).float().numpy()
    title = f"{name}: {weights.shape[0]} filters"
    if weights.shape[1] == 3:
        fig = figures.rgb_filters(weights, title=title, max_side=520)
    else:
        fig = figures.filter_grid(weights, title=title, max_side=520)
    kh, kw = weights.shape[2:]
    lead = (
        f"<p>The first conv layer, <code>{_e(name)}</code>: {weights.shape[0]} filters of "
        f"{weights.shape[1]}×{kh}×{kw}, the patterns the network looks for in the raw pixels.</p>"
    )
    return _section("first-layer-filters", lead + plots.add(fig, "filters"))


def _activations_section(
    model: nn.Module, split: data.Split, pred: metrics.Predictions, count: int, plots: _Plots
) -> str:
    layers = [name for name, _ in probe.conv_layers(model)[:ACTIVATION_LAYERS]]
    if not layers:
        return _section("activations", '<p class="empty">The model has no conv layer.</p>')
    chosen = example_indices(pred.labels, count)
    batch = data.normalize(split.images[chosen], split.info.mean, split.info.std)  # as predict
    _, maps = probe.forward_with_activations(model, batch, layers)
    shown = ", ".join(f"<code>{_e(n)}</code>" for n in layers)
    parts = [
        f"<p>The first test image of each of {len(chosen)} classes, the model's answer, and "
        f"what the first conv layers ({shown}) output for it: every channel's map, each layer "
        "scaled to its own range (dark = its lowest value, yellow = its highest). Hover a pixel "
        "for its channel and value.</p>"
    ]
    cards = []
    for row, index in enumerate(chosen):
        predicted, true = int(pred.predicted[index]), int(pred.labels[index])
        confidence = float(pred.probabilities[index, predicted])
        verdict = "right" if predicted == true else "wrong"
        stack = [(name, maps[name][row].numpy()) for name in layers if maps[name].dim() == 4]
        figure = ""
        if stack:
            # No colour bars: they would crowd the row; the lead sentence explains colours.
            fig = figures.activation_stack(
                stack,
                scale="per layer",
                max_pixels=ACTIVATION_PIXELS,
                width=ACTIVATION_WIDTH,
                colorbars=False,
                title="Conv maps",
            )
            figure = plots.add(fig, f"activations-{index}")
        cards.append(
            f'<div class="example" id="example-{index}" data-index="{index}" '
            f'data-true="{true}" data-predicted="{predicted}"><div class="input">'
            f'<img alt="test image {index}" src="{_png(split.images[index])}">'
            f"<p><b>Test image {index}</b><br>true: {_e(pred.classes[true])}<br>"
            f'predicted: <span class="{verdict}">{_e(pred.classes[predicted])} '
            f"({100 * confidence:.1f} %) {'✓' if verdict == 'right' else '✗'}</span></p></div>"
            f"{figure}</div>"
        )
    parts.append(f'<div class="examples">{"".join(cards)}</div>')
    return _section("activations", "".join(parts))


def _atlas_section(parts: Sequence[AtlasPart]) -> str:
    if not parts:
        return _section(
            "channel-atlas",
            '<p class="empty">No layer added: on the Channels page, pick a layer and press '
            "\u201cAdd to report\u201d to put its atlas here.</p>",
        )
    blocks = []
    for part in parts:
        found = part.atlas
        picture = atlas_sheet.sheet(
            found,
            part.images,
            title=f"{found.layer}: {found.channels} channels",
            visualizations=part.visualizations,
            classes=part.classes,
        )
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        rows = "".join(
            f"<tr><td class='num'>{c}</td><td class='num'>{found.top_value[c, 0]:.4g}</td>"
            f"<td class='num'>{found.selectivity[c]:.3f}</td>"
            f"<td>{_e(part.classes[found.preferred_class[c]])}</td>"
            f"<td class='num'>{100 * found.dead_share[c]:.1f} %</td></tr>"
            for c in range(found.channels)
        )
        record = atlas.to_json(found)
        blocks.append(
            f'<div class="atlas" id="atlas-{_e(found.layer)}" data-layer="{_e(found.layer)}">'
            f"<h3><code>{_e(found.layer)}</code></h3>"
            f"<p>Every channel's top {found.top_index.shape[1]} of {found.images:,} "
            f"{_e(found.split)} images by its strongest response ({_e(found.values_of)}), each "
            "cropped to the receptive field of that position; selectivity (Morcos et al. 2018) "
            "is 0 for a channel that fires alike for every class and 1 for one that fires for a "
            "single class.</p>"
            f'<div class="scroll"><img class="sheet" id="atlas-sheet-{_e(found.layer)}" '
            f'alt="channel atlas of {_e(found.layer)}" '
            f'src="{uri}"></div>'
            "<details><summary>The channels as a table</summary>"
            f'<table class="data" id="atlas-table-{_e(found.layer)}"><thead><tr>'
            '<th class="num">Channel</th>'
            '<th class="num">Top activation</th><th class="num">Selectivity</th>'
            '<th>Preferred class</th><th class="num">Dead</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></details>"
            f'<script type="application/json" class="atlas-data">{_json_for_script(record)}'
            "</script></div>"
        )
    return _section("channel-atlas", "".join(blocks))


def _representations_section(part: RepresentationsPart | None, plots: _Plots) -> str:
    if part is None:
        return _section(
            "representations",
            '<p class="empty">Not added: on the Representations page, turn on \u201cIn the HTML '
            "report\u201d to put its map of a layer (and its probes, once run) here.</p>",
        )
    found = part.projection
    if found.dims != 2:
        raise LensError(f"the report holds a 2-D map, not a {found.dims}-D one")
    fig = rfig.embedding_scatter(
        found.coords,
        part.true,
        part.predicted,
        part.classes,
        colour_by=part.colour_by,
        indices=part.indices,
        axis_titles=rfig.pca_axis_titles(found.explained, 2) if found.method == "pca" else None,
        title=f"{found.title} of {part.layer}",
    )
    fig.update_layout(dragmode="zoom", clickmode="event")  # no selection to make in a file
    right = int((part.true == part.predicted).sum())
    parts = [
        f"<p>How <code>{_e(part.layer)}</code> arranges {len(part.true):,} test images (a "
        f"seeded sample; the model gets {right:,} of them right): each image's features at "
        f"that layer placed in 2-D by {_e(found.title)}. Images the layer sees alike lie close "
        "together; hover a point for its image's index and classes.</p>",
        plots.add(fig, "projection"),
    ]
    probes = part.probes
    if probes is None:
        parts.append(
            '<p class="empty" id="no-probes">No probes of these images yet: on the '
            "Representations page, open Probes, pick the training images and press "
            "\u201cRun the probes\u201d to add them.</p>"
        )
        return _section("representations", "".join(parts))
    rows = "".join(
        f'<tr data-layer="{_e(p.layer)}"><td>{_e(part.labels.get(p.layer, p.layer))}</td>'
        f'<td class="num">{p.features:,}</td><td class="num">{100 * p.probe_accuracy:.2f}</td>'
        f'<td class="num">{100 * p.knn_accuracy:.2f}</td><td class="num">'
        f"{'—' if p.silhouette is None else f'{p.silhouette:.3f}'}</td></tr>"
        for p in probes.layers
    )
    head = "".join(
        f'<th class="{"" if c == "Layer" else "num"}">{c}</th>'
        for c in ("Layer", "Features", "Linear probe %", "k-NN %", "Silhouette")
    )
    parts += [
        f"<p>How separable the classes are at each depth: a logistic regression (a linear "
        f"probe) and k-NN (k = {KNN_K}) learn the classes from each layer's features "
        f"of {probes.train_images:,} training images and are scored on the "
        f"{probes.test_images:,} test images above; the silhouette (−1..1, on "
        f"{probes.silhouette_images:,} of them) says how far apart the classes lie. The model "
        f"itself: {_percent(probes.model_accuracy)}.</p>",
        plots.add(rfig.probe_report_chart(probes, part.labels), "probes"),
        f'<table class="data" id="probe-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>",
        f'<script type="application/json" id="probe-data">'
        f"{_json_for_script(probes.to_json())}</script>",
    ]
    return _section("representations", "".join(parts))


def _confusion_section(pred: metrics.Predictions, plots: _Plots) -> str:
    cm = metrics.confusion(pred)
    classes = [str(c) for c in pred.classes]
    fig = figures.confusion_heatmap(cm, classes, normalize="counts")
    fig.update_layout(title_subtitle_text="images per cell · rows = true class", clickmode="none")
    worst = metrics.top_confusions(cm, classes, k=5)
    mistakes = ", ".join(f"{_e(t)} → {_e(p)} ({n:,})" for t, p, n in worst) or "none"
    parts = [
        f"<p>{int(cm.trace()):,} of {int(cm.sum()):,} images on the diagonal (right). "
        f"Most frequent mistakes (true → predicted): {mistakes}.</p>",
        plots.add(fig, "confusion"),
    ]
    if len(classes) <= MATRIX_TABLE_MAX:
        head = "".join(f'<th class="num">{_e(c)}</th>' for c in classes)
        body = "".join(
            f"<tr><th>{_e(name)}</th>{''.join(f'<td class=num>{n:,}</td>' for n in row)}</tr>"
            for name, row in zip(classes, cm.tolist(), strict=True)
        )
        parts.append(
            "<details><summary>The counts as a table (rows = true, columns = predicted)"
            f'</summary><table class="data" id="confusion-table"><thead><tr><th>true \\ predicted'
            f"</th>{head}</tr></thead><tbody>{body}</tbody></table></details>"
        )
    counts = {"classes": classes, "rows": "true class", "counts": cm.tolist()}
    block = _json_for_script(counts)
    parts.append(f'<script type="application/json" id="confusion-counts">{block}</script>')
    return _section("confusion-matrix", "".join(parts))


def _per_class_section(pred: metrics.Predictions) -> str:
    report = metrics.report(pred)
    table = confusion.report_table(report, pred.classes, averages=True)
    body = []
    for row in table.itertuples(index=False):
        name = str(row.Class)
        kind = ' class="total"' if name in ("macro avg", "weighted avg") else ""
        body.append(
            f'<tr{kind} data-class="{_e(name)}"><td>{_e(name)}</td>'
            f'<td class="num">{row.Precision:.3f}</td><td class="num">{row.Recall:.3f}</td>'
            f'<td class="num">{row.F1:.3f}</td><td class="num">{row.Support:,}</td></tr>'
        )
    total = len(pred.labels)
    body.append(
        f'<tr class="total" data-class="accuracy"><td>accuracy</td><td></td><td></td>'
        f'<td class="num">{_percent(report["accuracy"])}</td><td class="num">{total:,}</td></tr>'
    )
    head = "".join(
        f'<th class="{"num" if c != "Class" else ""}">{c}</th>'
        for c in ("Class", "Precision", "Recall", "F1", "Support")
    )
    lead = (
        "<p>scikit-learn's classification report: precision = right among those predicted as "
        "the class, recall = found among those that are the class, F1 their harmonic mean.</p>"
    )
    return _section(
        "per-class-report",
        lead + f'<table class="data" id="per-class-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>",
    )


# ---------------------------------------------------------------------------------------------
# Pieces


class _Plots:
    """Plotly figures as bare divs and `Plotly.newPlot` calls (plotly.js is in the head)."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, fig: go.Figure, name: str) -> str:
        self.count += 1
        div = fig.to_html(
            include_plotlyjs=False,
            full_html=False,
            div_id=f"fig-{name}",
            config={**PLOT_CONFIG, "toImageButtonOptions": {"filename": name}},
            default_width=f"{fig.layout.width}px" if fig.layout.width else "100%",
            default_height=f"{fig.layout.height}px" if fig.layout.height else "100%",
        )
        return f'<div class="figure">{div}</div>'


def _facts_table(rows: Sequence[tuple[str, str]]) -> str:
    """Label/value rows; values are HTML the caller escaped."""
    body = "".join(f"<tr><th>{_e(label)}</th><td>{value}</td></tr>" for label, value in rows)
    return f'<table class="facts" id="card-table"><tbody>{body}</tbody></table>'


def _png(image: Any) -> str:
    """A (C, H, W) uint8 image as a PNG data URI: drawn by the browser, no file beside."""
    pixels = np.asarray(image, dtype=np.uint8)
    picture = PIL.Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> element early."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _percent(value: float) -> str:
    """An accuracy, the same way everywhere in the report: "99.25 %"."""
    return f"{100 * value:.2f} %"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 Inter, 'Segoe UI', 'Helvetica Neue', Arial, sans-serif;
  color: var(--ink); background: #f8fafc; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 28px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
nav { margin: 12px 0 8px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
section { background: white; border: 1px solid var(--line); border-radius: 10px;
  padding: 20px 24px; margin: 18px 0; }
.muted { color: var(--muted); font-size: 13px; }
footer { padding-bottom: 28px; }
table { border-collapse: collapse; font-size: 13.5px; }
table.data th, table.data td { padding: 4px 10px; border-bottom: 1px solid var(--line);
  text-align: left; vertical-align: top; }
table.data thead th { background: #f1f5f9; position: sticky; top: 0; }
table.data tbody tr:nth-child(even) { background: #fafafa; }
table.facts th { text-align: left; padding: 5px 18px 5px 0; color: var(--muted);
  font-weight: 500; vertical-align: top; white-space: nowrap; }
table.facts td { padding: 5px 0; }
.num { text-align: right !important; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; background: #f1f5f9;
  padding: 8px 10px; border-radius: 6px; font-size: 12.5px; }
code { font-family: ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace; }
.scroll { overflow-x: auto; }
.flag { color: #b45309; }
.badge { display: inline-block; background: #eff6ff; color: #1e40af; border-radius: 6px;
  padding: 6px 12px; font-weight: 600; }
.badge.untrained { background: #fef2f2; color: #b91c1c; border: 1px solid #fecaca; }
.empty { color: var(--muted); font-style: italic; }
.row { display: flex; flex-wrap: wrap; gap: 12px; }
.figure { overflow-x: auto; }
.examples { display: flex; flex-wrap: wrap; gap: 16px; }
.example { border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
.example .input { display: flex; gap: 14px; align-items: center; }
.example .input p { margin: 0; }
.example img { width: 84px; height: 84px; image-rendering: pixelated;
  border: 1px solid var(--line); background: black; }
.right { color: #15803d; font-weight: 600; }
.wrong { color: #b91c1c; font-weight: 600; }
details { margin-top: 10px; }
.atlas + .atlas { margin-top: 24px; }
img.sheet { max-width: 100%; height: auto; }
summary { cursor: pointer; color: var(--accent); }
@media print { body { background: white; } section { break-inside: avoid; border: none; } }
"""


def error_page(title: str, message: str) -> str:
    """What the download holds when the report cannot be built: the reason, in one line."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}: no report</title><style>{CSS}</style></head><body><main>"
        f'<section id="error"><h2>CNN Lens could not build the report of {_e(title)}</h2>'
        f'<p class="badge untrained">{_e(message)}</p></section></main></body></html>\n'
    )
