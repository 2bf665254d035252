"""Real-browser helpers: the app served by `streamlit run` and Debian's Chromium via Playwright."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CNN_LENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
SIDEBAR = '[data-testid="stSidebar"]'


def require_chromium() -> None:
    """Skip without Chromium on a developer's machine; CI sets CNN_LENS_REQUIRE_BROWSER=1."""
    if Path(CHROMIUM).exists() and shutil.which("streamlit", path=str(Path(sys.executable).parent)):
        return
    reason = (
        f"Chromium not found at {CHROMIUM} (apt-get install chromium, or point "
        "CNN_LENS_CHROMIUM at another Chromium or Chrome)"
    )
    if os.environ.get("CNN_LENS_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def streamlit_command(port: int, script_args: Sequence[str] = ()) -> list[str]:
    """`streamlit run app.py` headless on 127.0.0.1:port (tests and benchmark alike); the app's
    own options (`--data-root DIR`, `--allow-root DIR`) go after `--`."""
    return [
        str(Path(sys.executable).parent / "streamlit"),
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        *(["--", *script_args] if script_args else []),
    ]


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether the server at `url` answers its health check."""
    # A private opener with no proxy: urllib's global one keeps the proxy settings of the
    # moment it was first used (some tests route downloads through a refused proxy).
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(f"{url}/_stcore/health", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


@contextmanager
def streamlit_server(
    env: dict[str, str] | None = None, timeout: float = 60.0, script_args: Sequence[str] = ()
) -> Iterator[str]:
    """`streamlit run app.py` headless on a free port; yields its base URL once healthy."""
    port = free_port()
    command = streamlit_command(port, script_args)
    log = (REPO_ROOT / "artifacts").joinpath("streamlit-server.log")
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {log}")
                time.sleep(0.3)
            yield url
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """End a server: politely, then for good after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def app_with_saved_runs(runs: Path, *saved: Path) -> Iterator[str]:
    """`streamlit_server` with copies of the `saved` checkpoints (weights and card) in the
    folder `runs`, its saved runs; skips without Chromium."""
    require_chromium()
    for checkpoint in saved:
        for suffix in (".safetensors", ".json"):
            shutil.copy(checkpoint.with_suffix(suffix), runs)
    with streamlit_server(env={"CNN_LENS_RUNS": str(runs)}) as url:
        yield url


def new_page(browser, viewport: tuple[int, int]):
    """A page in a new browser context (its own cookies: a new visitor), counting runs."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    track_runs(context)
    return context.new_page()


@contextmanager
def chromium_page(viewport: tuple[int, int] = (1400, 1000)) -> Iterator[object]:
    """A fresh Playwright page in Debian's Chromium (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield new_page(browser, viewport)
        finally:
            browser.close()


@contextmanager
def app_with_data(data_root: Path, viewport: tuple[int, int]) -> Iterator[tuple[str, object]]:
    """The app served with `data_root` as its data folder, and a fresh Chromium page:
    (base URL, page). Skips without Chromium."""
    require_chromium()
    with (
        streamlit_server(env={"CNN_LENS_DATA": str(data_root)}) as url,
        chromium_page(viewport=viewport) as page,
    ):
        yield url, page


# Streamlit's frontend writes the script's state on the app's root element (its own end-to-end
# tests wait on it): "running" while a script or fragment runs, "notRunning" once it is done.
IDLE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.dataset.testScriptState === 'notRunning'
    && app.dataset.testConnectionState === 'CONNECTED';
}"""
# Counts the runs the page has seen start, so that a wait after a click notices the rerun the
# click caused even when it ended before the wait began (or started after it).
RUN_COUNTER = """(() => {
  window.__lensRuns = 0;
  const watch = (app) => {
    let last = app.getAttribute('data-test-script-state');
    if (last === 'running') window.__lensRuns += 1;
    new MutationObserver(() => {
      const now = app.getAttribute('data-test-script-state');
      if (now === 'running' && last !== 'running') window.__lensRuns += 1;
      last = now;
    }).observe(app, { attributes: true, attributeFilter: ['data-test-script-state'] });
  };
  const find = new MutationObserver(() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (app) { find.disconnect(); watch(app); }
  });
  find.observe(document, { childList: true, subtree: true });
})();"""
RUNS_SEEN = "() => window.__lensRuns || 0"
RUN_START_MS = 2_000  # a change that starts no rerun within this long has nothing to wait for


def track_runs(context) -> None:
    """Count script runs in every page of a Playwright browser context (see `settle`)."""
    context.add_init_script(RUN_COUNTER)


def _idle(page, timeout_ms: int) -> None:
    """Wait until no script runs; fails (TimeoutError) when the app stays busy."""
    page.wait_for_function(IDLE, timeout=timeout_ms)
    page.evaluate("() => { window.__lensSettled = window.__lensRuns || 0; }")


def wait_for_app(page, text: str, timeout_ms: int = 60_000) -> None:
    """Wait for the page's own text (health answers before the script imported torch), then
    for its run to end."""
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_ms)
    _idle(page, timeout_ms)


def figure_title(page, text: str):
    """The plotly titles reading `text`, wherever the figure broke its lines (a title wraps at
    <br> to fit its figure, and the break leaves no space in the text)."""
    words = (re.escape(word) for word in text.split())
    return page.locator(".gtitle", has_text=re.compile(r"\s*".join(words)))


def selectbox_text(page, label: str) -> str:
    """The option shown in the first selectbox whose label reads `label`."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    return box.get_by_role("combobox").input_value()


def settle(page, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit has finished the rerun a widget change started: first for a run
    to start since the last wait, then for the app to be idle."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    seen = page.evaluate("() => window.__lensSettled || 0")
    with contextlib.suppress(PlaywrightTimeout):  # a change that started no rerun
        page.wait_for_function(f"() => (window.__lensRuns || 0) > {seen}", timeout=RUN_START_MS)
    _idle(page, timeout_ms)


def choose(page, label: str, option: str | re.Pattern, *, scope=None) -> None:
    """Pick `option` (its whole text, or a pattern) in the selectbox labelled `label` inside
    `scope` (default: the page), and wait for the rerun. A click that lands while the page is
    still painting its figures can leave the list closed: it is opened again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = (scope or page).locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    wanted = page.get_by_role("option", name=option, exact=isinstance(option, str)).first
    for _ in range(3):
        box.get_by_role("combobox").click()
        try:
            wanted.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    wanted.click()
    settle(page)


def set_number(page, label: str, value: int) -> None:
    """Type `value` into the number input labelled `label`, and wait for the rerun."""
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    settle(page)


def assert_no_exception(page) -> None:
    """Fail on any exception or error box Streamlit drew into the page."""
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --------------------------------------------------------------------------- the Train page

PROGRESS = '[data-testid="stProgress"]'
MAIN = '[data-testid="stMain"]'  # the page, not the toolbar (whose Stop ends a script run)
TRAINING_NOW = "Runs training on this server now"


def open_train(page, url: str) -> None:
    page.goto(f"{url}/Train")
    wait_for_app(page, "Start training", timeout_ms=120_000)
    assert_no_exception(page)


def set_run(page, epochs: int, images: int, test_images: int = 500) -> None:
    """A quick run's numbers: epochs, training images and test images."""
    set_number(page, "Epochs", epochs)
    set_number(page, "Training images (0 = all)", images)
    set_number(page, "Test images (0 = all)", test_images)


def wait_until_no_run_trains(page, url: str, since: float, limit_s: float) -> float:
    """Open the Train page again and again until it says no run trains on the server any
    more; → the seconds since `since` (the moment a tab closed), failing past `limit_s`."""
    from dashboard.training.runs import MAX_ACTIVE_RUNS

    while True:
        page.goto(f"{url}/Train")
        wait_for_app(page, TRAINING_NOW)
        if page.get_by_text(f"{TRAINING_NOW}: 0 of {MAX_ACTIVE_RUNS}.").count():
            return time.monotonic() - since
        assert time.monotonic() - since < limit_s, "a closed tab's run outlived it"
        time.sleep(2)


# --------------------------------------------------------------------------- tables

# For every st.dataframe on the page: each column's width as glide-data-grid draws it (read from
# the grid's React props), the widest text it must show (every row, formatted as drawn, and the
# header), measured with the grid's own font, and the width the grid has to show them in.
_TABLE_FIT = """canvas => {
  const key = Object.keys(canvas).find(k => k.startsWith('__reactFiber$'));
  const style = getComputedStyle(canvas.closest('.stDataFrameGlideDataEditor'));
  const family = style.getPropertyValue('--gdg-font-family');
  const pad = parseFloat(style.getPropertyValue('--gdg-cell-horizontal-padding'));
  const ctx = document.createElement('canvas').getContext('2d');
  const measure = (text, font) => {
    ctx.font = font + ' ' + family;
    return ctx.measureText(text).width;
  };
  for (let fiber = canvas[key]; fiber; fiber = fiber.return) {
    const p = fiber.memoizedProps || {};
    if (!Array.isArray(p.columns) || typeof p.getCellContent !== 'function') continue;
    if (!p.columns.every(c => typeof c.width === 'number')) continue;
    const columns = p.columns.map((column, c) => {
      let widest = measure(column.title || '', style.getPropertyValue('--gdg-header-font-style'));
      let text = column.title || '';
      for (let r = 0; r < p.rows; r++) {
        const cell = p.getCellContent([c, r]);
        const shown = cell.kind === 'boolean' ? '' : String(cell.displayData ?? cell.data ?? '');
        const bar = cell.kind === 'custom' && cell.data && cell.data.kind === 'progress-cell';
        const extra = bar ? 40 : 0;  // the bar's narrowest beside its number
        const width = measure(shown, style.getPropertyValue('--gdg-base-font-style')) + extra;
        if (width > widest) { widest = width; text = shown; }
      }
      return {title: column.title, width: column.width, needed: widest + 2 * pad, text};
    });
    return {columns, visible: canvas.clientWidth};
  }
  return null;
}"""


def table_fit(page) -> list[dict]:
    """Every table on the page: its columns (title, width, needed, widest text) and the
    pixels it has to show them (`visible`)."""
    grids = page.locator('[data-testid="stDataFrame"] [data-testid="data-grid-canvas"]')
    return [grid.evaluate(_TABLE_FIT) for grid in grids.all()]


def cut_cells(page) -> list[str]:
    """What any table on the page shows cut: a column narrower than its widest text, or a
    column pushed out of the table's visible width."""
    problems = []
    for number, table in enumerate(table_fit(page)):
        assert table is not None, "a table whose columns could not be read"
        right = 0.0
        for column in table["columns"]:
            right += column["width"]
            if column["needed"] > column["width"] + 0.5:
                problems.append(
                    f"table {number}, column {column['title']!r}: {column['text']!r} needs "
                    f"{column['needed']:.0f} px, has {column['width']}"
                )
            if right > table["visible"] + 1:
                problems.append(
                    f"table {number}, column {column['title']!r} lies past the table's "
                    f"{table['visible']} visible pixels"
                )
    return problems


# --------------------------------------------------------------------------- clipped text

_CLIPPED = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const found = [];
  const visible = el => el.getClientRects().length > 0;
  for (const el of main.querySelectorAll('*')) {
    if (!visible(el) || el.closest('[data-testid="stDataFrame"]')) continue;
    const style = getComputedStyle(el);
    const oneLine = ['hidden', 'clip'].includes(style.overflowX) && style.whiteSpace === 'nowrap';
    if (style.textOverflow !== 'ellipsis' && !oneLine) continue;
    const text = el.textContent.trim();
    if (text && el.scrollWidth > el.clientWidth + 1) found.push(text);
  }
  // chips: a multiselect's that run out of its box, pills past their group's edge
  for (const tags of main.querySelectorAll('[data-testid="stMultiSelectTagsContainer"]')) {
    if (visible(tags) && tags.scrollWidth > tags.clientWidth + 1) {
      found.push(`chips cut: ${tags.textContent}`);
    }
  }
  for (const group of main.querySelectorAll('[data-testid="stButtonGroup"]')) {
    const edge = group.getBoundingClientRect().right;
    for (const pill of group.querySelectorAll('button')) {
      const cut = pill.getBoundingClientRect().right > edge + 1;
      if (cut) found.push(`pill cut: ${pill.textContent}`);
    }
  }
  for (const chart of main.querySelectorAll('[data-testid="stPlotlyChart"]')) {
    const svg = chart.querySelector('svg.main-svg');
    if (!svg || !visible(chart)) continue;
    const box = chart.getBoundingClientRect();
    const title = chart.querySelector('.gtitle');
    const name = title ? title.textContent : 'a figure';
    if (svg.getBoundingClientRect().width > box.width + 1) {
      found.push(`figure ${name} wider than its place`);
    }
    for (const text of chart.querySelectorAll('.gtitle, .annotation-text, .xtitle, .ytitle')) {
      const r = text.getBoundingClientRect();
      const out = r.left < box.left - 1 || r.right > box.right + 1;
      if (r.width && out) found.push(`figure text ${text.textContent}`);
    }
  }
  return found;
}"""


def clipped_texts(page) -> list[str]:
    """Texts of the main area shown cut: a label or value ending in an ellipsis or hidden
    overflow, chips running out of their box, a figure wider than its column, a figure title
    reaching past its edge."""
    return page.evaluate(_CLIPPED)


# --------------------------------------------------------------------------- missing glyphs

_TOFU = """() => {
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 40;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const font = getComputedStyle(document.body).fontFamily;
  const draw = text => {
    ctx.clearRect(0, 0, 40, 40);
    ctx.font = `24px ${font}`;
    ctx.fillText(text, 4, 30);
    return ctx.getImageData(0, 0, 40, 40).data.join(',');
  };
  const missing = draw('\\u{10FFFD}');  // a private code point no font has: the empty box
  const found = new Set();
  for (const char of document.body.innerText) {
    const symbol = char.codePointAt(0) > 0x2000 && !/\\s/.test(char);
    if (symbol && draw(char) === missing) found.add(char);
  }
  return [...found];
}"""


def missing_glyphs(page) -> list[str]:
    """Characters on the page that the browser has no font for: drawn as an empty box."""
    return page.evaluate(_TOFU)
