"""The app's caches follow the files: a checkpoint rewritten in place (a run saved again under
its name) is loaded afresh on the next rerun, with its new weights, shapes and predictions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from safetensors.torch import load_file
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT
from tests.test_page_filters import array, charts

APP = str(REPO_ROOT / "app.py")
TRAINED = REPO_ROOT / "trained"


def copy_checkpoint(name: str, target: Path) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(TRAINED / f"{name}{suffix}", target.with_suffix(suffix))


def first_filter_grid(app: AppTest) -> np.ndarray:
    grid = next(spec for title, spec in charts(app).items() if title.startswith("features.conv1"))
    return array(grid["data"][0]["z"]).astype(float)


def test_a_checkpoint_rewritten_in_place_is_reloaded(tmp_path: Path, shared_datasets) -> None:
    target = tmp_path / "mine.safetensors"
    copy_checkpoint("study-lenet5-sgd", target)
    key = f"ckpt:{target}"
    app = AppTest.from_file(APP, default_timeout=120).switch_page("pages/4_Filters.py")
    app.session_state["lens_model"] = key
    app.session_state["lens_extra_models"] = [key]
    app.session_state["lens_dataset"] = "mnist"
    app.run()
    assert not app.exception, app.exception
    before = first_filter_grid(app)

    copy_checkpoint("study-lenet5-base", target)  # same architecture, other weights
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    app.run()
    assert not app.exception, app.exception
    after = first_filter_grid(app)
    assert not np.allclose(before, after)
    new_weights = load_file(target)["features.conv1.weight"].numpy()
    old_weights = load_file(TRAINED / "study-lenet5-sgd.safetensors")["features.conv1.weight"]
    # The grid shows the layer's values (NaN gutters between filters): the new file's, not the old.
    shown = after[np.isfinite(after)]
    assert np.isclose(np.abs(shown).max(), np.abs(new_weights).max(), rtol=1e-4)
    assert not np.isclose(np.abs(shown).max(), float(old_weights.abs().max()), rtol=1e-4)
