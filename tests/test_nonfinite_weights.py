"""Weights that are NaN, infinite or true/false: a warning on load naming the tensors (or, for
true/false, a refusal), every page drawable, and standard JSON from every command.

The checkpoint is the shipped LeNet-5 with some of its real weights overwritten."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch

from dashboard import cli, ui
from dashboard.base import paths
from dashboard.base.errors import CheckpointError
from dashboard.models import checkpoints
from dashboard.models.checkpoints import Card
from tests.pages import run_page
from tests.test_cli_train import run_cli
from tests.test_hostile_cards import shipped_card

WARNING = (
    "nanny.safetensors holds non-finite weights in 2 tensors: features.conv1.weight (25 NaN), "
    "features.conv2.weight (20 NaN, 5 infinite); its outputs will be NaN, and figures leave "
    "those values blank"
)


def write_nan_checkpoint(folder: Path, name: str = "nanny") -> Path:
    """The shipped LeNet-5 without its filter history (so Filters shows these weights), with
    filter 0 of conv1 all NaN and filter 0 of conv2 holding NaN and ±inf; → its weights."""
    state = safetensors.torch.load_file(paths.TRAINED_DIR / "lenet5-mnist.safetensors")
    state = {k: v for k, v in state.items() if not k.startswith(checkpoints.HISTORY_PREFIX)}
    state["features.conv1.weight"][0] = math.nan  # 1×5×5: 25 NaN
    kernel = state["features.conv2.weight"][0, 0]  # 5×5
    kernel[:4] = math.nan  # 20 NaN
    kernel[4, :3] = math.inf
    kernel[4, 3:] = -math.inf  # 5 infinite
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    safetensors.torch.save_file(state, weights)
    card = shipped_card()
    card["name"] = name
    weights.with_suffix(".json").write_text(json.dumps(card))
    return weights


def test_loading_warns_naming_each_tensor_with_its_counts(tmp_path: Path):
    loaded = checkpoints.load_checkpoint(write_nan_checkpoint(tmp_path))
    assert loaded.warnings == [WARNING]
    weight = loaded.model.features.conv1.weight
    assert int(torch.isnan(weight).sum()) == 25  # loaded as they are: the warning says so
    shipped = checkpoints.load_checkpoint(paths.TRAINED_DIR / "lenet5-mnist.safetensors")
    assert shipped.warnings == []


def test_every_shipped_checkpoint_is_finite():
    """The sidebar skips this check for shipped checkpoints (the home page paints before torch
    is imported): this test is why that is safe."""
    for card in checkpoints.list_checkpoints(paths.TRAINED_DIR):
        state = safetensors.torch.load_file(card.path)
        assert checkpoints.nonfinite_warning(card.path.name, state) == "", card.path.name


def test_true_false_weights_are_refused_in_one_line(tmp_path: Path):
    state = safetensors.torch.load_file(paths.TRAINED_DIR / "lenet5-mnist.safetensors")
    state["features.conv1.weight"] = state["features.conv1.weight"] > 0
    weights = tmp_path / "bools.safetensors"
    safetensors.torch.save_file(state, weights)
    with pytest.raises(CheckpointError) as caught:
        checkpoints.load_checkpoint(weights, architecture="lenet5")
    assert str(caught.value) == (
        "bools.safetensors holds true/false values where weights belong "
        "(features.conv1.weight); weights are numbers, so it was not loaded"
    )
    result = run_cli("evaluate", str(weights), "--model", "lenet5", "--dataset", "mnist")
    assert result.returncode == cli.EXIT_BAD_INPUT
    assert result.stderr.strip().splitlines() == [f"python -m dashboard evaluate: {caught.value}"]


def strict_json(text: str):
    """Parse as any standard JSON parser would: NaN and Infinity are not JSON."""

    def refuse(token: str):
        raise ValueError(f"{token} is not standard JSON")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_warns_and_prints_standard_json(tmp_path: Path, shared_datasets: Path):
    weights = write_nan_checkpoint(tmp_path)
    result = run_cli(
        "evaluate", str(weights), "--limit", "500", "--data-root", str(shared_datasets)
    )
    assert result.returncode == 0, result.stderr
    assert f"warning: {WARNING}" in result.stderr.splitlines()
    report = strict_json(result.stdout)
    assert report["loss"] is None
    assert report["notes"] == ["loss is nan (not a finite number): written as null"]
    assert report["warnings"] == [WARNING]
    # every output is NaN, so every image goes to class 0: the 42 zeros among the first 500
    assert report["confusion_matrix"][0][0] == 42
    assert sum(row[0] for row in report["confusion_matrix"]) == 500


def test_standard_json_names_every_non_finite_number(capsys: pytest.CaptureFixture):
    cli.print_json(
        {"loss": math.nan, "per_class": {"7": {"f1": math.inf}}, "rows": [1.0, -math.inf]}
    )
    printed = strict_json(capsys.readouterr().out)
    assert printed == {
        "loss": None,
        "per_class": {"7": {"f1": None}},
        "rows": [1.0, None],
        "notes": [
            "loss is nan (not a finite number): written as null",
            "per_class.7.f1 is inf (not a finite number): written as null",
            "rows[1] is -inf (not a finite number): written as null",
        ],
    }


def test_a_card_is_written_as_standard_json():
    card = Card(name="n", architecture="lenet5", metrics={"test_loss": math.nan})
    stored = strict_json(card.to_json())
    assert stored["metrics"] == {"test_loss": None}


@pytest.mark.parametrize("script", [page for page, *_ in ui.PAGES])
def test_every_page_draws_a_model_with_non_finite_weights(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    key = ui.checkpoint_key(write_nan_checkpoint(tmp_path / "runs"))
    app = run_page(script, timeout=300, lens_model=key)
    assert not app.exception
    errors = [e.value for e in app.error]
    if script == "pages/10_Representations.py":  # no projection of NaN: said in one line
        assert errors == ["the features hold NaN or infinite values (a diverged model?)"]
    elif script == "pages/12_Evaluation.py":  # no curve or calibration of NaN: one line
        assert errors == [
            "the model's outputs hold NaN or infinite values (a diverged model?): no curve, "
            "calibration or loss can be measured"
        ]
    else:
        assert not errors
    shown = [w.value.replace("\\", "") for w in app.sidebar.warning]
    assert shown == [WARNING]
    if script == "pages/4_Filters.py":  # the histogram bins the finite weights, says the rest
        layouts = [json.loads(c.proto.spec)["layout"] for c in app.get("plotly_chart")]
        title = next(t["title"] for t in layouts if t["title"]["text"] == "features.conv1 weights")
        histogram = title["subtitle"]["text"]
        assert histogram.startswith("125 weights · mean")
        assert "25 NaN or infinite weights left out" in histogram
