"""A hostile image folder typed into the sidebar, in Debian's Chromium against `streamlit run`.
The 69-byte PNG of the security report (and a 32×32 PNG cut the same way) made the folder
decoder crash in libpng, which took the whole server down: every tab showed "Connection error".
Now the server answers its health check, the page names the skipped files, and other pages and
other browsers still work."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import (
    SIDEBAR,
    assert_no_exception,
    choose,
    chromium_page,
    healthy,
    require_chromium,
    screenshot,
    settle,
    streamlit_server,
    wait_for_app,
)
from tests.test_hostile_cli import write_pngs
from tests.test_images import REPORTED_PNG, short_png

pytestmark = pytest.mark.browser


def test_a_folder_holding_the_69_byte_png_leaves_the_server_running(tmp_path: Path) -> None:
    require_chromium()
    root = tmp_path / "shapes"
    write_pngs(root / "a", 10, seed=1)
    write_pngs(root / "b", 10, seed=2)
    (root / "a" / "05_bomb.png").write_bytes(REPORTED_PNG)
    (root / "b" / "05_cut.png").write_bytes(short_png(32, 32))
    env = {"CNN_LENS_RUNS": str(tmp_path / "runs"), "CNN_LENS_CACHE": str(tmp_path / "cache")}
    (tmp_path / "runs").mkdir()
    # The server's owner allows the folder: the app reads no other folder a browser names.
    with streamlit_server(env=env, script_args=["--allow-root", str(root)]) as url:
        with chromium_page(viewport=(1280, 800)) as page:
            page.goto(f"{url}/Model")
            wait_for_app(page, "The dataset")
            choose(page, "Dataset", "folder (your own images)", scope=page.locator(SIDEBAR))
            field = page.get_by_role("textbox", name="Image folder")
            field.fill(str(root))
            field.press("Enter")
            settle(page)
            page.get_by_role("tab", name="The dataset").click()
            named = page.get_by_text("a/05_bomb.png claims to be 1,600,000,000 pixels").first
            named.wait_for(timeout=120_000)
            assert "b/05_cut.png could not be decoded" in named.inner_text()
            assert healthy(url, timeout=10)
            assert_no_exception(page)
            screenshot(page, "folder-with-the-69-byte-png")

            page.goto(f"{url}/Shape_flow")  # another page, same session
            wait_for_app(page, "Shape flow")
            assert_no_exception(page)
        with chromium_page(viewport=(1920, 1080)) as other:  # another browser, fresh session
            other.goto(url)
            wait_for_app(other, "CNN Lens")
            assert_no_exception(other)
        assert healthy(url, timeout=10)
