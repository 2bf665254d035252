"""Predictions: (c) the confusion matrix over the MNIST test set, (p) predictions kept on disk
for a restarted server, (d) resnet18 at 224×224: shape flow and activations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common import REPO, SMALL_MODELS, Context, Report, build, first, median, verdict
from dashboard import data, models, training


def plain_probabilities(model: torch.nn.Module, split: data.Split, batch: int = 1000) -> Any:
    """The straightforward way, for reference: model(x) in eval mode under no_grad, batches of
    1,000 normalized images, softmax (what metrics.predict did before its inference copy)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(split), batch):
            x = data.normalize(split.images[start : start + batch], split.info.mean, split.info.std)
            out.append(torch.softmax(model(x), dim=1))
    return torch.cat(out).numpy()


def gallery_seconds(pred: Any, images: Any, true: int, predicted: int) -> tuple[float, int]:
    """A click on cell (true, predicted) as the confusion page serves it: the cell's images
    (metrics.cell_indices inside confusion.gallery), the first page of 40 and its thumbnails."""
    from dashboard.analysis import confusion

    t = time.perf_counter()
    items = confusion.gallery(pred, true, predicted)
    shown = confusion.page_of(items, 0, 40)
    for item in shown:
        confusion.thumbnail(images[item.index].numpy(), 112)
    return time.perf_counter() - t, len(items)


def cached_predictions(name: str, root: Path) -> Callable[[], Any] | str:
    """The app's predictions once known (metrics.cached_predict, as ui.predictions calls it:
    the result cache's in-memory entry, keyed by the checkpoint's content and the split's
    identity) as a call, filled once; or why it cannot be measured."""
    try:
        from dashboard.analysis import metrics
        from dashboard.base import cache
        from dashboard.models import checkpoints

        path = REPO / "trained" / f"{name}-mnist.safetensors"
        loaded = checkpoints.load_checkpoint(path)
        split = data.load_split("mnist", "test", data_root=root)
        model_id = cache.checkpoint_digest(path, loaded.card.architecture, loaded.card.model_args)
        metrics.cached_predict(loaded.model, split, model_id)  # the cold call fills the cache
    except Exception as err:  # the app's internals changed: report, go on
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return lambda: metrics.cached_predict(loaded.model, split, model_id)


def section_c(ctx: Context, rep: Report) -> None:
    from dashboard.analysis import metrics
    from dashboard.models import checkpoints

    start = time.perf_counter()
    import sklearn.metrics  # noqa: F401  # the app imports it once; reported, not counted

    import_seconds = time.perf_counter() - start
    test = ctx.data.split("test")
    found: dict[str, torch.nn.Module] = {}
    notes = []
    for name in SMALL_MODELS:
        path = REPO / "trained" / f"{name}-mnist.safetensors"
        t = time.perf_counter()
        if path.exists():
            found[name] = checkpoints.load_checkpoint(path).model
            notes.append(
                f"{name}: shipped checkpoint {path.relative_to(REPO)} (loaded in "
                f"{time.perf_counter() - t:.2f} s, not counted)"
            )
        else:  # the time depends on the architecture, not on how well it was trained
            model = build(name)
            config = training.TrainConfig(epochs=1, channels_last=True)
            training.fit(model, first(ctx.data.split("train"), 6000), None, config)
            found[name] = model
            notes.append(
                f"{name}: no shipped checkpoint yet — trained here for 1 epoch on 6,000 images "
                f"({time.perf_counter() - t:.0f} s, not counted), so its accuracy is low"
            )
    reps = 1 if ctx.quick else 3
    rows = []
    raw = {}
    for name, model in found.items():
        model.eval()
        metrics.confusion(metrics.predict(model, test))  # warm-up: first-call allocations
        predict_s, cm_s, total_s, cpu_s, plain_s, plain_cpu_s = [], [], [], [], [], []
        # Alternating: predict as the app runs it (cold: not cached), then the plain loop.
        for _ in range(reps):
            c0, t0 = time.process_time(), time.perf_counter()
            pred = metrics.predict(model, test)
            t1 = time.perf_counter()
            cm = metrics.confusion(pred)
            t2, c2 = time.perf_counter(), time.process_time()
            predict_s.append(t1 - t0)
            cm_s.append(t2 - t1)
            total_s.append(t2 - t0)
            cpu_s.append(c2 - c0)
            c, t = time.process_time(), time.perf_counter()
            expected = plain_probabilities(model, test)
            plain_s.append(time.perf_counter() - t)
            plain_cpu_s.append(time.process_time() - c)
        same = bool((expected.argmax(axis=1) == pred.predicted).all())
        # Warm: the page's rerun finds the predictions in the result cache, then sklearn counts.
        cached = cached_predictions(name, ctx.data.root)
        warm_s: list[float] = []
        for _ in range(0 if isinstance(cached, str) else 3 * reps):
            t = time.perf_counter()
            metrics.confusion(cached())
            warm_s.append(time.perf_counter() - t)
        # A cell's gallery: the largest mistake cell and the largest correct one (the diagonal).
        off = cm.copy()
        off[range(len(off)), range(len(off))] = -1  # the diagonal out: mistakes only
        worst = divmod(int(off.argmax()), off.shape[1])
        best = int(cm.diagonal().argmax())
        cells = {f"{worst[0]}→{worst[1]}": worst, f"{best}→{best}": (best, best)}
        gallery: dict[str, dict[str, Any]] = {}
        for label, (true, predicted) in cells.items():
            times = []
            for _ in range(3 * reps):
                seconds, count = gallery_seconds(pred, test.images, true, predicted)
                times.append(seconds)
            gallery[label] = {"images": count, "ms": [round(1000 * x, 2) for x in times]}
        gallery_ms = max(median(g["ms"]) for g in gallery.values())
        total = median(total_s)
        accuracy = float(cm.trace() / cm.sum())
        raw[name] = {
            "predict_s": predict_s,
            "confusion_s": cm_s,
            "total_s": total_s,
            "cpu_s": cpu_s,
            "plain_loop_s": plain_s,
            "plain_loop_cpu_s": plain_cpu_s,
            "same_argmax_as_plain": same,
            "cached_s": warm_s if warm_s else cached,
            "gallery": gallery,
            "accuracy": accuracy,
            "images": int(cm.sum()),
        }
        rows.append(
            [
                name,
                f"{median(predict_s):.3f}",
                f"{median(cm_s):.4f}",
                f"{total:.3f}",
                f"{median(cpu_s):.3f}",
                f"{median(plain_s):.3f} ({median(plain_cpu_s):.3f} CPU)",
                f"{median(warm_s) * 1000:.1f}" if warm_s else "–",
                f"{gallery_ms:.1f}",
                f"{int(cm.sum()):,}",
                f"{accuracy:.2%}",
                "yes" if same else "NO",
            ]
        )
        rep.row(
            f"(c) confusion matrix, 10,000 test images: {name}",
            f"{total:.2f} s",
            "≤ 1 s",
            verdict(total <= 1.0 and int(cm.sum()) == 10000),
            f"predictions not cached: predict {median(predict_s):.2f} s + sklearn "
            f"{median(cm_s) * 1000:.0f} ms; {median(cpu_s):.2f} CPU s; the plain model(x) loop "
            f"takes {median(plain_s):.2f} s ({median(plain_cpu_s):.2f} CPU s), same answers: "
            f"{'yes' if same else 'NO'}",
        )
        if warm_s:
            warm = median(warm_s)
            rep.row(
                f"(c) confusion matrix, cached predictions: {name}",
                f"{warm * 1000:.0f} ms",
                "≤ 1 s",
                verdict(warm <= 1.0),
                "the app's predictions once known (metrics.cached_predict: the result cache's "
                "entry, keyed by checkpoint content and split) + sklearn's confusion_matrix",
            )
        else:
            rep.row(
                f"(c) confusion matrix, cached predictions: {name}", "–", "≤ 1 s", "error", cached
            )
        rep.row(
            f"(c) confusion cell → gallery: {name}",
            f"{gallery_ms:.1f} ms",
            "≤ 300 ms",
            verdict(gallery_ms <= 300),
            "confusion.gallery (metrics.cell_indices) + the first 40 thumbnails, worst of "
            + ", ".join(f"cell {k} ({g['images']} images)" for k, g in gallery.items()),
        )
    rep.raw.update(models=raw, sklearn_import_s=round(import_seconds, 2))
    rep.say(
        *(f"- {n}" for n in notes),
        "Not cached: metrics.predict as the app calls it (its private inference copy: batch "
        f"norm folded, in-place ReLUs, channels-last; batches of {metrics.PREDICT_BATCH}, "
        "inference mode) + metrics.confusion (sklearn.metrics.confusion_matrix), median of "
        f"{reps} after one warm-up, {ctx.threads} thread(s), alternating with the plain loop "
        "(model(x) under no_grad in batches of 1,000, the reference for the answers). Cached: "
        "the app's metrics.cached_predict (the result cache's in-memory entry, keyed by the "
        "checkpoint's content and the split's identity) hit, then the matrix. Gallery: what a "
        "click on a cell computes before drawing (the cell's images, the first page of 40, "
        "their thumbnails). Importing "
        f"sklearn.metrics the first time took {import_seconds:.2f} s (once per process; not "
        "counted).",
    )
    rep.table(
        [
            "model",
            "predict s",
            "confusion_matrix s",
            "total s",
            "total CPU s",
            "plain loop s",
            "cached ms",
            "gallery ms",
            "images",
            "accuracy",
            "same argmax as plain",
        ],
        rows,
    )


CIFAR_MODELS = ("vgg13-small-cifar10", "resnet18-small-cifar10")


# A restarted server's Confusion page, in a fresh interpreter: the modules a server has imported
# by then are imported first (timed apart), then the page's first run is the work.
RESTART_CHILD = """
import json, sys, time
t = time.perf_counter()
import torch, sklearn.metrics, plotly.graph_objects, pandas
import streamlit.emojis  # set_page_config's icon check imports it on a process's first page
from streamlit.testing.v1 import AppTest
from dashboard.base import cache
from dashboard.models import checkpoints
from dashboard.analysis import confusion, inputs, metrics
from dashboard import data, figures, ui
imports = time.perf_counter() - t
computed = []
predict = metrics.predict
metrics.predict = lambda *a, **k: computed.append(1) or predict(*a, **k)
started = []  # the page's script starts with ui.setup_page: AppTest's own set-up is not work
setup = ui.setup_page
ui.setup_page = lambda *a, **k: started.append(time.perf_counter()) or setup(*a, **k)
c = time.process_time()
AppTest.from_string("import streamlit as st").run()  # AppTest's own CPU for an empty page
empty_cpu = time.process_time() - c
app = AppTest.from_file(sys.argv[1], default_timeout=600).switch_page(sys.argv[2])
app.session_state["lens_model"] = sys.argv[3]
app.session_state["lens_dataset"] = "cifar10"
t, c = time.perf_counter(), time.process_time()
app.run()
end, cpu = time.perf_counter(), time.process_time() - c
accuracy = next((m.value for m in app.metric if m.label == "Accuracy"), None)
print(json.dumps({"imports_s": imports, "work_s": end - started[0], "apptest_s": end - t,
                  "work_cpu_s": cpu - empty_cpu, "predicted": len(computed),
                  "accuracy": accuracy, "error": [e.message for e in app.exception]}))
"""


def forget_results() -> None:
    """Empty the result cache, in memory and on disk (what a first visit ever finds)."""
    from dashboard.base import cache

    cache.clear_memory()
    shutil.rmtree(cache.results_dir(), ignore_errors=True)


def restarted_page(model_key: str) -> dict[str, Any]:
    """The Confusion page's first run in a fresh interpreter (a restarted server)."""
    page = next((REPO / "pages").glob("*onfusion*.py")).relative_to(REPO)
    done = subprocess.run(
        [sys.executable, "-c", RESTART_CHILD, str(REPO / "app.py"), str(page), model_key],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1][:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def section_p(ctx: Context, rep: Report) -> None:
    """metrics.predict alone against the app's path the first time (the result cache: split
    digest, checkpoint digest, disk write), then the page after a restart."""
    from dashboard.analysis import metrics
    from dashboard.base import cache
    from dashboard.models import checkpoints

    t = time.perf_counter()
    test = data.load_split("cifar10", "test", data_root=ctx.data.root, download=False)
    load_s = time.perf_counter() - t
    if ctx.quick:
        test = first(test, 1000)
    reps = 1 if ctx.quick else 3
    rows, raw = [], {}
    for name in CIFAR_MODELS:
        path = REPO / "trained" / f"{name}.safetensors"
        if not path.exists():
            rep.row(f"(p) {name}", "–", "", "skipped", f"no {path.relative_to(REPO)}")
            continue
        loaded = checkpoints.load_checkpoint(path)
        model, card = loaded.model, loaded.card
        metrics.predict(model, first(test, 512))  # warm-up: first-call allocations
        alone, through, through_cpu = [], [], []
        for _ in range(reps):  # alternated, so both share the load evenly
            t = time.perf_counter()
            expected = metrics.predict(model, test)
            alone.append(time.perf_counter() - t)
            forget_results()
            cache._file_digests.clear()  # the first time: nothing remembered of the file either
            fresh = dataclasses.replace(test)  # a new Split object: its digest not remembered
            t, c = time.perf_counter(), time.process_time()
            model_id = cache.checkpoint_digest(path, card.architecture, card.model_args)
            pred = metrics.cached_predict(model, fresh, model_id)
            through.append(time.perf_counter() - t)
            through_cpu.append(time.process_time() - c)
        same = bool((pred.probabilities == expected.probabilities).all())
        ratio = median(through) / median(alone)
        entry = next(cache.results_dir().glob("predictions/*.safetensors"), None)
        restart = {} if ctx.quick else restarted_page(f"ckpt:trained/{name}.safetensors")
        raw[name] = {
            "predict_s": alone,
            "cached_first_s": through,
            "cached_first_cpu_s": through_cpu,
            "same_probabilities": same,
            "entry_bytes": entry.stat().st_size if entry else None,
            "restart": restart,
        }
        rep.row(
            f"(p) first classification through the disk cache: {name}",
            f"{ratio:.2f}×",
            "≤ 1.3×",
            verdict(ratio <= 1.3 and same),
            f"metrics.cached_predict {median(through):.2f} s (checkpoint and split digests, "
            f"predict, disk write) vs metrics.predict alone {median(alone):.2f} s, "
            f"{len(test):,} CIFAR-10 test images; same probabilities: {'yes' if same else 'NO'}",
        )
        if restart.get("work_s") is not None and not restart.get("error"):
            work = restart["work_s"]
            rep.row(
                f"(p) confusion page after a server restart, classified before: {name}",
                f"{work:.2f} s",
                "≤ 0.5 s",
                verdict(work <= 0.5 and restart["predicted"] == 0),
                "the page's first run in a fresh interpreter, from its first line to its "
                f"last ({restart['work_cpu_s']:.2f} CPU s beyond AppTest's own for an empty "
                f"page; {restart['apptest_s']:.2f} s with AppTest's set-up): "
                "checkpoint and split (decoded JPEGs) loaded, predictions read from disk "
                f"({'none computed' if restart['predicted'] == 0 else 'COMPUTED AGAIN'}), "
                f"matrix and figures; accuracy {restart['accuracy']}; the imports before it "
                f"took {restart['imports_s']:.1f} s",
            )
        elif restart:
            what = f"(p) confusion page after a restart: {name}"
            rep.row(what, "–", "≤ 0.5 s", "error", str(restart.get("error")))
        rows.append(
            [
                name,
                f"{median(alone):.2f}",
                f"{median(through):.2f}",
                f"{ratio:.2f}×",
                f"{restart.get('work_s', float('nan')):.2f}" if restart else "–",
                f"{restart.get('imports_s', float('nan')):.1f}" if restart else "–",
            ]
        )
    rep.raw.update(models=raw, cifar10_test_load_s=round(load_s, 2))
    rep.say(
        f"CIFAR-10 (JPEG copy) test split, {len(test):,} images, loaded in {load_s:.1f} s (not "
        f"counted); {ctx.threads} torch thread(s). **First time**: metrics.predict alone, "
        "alternated with the app's path on an empty result cache (metrics.cached_predict: the "
        "checkpoint file's SHA-256, the split's SHA-256 over its pixels and labels, predict, "
        f"and the atomic write of the entry), median of {reps}. **After a restart**: a fresh "
        "interpreter imports what a server has imported by then (timed apart), then runs the "
        "Confusion matrix page once under AppTest with the model and CIFAR-10 picked, timed "
        "from the page script's first line (ui.setup_page) to its end: load the "
        "checkpoint and the decoded split, read the predictions from disk (metrics.predict is "
        "watched: it must not run), count the matrix, build the figures.",
    )
    rep.table(
        ["model", "predict s", "first through cache s", "ratio", "restart page s", "imports s"],
        rows,
    )


def section_d(ctx: Context, rep: Report) -> None:
    from dashboard.analysis import probe

    model = models.build_model("resnet18")
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    reps = 1 if ctx.quick else 3
    flow_s, act_s = [], []
    flow = acts = None
    for _ in range(reps + 1):  # the first of each is the cold call
        t = time.perf_counter()
        flow = probe.shape_flow(model, (3, 224, 224))
        flow_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        acts = probe.activations(model, x)
        act_s.append(time.perf_counter() - t)
    if flow is None or acts is None:
        raise RuntimeError("nothing was measured")
    megabytes = sum(a.numel() * a.element_size() for a in acts.values()) / 2**20
    rep.raw.update(
        shape_flow_s=flow_s,
        activations_s=act_s,
        layers=len(flow.records),
        leaves=len(acts),
        activation_mb=round(megabytes, 1),
    )
    rep.say(
        f"resnet18 (the 224×224 original, random weights), one image, {ctx.threads} thread(s); "
        f"first call, then the median of {reps} more. shape_flow records {len(flow.records)} "
        f"module calls; activations captures {len(acts)} leaf outputs ({megabytes:.0f} MB)."
    )
    rep.table(
        ["call", "first s", "median s (warm)"],
        [
            [
                "probe.shape_flow(model, (3, 224, 224))",
                f"{flow_s[0]:.3f}",
                f"{median(flow_s[1:]):.3f}",
            ],
            [
                "probe.activations(model, x) — every leaf",
                f"{act_s[0]:.3f}",
                f"{median(act_s[1:]):.3f}",
            ],
        ],
    )
    rep.row(
        "(d) resnet18 224×224 shape flow",
        f"{median(flow_s[1:]):.2f} s",
        "",
        "info",
        f"first call {flow_s[0]:.2f} s",
    )
    rep.row(
        "(d) resnet18 224×224 activations, every leaf",
        f"{median(act_s[1:]):.2f} s",
        "",
        "info",
        f"{len(acts)} leaves, {megabytes:.0f} MB; first call {act_s[0]:.2f} s",
    )
