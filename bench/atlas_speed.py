"""(h) The channel atlas and feature visualization: a layer's atlas over the MNIST test set
against `metrics.predict` on the same images (the issue's ≤ 1.5×), and every channel's feature
visualization of LeNet-5's conv2 (≤ 10 s) and of a 128-channel ResNet-18 (CIFAR-10) layer
(≤ 90 s)."""

from __future__ import annotations

import time

from bench.common import REPO, Context, Report, median, verdict
from dashboard import data

ATLAS_BUDGET = 1.5  # atlas seconds / predict seconds
SMALL_VIS_BUDGET, LARGE_VIS_BUDGET = 10.0, 90.0


def section_h(ctx: Context, rep: Report) -> None:
    from dashboard.analysis import atlas, feature_vis, metrics
    from dashboard.models import checkpoints

    lenet = checkpoints.load_checkpoint(REPO / "trained" / "lenet5-mnist.safetensors").model
    test = ctx.data.split("test")
    if ctx.quick:
        test = data.take_first(test, 2000)
    atlas_s, predict_s = [], []
    for _ in range(1 if ctx.quick else 3):  # paired, in turn: the ratio holds as load drifts
        start = time.perf_counter()
        atlas.compute_atlas(lenet, test, "features.conv2")
        atlas_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        metrics.predict(lenet, test)
        predict_s.append(time.perf_counter() - start)
    ratio = median([a / p for a, p in zip(atlas_s, predict_s, strict=True)])
    rep.row(
        f"(h) atlas of lenet5 conv2 over {len(test):,} test images ÷ predict",
        f"{ratio:.2f}×",
        f"≤ {ATLAS_BUDGET}×",
        verdict(ratio <= ATLAS_BUDGET),
        f"atlas {median(atlas_s):.2f} s, predict {median(predict_s):.2f} s (medians)",
    )
    rows = [("lenet5-mnist", "features.conv2", SMALL_VIS_BUDGET)]
    if not ctx.quick:
        rows.append(("resnet18-small-cifar10", "layer4.0.conv2", LARGE_VIS_BUDGET))
    for name, layer, budget in rows:
        loaded = checkpoints.load_checkpoint(REPO / "trained" / f"{name}.safetensors")
        info = data.dataset_info(loaded.card.dataset)
        settings = feature_vis.VisSettings(threads=ctx.threads)
        start, cpu = time.perf_counter(), time.process_time()
        vis = feature_vis.visualize_channels(
            loaded.model, layer, info.input_shape, info.mean, info.std, settings=settings
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        rep.row(
            f"(h) feature visualization of every channel: {name} {layer}",
            f"{seconds:.1f} s",
            f"≤ {budget:.0f} s",
            verdict(seconds <= budget),
            f"{len(vis.units)} channels, {settings.steps} steps each, {cpu:.0f} CPU s",
        )
        rep.raw[f"vis_{name}_s"] = seconds
    rep.raw.update(atlas_s=atlas_s, predict_s=predict_s)
