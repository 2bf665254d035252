"""The numbers of the Compare page: several training runs overlaid, and two checkpoints of one
architecture side by side (which of them can be compared, how far apart their weights are layer
by layer, and what each makes of the same image).

Pure functions of cards, runs, models and arrays: no Streamlit, nothing cached here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dashboard import models
from dashboard.analysis import probe
from dashboard.base import paths, work
from dashboard.base.errors import LensError, ShapeError
from dashboard.models import checkpoints
from dashboard.training import runs
from dashboard.training.curves import Run

OUTCOME = "Test acc. (%)"  # runs.hyperparameter_row's result column
STUDY_PREFIX = "study-lenet5-"  # the seed study's cards: the page's default overlay
CARD_PREFIX, RUN_PREFIX = "card:", "run:"

# What the curve picker offers: the metric, and which splits of it are drawn.
CURVE_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "test accuracy": ("accuracy", ("test",)),
    "train accuracy": ("accuracy", ("train",)),
    "test loss": ("loss", ("test",)),
    "train loss": ("loss", ("train",)),
    "accuracy, train and test": ("accuracy", ("train", "test")),
    "loss, train and test": ("loss", ("train", "test")),
}

Shapes = Mapping[str, tuple[int, ...]]


# ---------------------------------------------------------------------------------------------
# Training curves of several runs


@dataclass(frozen=True)
class Compared:
    """One run of the overlay: a saved checkpoint's card or this session's training run."""

    key: str  # "card:trained/study-lenet5-base" or "run:3"
    label: str  # what the picker lists
    name: str  # the legend's and the table's name
    history: tuple[Mapping[str, Any], ...]  # per-epoch records, as a card stores them
    row: Mapping[str, Any]  # runs.hyperparameter_row
    version: float  # changes when the history does (card mtime, a run's epoch count)


def shown_path(path: Path) -> str:
    """A checkpoint's place without its suffix: relative to the repository when inside it."""
    stem = path.with_suffix("")
    try:
        return str(stem.resolve().relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(stem)


def card_entry(card: checkpoints.Card) -> Compared:
    assert card.path is not None  # list_checkpoints sets it
    where = shown_path(card.path)
    shipped = card.path.parent.resolve() == paths.TRAINED_DIR.resolve()
    label = card.name if shipped else where  # a saved run says which folder it is in
    mtime = card.path.stat().st_mtime if card.path.exists() else 0.0
    return Compared(
        CARD_PREFIX + where, label, card.name, tuple(card.history), runs.card_row(card), mtime
    )


def run_entry(run: runs.TrainingRun) -> Compared:
    history = tuple(runs.epoch_record(e) for e in run.history)
    name = f"run {run.id}"
    label = f"{name} (this session): {run.label}"
    row = {**runs.run_row(run), "Run": name}
    return Compared(RUN_PREFIX + str(run.id), label, name, history, row, float(len(history)))


def entries(
    cards: Sequence[checkpoints.Card], session_runs: Sequence[runs.TrainingRun]
) -> dict[str, Compared]:
    """Everything with at least one epoch to draw: this session's runs first, then the cards."""
    found = [run_entry(run) for run in session_runs if run.history]
    found += [card_entry(card) for card in cards if card.history]
    return {entry.key: entry for entry in found}


def saved_folders() -> tuple[Path, Path]:
    """Where saved checkpoints are: the shipped ones, then the user's runs (read at each call:
    the runs folder can be pointed elsewhere)."""
    return paths.TRAINED_DIR, paths.RUNS_DIR


def saved_signature(folders: Sequence[Path]) -> tuple[tuple[str, float], ...]:
    """Every card in `folders` and its modification time: changes when a run is saved or
    replaced, so a cache keyed by it reads the cards again only then."""
    found = []
    for folder in folders:
        for card in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            found.append((str(card), card.stat().st_mtime))
    return tuple(found)


def default_keys(available: Mapping[str, Compared]) -> list[str]:
    """The seed study's cards (the same LeNet-5 trained six ways) and this session's runs."""
    return [
        key
        for key, entry in available.items()
        if key.startswith(RUN_PREFIX) or entry.name.startswith(STUDY_PREFIX)
    ]


def overlay_choice(
    stored: Sequence[str] | None,
    default: Sequence[str],
    available: Mapping[str, Compared],
    seen: Set[str],
) -> tuple[list[str], set[str]]:
    """The runs to overlay: the stored choice (`default` before there is one) without what is
    no longer available, then this session's runs not in `seen` — a run trained since the last
    look joins in, while one the user took out stays out. → (chosen, the session's runs seen)."""
    chosen = [key for key in (default if stored is None else stored) if key in available]
    session = [key for key in available if key.startswith(RUN_PREFIX)]
    chosen += [key for key in session if key not in seen and key not in chosen]
    return chosen, set(seen) | set(session)


def curve(entry: Compared, choice: str) -> Run:
    """The entry's curve of one `CURVE_CHOICES` item; splits not chosen are left empty."""
    if choice not in CURVE_CHOICES:
        raise ValueError(f"unknown curve {choice!r}; choose one of {', '.join(CURVE_CHOICES)}")
    metric, splits = CURVE_CHOICES[choice]
    full = runs.history_curve(entry.history, entry.name, metric)
    train = full.train if "train" in splits else []
    test = full.test if "test" in splits else []
    return Run(full.label, full.epochs, train, test)


def differing_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns (but the run's name) whose values are not the same in every row."""
    columns = list(dict.fromkeys(c for row in rows for c in row if c != "Run"))
    return [c for c in columns if len({repr(row.get(c)) for row in rows}) > 1]


def hyperparameter_table(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """One row per run, indexed by its name; the columns that differ come first, since they
    are what explains the curves' differences, the outcome (test accuracy) ahead of the
    settings that led to it. → (table, the differing columns)."""
    differing = sorted(differing_columns(rows), key=lambda c: c != OUTCOME)  # stable sort
    table = pd.DataFrame(list(rows)).set_index("Run")
    same = [c for c in table.columns if c not in differing]
    return table[differing + same], differing


# ---------------------------------------------------------------------------------------------
# Which checkpoints can be compared


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every tensor of the state dict by name, as its shape (BatchNorm's step counter left out:
    it is a count, not a weight)."""
    return {
        key: tuple(tensor.shape)
        for key, tensor in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) or "scalar"


def _some(keys: Sequence[str], most: int = 3) -> str:
    return ", ".join(keys[:most]) + (", …" if len(keys) > most else "")


@dataclass(frozen=True)
class Match:
    """How two models' state dicts line up, tensor by tensor."""

    shared: tuple[str, ...]  # same name and shape in both
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # name, A's, B's
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    shared_filters: tuple[str, ...]  # conv weights (4-D `.weight` tensors) in both

    @property
    def comparable(self) -> bool:
        """Every tensor both have is the same shape, and they share at least one conv layer.
        Tensors only one of them has (a variant's BatchNorm) are left out of the comparison."""
        return not self.mismatched and bool(self.shared_filters)

    def why_not(self) -> str:
        """One line: why the pair cannot be compared ("" when it can)."""
        if self.mismatched:
            key, a, b = self.mismatched[0]
            more = len(self.mismatched) - 1
            others = f" and {more} more tensor{'s' * (more != 1)}" if more else ""
            return f"{key} is {_shape_text(a)} in A but {_shape_text(b)} in B{others}"
        if not self.shared_filters:
            return "no conv layer with the same name in both"
        return ""

    def left_out(self) -> str:
        """One line naming the layers whose tensors only one model has ("" when none)."""
        parts = []
        for side, keys in (("A", self.only_a), ("B", self.only_b)):
            layers = list(dict.fromkeys(key.rpartition(".")[0] or key for key in keys))
            if layers:
                parts.append(f"{_some(layers, 4)} only in {side}")
        return "; ".join(parts)


def match(a: Shapes, b: Shapes) -> Match:
    """Line up two state dicts' shapes (see `state_shapes`), in A's order."""
    shared = tuple(k for k in a if k in b and tuple(a[k]) == tuple(b[k]))
    mismatched = tuple((k, tuple(a[k]), tuple(b[k])) for k in a if k in b and k not in shared)
    return Match(
        shared=shared,
        mismatched=mismatched,
        only_a=tuple(k for k in a if k not in b),
        only_b=tuple(k for k in b if k not in a),
        shared_filters=tuple(k for k in shared if k.endswith(".weight") and len(a[k]) == 4),
    )


@dataclass(frozen=True)
class Partners:
    """Which checkpoints can stand beside model A."""

    comparable: tuple[str, ...]  # keys, in the candidates' order
    refused: Mapping[str, str]  # same-architecture key → why it cannot
    matches: Mapping[str, Match]  # comparable key → how its tensors line up with A's


def partners(
    architecture: str,
    shapes: Shapes,
    candidates: Mapping[str, str],
    shapes_of: Callable[[str], Shapes],
) -> Partners:
    """Which candidates (key → architecture) can stand beside a model of `architecture` whose
    state dict has `shapes`. Only same-architecture candidates are loaded (`shapes_of`; a
    LensError from it refuses that candidate)."""
    matches: dict[str, Match] = {}
    refused: dict[str, str] = {}
    for key, candidate_architecture in candidates.items():
        if candidate_architecture != architecture:
            continue
        try:
            found = match(shapes, shapes_of(key))
        except LensError as err:  # an unreadable file is one more that cannot be compared
            refused[key] = str(err)
            continue
        if found.comparable:
            matches[key] = found
        else:
            refused[key] = found.why_not()
    return Partners(tuple(matches), refused, matches)


def default_partner(name_a: str, names: Mapping[str, str]) -> str:
    """B to show first, among `names` (key → checkpoint name, in the list's order): A's study's
    baseline ("study-lenet5-base" beside "study-lenet5-sgd"), else the first."""
    if not names:
        raise ValueError("no checkpoint to choose from")
    study = name_a.rpartition("-")[0]
    baseline = f"{study}-base"
    found = [key for key, name in names.items() if study and name == baseline]
    return found[0] if found else next(iter(names))


# ---------------------------------------------------------------------------------------------
# Weights, A against B


def _built_as(card: Any) -> str:
    """A card's architecture and arguments, as one comparable text."""
    return json.dumps([card.architecture, card.model_args], sort_keys=True, default=str)


@functools.lru_cache(maxsize=8)
def _initial_weights(built_as: str, seed: int) -> dict[str, torch.Tensor]:
    """The weights a run starts from: the model built right after `torch.manual_seed(seed)`,
    as the command line and the Train page build it (the global generator left untouched)."""
    architecture, args = json.loads(built_as)
    args = dict(args or {})
    options = args.pop("options", None) or {}
    with work.seeded(seed):
        model = models.build_model(architecture, **args, **options)
    return model.state_dict()


def different_options(card_a: Any, card_b: Any) -> str:
    """How two cards' architecture options differ, in words ("" when they do not)."""
    a, b = ((getattr(c, "model_args", {}) or {}).get("options") or {} for c in (card_a, card_b))
    keys = sorted(set(a) | set(b))
    return ", ".join(
        f"{k}: {a.get(k, 'default')} vs {b.get(k, 'default')}" for k in keys if a.get(k) != b.get(k)
    )


def same_start(card_a: Any, card_b: Any) -> bool | None:
    """Whether A and B were trained from the same random weights in every tensor they share:
    the same seed, and neither fine-tuned from other weights. With different architectures or
    options both starting points are rebuilt from the seed and compared. None when a card is
    missing or does not say."""
    facts = [getattr(card, "training", None) or {} for card in (card_a, card_b)]
    seeds = [f.get("seed") for f in facts]
    if None in seeds or any("initial_weights" in f for f in facts):
        return None
    if seeds[0] != seeds[1]:
        return False
    if _built_as(card_a) == _built_as(card_b):
        return True
    try:
        first, second = (_initial_weights(_built_as(c), int(seeds[0])) for c in (card_a, card_b))
    except (LensError, TypeError, ValueError):
        return None
    shared = [k for k in first if k in second and first[k].shape == second[k].shape]
    return bool(shared) and all(torch.equal(first[k], second[k]) for k in shared)


def start_note(card_a: Any, card_b: Any) -> str:
    """What the cosines can mean for this pair, in one sentence."""
    same = same_start(card_a, card_b)
    options = different_options(card_a, card_b)
    if same and options:
        return (
            f"A and B differ in their options ({options}) but share a seed, and the tensors "
            "they have in common started from the same weights (both rebuilt from that seed "
            "and compared): a cosine near 1 is a layer both kept; where they part, the "
            "options as well as training may be why."
        )
    if same:
        return (
            "A and B were trained from the same seed, so they started from the same weights: a "
            "cosine near 1 is a layer (or filter) both kept, a low one a part one of them reshaped."
        )
    if same is False:
        return (
            "A and B started from different random weights"
            + (f" (their options differ: {options})" if options else "")
            + ": their filters need not line up, so low cosines are expected."
        )
    return "Where A and B started from is not known (no card or no seed): read cosines with care."


def cosine(a: Any, b: Any) -> float:
    """⟨a, b⟩ / (‖a‖ ‖b‖) over all elements, in float64; 0 when either is all zeros."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64).ravel()
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64).ravel()
    if x.shape != y.shape:
        raise ShapeError(f"cannot compare {tuple(x.shape)} with {tuple(y.shape)} values")
    norms = x.norm() * y.norm()
    return float(x @ y / norms) if norms > 0 else 0.0


@dataclass(frozen=True)
class LayerDistance:
    """How far apart two models' weights of one layer are (bias left out)."""

    layer: str  # the module's qualified name
    kind: str  # Conv2d, Linear, BatchNorm2d, …
    shape: tuple[int, ...]
    norm_a: float  # ‖A‖ over the layer's weight tensor
    norm_b: float
    distance: float  # ‖B − A‖
    cosine: float  # ⟨A, B⟩ / (‖A‖ ‖B‖): 1 = same direction, 0 = unrelated

    @property
    def relative(self) -> float:
        """‖B − A‖ / ‖A‖: how much of A's weight would change to reach B."""
        return self.distance / self.norm_a if self.norm_a else float("inf")


def layer_distances(model_a: nn.Module, model_b: nn.Module) -> list[LayerDistance]:
    """Every layer with a `weight` of the same shape in both models, in A's order."""
    modules_b = dict(model_b.named_modules())
    rows = []
    for name, module in model_a.named_modules():
        weight = getattr(module, "weight", None)
        other = getattr(modules_b.get(name), "weight", None)
        if not isinstance(weight, torch.Tensor) or not isinstance(other, torch.Tensor):
            continue
        if weight.shape != other.shape:
            continue
        a = weight.detach().to("cpu", torch.float64)
        b = other.detach().to("cpu", torch.float64)
        rows.append(
            LayerDistance(
                layer=name,
                kind=type(module).__name__,
                shape=tuple(a.shape),
                norm_a=a.norm().item(),
                norm_b=b.norm().item(),
                distance=(b - a).norm().item(),
                cosine=cosine(a, b),
            )
        )
    return rows


def filter_similarity(weights_a: Any, weights_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per output filter k: (cosine between A's and B's filter k, ‖B_k − A_k‖ / ‖A_k‖), over
    all its input channels. Runs from the same seed start from the same filters, so filter k
    of one is filter k of the other."""
    a = torch.as_tensor(np.asarray(weights_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(weights_b), dtype=torch.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ShapeError(f"filters {tuple(a.shape)} and {tuple(b.shape)} do not pair up")
    cosines = np.array([cosine(a[k], b[k]) for k in range(len(a))])
    norms = a.flatten(1).norm(dim=1)
    changes = (b - a).flatten(1).norm(dim=1) / torch.where(norms > 0, norms, 1.0)
    return cosines, changes.numpy()


def shown_filters(weights: Any, channel: int | None) -> np.ndarray:
    """The maps `figures.filter_grid` draws: one input channel, or the mean over them."""
    w = np.asarray(weights, dtype=np.float64)
    return w.mean(axis=1) if channel is None else w[:, channel]


def shared_limit(weights_a: Any, weights_b: Any, channel: int | None) -> float:
    """The half-range of a colour scale that both models' filter grids can share."""
    peak = max(np.abs(shown_filters(w, channel)).max() for w in (weights_a, weights_b))
    return float(peak) or 1.0


# ---------------------------------------------------------------------------------------------
# One image through both models


@dataclass(frozen=True)
class Forward:
    """One image's pass through a model: its class probabilities and every leaf layer's maps."""

    probabilities: np.ndarray  # (classes,), float64, sums to 1
    maps: dict[str, np.ndarray]  # layer key → (C, H, W) or (features,), the batch axis dropped


def forward(model: nn.Module, x: torch.Tensor) -> Forward:
    """Run one image (1, C, H, W) through the model, keeping every layer's output."""
    logits, acts = probe.forward_with_activations(model, x)
    probabilities = torch.softmax(logits[0].double(), dim=0).numpy()
    return Forward(probabilities, {key: t[0].float().numpy() for key, t in acts.items()})


def common_layers(a: Forward, b: Forward) -> list[str]:
    """Layers both passes went through with maps of the same shape, in A's order."""
    return [
        key
        for key, maps in a.maps.items()
        if key in b.maps and maps.shape == b.maps[key].shape and maps.ndim in (1, 3)
    ]


def shared_range(*maps: np.ndarray) -> tuple[float, float]:
    """(lowest, highest) over several maps: one colour scale for all of them."""
    if not maps:
        raise ShapeError("no maps to take a range of")
    return min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
