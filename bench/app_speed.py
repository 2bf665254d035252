"""The app: (e) the first page and warm reruns, (f) the Confusion page with a new model and its
cell gallery.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    SMALL_MODELS,
    Context,
    Report,
    build,
    chromium_ready,
    load,
    median,
    verdict,
)
from bench.prediction_speed import forget_results


def default_model_key() -> str:
    """What the sidebar shows first on a fresh machine (its first choice: the first shipped
    checkpoint in the listing's order, MNIST and best first)."""
    from dashboard.models import checkpoints

    shipped = checkpoints.list_checkpoints(REPO / "trained")
    return f"ckpt:trained/{shipped[0].path.name}" if shipped else "arch:course-net"


def page_files() -> list[Path]:
    return [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def streamlit_app(root: Path) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """`streamlit run app.py` headless on a free port, as tests/browser.py starts it; yields
    (url, process, seconds from start to /_stcore/health answering)."""
    import urllib.request

    from tests.browser import free_port, stop, streamlit_command

    port = free_port()
    command = streamlit_command(port)
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CNN_LENS_DATA": str(root)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    break
            if process.poll() is not None or time.perf_counter() - start > 120:
                raise RuntimeError("streamlit did not start")
            time.sleep(0.05)
        yield url, process, time.perf_counter() - start
    finally:
        stop(process)


PAINTED = "Train or load a convolutional network"  # the home page's caption, under its title


TABLE = '[data-testid="stDataFrame"] canvas'  # the layer table, drawn


SIDEBAR_MODEL = '[data-testid="stSidebar"] [data-testid="stSelectbox"]'


def first_page(ctx: Context, rep: Report) -> None:
    """Seconds from starting `streamlit run app.py` to the home page in Chromium: its own text,
    its layer table drawn, and the sidebar's model list (which imports torch)."""
    what = "(e) first page after `streamlit run` (home)"
    if not chromium_ready(rep, what, "≤ 4 s"):
        return
    from tests.browser import chromium_page

    times = []
    for _ in range(1 if ctx.quick else 3):
        with chromium_page() as page:  # the browser is up before the clock starts
            start = time.perf_counter()
            with streamlit_app(ctx.data.root) as (url, process, healthy):
                page.goto(url)
                # The title and the map of pages are drawn before anything heavy is imported.
                page.get_by_text(PAINTED).first.wait_for(timeout=60_000)
                painted = time.perf_counter() - start
                # The layer table: for a shipped checkpoint read from its stored shape flow.
                page.get_by_text("Multiply-adds per image").first.wait_for(timeout=60_000)
                page.locator(TABLE).first.wait_for(timeout=60_000)
                shown = time.perf_counter() - start
                cpu = cpu_seconds(process.pid)
                page.locator(SIDEBAR_MODEL).first.wait_for(timeout=120_000)  # torch imported
                sidebar = time.perf_counter() - start
        times.append(
            {
                "health_s": round(healthy, 2),
                "painted_s": round(painted, 2),
                "page_s": round(shown, 2),
                "server_cpu_s": round(cpu, 2),
                "sidebar_s": round(sidebar, 2),
                "load": load()[0],
            }
        )
        print(
            f"  (e) first page: health {healthy:.2f} s, painted {painted:.2f} s, "
            f"table {shown:.2f} s, sidebar {sidebar:.2f} s, server CPU {cpu:.2f} s",
            flush=True,
        )
    rep.raw["first_page"] = times
    worst = max(t["page_s"] for t in times)
    mid = median([t["page_s"] for t in times])
    rep.say(
        "**First page**: `streamlit run app.py` headless on a free port (as tests/browser.py "
        "starts it), Chromium already open; seconds from starting the process to "
        "/_stcore/health answering, to the home page's caption painted, to its layer table "
        "drawn (the shipped default checkpoint's table is stored beside it, so torch is not "
        "imported for it), the server's CPU seconds by then, and to the sidebar's model list "
        "(which imports torch): "
        + "; ".join(
            f"health {t['health_s']} s, painted {t['painted_s']} s, table {t['page_s']} s, "
            f"server CPU {t['server_cpu_s']} s, sidebar {t['sidebar_s']} s (load {t['load']})"
            for t in times
        )
    )
    painted_mid = median([t["painted_s"] for t in times])
    rep.row(
        "(e) first page appears (title, page map, sidebar loading)",
        f"{painted_mid:.1f} s",
        "≤ 5 s",
        verdict(painted_mid <= 5.0),
        f"{len(times)} cold start(s), worst {max(t['painted_s'] for t in times):.1f} s",
    )
    rep.row(
        what + " complete: layer table drawn",
        f"{mid:.1f} s",
        "≤ 4 s",
        verdict(mid <= 4.0),
        f"{len(times)} cold start(s), worst {worst:.1f} s; the server process used "
        f"{median([t['server_cpu_s'] for t in times]):.1f} CPU s by then; the sidebar's model "
        f"list (importing torch) followed at {median([t['sidebar_s'] for t in times]):.1f} s",
    )


# Which widget to change on each page: label patterns tried in order, then any other.
PREFERRED = {
    "app.py": [r"^Model$"],
    "1_Model.py": [r"Choose a model from"],
    "2_Train.py": [r"^Epochs$"],
    "3_Shape_flow.py": [r"^Height"],
    "4_Filters.py": [r"Conv layer"],
    "5_Activations.py": [r"Test image"],
    "6_Confusion_matrix.py": [r"Class order", r"^Show$"],
}


CHANGEABLE = ("number_input", "slider", "selectbox", "radio", "button_group", "checkbox", "toggle")


def _values_for(widget: Any, pool: list[Any]) -> list[Any] | None:
    """Two values the widget can take, starting with its current one; None if unknown."""
    kind, value = widget.type, widget.value
    if kind in ("number_input", "slider"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        step = widget.step or 1
        low = widget.min if widget.min is not None else value - step
        high = widget.max if widget.max is not None else value + step
        other = value + step if value + step <= high else value - step
        return [value, other] if low <= other <= high else None
    if kind in ("checkbox", "toggle"):
        return [value, not value]
    options = list(widget.options)

    def shown(v: Any) -> str | None:
        try:
            return str(widget.format_func(v))
        except Exception:  # a page's format function only knows its own values
            return None

    # An option's value is known when it formats to itself, or from the page-specific pool.
    known = [o for o in options if shown(o) == o] + [
        v for v in pool if shown(v) in options and v not in options
    ]
    others = [v for v in known if v != value]
    return [value, others[0]] if others and value is not None else None


def _find(app: Any, kind: str, key: str | None, label: str, sidebar: bool) -> Any:
    root = app.sidebar if sidebar else app.main
    for widget in getattr(root, kind):
        if (key is not None and widget.key == key) or (key is None and widget.label == label):
            return widget
    raise LookupError(f"{kind} {key or label!r} vanished after a rerun")


def _choose_widget(app: Any, page: str) -> tuple[Any, list[Any], bool] | None:
    pool = [default_model_key(), "arch:lenet5"]
    if page == "4_Filters.py":
        from dashboard.analysis import probe

        pool += [n for n, _ in probe.conv_layers(build("lenet5"))] + [
            f"features.conv{i}" for i in range(1, 6)
        ]
    candidates: list[tuple[int, int, Any, bool]] = []
    patterns = PREFERRED.get(page, [])
    for sidebar in (False, True):
        for kind in CHANGEABLE:
            for order, widget in enumerate(getattr(app.sidebar if sidebar else app.main, kind)):
                if getattr(widget, "disabled", False):
                    continue
                rank = next(
                    (i for i, p in enumerate(patterns) if re.search(p, widget.label or "")),
                    len(patterns) + (10 if sidebar else 0),
                )
                if sidebar and rank >= len(patterns):
                    continue  # the sidebar only when asked for: it switches models
                candidates.append((rank, order, widget, sidebar))
    for _, _, widget, sidebar in sorted(candidates, key=lambda c: (c[0], c[1])):
        values = _values_for(widget, pool)
        if values:
            return widget, values, sidebar
    return None


def open_app(path: Path) -> Any:
    """AppTest of a page as the app runs it: app.py is the entry point (page links resolve
    against it) and a page is switched to, which runs that page's script alone."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    return app if path.name == "app.py" else app.switch_page(str(path.relative_to(REPO)))


def warm_rerun(path: Path, quick: bool) -> dict[str, Any]:
    """AppTest: cold run, then a widget toggled between two values; ms of each warm rerun."""
    app = open_app(path)
    t = time.perf_counter()
    app.run()
    cold = time.perf_counter() - t
    if app.exception:
        return {"error": app.exception[0].message.splitlines()[0][:160], "cold_s": round(cold, 2)}
    chosen = _choose_widget(app, path.name)
    if chosen is None:
        return {"cold_s": round(cold, 2), "error": "no widget with two known values to change"}
    widget, values, sidebar = chosen
    kind, key, label = widget.type, widget.key, widget.label
    times, cpu = [], []
    runs = 3 if quick else 5
    # Two warm-up changes (each value once), then timed alternations.
    for i in range(2 + runs):
        value = values[(i + 1) % 2]
        _find(app, kind, key, label, sidebar).set_value(value)
        t, c = time.perf_counter(), time.process_time()
        app.run()
        elapsed, used = time.perf_counter() - t, time.process_time() - c
        if app.exception:
            return {
                "cold_s": round(cold, 2),
                "error": app.exception[0].message.splitlines()[0][:160],
            }
        if i >= 2:
            times.append(elapsed)
            cpu.append(used)
    return {
        "cold_s": round(cold, 3),
        "widget": f"{kind} '{label}'" + (" (sidebar)" if sidebar else ""),
        "values": [str(v) for v in values],
        "rerun_ms": [round(1000 * s, 1) for s in times],
        "median_ms": round(1000 * median(times), 1),
        "median_cpu_ms": round(1000 * median(cpu), 1),
    }


def section_e(ctx: Context, rep: Report) -> None:
    first_page(ctx, rep)
    results = {}
    rows = []
    for path in page_files():
        print(f"  (e) AppTest {path.name}", flush=True)
        try:
            result = warm_rerun(path, ctx.quick)
        except Exception as err:  # a page under construction: report, go on
            result = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"}
            traceback.print_exc()
        results[path.name] = result
        name = path.relative_to(REPO)
        if "median_ms" in result:
            ms = result["median_ms"]
            rep.row(
                f"(e) warm rerun: {name}",
                f"{ms:.0f} ms",
                "≤ 300 ms",
                verdict(ms <= 300),
                f"{result['widget']}; {result['median_cpu_ms']:.0f} CPU ms; cold first run "
                f"{result['cold_s']:.1f} s",
            )
            rows.append(
                [
                    name,
                    result["widget"],
                    f"{result['cold_s']:.2f}",
                    ", ".join(f"{v:.0f}" for v in result["rerun_ms"]),
                    f"{ms:.0f}",
                    f"{result['median_cpu_ms']:.0f}",
                ]
            )
        else:
            rep.row(f"(e) warm rerun: {name}", "–", "≤ 300 ms", "error", result["error"])
            rows.append([name, "–", result.get("cold_s", "–"), result["error"], "–", "–"])
    rep.raw["pages"] = results
    rep.say(
        "**Warm reruns**: streamlit.testing.v1.AppTest per page, fresh session with the "
        f"sidebar's defaults (model {default_model_key()}, MNIST from "
        f"{os.path.relpath(ctx.data.root, REPO)}); one "
        "cold run, each of two widget values once to warm the caches, then the widget "
        f"alternated and app.run() timed {3 if ctx.quick else 5} times (server side: the "
        "script, caches and element serialization, no browser). CPU ms: this process's CPU "
        "time during the rerun, about what the wall clock shows on a quiet machine. The cold "
        "first run comes after earlier sections imported torch and loaded data in this process."
    )
    rep.table(
        [
            "page",
            "widget changed",
            "cold first run s",
            "warm reruns ms",
            "median ms",
            "median CPU ms",
        ],
        rows,
    )


def section_f(ctx: Context, rep: Report) -> None:
    pages = sorted((REPO / "pages").glob("*onfusion*.py"))
    if not pages:
        rep.row(
            "(f) confusion page: matrix for a newly picked model",
            "–",
            "≤ 1 s",
            "not built yet",
            "no pages/*Confusion*.py",
        )
        rep.row(
            "(f) confusion page: a cell's gallery",
            "–",
            "≤ 300 ms",
            "not built yet",
            "no pages/*Confusion*.py",
        )
        rep.say("The confusion-matrix page does not exist yet; re-run with --only f later.")
        return
    import streamlit as st

    page = pages[0]
    shipped = [
        f"ckpt:trained/{n}-mnist.safetensors"
        for n in SMALL_MODELS
        if (REPO / "trained" / f"{n}-mnist.safetensors").exists()
    ]
    app = open_app(page)
    app.run()
    if app.exception:
        message = app.exception[0].message.splitlines()[0][:160]
        rep.row("(f) confusion page", "–", "≤ 1 s", "error", message)
        return
    raw: dict[str, Any] = {"page": str(page.relative_to(REPO))}
    # A newly picked model: caches of predictions cleared, the dataset split kept (it is loaded
    # once per server), the checkpoint read from disk the first time.
    switches = []
    current = app.sidebar.selectbox(key="_lens_model").value
    others = [k for k in shipped if k != current] or shipped
    for key in others[: 1 if ctx.quick else 3]:
        st.cache_data.clear()
        forget_results()
        app.sidebar.selectbox(key="_lens_model").set_value(key)
        t, c = time.perf_counter(), time.process_time()
        app.run()
        switches.append(
            {
                "model": key,
                "seconds": round(time.perf_counter() - t, 3),
                "cpu_seconds": round(time.process_time() - c, 3),
                "error": bool(app.exception),
            }
        )
    raw["new_model"] = switches
    for switch in switches:
        name = switch["model"].removeprefix("ckpt:trained/").removesuffix(".safetensors")
        what = f"(f) confusion page: matrix for a newly picked {name}"
        if switch["error"]:
            rep.row(what, "–", "≤ 1 s", "error", "the page raised")
            continue
        rep.row(
            what,
            f"{switch['seconds']:.2f} s",
            "≤ 1 s",
            verdict(switch["seconds"] <= 1.0),
            f"rerun after picking it in the sidebar, predictions not cached; "
            f"{switch['cpu_seconds']:.2f} CPU s",
        )
    if not switches:
        rep.row(
            "(f) confusion page: matrix for a newly picked model",
            "–",
            "≤ 1 s",
            "error",
            "no other shipped small model to switch to",
        )
    # A cell's gallery: the top-confusion buttons open the same gallery as a click on the cell.
    gallery, gallery_cpu = [], []
    for i in range(2 + (3 if ctx.quick else 5)):
        buttons = [b for b in app.main.button if (b.key or "").startswith("cm_top_")]
        if not buttons or app.exception:
            break
        buttons[i % min(2, len(buttons))].click()
        t, c = time.perf_counter(), time.process_time()
        app.run()
        gallery.append(time.perf_counter() - t)
        gallery_cpu.append(time.process_time() - c)
    timed = gallery[2:]  # each of two cells opened once first
    raw["gallery_ms"] = [round(1000 * s, 1) for s in gallery]
    raw["gallery_cpu_ms"] = [round(1000 * s, 1) for s in gallery_cpu]
    if timed and not app.exception:
        ms = 1000 * median(timed)
        rep.row(
            "(f) confusion page: a cell's gallery",
            f"{ms:.0f} ms",
            "≤ 300 ms",
            verdict(ms <= 300),
            "rerun after clicking a top-confusion cell button (the same gallery as a click on "
            f"the cell), alternating two cells; {1000 * median(gallery_cpu[2:]):.0f} CPU ms",
        )
    else:
        rep.row(
            "(f) confusion page: a cell's gallery",
            "–",
            "≤ 300 ms",
            "error",
            "no top-confusion buttons found" if not gallery else "page raised",
        )
    rep.raw.update(raw)
    rep.say(
        f"Page {raw['page']} under AppTest, opened through app.py. A newly picked model: "
        "st.cache_data and the result cache cleared (predictions and figures, in memory and on "
        "disk), the dataset and any model already "
        "loaded kept in st.cache_resource, then the shipped checkpoint picked in the sidebar "
        f"and the rerun timed: {switches}. Gallery reruns (ms; the first two, one per cell, "
        f"are the warm-up): {raw['gallery_ms']}; CPU ms {raw['gallery_cpu_ms']}."
    )
