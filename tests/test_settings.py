"""The data root is remembered on the server (the settings file) and every later session uses it;
the app reads data roots and image folders only under the roots the server's owner allowed;
every "not found" message says where to set the data root and which layouts are read."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import data
from dashboard.base import paths, settings
from dashboard.base.errors import DatasetUnavailableError, LensError
from tests.conftest import REPO_ROOT
from tests.test_hostile_cli import write_pngs

APP = str(REPO_ROOT / "app.py")
MODEL, ACTIVATIONS = "pages/1_Model.py", "pages/5_Activations.py"
REFUSED = "http://127.0.0.1:9"  # nothing listens: a download attempt fails at once
FOLDER = "folder (your own images)"
WHERE_TO_SET = ("Model page's Data root field", "--data-root", "$CNN_LENS_DATA")
LAYOUTS = ("MNIST/raw/", "FashionMNIST/raw/", "cifar-10-batches-py/", "cifar10-jpg/")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A server with nothing set: no --data-root, no $CNN_LENS_DATA, an empty settings folder,
    its own per-user cache (so the default data root is empty), downloads refused."""
    monkeypatch.delenv(paths.DATA_ROOT_ENV, raising=False)
    monkeypatch.setenv(settings.CONFIG_ENV, str(tmp_path / "config"))
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # the default data root
    monkeypatch.setattr(sys, "argv", ["app.py"])
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, REFUSED)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return tmp_path


def owner_allows(*roots: Path) -> None:
    """What the person running the server writes into settings.json by hand."""
    path = settings.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"allowed_roots": [str(r) for r in roots], "theme": "kept"}))


def session(page: str, **state) -> AppTest:
    """A new browser session opening `page`."""
    app = AppTest.from_file(APP, default_timeout=180).switch_page(page)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def markdown(app: AppTest) -> list[str]:
    return [m.value for m in app.markdown]


# --------------------------------------------------------------------------- the file


def test_the_settings_file_is_read_tolerantly_and_written_atomically(server: Path):
    assert settings.load() == settings.Settings()  # no file: defaults
    owner_allows(server / "images")
    written = settings.save_data_root(server / "data")
    assert written == server / "config" / "settings.json"
    assert json.loads(written.read_text()) == {
        "allowed_roots": [str(server / "images")],  # the owner's entries are kept …
        "theme": "kept",  # … and keys this version does not know
        "data_root": str(server / "data"),
    }
    assert sorted(p.name for p in written.parent.iterdir()) == ["settings.json"]  # no temp left
    assert settings.load() == settings.Settings(str(server / "data"), (str(server / "images"),))
    settings.save_data_root(None)
    assert "data_root" not in json.loads(written.read_text())

    for broken in ("{not json", "[1, 2]", '{"data_root": 7, "allowed_roots": "/"}'):
        written.write_text(broken)
        loaded = settings.load()
        assert (loaded.data_root, loaded.allowed_roots) == (None, ())
        assert loaded.problem
        assert "\n" not in loaded.problem
    written.write_text("{not json")
    with pytest.raises(LensError, match="fix or remove it"):
        settings.save_data_root(server / "data")  # never overwrites what it cannot read
    assert written.read_text() == "{not json"


def test_the_data_root_order_is_option_then_environment_then_settings_then_cache(server: Path):
    assert paths.data_root() == server / "user-cache" / "cnn-lens" / "data"
    settings.save_data_root(server / "from-settings")
    assert paths.data_root() == server / "from-settings"
    os.environ[paths.DATA_ROOT_ENV] = str(server / "from-env")
    try:
        assert paths.data_root() == server / "from-env"
        assert paths.data_root(server / "from-option") == server / "from-option"
    finally:
        del os.environ[paths.DATA_ROOT_ENV]


def test_server_options_come_after_the_double_dash():
    argv = ["--data-root", "/srv/d", "--allow-root", "/a", "--allow-root", "/b", "-q", "x.py"]
    assert settings.server_options(argv) == settings.ServerOptions("/srv/d", ("/a", "/b"))
    assert settings.server_options(["--allow-root"]) == settings.ServerOptions()  # no crash
    assert settings.server_options([]) == settings.ServerOptions()


# --------------------------------------------------------------------------- remembered


def test_a_data_root_set_in_the_app_is_used_by_every_later_session_and_link(
    server: Path, shared_datasets: Path
):
    owner_allows(shared_datasets)
    first = session(MODEL, lens_model="ckpt:trained/lenet5-mnist.safetensors")
    sources = [t for t in markdown(first) if t.startswith("**Test set:**")]
    assert sources[0].startswith("**Test set:** bundled MNIST sample")  # the empty default
    first.text_input(key="_lens_data_root").input(str(shared_datasets)).run()
    assert not first.exception
    assert not first.error, [e.value for e in first.error]
    assert settings.load().data_root == str(shared_datasets)
    assert settings.load().allowed_roots == (str(shared_datasets),)  # the owner's, untouched
    full = data.load_split("mnist", "test", data_root=shared_datasets).source
    assert f"**Test set:** {full}" in markdown(first)

    # A reload is a new session: the full set, without anyone setting anything.
    reloaded = session(MODEL, lens_model="ckpt:trained/lenet5-mnist.safetensors")
    assert reloaded.text_input(key="_lens_data_root").value == str(shared_datasets)
    assert f"**Test set:** {full}" in markdown(reloaded)
    assert not [w.value for w in reloaded.warning if "bundled sample" in w.value]

    # A shared CIFAR-10 link opened in a fresh session finds CIFAR-10 too.
    link = AppTest.from_file(APP, default_timeout=180).switch_page(ACTIVATIONS)
    link.query_params["model"] = "resnet18-small-cifar10"
    link.query_params["dataset"] = "cifar10"
    link.run()
    assert not link.exception
    assert not link.error, [e.value for e in link.error]
    assert link.session_state["lens_dataset"] == "cifar10"
    assert link.title[0].value == "Activations"


def test_the_data_root_field_offers_only_allowed_folders(server: Path, shared_datasets: Path):
    owner_allows(shared_datasets)
    app = session(MODEL)
    for outside in ("/usr/share", "/", "/proc", str(server)):
        app.text_input(key="_lens_data_root").input(outside).run()
        assert not app.exception, app.exception
        assert len(app.error) == 1, [e.value for e in app.error]
        message = app.error[0].value
        assert message.startswith(f"{outside} is outside the folders this server lets the app")
        assert "--allow-root DIR" in message
        assert "allowed_roots" in message
        assert settings.load().data_root is None  # nothing remembered
    assert app.text_input(key="_lens_data_root").value == str(paths.data_root())  # unchanged


def test_a_data_root_fixed_by_the_server_is_shown_and_not_editable(
    server: Path, shared_datasets: Path, monkeypatch: pytest.MonkeyPatch
):
    """`streamlit run app.py -- --data-root DIR`: the script sees the options after `--`."""
    monkeypatch.setattr(sys, "argv", ["app.py", "--data-root", str(shared_datasets)])
    app = session(MODEL)
    field = app.text_input(key="_lens_data_root_fixed")
    assert field.value == str(shared_datasets)
    assert field.disabled
    assert any("Set for this server by --data-root" in c.value for c in app.caption)
    full = data.load_split("mnist", "test", data_root=shared_datasets).source
    assert f"**Test set:** {full}" in markdown(app)


# --------------------------------------------------------------------------- allowed roots


@pytest.mark.parametrize("folder", ["/usr/share", "/", "/proc", "/etc/../usr/share/"])
def test_an_image_folder_outside_the_allowed_roots_is_never_read(server: Path, folder: str):
    app = session(MODEL, lens_dataset=FOLDER, lens_folder=folder)
    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == 2  # under the field, and where the page would be
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"{folder} is outside the folders this server lets the app read")
    assert "streamlit run app.py -- --allow-root DIR" in errors[0]
    assert str(settings.settings_path()) in errors[0]
    assert not app.title  # the page stopped: nothing of the folder listed
    assert not (paths.cache_dir() / "folders").exists()  # and nothing decoded


def test_a_link_inside_an_allowed_root_that_points_out_is_refused(server: Path):
    images = server / "images"
    images.mkdir()
    (images / "escape").symlink_to("/usr/share")
    owner_allows(images)
    app = session(MODEL, lens_dataset=FOLDER, lens_folder=str(images / "escape"))
    assert app.error[0].value.startswith(f"{images / 'escape'} is outside the folders")


def test_the_server_owner_allows_more_roots_on_the_command_line(
    server: Path, monkeypatch: pytest.MonkeyPatch
):
    shapes = server / "class-images" / "shapes"
    for name, seed in (("a", 1), ("b", 2)):
        write_pngs(shapes / name, 10, seed=seed)
    refused = session(MODEL, lens_dataset=FOLDER, lens_folder=str(shapes))
    assert refused.error[0].value.startswith(f"{shapes} is outside")
    monkeypatch.setattr(sys, "argv", ["app.py", "--allow-root", str(server / "class-images")])
    allowed = session(MODEL, lens_dataset=FOLDER, lens_folder=str(shapes))
    assert not allowed.error, [e.value for e in allowed.error]
    assert "**Classes:** a, b" in markdown(allowed)
    # The same folder under the app's own cache is allowed by default.
    cached = paths.cache_root() / "mine"
    for name, seed in (("a", 1), ("b", 2)):
        write_pngs(cached / name, 10, seed=seed)
    monkeypatch.setattr(sys, "argv", ["app.py"])
    assert not session(MODEL, lens_dataset=FOLDER, lens_folder=str(cached)).error


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder: no permission error")
def test_an_unreadable_folder_is_a_message(server: Path):
    locked = paths.cache_root() / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0)
    try:
        app = session(MODEL, lens_dataset=FOLDER, lens_folder=str(locked))
        assert not app.exception
        assert app.error[0].value.startswith(f"cannot read {locked}: Permission denied")
    finally:
        locked.chmod(0o755)


# --------------------------------------------------------------------------- not found


def test_every_not_found_message_says_where_to_set_the_data_root(server: Path):
    empty = server / "empty"
    for name in ("fashion-mnist", "cifar100"):
        with pytest.raises(DatasetUnavailableError) as caught:
            data.load_split(name, "test", data_root=empty, download=False)
        message = str(caught.value)
        assert "\n" not in message
        for words in (*WHERE_TO_SET, *LAYOUTS):
            assert words in message, (name, words)
    sample = data.load_split("mnist", "test", data_root=empty, download=False)
    assert sample.is_sample
    assert all(words in sample.source for words in WHERE_TO_SET)
    # The page says it too, in one line.
    app = session(MODEL, lens_dataset="fashion-mnist")
    shown = [e.value for e in app.error]
    assert len(shown) == 1
    assert all(words in shown[0] for words in (*WHERE_TO_SET, *LAYOUTS))
    mnist = session(MODEL, lens_dataset="mnist")
    warning = next(w.value for w in mnist.warning if "bundled sample" in w.value)
    assert all(words in warning for words in (*WHERE_TO_SET, *LAYOUTS))
