"""(l) What the Train page's live view costs a run: images/s of a background run (as the page
starts one) with no live view, against the same run taking copies of its weights every 2 s while
a second thread does what the page's fragment does with each copy — the forward pass of the
copy, the five figures, their JSON for the browser.
"""

from __future__ import annotations

import threading
import time

from bench.common import Context, Report, first, median, verdict
from dashboard import training
from dashboard.figures.live import live_figures
from dashboard.training import live, runs

LIVE_BUDGET = 0.10  # the share of training throughput the live view may cost (issue 18)


def draw_while_training(run: runs.TrainingRun, done: threading.Event, drawn: list[float]) -> None:
    """The page's live fragment, every LIVE_EVERY_S until the run ends: → seconds per draw."""
    weights = run.live
    assert weights is not None
    first_conv = weights.convs[0]
    while not done.wait(live.LIVE_EVERY_S):
        snapshot = weights.latest()
        if snapshot is None:
            continue
        start = time.perf_counter()
        view = weights.view(snapshot, 0, weights.layers[0], weights.convs[-1])
        figs = live_figures(view, weights.classes, weights.layers[0], first_conv, weights.convs[-1])
        for fig in figs:
            if fig is not None:
                fig.to_json()  # what Streamlit sends the browser
        drawn.append(time.perf_counter() - start)


def one_run(
    architecture: str, ctx: Context, n: int, epochs: int, watched: bool
) -> tuple[float, list[float]]:
    """A background run of `architecture` on the first `n` MNIST images; → (its training
    images/s, seconds of each live draw)."""
    train = first(ctx.data.split("train"), n)
    test = first(ctx.data.split("test"), 1000)
    config = training.TrainConfig(epochs=epochs, seed=0, threads=1, eval_every_epoch=False)
    spec = runs.RunSpec(architecture, "mnist", config)
    every = live.LIVE_EVERY_S if watched else None
    run = runs.start_run(spec, train, test, heartbeat_timeout=3600, live_every_s=every)
    done, drawn = threading.Event(), []
    drawer = threading.Thread(target=draw_while_training, args=(run, done, drawn))
    if watched:
        drawer.start()
    assert run.join(3600), f"{architecture}: the run did not end"
    done.set()
    if watched:
        drawer.join()
    assert run.result is not None, run.reason
    return run.result.images_per_second, drawn


def section_l(ctx: Context, rep: Report) -> None:
    # Runs of 5-20 s: a few draws each at one every 2 s.
    cases = [("lenet5", 60_000, 1 if ctx.quick else 3)]
    cases.append(("resnet18-small", 3_000 if ctx.quick else 8_000, 1))
    rounds = 1 if ctx.quick else 3
    rows, raw = [], {}
    for architecture, n, epochs in cases:
        speed: dict[str, list[float]] = {"off": [], "on": []}
        draws: list[float] = []
        for round_ in range(rounds):  # alternated, so a drift in load hits both alike
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                images_per_second, drawn = one_run(architecture, ctx, n, epochs, mode == "on")
                speed[mode].append(images_per_second)
                draws += drawn
        cost = 1 - median(speed["on"]) / median(speed["off"])
        raw[architecture] = {"images": n, "epochs": epochs, "speed": speed, "draws": draws}
        rows.append((architecture, n, epochs, speed, draws, cost))
    rep.raw.update(cases=raw)
    rep.say(
        "A background run as the Train page starts one (one thread, no test pass between "
        f"epochs) on the first MNIST training images, {rounds} round(s) alternating: no live "
        f"view, against copies of the weights every {live.LIVE_EVERY_S:g} s with a second thread "
        "drawing each (forward pass of the copy, the five figures, their JSON). The browser's "
        "own drawing is not counted. Medians of the runs' training images/s:"
    )
    rep.table(
        ["model", "images × epochs", "img/s, no live view", "img/s, live view", "cost",
         "draws", "median draw"],
        [
            [a, f"{n:,} × {e}", f"{median(s['off']):,.0f}", f"{median(s['on']):,.0f}",
             f"{c:+.1%}", len(d), f"{1000 * median(d):.0f} ms" if d else "–"]
            for a, n, e, s, d, c in rows
        ],
    )  # fmt: skip
    for architecture, _, _, _, draws, cost in rows:
        rep.row(
            f"(l) live view's cost to training, {architecture}",
            f"{cost:+.1%} img/s",
            f"≤ {LIVE_BUDGET:.0%}",
            verdict(cost <= LIVE_BUDGET and bool(draws)),
            f"{len(draws)} draws",
        )
