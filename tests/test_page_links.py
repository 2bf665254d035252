"""Links never hold a server path: an uploaded model is named by its content hash and reopens
for anyone on that server while the upload is kept; a saved run by its name; a model the server
does not have is said, with the model shown instead."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import ui
from dashboard.base import paths
from dashboard.models import checkpoints, uploads
from tests.test_url_view import link_of, run

MODEL, ACTIVATIONS, COMPARE = "pages/1_Model.py", "pages/5_Activations.py", "pages/7_Compare.py"
SHIPPED = paths.TRAINED_DIR / "lenet5-mnist.safetensors"


@pytest.fixture(autouse=True)
def private_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Uploads and saved runs in temporary folders outside the repository (absolute paths)."""
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    return tmp_path


def session(page: str, query: dict[str, str] | None = None, **state) -> AppTest:
    """A new browser session: only the link (and `state`) to go on."""
    return run(page, query, **state)


def no_server_path(link: dict[str, str], *places: Path) -> None:
    for value in link.values():
        assert not value.startswith("/"), link
        assert all(str(place) not in value for place in places), link


def upload(app: AppTest, path: Path, architecture: str) -> str:
    """Upload `path` on the Model page as a user would; → the selected model's key."""
    app.radio(key="_model_source").set_value("Upload a state dict").run()
    content = (path.name, path.read_bytes(), "application/octet-stream")
    app.file_uploader(key="model_upload").set_value(content)
    app.selectbox(key="_model_upload_arch").set_value(architecture).run()
    next(b for b in app.button if b.label == "Load and select").click().run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app.session_state["lens_model"]


def test_an_upload_is_linked_by_its_content_hash_and_reopens_for_anyone(private_folders: Path):
    first = session(MODEL, lens_dataset="cifar10")
    key = upload(first, SHIPPED, "lenet5")
    digest = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()[:16]
    link = link_of(first)
    assert link["model"].startswith(f"upload:{digest}-")
    assert link["dataset"] == "mnist"  # adopted from the model's shape
    no_server_path(link, private_folders)
    assert uploads.find_link(link["model"]) == Path(key.removeprefix("ckpt:"))

    # Another browser opens the link on the Activations page: the same model, and its maps.
    other = session(ACTIVATIONS, {"model": link["model"], "image": "3"})
    assert other.session_state["lens_model"] == key
    assert key in other.session_state["lens_extra_models"]  # offered in its sidebar
    assert other.session_state["lens_dataset"] == "mnist"
    assert not other.warning, [w.value for w in other.warning]
    assert other.title[0].value == "Activations"
    assert link_of(other)["model"] == link["model"]
    no_server_path(link_of(other), private_folders)

    # Once the server no longer keeps the upload, the link says so and what shows instead.
    shutil.rmtree(Path(key.removeprefix("ckpt:")).parent)
    gone = session(ACTIVATIONS, {"model": link["model"], "dataset": "mnist"})
    default = ui.checkpoint_keys(paths.TRAINED_DIR)[0]
    assert gone.session_state["lens_model"] == default
    assert gone.warning[0].value == (
        f"The link's model {link['model']} is not on this server (an upload is kept only while "
        f"its file stays in the server's cache): showing {ui.model_label(default)} instead."
    )
    assert "model" not in link_of(gone) or not link_of(gone)["model"].startswith("upload:")
    # The note goes once the user picks a model.
    gone.selectbox(key="_lens_model").set_value("arch:lenet5").run()
    assert not [w for w in gone.warning if "not on this server" in w.value]


def test_a_saved_run_is_linked_by_its_name(private_folders: Path):
    saved = private_folders / "runs" / "my-run.safetensors"
    saved.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(SHIPPED.with_suffix(suffix), saved.with_suffix(suffix))
    key = ui.checkpoint_key(saved)
    first = session(ACTIVATIONS, lens_model=key)
    link = link_of(first)
    assert link["model"] == "run:my-run"
    no_server_path(link, private_folders)
    assert session(ACTIVATIONS, link).session_state["lens_model"] == key
    for bad in ("run:../trained/lenet5-mnist", "run:", "run:nope", "run:a\x00b", "/etc/passwd"):
        app = session(ACTIVATIONS, {"model": bad})
        assert app.session_state["lens_model"] != key, bad
        assert "is not on this server" in app.warning[0].value


def test_compare_names_model_b_in_links_without_paths(private_folders: Path):
    saved = private_folders / "runs" / "twin.safetensors"
    saved.parent.mkdir()
    base = paths.TRAINED_DIR / "study-lenet5-base.safetensors"
    for suffix in (".safetensors", ".json"):
        shutil.copy(base.with_suffix(suffix), saved.with_suffix(suffix))
    sgd = ui.checkpoint_key(paths.TRAINED_DIR / "study-lenet5-sgd.safetensors")
    app = session(COMPARE, lens_model=sgd, compare_b=ui.checkpoint_key(saved))
    link = link_of(app)
    assert link["b"] == "run:twin"
    no_server_path(link, private_folders)
    reopened = session(COMPARE, link)
    assert reopened.session_state["compare_b"] == ui.checkpoint_key(saved)
    shipped_b = session(COMPARE, {"model": "study-lenet5-sgd", "b": "study-lenet5-base"})
    assert shipped_b.session_state["compare_b"] == ui.checkpoint_key(base)


def test_link_names_of_uploads_are_checked(private_folders: Path):
    raw = uploads.store_upload(SHIPPED.read_bytes(), "net.safetensors")
    registered = uploads.register_upload(raw, "lenet5").path
    name = uploads.link_name(registered)
    assert name == f"upload:{raw.parent.name}-{registered.stem.rsplit('-', 1)[1]}"
    assert uploads.find_link(name) == registered
    assert uploads.link_name(raw) is None  # the raw upload is no model of its own
    assert uploads.link_name(SHIPPED) is None
    for bad in ("upload:../../x", f"{name}/..", name.upper(), "upload:" + "0" * 16 + "-00000000"):
        assert uploads.find_link(bad) is None, bad
    assert checkpoints.read_card(registered).architecture == "lenet5"
