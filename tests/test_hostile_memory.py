"""Memory stays bounded across many reruns: every Streamlit cache of the app has an entry limit,
and forty different uploads on the Activations page leave each cache at or under its limit
(the oldest entries evicted), with the Python heap flat once the caches are full."""

from __future__ import annotations

import ast
import gc
import io
import tracemalloc
from pathlib import Path

import PIL.Image
import pytest
from streamlit.runtime.caching import cache_data_api, cache_resource_api
from streamlit.runtime.stats import CACHE_MEMORY_FAMILY
from streamlit.testing.v1 import AppTest

from dashboard import data
from dashboard.analysis import inputs
from dashboard.base import paths
from tests.conftest import REPO_ROOT

UPLOADS = 40  # more than the `forward` (32) and `uploaded` (16) caches hold
CACHE_DECORATORS = {"cache_data", "cache_resource"}


def cached_functions(path: Path) -> list[tuple[str, int | None, int]]:
    """(function name, its max_entries or None, its parameter count) for every function of
    `path` decorated with st.cache_data / st.cache_resource."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if not (isinstance(target, ast.Attribute) and target.attr in CACHE_DECORATORS):
                continue
            limit = next(
                (k.value.value for k in (call.keywords if call else []) if k.arg == "max_entries"),
                None,
            )
            arguments = node.args
            count = len(arguments.posonlyargs + arguments.args + arguments.kwonlyargs)
            found.append((node.name, limit, count))
    return found


def test_every_cache_of_the_app_has_an_entry_limit():
    sources = [REPO_ROOT / "app.py", *sorted((REPO_ROOT / "dashboard" / "ui").rglob("*.py"))]
    sources += sorted((REPO_ROOT / "pages").glob("*.py"))
    caches = {f"{p.name}:{name}": (limit, count) for p in sources
              for name, limit, count in cached_functions(p)}  # fmt: skip
    assert len(caches) >= 20  # the scan sees the app's caches
    # A function without parameters holds one entry whatever it is called with.
    unbounded = [name for name, (limit, count) in caches.items() if limit is None and count]
    assert unbounded == []
    assert all(limit is None or 1 <= limit <= 128 for limit, _ in caches.values())


def cache_sizes() -> dict[str, tuple[int, float]]:
    """Every live Streamlit cache: name → (entries, max_entries)."""
    sizes: dict[str, tuple[int, float]] = {}
    for session in cache_data_api._data_caches._function_caches.values():
        for cache in session.values():
            entries = len(cache.get_stats().get(CACHE_MEMORY_FAMILY, []))
            sizes[f"data:{cache.display_name}"] = (entries, cache.max_entries or float("inf"))
    for session in cache_resource_api._resource_caches._function_caches.values():
        for cache in session.values():
            sizes[f"resource:{cache.display_name}"] = (len(cache._mem_cache), cache.max_entries)
    return sizes


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))


def test_forty_uploads_keep_every_cache_within_its_limit(shared_datasets: Path, private_cache):
    test = data.load_split("mnist", "test", data_root=shared_datasets)
    digits = [png(test.images[i, 0].numpy()) for i in range(UPLOADS)]  # forty real digits
    cache_data_api._data_caches.clear_all()
    cache_resource_api._resource_caches.clear_all()
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    app = app.switch_page("pages/5_Activations.py")
    app.session_state["lens_model"] = "ckpt:trained/lenet5-mnist.safetensors"
    app.session_state["lens_input_source"] = inputs.SOURCE_UPLOAD
    app.run()
    tracemalloc.start()
    try:
        heap = []
        for i, raw in enumerate(digits):
            app.file_uploader(key="_act_upload").set_value((f"d{i}.png", raw, "image/png")).run()
            assert not app.exception, app.exception
            assert not app.error, [e.value for e in app.error]
            over = {k: v for k, v in cache_sizes().items() if v[0] > v[1]}
            assert over == {}, f"after upload {i + 1}: {over}"
            if i + 1 in (UPLOADS // 2, UPLOADS):
                gc.collect()
                heap.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # Names are module.function; a page runs as __main__.
    sizes = {name.rsplit(".", 1)[-1]: size for name, size in cache_sizes().items()}
    # The caches an upload fills reached their limits: eviction, not luck, kept them there.
    assert sizes["uploaded"] == (16, 16)
    assert sizes["forward"] == (32, 32)
    assert sizes["cached_figure"] == (128, 128)  # ui.cached_figure, shared by the pages
    assert sizes["loaded_model"][0] == sizes["_split"][0] == 1  # one model, one split: shared
    # Once the caches are full, twenty more uploads add no more than a few MB to the heap.
    growth_mib = (heap[1] - heap[0]) / 2**20
    print(f"Python heap growth over uploads {UPLOADS // 2}–{UPLOADS}: {growth_mib:.1f} MiB")
    assert growth_mib < 8
