"""(g) Page switches in Chromium: from a click on a page's link to the page drawn."""

from __future__ import annotations

import time
from typing import Any

from bench.app_speed import SIDEBAR_MODEL, TABLE, default_model_key, streamlit_app
from bench.common import REPO, Context, Report, chromium_ready, median, verdict

# What a page has drawn: its title (h1), its figures (plotly charts with their SVG, tables with
# their canvas, images loaded), elements left stale from the run before (marked by Streamlit
# while a script runs; gone when it ends), elements whose code is still loading (Streamlit's
# skeleton: plotly's bundle arrives on first use) and the script's state (Streamlit's own
# attribute on the app's root, set whatever the toolbar shows).
DRAWN = """() => {
  const main = document.querySelector('[data-testid="stMain"]') || document;
  const h1 = main.querySelector('h1');
  const images = [...main.querySelectorAll('[data-testid="stImage"] img')];
  const app = document.querySelector('[data-testid="stApp"]');
  return {
    title: h1 ? h1.innerText.trim() : '',
    charts: main.querySelectorAll('[data-testid="stPlotlyChart"]:has(.main-svg)').length,
    tables: main.querySelectorAll('[data-testid="stDataFrame"]:has(canvas)').length,
    images: images.filter(i => i.complete && i.naturalWidth > 0).length,
    stale: document.querySelectorAll('[data-stale="true"]').length,
    loading: document.querySelectorAll('[data-testid="stSkeleton"]').length,
    script: app ? app.getAttribute('data-test-script-state') : '',
  };
}"""


SETTLED_MS = 1000  # a first visit is drawn when its script ended and nothing changed this long


def _at_rest(now: dict[str, Any]) -> bool:
    quiet = now["stale"] == 0 and now["loading"] == 0  # nothing old, no element still loading
    return bool(now["title"]) and quiet and now["script"] == "notRunning"


def _settle(page: Any, timeout_s: float = 600) -> dict[str, Any]:
    """Wait until the page's script has ended and its drawing stops changing (first visits:
    caches warming, figures laid out)."""
    deadline = time.perf_counter() + timeout_s
    last, since = None, time.perf_counter()
    while time.perf_counter() < deadline:
        now = page.evaluate(DRAWN)
        if now != last:
            last, since = now, time.perf_counter()
        elif _at_rest(now) and time.perf_counter() - since >= SETTLED_MS / 1000:
            return now
        page.wait_for_timeout(50)
    raise TimeoutError(f"the page kept changing: {last}")


def _drawn(now: dict[str, Any], goal: dict[str, Any]) -> bool:
    return (
        _at_rest(now)
        and now["title"] == goal["title"]
        and all(now[k] >= goal[k] for k in ("charts", "tables", "images"))
    )


def section_g(ctx: Context, rep: Report) -> None:
    """For every page: a click on its link in the sidebar, then the seconds until the page's
    title and all its figures are drawn, with the caches warm (each page visited twice
    first). What "all its figures" means for a page is learned on those visits."""
    what = "(g) page switch in Chromium"
    if not chromium_ready(rep, what, "≤ 1.5 s"):
        return
    from dashboard import ui
    from tests.browser import SIDEBAR, chromium_page

    labels = [label for script, label, _, _ in ui.PAGES if (REPO / script).exists()]
    rounds = 2 if ctx.quick else 5
    goals: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {label: [] for label in labels}
    with chromium_page() as page, streamlit_app(ctx.data.root) as (url, _, _):
        page.goto(url)
        page.locator(TABLE).first.wait_for(timeout=120_000)
        page.locator(SIDEBAR_MODEL).first.wait_for(timeout=120_000)

        def click(label: str) -> None:
            page.locator(SIDEBAR).get_by_role("link", name=label, exact=True).first.click()

        for _ in range(2):  # warm every page's caches; learn what each one draws
            for label in [*labels[1:], labels[0]]:
                click(label)
                page.wait_for_timeout(300)
                goals[label] = _settle(page)
        for _ in range(rounds):
            for label in [*labels[1:], labels[0]]:
                start = time.perf_counter()
                click(label)
                while not _drawn(page.evaluate(DRAWN), goals[label]):
                    if time.perf_counter() - start > 120:
                        raise TimeoutError(f"{label} not drawn: {page.evaluate(DRAWN)}")
                    page.wait_for_timeout(20)
                times[label].append(time.perf_counter() - start)
                page.wait_for_timeout(200)  # the page at rest before the next click
    rows = []
    for label in labels:
        mid, goal = median(times[label]), goals[label]
        drawn = f"{goal['charts']} charts, {goal['tables']} tables, {goal['images']} images"
        rep.row(
            f"(g) page switch in Chromium: {label}",
            f"{mid:.2f} s",
            "≤ 1.5 s",
            verdict(mid <= 1.5),
            f"click in the sidebar → title and {drawn} drawn, nothing stale; worst "
            f"{max(times[label]):.2f} s of {len(times[label])}",
        )
        rows.append([label, drawn, ", ".join(f"{t:.2f}" for t in times[label]), f"{mid:.2f}"])
    rep.raw.update(seconds=times, drawn=goals)
    rep.say(
        "`streamlit run app.py` headless, Chromium at 1400×1000, the sidebar's defaults "
        f"(model {default_model_key()}, MNIST). Each page visited twice from the sidebar "
        "first (caches warm; what the page draws then — its title, plotly charts with their "
        "SVG, tables with their canvas, loaded images — is its goal), then "
        f"{rounds} rounds through every page: the time from the click on the page's link in "
        "the sidebar to its title and every figure of the goal drawn, the script ended "
        "(Streamlit's data-test-script-state on the app's root) and no element of the "
        "previous run left stale (polled every 20 ms)."
    )
    rep.table(["page", "drawn", "seconds per switch", "median s"], rows)
