"""The on-disk result cache (dashboard.base.cache): keys that miss when any part changes, atomic
writes that a killed writer cannot spoil, least-recently-used eviction under a size cap, damaged
entries computed again, and entries shared between processes — the command line's predictions
read by the app and by a second command line. Real MNIST, real checkpoints, real SIGKILLs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dashboard import data
from dashboard.analysis import metrics
from dashboard.base import cache
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT

LENET5 = REPO_ROOT / "trained" / "lenet5-mnist.safetensors"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache folder and an empty in-memory layer."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNN_LENS_CACHE", str(folder))
    monkeypatch.delenv(cache.MAX_MB_ENV, raising=False)
    cache.clear_memory()
    yield folder
    cache.clear_memory()


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets)


def counting(arrays: dict[str, np.ndarray]):
    """A compute function that counts its calls."""
    calls = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        return {k: v.copy() for k, v in arrays.items()}

    return compute, calls


def entries(kind: str = "test") -> list[Path]:
    return sorted((cache.results_dir() / kind).glob(f"*{cache.ENTRY_SUFFIX}"))


# --------------------------------------------------------------------------- keys


def test_an_entry_is_computed_once_and_read_back_equal(mnist_test: data.Split) -> None:
    arrays = {"pixels": mnist_test.images[:50].numpy(), "labels": mnist_test.labels[:50].numpy()}
    compute, calls = counting(arrays)
    parts = {"split": cache.split_identity(mnist_test), "n": 50}
    first = cache.cached_arrays("test", parts, compute)
    cache.clear_memory()  # a new process: only the disk remembers
    second = cache.cached_arrays("test", parts, compute)
    assert calls == [1]
    for name, array in arrays.items():
        np.testing.assert_array_equal(first[name], array)
        np.testing.assert_array_equal(second[name], array)
        assert second[name].dtype == array.dtype
        assert not second[name].flags.writeable  # shared: nobody may change it
    assert len(entries()) == 1


def test_changing_any_key_part_misses(mnist_test: data.Split, shared_datasets: Path) -> None:
    small = data.take_first(mnist_test, 200)
    base = {"model": cache.checkpoint_digest(LENET5, "lenet5", {"a": 1}), "layer": "conv1"}
    base["split"] = cache.split_identity(small)
    compute, calls = counting({"x": np.arange(4)})
    cache.cached_arrays("test", base, compute)
    pixels = small.images.clone()
    pixels[0, 0, 0, 0] += 1  # one pixel of one image
    labels = small.labels.clone()
    labels[0] = (labels[0] + 1) % 10  # one label
    changed = [
        {**base, "layer": "conv2"},
        {**base, "model": cache.checkpoint_digest(LENET5, "lenet5", {"a": 2})},
        {**base, "model": cache.checkpoint_digest(LENET5, "course-net", {"a": 1})},
        {**base, "split": cache.split_identity(dataclasses.replace(small, images=pixels))},
        {**base, "split": cache.split_identity(dataclasses.replace(small, labels=labels))},
        {**base, "split": cache.split_identity(data.take_first(mnist_test, 199))},
        {**base, "split": cache.split_identity(dataclasses.replace(small, split="train"))},
        {**base, "extra": None},
    ]
    renamed = dataclasses.replace(small.info, classes=tuple(f"c{i}" for i in range(10)))
    renormed = dataclasses.replace(small.info, mean=(0.5,))
    changed += [
        {**base, "split": cache.split_identity(dataclasses.replace(small, info=info))}
        for info in (renamed, renormed)
    ]
    resized = data.load_split("mnist", "test", data_root=shared_datasets, input_size=32)
    changed.append({**base, "split": cache.split_identity(data.take_first(resized, 200))})
    for parts in changed:
        cache.cached_arrays("test", parts, compute)
    assert len(calls) == 1 + len(changed)
    cache.cached_arrays("test", dict(reversed(list(base.items()))), compute)  # order is no part
    cache.cached_arrays("other-kind", base, compute)
    assert len(calls) == 2 + len(changed)
    assert len(entries()) == 1 + len(changed)


def test_a_split_digest_is_remembered_on_the_split_and_not_on_its_subsets(
    mnist_test: data.Split,
) -> None:
    digest = cache.split_digest(mnist_test)
    assert cache.split_digest(mnist_test) is digest  # the memo, not a second hash
    subset = data.take_first(mnist_test, 100)
    assert cache.split_digest(subset) != digest


def test_file_digest_follows_the_content(tmp_path: Path) -> None:
    copy = tmp_path / "w.safetensors"
    copy.write_bytes(LENET5.read_bytes())
    import hashlib

    assert cache.file_digest(copy) == hashlib.sha256(LENET5.read_bytes()).hexdigest()
    assert cache.file_digest(copy) == cache.file_digest(LENET5)  # content, not place
    blob = bytearray(copy.read_bytes())
    blob[-1] ^= 0xFF
    copy.write_bytes(bytes(blob))
    os.utime(copy, ns=(1, 1))  # even a file whose mtime went back is hashed again
    assert cache.file_digest(copy) == hashlib.sha256(bytes(blob)).hexdigest()


def test_state_digest_follows_the_tensors_and_the_structure() -> None:
    from dashboard import models

    torch.manual_seed(0)
    a = models.build_model("lenet5")
    torch.manual_seed(0)
    b = models.build_model("lenet5")
    torch.manual_seed(0)
    sigmoid = models.build_model("lenet5", activation="sigmoid")  # same tensors, other layers
    assert cache.state_digest(a) == cache.state_digest(b)
    assert cache.state_digest(sigmoid) != cache.state_digest(a)
    before = cache.state_digest(a)
    with torch.no_grad():
        next(a.parameters())[0].add_(1e-3)  # an optimizer step changes a tensor in place
    assert cache.state_digest(a) != before


# --------------------------------------------------------------------------- damage, atomicity


def one_entry(values: np.ndarray, name: str = "one entry") -> tuple[dict, Path]:
    parts = {"what": name}
    cache.cached_arrays("test", parts, lambda: {"v": values})
    cache.clear_memory()
    return parts, cache.entry_path("test", parts)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "flipped byte", "garbage", "empty", "another key's file", "header only"],
)
def test_a_damaged_entry_is_computed_again_never_trusted(damage: str) -> None:
    values = np.arange(10_000, dtype=np.float32)
    parts, path = one_entry(values)
    blob = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flipped byte":
        broken = bytearray(blob)
        broken[-100] ^= 0x01  # inside the array's bytes: only the checksum can tell
        path.write_bytes(bytes(broken))
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(blob)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "another key's file":
        _, other = one_entry(values + 1, "another")  # a valid entry of another key
        path.write_bytes(other.read_bytes())
    else:
        header_length = int.from_bytes(blob[:8], "little")
        path.write_bytes(blob[: 8 + header_length])
    compute, calls = counting({"v": values})
    got = cache.cached_arrays("test", parts, compute)
    assert calls == [1]
    np.testing.assert_array_equal(got["v"], values)
    cache.clear_memory()
    again = cache.cached_arrays("test", parts, compute)  # the rewritten entry reads
    assert calls == [1]
    np.testing.assert_array_equal(again["v"], values)


WRITER = """
import os, sys
import numpy as np
from dashboard.base import cache

def stall(fd):  # the whole temporary file is written: stop before it is renamed
    print("writing", flush=True)
    import time; time.sleep(600)

cache.os.fsync = stall
cache.cached_arrays("test", {"what": "killed"}, lambda: {"v": np.arange(1_000_000)})
"""


def test_a_writer_killed_mid_write_leaves_no_entry_that_reads(private_cache: Path) -> None:
    env = {**os.environ, "CNN_LENS_CACHE": str(private_cache)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    folder = cache.results_dir() / "test"
    leftovers = list(folder.iterdir())
    assert [p.name.startswith(cache.TEMP_PREFIX) for p in leftovers] == [True]
    assert leftovers[0].stat().st_size > 8_000_000  # it really was written to the end
    assert not cache.is_stored("test", {"what": "killed"})
    compute, calls = counting({"v": np.arange(1_000_000)})
    got = cache.cached_arrays("test", {"what": "killed"}, compute)
    assert calls == [1]
    np.testing.assert_array_equal(got["v"], np.arange(1_000_000))
    # The dead writer's temporary file goes once it is older than any live write could be.
    old = time.time() - cache.STALE_TEMP_S - 10
    os.utime(leftovers[0], (old, old))
    cache.evict()
    assert not leftovers[0].exists()
    assert len(entries()) == 1


def test_two_processes_writing_one_entry_leave_one_whole_entry(private_cache: Path) -> None:
    code = textwrap.dedent(
        """
        import numpy as np
        from dashboard.base import cache
        for _ in range(20):
            cache.clear_memory()
            path = cache.entry_path("test", {"what": "race"})
            path.unlink(missing_ok=True)
            cache.cached_arrays("test", {"what": "race"}, lambda: {"v": np.arange(300_000)})
        """
    )
    env = {**os.environ, "CNN_LENS_CACHE": str(private_cache)}
    writers = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env) for _ in range(2)
    ]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    assert len(entries()) == 1
    compute, calls = counting({"v": np.zeros(1)})
    np.testing.assert_array_equal(
        cache.cached_arrays("test", {"what": "race"}, compute)["v"], np.arange(300_000)
    )
    assert calls == []


# --------------------------------------------------------------------------- eviction


def test_the_least_recently_used_entries_go_first(monkeypatch: pytest.MonkeyPatch) -> None:
    block = np.zeros(25_000, dtype=np.float32)  # 100 kB an entry
    monkeypatch.setenv(cache.MAX_MB_ENV, str(330_000 / 2**20))  # room for three
    for name in "abc":
        cache.cached_arrays("test", {"entry": name}, lambda: {"v": block})
        time.sleep(0.05)  # file times tick in milliseconds
    cache.clear_memory()
    cache.cached_arrays("test", {"entry": "a"}, lambda: pytest.fail("a is on disk"))  # a read
    time.sleep(0.05)
    cache.cached_arrays("test", {"entry": "d"}, lambda: {"v": block})  # the fourth: b goes
    assert [cache.is_stored("test", {"entry": n}) for n in "abcd"] == [True, False, True, True]
    time.sleep(0.05)
    cache.cached_arrays("test", {"entry": "c"}, lambda: pytest.fail("c is in memory"))  # a read
    time.sleep(0.05)
    cache.clear_memory()
    cache.cached_arrays("test", {"entry": "e"}, lambda: {"v": block})  # a goes, not c
    assert [cache.is_stored("test", {"entry": n}) for n in "acde"] == [False, True, True, True]
    total = sum(p.stat().st_size for p in entries())
    assert total <= cache.max_bytes()


def test_an_entry_bigger_than_the_cap_is_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.MAX_MB_ENV, "0.01")
    got = cache.cached_arrays("test", {"big": 1}, lambda: {"v": np.zeros(100_000)})
    assert got["v"].shape == (100_000,)
    assert entries() == []


# --------------------------------------------------------------------------- predictions


def test_cached_predictions_equal_predict_and_report_progress(mnist_test: data.Split) -> None:
    loaded = checkpoints.load_checkpoint(LENET5)
    split = data.take_first(mnist_test, 600)
    model_id = cache.checkpoint_digest(LENET5, loaded.card.architecture, loaded.card.model_args)
    plain = metrics.predict(loaded.model, split)
    heard: list[tuple[int, int]] = []
    first = metrics.cached_predict(
        loaded.model, split, model_id, batch_size=256, progress=lambda d, t: heard.append((d, t))
    )
    assert heard == [(0, 600), (256, 600), (512, 600), (600, 600)]
    cache.clear_memory()
    heard.clear()
    again = metrics.cached_predict(
        loaded.model, split, model_id, progress=lambda d, t: heard.append((d, t))
    )
    assert heard == []  # read from disk: no work, no bar
    for pred in (first, again):
        np.testing.assert_array_equal(pred.probabilities, plain.probabilities)
        np.testing.assert_array_equal(pred.predicted, plain.predicted)
        np.testing.assert_array_equal(pred.labels, plain.labels)
        assert pred.classes == plain.classes
    assert first.key == again.key != ""


def evaluate(checkpoint: Path, cache_folder: Path, *extra: str) -> tuple[dict, str]:
    """`python -m dashboard evaluate` in its own process; → (its JSON, its stderr)."""
    env = {**os.environ, "CNN_LENS_CACHE": str(cache_folder)}
    done = subprocess.run(
        [sys.executable, "-m", "dashboard", "evaluate", str(checkpoint), *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout[done.stdout.index("{") :]), done.stderr


def test_the_command_line_and_the_app_share_predictions(
    private_cache: Path, shared_datasets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ["--data-root", str(shared_datasets)]
    first, said = evaluate(LENET5, private_cache, *root)
    assert "read from the cache" not in said
    second, said = evaluate(LENET5, private_cache, *root)  # another process reads it
    assert "read from the cache" in said
    assert second["confusion_matrix"] == first["confusion_matrix"]
    # the accuracy training measured and wrote on the card, on the same 10,000 images
    recorded = checkpoints.read_card(LENET5).metrics["test_accuracy"]
    assert second["accuracy"] == first["accuracy"] == pytest.approx(recorded)
    assert len(entries("predictions")) == 1

    # The app (this process) reads the same entry: classifying is forbidden here.
    from streamlit.testing.v1 import AppTest

    def refuse(*args, **kwargs):
        raise AssertionError("the app classified again instead of reading the cache")

    monkeypatch.setattr(metrics, "predict", refuse)
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300)
    app.switch_page("pages/6_Confusion_matrix.py")
    app.session_state["lens_model"] = "ckpt:trained/lenet5-mnist.safetensors"
    app.session_state["lens_dataset"] = "mnist"
    app.run()
    assert not app.exception, app.exception
    accuracy = next(m for m in app.metric if m.label == "Accuracy")
    assert accuracy.value == f"{first['accuracy']:.2%}"
    assert len(entries("predictions")) == 1
