"""Every cache key holds everything its value depends on (hostile-input issue, item 2): two
sessions that differ only in class names, image folder, uploaded checkpoint or data root see
each their own figures and text. The caches are shared by every session of a server (and the
result cache by every process), so session B runs after session A in this process, sharing
them; its pages must then show exactly what B shows on a server that never saw A (every cache
emptied, in memory and on disk) — and nothing of A's class names.

Real MNIST digits written as PNG files, the shipped checkpoints, the pages under AppTest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Dataframe, Table

from dashboard import data, ui
from dashboard.base import cache
from dashboard.models import uploads
from tests.conftest import REPO_ROOT

APP = str(REPO_ROOT / "app.py")
LENET5 = "ckpt:trained/lenet5-mnist.safetensors"
# (name, page, extra session state): every page that shows data, models or class names.
VISITS = (
    ("home", "app.py", {}),
    ("filters", "pages/4_Filters.py", {}),
    ("activations", "pages/5_Activations.py", {}),
    ("mistakes", "pages/5_Activations.py", {"lens_image_mode": "misclassified"}),
    ("confusion", "pages/6_Confusion_matrix.py", {}),
    ("compare", "pages/7_Compare.py", {}),
    ("neuron", "pages/8_Convolution_lab.py", {"lens_lab_tab": "Any neuron"}),
    ("classic", "pages/8_Convolution_lab.py", {"lens_lab_tab": "Classic kernels"}),
    ("channels", "pages/9_Channels.py", {}),
    ("representations", "pages/10_Representations.py", {}),
)


# Ids: an element's is a hash of its content (compared in full anyway); a download built on
# click has a random one.
CACHE_FOLDER = re.compile(r"cache-\d+")
IDS = re.compile(r'^(id|deferred_file_id): ".*"$', re.MULTILINE)


def contents(app: AppTest) -> list[str]:
    """Everything the page drew: every element's message (texts, figures' JSON, tables' bytes,
    images' content-addressed URLs, widgets and their options), in page order."""
    found: list[str] = []

    def walk(node: object) -> None:
        proto = getattr(node, "proto", None)
        if isinstance(node, (Dataframe, Table)):  # the table's values, readable
            found.append(f"{type(node).__name__}: {node.value.to_string()}")
        elif getattr(proto, "spec", ""):  # a plotly figure: its JSON, keys in one order
            found.append(f"figure: {json.dumps(json.loads(proto.spec), sort_keys=True)}")
        elif proto is not None:
            found.append(IDS.sub("", f"{type(node).__name__}:\n{proto}"))
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    walk(app._tree)
    # Each fresh server has a cache folder of its own (cache-0, cache-1, …), which the folder
    # field's help names among the folders the app may read: the same for the user.
    return [CACHE_FOLDER.sub("cache-N", text) for text in found]


def session(state: dict[str, object]) -> dict[str, list[str]]:
    """One browser session's visit of every page: a new AppTest per page (a new session),
    sharing this process's caches as a server's sessions do."""
    shown = {}
    for name, page, extra in VISITS:
        app = AppTest.from_file(APP, default_timeout=300).switch_page(page)
        for key, value in {**state, **extra}.items():
            app.session_state[key] = value
        app.run()
        assert not app.exception, (name, app.exception)
        shown[name] = contents(app)
    return shown


@pytest.fixture
def fresh_server(allowed_tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """→ a function that empties every cache, in memory and on disk, as a new server sees it.
    The server's owner allows the test's folders."""
    tmp_path = allowed_tmp_path
    count = iter(range(100))

    def empty() -> None:
        st.cache_data.clear()
        st.cache_resource.clear()
        cache.clear_memory()
        monkeypatch.setenv("CNN_LENS_CACHE", str(tmp_path / f"cache-{next(count)}"))

    empty()
    yield empty
    empty()


def first_difference(page: str, seen: list[str], expected: list[str]) -> str:
    """Where B's page after A's visit first differs from B's page alone, in a few words."""
    if len(seen) != len(expected):
        return f"{page}: {len(seen)} elements after A's visit, {len(expected)} alone"
    pairs = enumerate(zip(seen, expected, strict=True))
    line, (here, there) = next((i, pair) for i, pair in pairs if pair[0] != pair[1])
    at = next((i for i, (a, b) in enumerate(zip(here, there, strict=False)) if a != b), 0)
    window = slice(max(0, at - 150), at + 150)
    return f"{page}, element {line}:\nafter A: …{here[window]}…\nalone:   …{there[window]}…"


def isolated(a: dict, b: dict, empty, *, a_marks: tuple[str, ...] = ()) -> None:
    """B after A (caches shared) shows exactly what B alone shows, and none of `a_marks`."""
    seen_a = session(a)
    after_a = session(b)
    empty()
    alone = session(b)
    for name, _, _ in VISITS:
        assert after_a[name] == alone[name], first_difference(name, after_a[name], alone[name])
        for mark in a_marks:
            assert not any(mark in line for line in after_a[name]), (name, mark)
    assert seen_a != alone  # the two sessions really show different things


@pytest.fixture(scope="module")
def digits(shared_datasets: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 150 real MNIST test digits and their labels."""
    test = data.load_split("mnist", "test", data_root=shared_datasets)
    return test.images[:150, 0].numpy(), test.labels[:150].numpy()


def image_folder(root: Path, names: list[str], pixels: np.ndarray, labels: np.ndarray) -> str:
    """An ImageFolder of real digits as PNG files, class folder `names[label]`; → its path."""
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(image).save(folder / f"{i:04d}.png")
    return str(root)


def folder_state(path: str, model: str) -> dict[str, object]:
    return {"lens_model": model, "lens_dataset": ui.FOLDER_CHOICE, "lens_folder": path}


PUBLIC = [f"public{i}" for i in range(10)]
SECRET = [f"SECRET-patient-{i}" for i in range(10)]


@pytest.mark.parametrize("model", ["arch:lenet5", LENET5])
def test_class_names_of_one_session_never_show_in_another(
    tmp_path: Path, digits, fresh_server, model: str
) -> None:
    """Identical images, other class names: the prediction bars once showed A's names in B."""
    public = image_folder(tmp_path / "public", PUBLIC, *digits)
    secret = image_folder(tmp_path / "secret", SECRET, *digits)
    isolated(
        folder_state(public, model), folder_state(secret, model), fresh_server, a_marks=("public",)
    )


def test_a_folder_renamed_in_place_shows_its_new_names(tmp_path: Path, digits, fresh_server):
    """One path, its class folders renamed between the sessions (a new class list)."""
    folder = tmp_path / "images"
    image_folder(folder, PUBLIC, *digits)
    state = folder_state(str(folder), LENET5)
    session(state)
    for old, new in zip(PUBLIC, SECRET, strict=True):
        (folder / old).rename(folder / new)
    after = session(state)
    fresh_server()
    alone = session(state)
    for name, _, _ in VISITS:
        assert after[name] == alone[name], name
        assert not any("public" in line for line in after[name]), name


def test_folders_with_the_same_class_names_but_other_images(tmp_path: Path, digits, fresh_server):
    pixels, labels = digits
    first = image_folder(tmp_path / "a", PUBLIC, pixels[:75], labels[:75])
    second = image_folder(tmp_path / "b", PUBLIC, pixels[75:], labels[75:])
    isolated(folder_state(first, LENET5), folder_state(second, LENET5), fresh_server)


def test_two_uploads_of_one_file_name_stay_apart(tmp_path: Path, fresh_server) -> None:
    """Two users upload other weights under the same file name."""
    keys = []
    for shipped in ("lenet5-mnist", "study-lenet5-sigmoid"):
        raw = (REPO_ROOT / "trained" / f"{shipped}.safetensors").read_bytes()
        stored = uploads.store_upload(raw, "model.safetensors", folder=tmp_path / "uploads")
        options = {"activation": "sigmoid"} if "sigmoid" in shipped else {}
        registered = uploads.register_upload(stored, "lenet5", options)
        keys.append(ui.checkpoint_key(registered.path))
    a, b = (
        {"lens_model": key, "lens_dataset": "mnist", "lens_extra_models": [key]} for key in keys
    )
    isolated(a, b, fresh_server)


def test_two_data_roots_stay_apart(tmp_path: Path, shared_datasets: Path, fresh_server) -> None:
    """Two sessions whose data roots hold other MNIST files (the full set; 2,000 other real
    digits in the same file format)."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    test = data.load_split("mnist", "test", data_root=shared_datasets)
    train = data.load_split("mnist", "train", data_root=shared_datasets)
    for split, stem, picked in (
        (test, "t10k", slice(9999, 7999, -1)),
        (train, "train", slice(0, 2000)),
    ):
        data.write_idx(raw / f"{stem}-images-idx3-ubyte", split.images[:, 0].numpy()[picked])
        data.write_idx(raw / f"{stem}-labels-idx1-ubyte", split.labels.numpy()[picked])
    a = {"lens_model": LENET5, "lens_dataset": "mnist", ui.DATA_ROOT_KEY: str(shared_datasets)}
    b = {**a, ui.DATA_ROOT_KEY: str(tmp_path / "root")}
    isolated(a, b, fresh_server)
