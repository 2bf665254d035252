"""(x) Attribution and evaluation on the shipped LeNet-5: each method for one 28×28 test image
(≤ 0.5 s; Integrated Gradients with 50 steps ≤ 1 s), the sanity-check cascade (≤ 10 s),
deletion/insertion over 100 test images for every method (≤ 60 s), and the evaluation's curves,
calibration and top losses from predictions already made (≤ 300 ms)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.common import REPO, Context, Report, median, verdict
from dashboard import data

METHOD_BUDGET, IG_BUDGET = 0.5, 1.0
CASCADE_BUDGET, FAITHFUL_BUDGET, CURVES_BUDGET = 10.0, 60.0, 0.3


def section_x(ctx: Context, rep: Report) -> None:
    from dashboard.analysis import attribution, evaluation, faithfulness, metrics, sanity
    from dashboard.models import checkpoints

    model = checkpoints.load_checkpoint(REPO / "trained" / "lenet5-mnist.safetensors").model
    test = ctx.data.split("test")
    info = test.info
    images = range(1 if ctx.quick else 10)
    xs = [data.normalize(test.images[i : i + 1], info.mean, info.std) for i in images]
    explainer = attribution.Explainer(model, info, None)
    explainer.explain(xs[0], "saliency", None)  # the shape flow and the model copy, once
    for method in attribution.METHODS:
        seconds = []
        for x in xs:
            start = time.perf_counter()
            explainer.explain(x, method, None)
            seconds.append(time.perf_counter() - start)
        budget = IG_BUDGET if method == "integrated-gradients" else METHOD_BUDGET
        rep.row(
            f"(x) {method}, one 28×28 image on lenet5",
            f"{median(seconds) * 1000:.0f} ms",
            f"≤ {budget:g} s",
            verdict(median(seconds) <= budget),
            f"median of {len(seconds)} test images, slowest {max(seconds) * 1000:.0f} ms",
        )
    count = 20 if ctx.quick else 100
    cascade_s = timed_row(
        rep,
        "(x) sanity-check cascade, every method, lenet5",
        lambda: sanity.sanity_check(model, xs[0], info),
        CASCADE_BUDGET,
    )
    faithful_s = timed_row(
        rep,
        f"(x) deletion and insertion, every method, {count} test images",
        lambda: faithfulness.faithfulness(model, test, images=count),
        FAITHFUL_BUDGET,
    )
    pred = metrics.predict(model, test)
    start = time.perf_counter()
    evaluation.pr_curves(pred)
    evaluation.roc_curves(pred)
    evaluation.reliability(pred.probabilities, pred.labels)
    evaluation.fit_temperature(pred.probabilities, pred.labels)
    evaluation.top_losses(pred)
    evaluation.confidence_histogram(pred)
    curves_s = time.perf_counter() - start
    rep.row(
        "(x) evaluation from predictions: PR, ROC, reliability, temperature, top losses",
        f"{curves_s * 1000:.0f} ms",
        f"≤ {CURVES_BUDGET * 1000:.0f} ms",
        verdict(curves_s <= CURVES_BUDGET),
        f"{len(pred.labels):,} test images, 10 classes",
    )
    rep.raw.update(cascade_s=cascade_s, faithfulness_s=faithful_s, curves_s=curves_s)


def timed_row(rep: Report, what: str, work: Callable[[], object], budget_s: float) -> float:
    """Run `work` once and add its seconds to the summary against `budget_s`."""
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    rep.row(what, f"{seconds:.1f} s", f"≤ {budget_s:g} s", verdict(seconds <= budget_s))
    return seconds
