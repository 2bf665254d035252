"""Shared test fixtures, and the session's own folders.

Before any test module imports the app, this file points every folder the app writes (its
cache, saved runs, settings, and the platform's home, cache and config folders) at one
temporary folder of this session, so a test run leaves the user's files alone; subprocesses
and the browser tests' `streamlit run` servers inherit it. The data root is the real datasets:
the full sets beside the repository (`../shared/datasets`, or `$CNN_LENS_TEST_DATA`) when they
are there, else the real samples that ship in `trained/data/` laid out the same way (what a
fresh clone has). Tests that read data carry the `reads_data` marker, so `-m reads_data` runs
just them; tests that need a full set skip, naming it, without it.
"""

from __future__ import annotations

import functools
import gzip
import inspect
import json
import os
import shutil
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
import pytest

if TYPE_CHECKING:  # conftest stays light: torch loads with the tests that need it
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINED_DATA = REPO_ROOT / "trained" / "data"


# --------------------------------------------------------------------------- the user's folders

APP_NAME = "cnn-lens"
# The variables this session redirects (below). pytest-xdist's workers inherit the controller's
# environment, already redirected: the user's own values travel to them in USER_ENV_VARIABLE.
REDIRECTED = (
    "CNN_LENS_CACHE", "CNN_LENS_RUNS", "CNN_LENS_CONFIG", "CNN_LENS_DATA", "TORCH_HOME", "HOME",
    "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
)  # fmt: skip
USER_ENV_VARIABLE = "CNN_LENS_TESTS_USER_ENV"
if USER_ENV_VARIABLE in os.environ:
    USER_ENV: dict[str, str | None] = json.loads(os.environ[USER_ENV_VARIABLE])
else:
    USER_ENV = {name: os.environ.get(name) for name in REDIRECTED}
    os.environ[USER_ENV_VARIABLE] = json.dumps(USER_ENV)


def _set_environment(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _user_folder(kind: str) -> Path:
    """platformdirs' folder of `kind` ("cache", "config") as the user's own environment has it."""
    current = {name: os.environ.get(name) for name in REDIRECTED}
    try:
        _set_environment(USER_ENV)
        return Path(getattr(platformdirs, f"user_{kind}_dir")(APP_NAME))
    finally:
        _set_environment(current)


# Where the app would write on this machine without the variables below: checked unchanged at
# the end of the run (tests/test_isolation.py).
USER_FOLDERS = (
    _user_folder("cache"),
    _user_folder("config"),
    REPO_ROOT / "runs",
    # and the folders the user's own variables name, if set (their data root among them)
    *(
        Path(USER_ENV[name]).expanduser()  # type: ignore[arg-type]
        for name in ("CNN_LENS_CACHE", "CNN_LENS_RUNS", "CNN_LENS_CONFIG", "CNN_LENS_DATA")
        if USER_ENV.get(name)
    ),
)


def folder_listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` (the folder itself included) → (size, mtime in ns)."""
    listing: dict[str, tuple[int, int]] = {}
    if not folder.exists():
        return listing
    for current, dirs, files in os.walk(folder):
        for name in [".", *dirs, *files]:
            path = os.path.normpath(os.path.join(current, name))
            try:
                stat = os.lstat(path)
            except FileNotFoundError:  # removed while walking
                continue
            listing[path] = (stat.st_size, stat.st_mtime_ns)
    return listing


USER_FOLDERS_AT_START = {str(folder): folder_listing(folder) for folder in USER_FOLDERS}


def changed_user_folders() -> dict[str, list[str]]:
    """The user's folders whose entries, sizes or modification times differ from the start of
    the run → the first ten paths that differ in each."""
    changed = {}
    for folder, before in USER_FOLDERS_AT_START.items():
        after = folder_listing(Path(folder))
        diff = sorted(
            path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
        )
        if diff:
            changed[folder] = diff[:10]
    return changed


# --------------------------------------------------------------------------- this session's folders

SESSION_DIR = Path(tempfile.mkdtemp(prefix="cnn-lens-tests-"))
HOME = SESSION_DIR / "home"
# The app's own variables (see README: Datasets and where data lives), then the platform's
# defaults behind them, so a path that forgot its variable still lands here.
SESSION_ENV = {
    "CNN_LENS_CACHE": SESSION_DIR / "cache",
    "CNN_LENS_RUNS": SESSION_DIR / "runs",
    "CNN_LENS_CONFIG": SESSION_DIR / "config",
    "TORCH_HOME": SESSION_DIR / "torch",
    "HOME": HOME,
    "XDG_CACHE_HOME": HOME / ".cache",
    "XDG_CONFIG_HOME": HOME / ".config",
    "XDG_DATA_HOME": HOME / ".local" / "share",
    "XDG_STATE_HOME": HOME / ".local" / "state",
}
for _name, _folder in SESSION_ENV.items():
    _folder.mkdir(parents=True, exist_ok=True)
    os.environ[_name] = str(_folder)


# --------------------------------------------------------------------------- the data tests read

# The full real sets: MNIST in torchvision's raw layout, CIFAR-10 as its JPEG image folder.
FULL_DATASETS = Path(
    os.environ.get("CNN_LENS_TEST_DATA") or REPO_ROOT.parent / "shared" / "datasets"
).resolve()
FULL_SET_FOLDERS = {"MNIST": Path("MNIST", "raw"), "CIFAR-10": Path("cifar10-jpg")}
FULL_SETS = frozenset(
    name for name, folder in FULL_SET_FOLDERS.items() if (FULL_DATASETS / folder).is_dir()
)


def _sample_root(target: Path) -> Path:
    """A data root holding each full set that is there (linked) and the shipped sample of each
    one that is not, in the same layouts: the real MNIST sample's IDX files unpacked (as
    torchvision keeps them) and the CIFAR-10 sample's JPEG folder copied."""
    mnist, cifar = target / FULL_SET_FOLDERS["MNIST"], target / FULL_SET_FOLDERS["CIFAR-10"]
    mnist.parent.mkdir(parents=True)
    if "MNIST" in FULL_SETS:
        mnist.symlink_to(FULL_DATASETS / FULL_SET_FOLDERS["MNIST"], target_is_directory=True)
    else:
        mnist.mkdir()
        for packed in sorted((TRAINED_DATA / "mnist-sample").glob("*.gz")):
            (mnist / packed.stem).write_bytes(gzip.decompress(packed.read_bytes()))
    if "CIFAR-10" in FULL_SETS:
        cifar.symlink_to(FULL_DATASETS / FULL_SET_FOLDERS["CIFAR-10"], target_is_directory=True)
    else:
        for split in ("train", "test"):
            shutil.copytree(TRAINED_DATA / "cifar10-sample" / split, cifar / split)
    return target


TEST_DATA = FULL_DATASETS if len(FULL_SETS) == 2 else _sample_root(SESSION_DIR / "shipped-samples")
# Pages, commands and servers under test read the same data unless a test says otherwise.
os.environ["CNN_LENS_DATA"] = str(TEST_DATA)


def full_set_missing(name: str) -> str:
    """Why a test that needs the full `name` set ("MNIST", "CIFAR-10") skips, or ""."""
    if name in FULL_SETS:
        return ""
    return (
        f"needs the full {name} set, not found at {FULL_DATASETS / FULL_SET_FOLDERS[name]} "
        "(the shipped sample stands in; set CNN_LENS_TEST_DATA to run it)"
    )


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The data root with MNIST/raw and cifar10-jpg: the full sets, or the shipped samples."""
    return TEST_DATA


# --------------------------------------------------------------------------- markers and hooks

# Page tests (AppTest) and browser tests drive the app, whose pages show dataset images read
# from the session's data root (CNN_LENS_DATA): they read data, except in these modules, whose
# pages (Home, Shape flow) show none. A test drives the app when its code, a fixture of its or a
# helper it calls names one of these. Every other test that reads data depends on
# `shared_datasets` (perhaps through another fixture); the audit below catches one that reads
# it otherwise.
APP_DRIVERS = frozenset({"AppTest", "run_page", "chromium_page", "streamlit_server", "app_url"})
PAGES_WITHOUT_DATA = frozenset({"test_app.py", "test_browser.py", "test_page_shape_flow.py"})


def _names_in(code: types.CodeType) -> set[str]:
    """Global and attribute names a function's code uses, its inner functions' included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_in(const)
    return names


@functools.cache
def _app_drivers_of(module: types.ModuleType) -> frozenset[str]:
    """APP_DRIVERS and every function or fixture of `module` that reaches one of them."""
    codes = {}
    for name, value in vars(module).items():
        function = inspect.unwrap(value)  # a fixture's function is its __wrapped__
        if inspect.isfunction(function):
            codes[name] = _names_in(function.__code__)
    drivers = set(APP_DRIVERS)
    while True:
        more = {name for name, names in codes.items() if names & drivers} - drivers
        if not more:
            return frozenset(drivers)
        drivers |= more


def _reads_data(item: pytest.Item) -> bool:
    if "shared_datasets" in getattr(item, "fixturenames", ()):
        return True
    if item.path.name in PAGES_WITHOUT_DATA or not isinstance(item, pytest.Function):
        return False
    drivers = _app_drivers_of(item.module)
    used = _names_in(item.function.__code__) | set(item.fixturenames)
    return bool(used & drivers)


# Files of the data root opened by the test running now, whatever reads them (audit events:
# Python's own open and os.scandir, in this process).
_DATA_FOLDERS = tuple(str(folder) + os.sep for folder in {TEST_DATA, FULL_DATASETS})
_data_opened: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event in ("open", "os.scandir", "os.listdir") and args:
        path = args[0]
        if isinstance(path, str | os.PathLike) and os.fspath(path).startswith(_DATA_FOLDERS):
            _data_opened.append(os.fspath(path))


sys.addaudithook(_audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _data_opened.clear()
    result = yield
    _check_marked(item)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    _data_opened.clear()
    result = yield
    _check_marked(item)
    return result


def _check_marked(item: pytest.Item) -> None:
    """A test that read the datasets runs again on the samples only if it is marked."""
    if _data_opened and not item.get_closest_marker("reads_data"):
        pytest.fail(
            f"read {_data_opened[0]} but is not marked reads_data: ask for the "
            "shared_datasets fixture, or add @pytest.mark.reads_data",
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reads_data: reads MNIST or CIFAR-10 (the full sets or the shipped samples)"
    )
    config.addinivalue_line(
        "markers", "full_set(name): needs the full set (MNIST or CIFAR-10); skipped without it"
    )
    config.addinivalue_line("markers", "end_of_run: checks the whole run, so it runs last")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _reads_data(item):
            item.add_marker(pytest.mark.reads_data)
        for marker in item.iter_markers("full_set"):
            reason = full_set_missing(marker.args[0])
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
    # The checks of the whole run come last, after everything they watch.
    last = [item for item in items if item.get_closest_marker("end_of_run")]
    items[:] = [item for item in items if item not in last] + last


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under pytest-xdist the end-of-run tests run in one worker while another may still be
    running: the controller looks at the user's folders again once every worker is done."""
    if hasattr(session.config, "workerinput"):  # a worker: its controller checks
        return
    changed = changed_user_folders()
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the user's folders changed during the test run: {changed}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- threads

THREAD_COUNTS: list[tuple[str, int, int]] = []  # (module, Python threads, OS threads) after it


def os_threads() -> int:
    """This process's OS threads (torch's and the C libraries' pools included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except FileNotFoundError:  # not Linux: Python's own threads are all we can count
        return threading.active_count()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if THREAD_COUNTS:
        python = max(THREAD_COUNTS, key=lambda c: c[1])
        native = max(THREAD_COUNTS, key=lambda c: c[2])
        terminalreporter.write_line(
            f"threads left after a module: at most {python[1]} Python threads (after "
            f"{python[0]}), {native[2]} OS threads (after {native[0]})"
        )


@pytest.fixture(scope="module", autouse=True)
def count_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Threads left after each module, for the check at the end of the run."""
    yield
    THREAD_COUNTS.append((request.path.name, threading.active_count(), os_threads()))


# --------------------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="session")
def lenet5_mnist_checkpoint(
    shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A real LeNet-5 trained by the CLI for one epoch on 8,000 MNIST digits (~92 % on the test
    split): seconds on an idle machine, and mistakes enough to browse."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("checkpoints") / "lenet5-test"
    command = [sys.executable, "-m", "dashboard", "train", "--model", "lenet5"]
    command += ["--dataset", "mnist", "--epochs", "1", "--limit-train", "8000", "--seed", "0"]
    command += ["--limit-test", "1000"]  # the card's accuracy only; tests measure their own
    command += ["--data-root", str(shared_datasets), "--out", str(out)]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    return out.with_suffix(".safetensors")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny-model tests (restored after)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served headless for one browser-test module, with an empty runs/ folder: the
    shipped checkpoints only (modules that need saved runs override this fixture)."""
    from tests.browser import require_chromium, streamlit_server

    require_chromium()
    runs = tmp_path_factory.mktemp("runs")
    with streamlit_server(env={"CNN_LENS_RUNS": str(runs)}) as url:
        yield url


@pytest.fixture
def allowed_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path, whose folders the app may read as if the server's owner allowed them (in the
    settings file of a config folder of the test's own, which servers started here inherit)."""
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    monkeypatch.setenv("CNN_LENS_CONFIG", str(config))
    (config / "settings.json").write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))
    return tmp_path


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Download buttons' deferred callables by file name, as Streamlit registers them (the real
    registration still runs; the test keeps the callable so it can 'click')."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    seen: dict = {}
    register = MediaFileManager.add_deferred

    def keep(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        seen[file_name] = (data_callable, mimetype)
        return register(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    return seen


# The shipped LeNet-5's layers with (C, H, W) outputs, in forward order.
LENET5_MAP_LAYERS = [
    "features.conv1",
    "features.relu1",
    "features.pool1",
    "features.conv2",
    "features.relu2",
    "features.pool2",
]


def snapshot(model: torch.nn.Module) -> dict:
    """What a look inside must leave as it found: weights, modes, grads, in-place flags."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
    }
