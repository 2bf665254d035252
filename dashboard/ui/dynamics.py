"""The Training dynamics page's sources and figures: the selected checkpoint's recorded dynamics
or one of this session's runs from the Train page (live while it trains), each statistic's
lines and a tensor's distributions, built once per source and choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.ui.choices import Selection
from dashboard.ui.loaders import ModelView, mtime_of
from dashboard.ui.show import cached_figure, figure, table
from dashboard.ui.training_runs import session_runs

if TYPE_CHECKING:
    from dashboard.analysis.dynamics import Distribution
    from dashboard.models.dynamics import DynamicsLog, Series
    from dashboard.training import runs

DYNAMICS_RUN_PREFIX = "run:"  # a session run's source key: run:ID
DYNAMICS_SELECTED = "model"  # the selected model's own dynamics
BANDS, HEATMAP = "percentile bands", "histogram heatmap"
DISTRIBUTION_VIEWS = (BANDS, HEATMAP)
LIVE_EVERY_S = 3.0  # while a run trains, its lines are redrawn this often


@dataclass(frozen=True)
class DynamicsSource:
    """Recorded dynamics to draw, from a checkpoint or a run of this session."""

    key: tuple  # what the figures depend on: the checkpoint's file and time, or the run's events
    label: str
    series: Series
    tensors: tuple[str, ...]
    activations: tuple[str, ...]
    defaults: tuple[str, ...]  # the tensors drawn first: conv and linear weights
    log: DynamicsLog | None  # the whole record, with histograms (None: a run's live samples)


@st.cache_resource(max_entries=8, show_spinner=False)
def _series(key: tuple, _log: DynamicsLog) -> Series:
    return _log.series()


def _source(key: tuple, label: str, log: DynamicsLog, model) -> DynamicsSource:
    from dashboard.analysis import dynamics

    return DynamicsSource(
        key,
        label,
        _series(key, log),
        tuple(log.tensors),
        tuple(log.activations),
        tuple(dynamics.default_tensors(log.tensors, model)),
        log,
    )


def checkpoint_dynamics(selection: Selection, model, view: ModelView) -> DynamicsSource | None:
    """The selected checkpoint's dynamics; None when it has none (or is no checkpoint)."""
    log = view.dynamics
    if log is None or not log.steps:
        return None
    key = (selection.model_key, mtime_of(selection.model_key))
    return _source(key, view.label, log, model)


def dynamics_runs() -> dict[str, runs.TrainingRun]:
    """This session's runs that sampled dynamics, newest first, by source key."""
    from dashboard.models.dynamics import DynamicsEvent

    found = {}
    for run in reversed(session_runs()):
        if any(isinstance(e, DynamicsEvent) for e in run.events_since(0)):
            found[f"{DYNAMICS_RUN_PREFIX}{run.id}"] = run
    return found


def run_dynamics(run: runs.TrainingRun) -> DynamicsSource:
    """A run's dynamics: the whole record once it finished with its weights kept; the samples
    sent so far while it trains (or after its weights were released), without histograms."""
    from dashboard.models.dynamics import series_from_events

    label = f"run {run.id}: {run.label}"
    result = run.result
    if result is not None and result.dynamics is not None:
        return _source(("run", run.id, "done"), label, result.dynamics, result.model)
    events = run.events_since(0)
    series = series_from_events(events)
    tensors = tuple(series.values["weight_norm"])
    spec, info = run.spec, run.info
    shape = (info.channels, info.num_classes, info.size)
    options = tuple(sorted((str(k), repr(v)) for k, v in spec.options.items()))
    return DynamicsSource(
        ("run", run.id, len(events)),
        label,
        series,
        tensors,
        tuple(series.values["dead_share"]),
        _layer_weights(spec.architecture, options, shape, tensors, _options=spec.options),
        None,
    )


@st.cache_data(max_entries=16, show_spinner=False)
def _layer_weights(
    architecture: str, options: tuple, shape: tuple, names: tuple[str, ...], *, _options
) -> tuple[str, ...]:
    """The conv and linear weights among a training run's tensors, from its architecture built
    on the meta device (no memory, no draw from the random generators); every `…weight` when
    it cannot be built."""
    import torch

    from dashboard import models
    from dashboard.analysis import dynamics
    from dashboard.base.errors import LensError

    channels, classes, size = shape
    try:
        with torch.device("meta"):
            model = models.build_model(
                architecture, in_channels=channels, num_classes=classes, input_size=size,
                **dict(_options),
            )  # fmt: skip
    except (LensError, RuntimeError, ValueError, TypeError, NotImplementedError):
        model = None
    return tuple(dynamics.default_tensors(names, model))


def dynamics_lines(
    source: DynamicsSource,
    statistic: str,
    names: tuple[str, ...],
    smoothing: float,
    clock: str,
    log_y: bool,
):
    """The chosen lines of one statistic over training (cached per source and choice)."""

    def build():
        from dashboard.analysis import dynamics
        from dashboard.figures import dynamics as figures

        series = source.series
        values = series.values[statistic]
        shown = "smoothed" if smoothing > 0 else "raw"
        samples = f"{len(series)} samples"
        if source.log is not None and source.log.every:
            samples += f", every {source.log.every} steps and at each epoch's end"
        return figures.statistic_lines(
            dynamics.clock(series, clock),
            {name: values[name] for name in names if name in values},
            statistic=statistic,
            y_title=dynamics.STATISTIC_LABELS[statistic] + (" (log scale)" if log_y else ""),
            x_title=dynamics.CLOCKS[clock],
            smoothing=smoothing,
            log_y=log_y,
            title=dynamics.statistic_title(statistic),
            subtitle=f"{len(names)} of {len(values)} · {shown} (EMA {smoothing:.2f}) · {samples}",
        )

    return cached_figure(
        ("dynamics-lines", source.key, statistic, names, smoothing, clock, log_y), build
    )


def tensor_distribution(source: DynamicsSource, tensor: str) -> Distribution:
    from dashboard.analysis import dynamics

    assert source.log is not None
    return dynamics.distribution(source.log, tensor)


def dynamics_distribution(source: DynamicsSource, tensor: str, view: str):
    """One tensor's histograms over the epochs, as percentile bands or as a heatmap."""

    def build():
        from dashboard.analysis import dynamics
        from dashboard.figures import dynamics as figures

        dist = tensor_distribution(source, tensor)
        outside = int(dist.outside.max())
        note = f"{dist.elements:,} values · {len(dist.edges) - 1} bins fixed at the start"
        if outside:
            note += f" · up to {outside:,} beyond them (drawn at the edges)"
        if view == BANDS:
            return figures.distribution_bands(
                dist.epochs,
                dynamics.bands(dist),
                dynamics.BAND_PERCENTILES,
                title=f"{tensor}: distribution over epochs",
                subtitle=note,
            )
        return figures.histogram_heatmap(
            dist.epochs, dist.edges, dist.counts, title=f"{tensor}: histograms", subtitle=note
        )

    return cached_figure(("dynamics-distribution", source.key, tensor, view), build)


def dynamics_lines_panel(
    source: DynamicsSource,
    run: runs.TrainingRun | None,
    statistic: str,
    names: tuple[str, ...],
    smoothing: float,
    clock: str,
    log_y: bool,
) -> None:
    """The lines of one statistic; while `run` trains, redrawn every LIVE_EVERY_S seconds with
    its newest samples (and the whole page once it ends, for its histograms)."""

    def draw() -> None:
        shown = source
        if run is not None:
            result = run.result
            if source.log is None and result is not None and result.dynamics is not None:
                st.rerun()  # finished since the page ran: its record has the histograms
            shown = run_dynamics(run)
        if not len(shown.series):
            st.info("No sample yet: the first comes after the first steps of training.")
            return
        fig = dynamics_lines(shown, statistic, names, smoothing, clock, log_y)
        figure(fig, f"dynamics-{statistic}", key="dynamics_lines")
        with st.expander("The numbers (raw, not smoothed)", icon=":material/table:"):
            numbers_table(shown, statistic, names)

    if run is not None and not run.done:
        st.fragment(draw, run_every=LIVE_EVERY_S)()
    else:
        draw()


def numbers_table(source: DynamicsSource, statistic: str, names: tuple[str, ...]) -> None:
    """Each line's first, last, median, smallest and largest sample, as recorded."""
    from dashboard.analysis import dynamics

    scale, unit = (100.0, " %") if statistic == "dead_share" else (1.0, "")
    rows = [
        {
            "Layer": line.name,
            "First": line.first * scale,
            "Last": line.last * scale,
            "Median": line.median * scale,
            "Smallest": line.smallest * scale,
            "Largest": line.largest * scale,
        }
        for line in dynamics.line_summaries(source.series, statistic, names)
    ]
    shown = "%.1f %%" if unit else "%.4g"
    columns = ("First", "Last", "Median", "Smallest", "Largest")
    table(rows, {c: st.column_config.NumberColumn(format=shown) for c in columns})
