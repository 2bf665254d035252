"""Malformed cards in the runs folder: each is listed with a one-line reason, its weights stay
usable by the architecture it names (shapes read from the weights), and nothing in it reaches
any other model or page — under AppTest on every page, and on the command line.

The cards are real: the shipped LeNet-5's card and weights copied into a temporary runs folder,
then the card edited the way a hostile or careless hand would."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dashboard import ui
from dashboard.base import paths
from dashboard.base.errors import CheckpointError
from dashboard.models import card_schema, checkpoints
from dashboard.models.checkpoints import Card
from tests.pages import run_page
from tests.test_cli_train import run_cli

SHIPPED = paths.TRAINED_DIR / "lenet5-mnist"
SHIPPED_KEY = "ckpt:trained/lenet5-mnist.safetensors"
DEPTH = 200_000  # nested lists: far past the recursion limit of Python's json parser


def shipped_card() -> dict:
    return json.loads(SHIPPED.with_suffix(".json").read_text())


def with_metrics(card: dict) -> None:
    card["metrics"] = {"test_accuracy": "very high"}


def with_wrong_training(card: dict) -> None:
    card["training"] = {"seconds": "long", "epochs": [8], "optimizer": {"name": "adam"}}


def with_wrong_history(card: dict) -> None:
    card["history"] = [{"epoch": "one", "test_accuracy": "z"}, [1, 2]]


def with_wrong_dynamics(card: dict) -> None:
    epoch = {"epoch": 1, "weight_norm": [1.0, 2.0], "grad_norm": [0.5], "dead_share": []}
    card["dynamics"] = {"tensors": ["features.conv1.weight"], "activations": [], "epochs": [epoch]}


def with_fifty_million_classes(card: dict) -> None:
    card["model_args"]["num_classes"] = 50_000_000


# name → how the card is spoiled, and the start of the one-line reason it is listed with
SPOILED: dict[str, tuple[Callable[[dict], None] | None, str]] = {
    "bad-accuracy": (
        with_metrics,
        "bad-accuracy.json: 'metrics.test_accuracy' should be a number from 0 to 1, got "
        "'very high'",
    ),
    "bad-training": (
        with_wrong_training,
        "bad-training.json: 'training.seconds' should be a number ≥ 0, got 'long'",
    ),
    "bad-history": (
        with_wrong_history,
        "bad-history.json: 'history[0].epoch' should be a whole number from 1 to 100,000, "
        "got 'one'",
    ),
    "bad-classes": (
        with_fifty_million_classes,
        "bad-classes.json: 'model_args.num_classes' should be a whole number from 1 to 100,000, "
        "got 50000000",
    ),
    "bad-dynamics": (
        with_wrong_dynamics,
        "bad-dynamics.json: 'dynamics.epochs[0].weight_norm' has 2 values for 1 tensors",
    ),
    "bad-deep": (None, "bad-deep.json nests more than 16 levels deep"),
}


def write_spoiled(folder: Path, name: str) -> Path:
    """The shipped LeNet-5 as `folder/name`, with its card spoiled as SPOILED says; → weights."""
    spoil, _ = SPOILED[name]
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    shutil.copyfile(SHIPPED.with_suffix(".safetensors"), weights)
    card = shipped_card()
    card["name"] = name
    if spoil is not None:
        spoil(card)
        text = json.dumps(card, indent=2)
    else:  # 200,000 nested lists under a key this version does not know
        text = json.dumps(card)[:-1] + ', "later": ' + "[" * DEPTH + "]" * DEPTH + "}"
    weights.with_suffix(".json").write_text(text)
    return weights


@pytest.fixture
def spoiled_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A runs folder holding one checkpoint per spoiled card (and the app's caches private)."""
    runs = tmp_path / "runs"
    for name in SPOILED:
        write_spoiled(runs, name)
    monkeypatch.setattr(paths, "RUNS_DIR", runs)
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    return runs


# --- reading a card ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPOILED))
def test_a_spoiled_card_stands_in_with_its_reason_and_the_weights_load_by_architecture(
    name: str, tmp_path: Path
):
    weights = write_spoiled(tmp_path, name)
    card = checkpoints.read_card(weights)  # never raises, never recurses
    reason = SPOILED[name][1]
    assert card.problem.startswith(reason), card.problem
    assert "\n" not in card.problem
    assert (card.name, card.architecture, card.metrics, card.history) == (name, "lenet5", {}, [])
    with pytest.raises(CheckpointError, match=re.escape(reason)):
        checkpoints.read_card(weights, strict=True)

    loaded = checkpoints.load_checkpoint(weights)
    # the shapes come from the weights: 10 classes (not fifty million), 1×28×28
    assert loaded.card.model_args["num_classes"] == 10
    assert loaded.card.input_shape == (1, 28, 28)
    shipped = checkpoints.load_checkpoint(SHIPPED.with_suffix(".safetensors"))
    mine, theirs = loaded.model.state_dict(), shipped.model.state_dict()
    assert all(mine[k].equal(theirs[k]) for k in theirs)
    assert loaded.warnings == [loaded.card.notes]
    assert loaded.card.notes.startswith(f"its card is invalid ({reason}")


def test_the_nesting_depth_is_counted_without_recursion_and_strings_do_not_count():
    assert card_schema.nesting_depth("[" * DEPTH + "]" * DEPTH) == card_schema.MAX_DEPTH + 1
    assert card_schema.nesting_depth('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"]]"}') == 1
    assert card_schema.nesting_depth('{"a": [{"b": [1]}]}') == 4
    with pytest.raises(CheckpointError, match="nests more than 16 levels deep"):
        card_schema.parse("[" * DEPTH + "]" * DEPTH, "x.json")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"input_shape": [1, 28, 0]}, "'input_shape' should be three positive integers"),
        ({"input_shape": [1, 6000, 6000]}, "H and W ≤ 4,096"),
        ({"input_shape": [3, 28, 28]}, "'input_shape' has 3 channels but 'model_args' has 1"),
        ({"classes": [1, 2]}, "'classes[0]' should be text"),
        ({"normalization": {"mean": [0.1], "std": [0]}}, "'normalization.std[0]' should be a"),
        ({"normalization": {"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}}, "has 3 channels"),
        ({"metrics": {"test_loss": -1}}, "'metrics.test_loss' should be a number ≥ 0"),
        ({"model_args": {"options": {"activation": ["relu"]}}}, "'model_args.options.activation'"),
        ({"versions": {"torch": 2}}, "'versions.torch' should be text"),
        ({"notes": "x" * 10_001}, "'notes' should be text of at most 10,000 characters"),
        ({"history": [{}] * 100_001}, "'history' should be a list of at most 100,000 items"),
        ({"dynamics": {"every": -1}}, "'dynamics.every' should be a whole number from 0"),
        ({"dynamics": {"tensors": [1]}}, "'dynamics.tensors[0]' should be text"),
        ({"dynamics": {"epochs": [{"epoch": 1, "grad_norm": [math.inf]}]}}, "grad_norm[0]"),
    ],
)
def test_the_schema_checks_types_ranges_and_agreement(change: dict, reason: str):
    card = {**shipped_card(), **change}
    with pytest.raises(CheckpointError, match=re.escape(reason)):
        Card.from_dict(card, source="x.json")


def test_numbers_json_has_no_word_for_and_oversized_cards(tmp_path: Path):
    weights = write_spoiled(tmp_path, "bad-accuracy")
    text = SHIPPED.with_suffix(".json").read_text()
    seconds = f'"seconds": {json.dumps(json.loads(text)["training"]["seconds"])}'
    assert text.count(seconds) == 1  # the training's, not an epoch's
    # NaN from an old writer means "no number"; an integer of 5,000 digits is refused
    weights.with_suffix(".json").write_text(text.replace(seconds, '"seconds": NaN'))
    card = checkpoints.read_card(weights)
    assert (card.problem, card.training["seconds"]) == ("", None)
    weights.with_suffix(".json").write_text(text.replace(seconds, '"seconds": ' + "9" * 5000))
    assert "is not valid JSON" in checkpoints.read_card(weights).problem
    weights.with_suffix(".json").write_text(" " * (card_schema.MAX_CARD_BYTES + 1))
    assert "over the 4.0 MB limit for a card" in checkpoints.read_card(weights).problem


def test_every_shipped_card_passes_the_schema():
    for card_path in sorted(paths.TRAINED_DIR.glob("*.json")):
        card = checkpoints.read_card(card_path, strict=True)
        assert card.problem == ""


def test_a_card_too_big_for_any_checkpoint_is_refused_before_allocating(tmp_path: Path):
    """Within the schema's ranges but describing gigabytes of weights (AlexNet with 100,000
    classes): counted on meta tensors and refused, nothing allocated."""
    weights = write_spoiled(tmp_path, "bad-accuracy")
    card = shipped_card()
    card.update(architecture="alexnet", input_shape=[3, 224, 224])
    card["model_args"].update(in_channels=3, num_classes=100_000, input_size=224)
    card["classes"] = []
    card["normalization"] = None
    weights.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"would hold 1\.[0-9] GB of weights, more than"):
        checkpoints.load_checkpoint(weights)


def test_a_card_naming_no_architecture_says_how_to_name_one(tmp_path: Path):
    weights = write_spoiled(tmp_path, "bad-accuracy")
    weights.with_suffix(".json").write_text("{" * 40)
    card = checkpoints.read_card(weights)
    assert (card.architecture, card.name) == ("", "bad-accuracy")
    with pytest.raises(CheckpointError, match=r"names no architecture, so say which one"):
        checkpoints.load_checkpoint(weights)
    assert checkpoints.load_checkpoint(weights, architecture="lenet5").card.input_shape == (
        1,
        28,
        28,
    )


# --- every page ----------------------------------------------------------------------------------

PAGES = [page for page, *_ in ui.PAGES]


@pytest.mark.parametrize("script", PAGES)
def test_every_page_renders_with_spoiled_cards_in_the_runs_folder(spoiled_runs: Path, script):
    """The shipped model selected, five spoiled cards beside it in runs/: no page breaks, and
    the sidebar lists each of them as an invalid card (its reason shows once it is selected)."""
    app = run_page(script, timeout=300, lens_model=SHIPPED_KEY)
    assert not app.exception
    assert not [e.value for e in app.error]
    labels = next(s for s in app.sidebar.selectbox if s.label == "Model").options
    for name in SPOILED:
        assert f"{name} — invalid card" in labels


@pytest.mark.parametrize("name", list(SPOILED))
@pytest.mark.parametrize("script", ["app.py", "pages/1_Model.py"])
def test_a_checkpoint_with_a_spoiled_card_is_usable_when_selected(
    spoiled_runs: Path, name: str, script: str
):
    key = ui.checkpoint_key(spoiled_runs / f"{name}.safetensors")
    app = run_page(script, timeout=300, lens_model=key)
    assert not app.exception
    assert not [e.value for e in app.error]
    warnings = [w.value.replace("\\", "") for w in app.sidebar.warning]  # shown as text
    assert len(warnings) == 1
    assert warnings[0].startswith(f"its card is invalid ({SPOILED[name][1]}")
    assert warnings[0].endswith("the weights are read as lenet5, with the shapes they show")
    if script == "app.py":  # the shape flow, from the weights: LeNet-5's 61,706 parameters
        assert any(m.value == "61,706" for m in app.metric)
    else:
        metrics = [m.value for m in app.metric]
        assert (metrics[0], metrics[1], metrics[3]) == ("not measured", "61,706", "1×28×28")


# --- the command line ----------------------------------------------------------------------------


def test_the_command_line_reads_spoiled_cards_by_their_weights(tmp_path: Path, shared_datasets):
    deep = write_spoiled(tmp_path, "bad-deep")
    summary = run_cli("summary", str(deep), "--json")
    assert summary.returncode == 0, summary.stderr
    flow = json.loads(summary.stdout)
    assert flow["model"] == "bad-deep (lenet5, shapes from the weights)"
    assert (flow["input_shape"], flow["totals"]["parameters"]) == ([1, 28, 28], 61_706)

    # The deep card names no dataset the parser could read: evaluate asks for one, in a line.
    asked = run_cli("evaluate", str(deep))
    assert asked.returncode == 2
    assert asked.stderr.strip().splitlines()[-1].endswith("pass --dataset NAME")
    assert "Traceback" not in asked.stderr
    for name in SPOILED:
        weights = write_spoiled(tmp_path, name)
        result = run_cli(
            "evaluate", str(weights), "--dataset", "mnist", "--limit", "300",
            "--data-root", str(shared_datasets),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        warning = f"warning: its card is invalid ({SPOILED[name][1]}"
        assert warning in result.stderr
        report = json.loads(result.stdout)
        assert report["images"] == 300
        assert report["accuracy"] > 0.9
