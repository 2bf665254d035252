"""A test run leaves the user alone: every folder the app writes is this session's temporary
folder (here and in the processes it starts), the user's own cache, settings and runs/ folders
are unchanged at the end of the run, and no test leaves threads behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import platformdirs
import pytest

from dashboard import data
from dashboard.base import paths
from dashboard.training import TrainConfig, runs
from tests import conftest
from tests.conftest import REPO_ROOT, SESSION_DIR, TEST_DATA

# Threads a test may leave running for good: a few Python threads of libraries started once
# (Streamlit's caches, an HTTP server of a module) and torch's pools of OS threads. A leak of
# one thread per test or per page run crosses these bounds within a few modules.
MAX_PYTHON_THREADS = 12
MAX_OS_THREADS = 48


def _inside(path: Path | str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_every_folder_the_app_writes_is_this_sessions() -> None:
    for name in ("CNN_LENS_CACHE", "CNN_LENS_RUNS", "CNN_LENS_CONFIG", "TORCH_HOME", "HOME"):
        assert _inside(os.environ[name], SESSION_DIR), name
    assert _inside(paths.cache_dir(), SESSION_DIR)
    assert _inside(paths.RUNS_DIR, SESSION_DIR)
    assert paths.data_root() == TEST_DATA
    # A process the tests start (the command line, `streamlit run`) sees the same folders.
    script = (
        "import json, os, platformdirs; from dashboard.base import paths; print(json.dumps(["
        "str(paths.cache_dir()), str(paths.RUNS_DIR), str(paths.data_root()), "
        "os.environ['CNN_LENS_CONFIG'], platformdirs.user_cache_dir('cnn-lens'), "
        "platformdirs.user_config_dir('cnn-lens')]))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    cache, runs, data_root, config, *platform = json.loads(answer.stdout)
    for folder in (cache, runs, config, *platform):
        assert _inside(folder, SESSION_DIR), folder
    assert Path(data_root) == TEST_DATA


@pytest.mark.reads_data
def test_the_data_tests_read_is_real_and_says_which_set() -> None:
    """The full sets when they are beside the repository, else the shipped samples."""
    mnist = data.load_split("mnist", "train", download=False)
    cifar = data.load_split("cifar10", "test", download=False)
    if "MNIST" in conftest.FULL_SETS:
        assert len(mnist) == 60_000
    else:  # the shipped sample: the first 10,000 training digits of the real set
        assert len(mnist) == 10_000
        assert mnist.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    if "CIFAR-10" in conftest.FULL_SETS:
        assert len(cifar) == 10_000
    else:
        assert len(cifar) == 1_000
        assert _inside(TEST_DATA / "cifar10-jpg", SESSION_DIR)
    assert cifar.source.startswith("CIFAR-10 (JPEG copy)")
    assert cifar.labels.bincount().tolist() == [len(cifar) // 10] * 10


def _threads_settle_to(limit: tuple[int, int], seconds: float = 10.0) -> tuple[int, int]:
    """(Python, OS) thread counts once they are within `limit`, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        now = threading.active_count(), conftest.os_threads()
        if (now[0] <= limit[0] and now[1] <= limit[1]) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def test_page_runs_and_training_runs_leave_no_thread_behind(tmp_path: Path) -> None:
    """Each AppTest run starts a script thread and each training run a thread of its own: all
    end with their run. Five more of each leave the counts where one of each left them."""
    from streamlit.testing.v1 import AppTest  # here: the module's other tests read no pages

    def shape_flow_page() -> None:
        app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300)
        app.switch_page("pages/3_Shape_flow.py")
        app.session_state["lens_model"] = "arch:course-net"
        app.run()
        assert not app.exception, app.exception

    # The shipped MNIST sample (an empty data root), a few batches of it.
    train = data.take_first(data.load_split("mnist", "train", data_root=tmp_path), 256)
    test = data.take_first(data.load_split("mnist", "test", data_root=tmp_path), 128)
    spec = runs.RunSpec("course-net", "mnist", TrainConfig(epochs=1, seed=0))

    def training_run() -> None:
        run = runs.start_run(spec, train, test, heartbeat_timeout=300)
        assert run.join(300), run.reason
        assert run.status == runs.FINISHED, run.reason

    shape_flow_page()  # the first of each starts what stays for good (torch's pools, caches)
    training_run()
    before = _threads_settle_to((threading.active_count(), conftest.os_threads()), 0)
    for _ in range(5):
        shape_flow_page()
        training_run()
    after = _threads_settle_to(before)
    assert after[0] <= before[0], threading.enumerate()
    assert after[1] <= before[1] + 2  # a leak of one OS thread a run would add five


@pytest.mark.end_of_run
def test_no_test_leaves_threads_behind() -> None:
    """Python and OS threads after every module so far stay within fixed bounds (a leak grows
    with the number of tests and ends in "can't start new thread")."""
    counts = [*conftest.THREAD_COUNTS, ("now", threading.active_count(), conftest.os_threads())]
    too_many = [c for c in counts if c[1] > MAX_PYTHON_THREADS or c[2] > MAX_OS_THREADS]
    names = sorted(t.name for t in threading.enumerate())
    assert not too_many, f"threads (module, Python, OS) beyond bounds: {too_many}; now: {names}"


@pytest.mark.end_of_run
def test_nothing_landed_in_the_apps_default_folders() -> None:
    """The cache and config folders the app uses when its variables are not set, under this
    session's HOME: empty at the end of the run, so no code path (in this process or any it
    started) wrote past CNN_LENS_CACHE / CNN_LENS_CONFIG. Exact even while other programs use
    the user's own folders."""
    defaults = [platformdirs.user_cache_dir("cnn-lens"), platformdirs.user_config_dir("cnn-lens")]
    assert all(_inside(folder, SESSION_DIR) for folder in defaults)
    written = {folder: sorted(conftest.folder_listing(Path(folder)))[:10] for folder in defaults}
    assert not any(written.values()), f"written outside the app's variables: {written}"


@pytest.mark.end_of_run
def test_the_users_cache_config_and_runs_are_unchanged_by_the_run() -> None:
    """The user's cache and config folders (platformdirs') and the repository's runs/, as at
    the start of the run: same entries, sizes and modification times."""
    changed = conftest.changed_user_folders()
    assert not changed, (
        f"changed during the test run (by a test, or another program writing there): {changed}"
    )
