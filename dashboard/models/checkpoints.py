"""Checkpoints: safetensors weights plus a JSON card, and safe loading of users' files.

A checkpoint is two files side by side: `NAME.safetensors` (the model's state dict, and
optionally per-epoch snapshots of the first conv filters under the `lens_history/` key prefix)
and `NAME.json`, the card: architecture and its arguments, dataset, classes, normalization,
training hyper-parameters, per-epoch history, final metrics and library versions. The card is
enough to rebuild the model (nanoGPT's habit: a checkpoint rebuilds itself from the arguments
stored with it).

Loading never unpickles code. Safetensors files are read with `safetensors.torch.load_file`;
`.pt`/`.pth` state dicts with `torch.load(weights_only=True)`, and a file that needs more than
that (a whole pickled model, a pickle that would call functions) is refused, never retried
unsafely. Every bad file becomes a one-line `CheckpointError`.

The card is read in `cards`, the weights file in `state_dicts`; this module rebuilds, loads
and saves whole checkpoints, and re-exports the names of both so callers import one module.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from dashboard.base import files
from dashboard.base.errors import CheckpointError, LensError
from dashboard.base.paths import REPO_ROOT, TRAINED_DIR
from dashboard.models.cards import (
    CARD_SUFFIX,
    FORMAT,
    MAX_CARD_BYTES,
    TORCH_SUFFIXES,
    WEIGHTS_SUFFIX,
    Card,
    _card_path,
    _check_file,
    _is_int,
    _size_text,
    _weights_path,
    current_versions,
    list_checkpoints,
    read_card,
)
from dashboard.models.dynamics import DynamicsLog
from dashboard.models.state_dicts import (
    DYNAMICS_PREFIX,
    HISTORY_PREFIX,
    FilterHistory,
    MismatchError,
    MismatchReport,
    _classifier_key,
    _first_conv_key,
    _plural,
    _read_safetensors,
    _read_torch,
    _sniff,
    _some,
    _split_history,
    _strip_wrappers,
    compare_state_dicts,
)

__all__ = [
    "CARD_SUFFIX",
    "FORMAT",
    "HISTORY_PREFIX",
    "MAX_CARD_BYTES",
    "MAX_CHECKPOINT_BYTES",
    "WEIGHTS_SUFFIX",
    "Card",
    "LoadedCheckpoint",
    "MismatchError",
    "MismatchReport",
    "build_for_card",
    "card_input_shape",
    "compare_state_dicts",
    "current_versions",
    "ensure_free_space",
    "ensure_writable",
    "inside_shipped",
    "list_checkpoints",
    "load_checkpoint",
    "read_card",
    "save_checkpoint",
    "state_bytes",
    "validate_name",
]


MAX_CHECKPOINT_BYTES = 600 * 1024**2  # bigger files are refused before a byte is read
MAX_NAME_LENGTH = 100
# Input sides tried when a bare state dict's layer sizes show it was trained on other images.
CANDIDATE_INPUT_SIZES = (28, 32, 64, 96, 128, 224)
MAX_SEARCH_PARAMETERS = 20_000_000
BUILD_ARGS = ("in_channels", "num_classes", "input_size")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# A full disk or an exhausted quota: the user can act on it (free space, then save again).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)
}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    size = _check_file(path, MAX_CHECKPOINT_BYTES)
    kind = _sniff(path, size)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "torch":
        return _read_torch(path)
    if path.suffix == WEIGHTS_SUFFIX:
        return _read_safetensors(path)  # it states its own reason
    raise CheckpointError(
        f"{path.name} is not a checkpoint: neither a safetensors file nor a PyTorch state dict"
    )


def _build(
    architecture: str, model_args: Mapping[str, Any], *, check_size: bool = False
) -> nn.Module:
    """build_model from card-style arguments; never downloads (the weights come from the file).
    `check_size` first counts the weights the arguments describe (arguments not taken from a
    file's tensors may describe any size)."""
    from dashboard import models

    kwargs = {k: model_args[k] for k in BUILD_ARGS if model_args.get(k) is not None}
    options = dict(model_args.get("options") or {})
    options.update(
        (k, v) for k, v in model_args.items() if k not in (*BUILD_ARGS, "options", "pretrained")
    )
    try:
        if check_size:
            _check_model_size(architecture, kwargs, options)
        return models.build_model(architecture, **kwargs, **options, pretrained=False)
    except LensError:
        raise
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"cannot build {architecture} with {dict(model_args)}: {err}"
        ) from err


def _check_model_size(architecture: str, kwargs: Mapping[str, Any], options: Mapping) -> None:
    """Refuse arguments that describe a model larger than any checkpoint this app reads (a card
    claiming fifty million classes), counted on meta tensors before a byte is allocated."""
    from dashboard import models

    try:
        with torch.device("meta"):
            model = models.build_model(architecture, **kwargs, **options, pretrained=False)
    except NotImplementedError:  # a builder that computes with tensors: counted when built
        return
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if size > MAX_CHECKPOINT_BYTES:
        shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise CheckpointError(
            f"{architecture} with {shown} would hold {_size_text(size)} of weights, more than "
            f"the {_size_text(MAX_CHECKPOINT_BYTES)} a checkpoint may hold; it was not built"
        )


def _infer_and_build(
    architecture: str, state: Mapping[str, torch.Tensor]
) -> tuple[nn.Module, dict[str, Any]]:
    """Build `architecture` to fit a bare state dict: input channels from the first conv, classes
    from the last layer; if it still does not fit, try each option value and input side in turn.
    Options that add no weights (an activation, the pooling kind) cannot be told from a file."""
    from dashboard import models

    info = models.model_info(architecture)
    args: dict[str, Any] = {
        "in_channels": info.input_shape[0],
        "num_classes": info.num_classes,
        "input_size": info.input_shape[-1],
        "options": {},
    }
    reference = _build(architecture, args).state_dict()
    first, last = _first_conv_key(reference), _classifier_key(reference)
    if first in state and state[first].ndim == 4:
        args["in_channels"] = int(state[first].shape[1])
    if last in state and state[last].ndim == reference[last].ndim:
        args["num_classes"] = int(state[last].shape[0])
    model = _build(architecture, args)
    if compare_state_dicts(state, model.state_dict()).ok:
        return model, args
    if sum(t.numel() for t in reference.values()) > MAX_SEARCH_PARAMETERS:
        return model, args  # the big models pool globally; rebuilding them again and again is slow
    variants: list[dict[str, Any]] = [{}]
    variants += [{k: v} for k, allowed in info.options.items() for v in allowed[1:]]
    for options in variants:
        for side in dict.fromkeys((args["input_size"], *CANDIDATE_INPUT_SIZES)):
            candidate_args = {**args, "input_size": side, "options": options}
            try:
                candidate = _build(architecture, candidate_args)
            except LensError:  # e.g. an input side too small for the layers
                continue
            report = compare_state_dicts(state, candidate.state_dict())
            if report.ok:
                return candidate, candidate_args
            if report.missing or report.unexpected:
                break  # the input side changes shapes, never names: try the next option
    return model, args


def build_for_card(card: Card) -> nn.Module:
    """The card's architecture with its arguments and fresh weights (for shapes: a card is
    enough), refused in one line when the arguments describe more weights than a checkpoint may
    hold."""
    return _build(card.architecture, card.model_args, check_size=True)


def card_input_shape(card: Card) -> tuple[int, int, int]:
    """The (C, H, W) the card's model takes: its own record, else what its arguments say."""
    return card.input_shape or _input_shape(card.architecture, card.model_args)


def _input_shape(architecture: str, args: Mapping[str, Any]) -> tuple[int, int, int]:
    from dashboard import models

    channels, height, width = models.model_info(architecture).input_shape
    side = args.get("input_size")
    return (
        int(args.get("in_channels") or channels),
        int(side or height),
        int(side or width),
    )


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # rebuilt, weights loaded, eval mode, requires_grad untouched
    card: Card  # for a bare user file: a minimal card (architecture, name, model_args, shape)
    path: Path  # the weights file
    filter_history: FilterHistory  # epoch → layer → conv weights ({} if none saved)
    mismatch: MismatchReport | None = None  # what strict=False skipped; None when all fit
    # One line each, for the user: weights that hold NaN or infinite values, an invalid card.
    warnings: list[str] = field(default_factory=list)
    # Every layer's statistics over the run and its weights' histograms (None if none saved).
    dynamics: DynamicsLog | None = None


def nonfinite_warning(name: str, state: Mapping[str, torch.Tensor]) -> str:
    """'' when every floating-point tensor is finite, else one line naming those that are not
    (with their NaN and infinite counts): such weights load, but make NaN outputs."""
    found = []
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if bool(finite.all()):
            continue
        nans = int(torch.isnan(tensor).sum())
        infinite = tensor.numel() - int(finite.sum()) - nans
        counts = [f"{n:,} {w}" for n, w in ((nans, "NaN"), (infinite, "infinite")) if n]
        found.append(f"{key} ({', '.join(counts)})")
    if not found:
        return ""
    return (
        f"{name} holds non-finite weights in {_plural(len(found), 'tensor')}: {_some(found, 4)}; "
        "its outputs will be NaN, and figures leave those values blank"
    )


def _refuse_bool_weights(
    name: str, state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> None:
    """True/false tensors where the model has numbers are not weights (copying would turn them
    into 0.0 and 1.0 silently)."""
    numeric = {k for k, v in model_state.items() if v.is_floating_point()}
    found = [k for k, v in state.items() if v.dtype == torch.bool and k in numeric]
    if found:
        raise CheckpointError(
            f"{name} holds true/false values where weights belong ({_some(found)}); "
            "weights are numbers, so it was not loaded"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    architecture: str | None = None,
    model_args: dict[str, Any] | None = None,
    strict: bool = True,
) -> LoadedCheckpoint:
    """Rebuild a model from a checkpoint (ours with its card, or a user's bare state dict).

    `architecture` and `model_args` override the card; without a card `architecture` is needed,
    and missing `model_args` are inferred from the tensors. `strict=False` loads what fits and
    reports the rest in `.mismatch`; a file of which nothing fits is always an error.
    """
    weights = _weights_path(path)
    state, history, dynamics_tensors = _split_history(_strip_wrappers(_read_tensors(weights)))
    card_path = _card_path(weights)
    card: Card | None = None
    invalid: Card | None = None
    if weights.suffix == WEIGHTS_SUFFIX and card_path.exists():
        card = read_card(weights)
    if card is not None and card.problem:
        architecture = architecture or card.architecture
        if not architecture:
            raise CheckpointError(
                f"{card.problem}; it names no architecture, so say which one {weights.name} "
                "holds (--model NAME, or upload it on the Model page)"
            )
        invalid = card
        card = None  # read the weights as a bare state dict of that architecture
    if card is not None and architecture in (None, card.architecture):
        architecture = card.architecture
        args = {**card.model_args, **(model_args or {})}
        model = _build(architecture, args, check_size=True)
    elif architecture is not None:
        if model_args is None:
            model, args = _infer_and_build(architecture, state)
        else:
            args = dict(model_args)
            model = _build(architecture, args, check_size=True)
        card = Card(
            name=weights.stem,
            architecture=architecture,
            model_args=args,
            input_shape=_input_shape(architecture, args),
            notes=f"a state dict loaded from {weights.name}, with no card",
        )
        if invalid is not None:
            card.notes = (
                f"its card is invalid ({invalid.problem}); the weights are read as "
                f"{architecture}, with the shapes they show"
            )
            card.problem = invalid.problem
    else:
        raise CheckpointError(
            f"no card beside {weights.name}: say which architecture it is (--model NAME)"
        )
    card.path = weights

    model_state = model.state_dict()
    _refuse_bool_weights(weights.name, state, model_state)
    report = compare_state_dicts(state, model_state)
    if not report.ok:
        fitting = {
            k: v for k, v in state.items() if k in model_state and v.shape == model_state[k].shape
        }
        if strict or not fitting:
            raise MismatchError(
                f"{weights.name} does not fit {architecture}: {report.summary()}", report
            )
        state = fitting
    model.load_state_dict(state, strict=False)
    model.eval()
    warnings = [card.notes] if card.problem else []
    nonfinite = nonfinite_warning(weights.name, state)
    if nonfinite:
        warnings.append(nonfinite)
    mismatch = None if report.ok else report
    try:
        dynamics = DynamicsLog.from_stored(dynamics_tensors, card.dynamics)
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError):
        dynamics = None  # an untrusted file's history is only a view: skip it, keep the weights
        warnings.append(f"{weights.name}: its training dynamics are damaged and were skipped")
    return LoadedCheckpoint(model, card, weights, history, mismatch, warnings, dynamics)


def _save_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.suffix in TORCH_SUFFIXES:
        raise CheckpointError(
            f"{p.name}: checkpoints are saved as NAME.safetensors (give NAME or NAME.safetensors)"
        )
    return p if p.suffix == WEIGHTS_SUFFIX else p.with_name(p.name + WEIGHTS_SUFFIX)


def _tensors_to_save(
    model: nn.Module, filter_history: FilterHistory | None, dynamics: DynamicsLog | None = None
) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, no two sharing memory (safetensors refuses tied storage)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is not a tensor; it cannot be saved")
        if key.startswith(HISTORY_PREFIX):
            raise CheckpointError(f"parameter name {key!r} collides with the filter history")
        tensors[key] = value
    for epoch, layers in (filter_history or {}).items():
        if not _is_int(epoch) or epoch < 0:
            raise CheckpointError(f"filter history epochs must be integers ≥ 0, got {epoch!r}")
        for layer, weight in layers.items():
            tensors[f"{HISTORY_PREFIX}epoch{epoch}/{layer}"] = weight
    if dynamics is not None:
        for key, value in dynamics.to_tensors().items():
            tensors[DYNAMICS_PREFIX + key] = value
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()  # storages already written
    for key, value in tensors.items():
        value = value.detach().to("cpu").contiguous()
        if value.numel():
            if value.untyped_storage().data_ptr() in seen:
                value = value.clone()
            seen.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out


def save_checkpoint(
    model: nn.Module,
    card: Card,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    filter_history: FilterHistory | None = None,
    dynamics: DynamicsLog | None = None,
) -> Path:
    """Write NAME.safetensors and NAME.json; → the weights path. `filter_history` and
    `dynamics` go into the weights file under `lens_history/` (the card's own `dynamics` record
    is the caller's: `runs.result_card` writes it).

    Both files are written to temporary files and fsynced first. Then the old card goes, the
    weights are renamed into place, and the new card last: at every instant a card on disk
    describes complete weights beside it (a crash in between leaves bare weights, never a card
    pointing at missing, partial or other weights). On any error the temporary files are
    removed and, if it failed while writing them, the old checkpoint is untouched.
    """
    weights = _save_path(path)
    card_path = _card_path(weights)
    folder = weights.parent
    if not overwrite and (weights.exists() or card_path.exists()):
        raise CheckpointError(f"{weights} exists; pass overwrite to replace it")
    stamped = replace(
        card,
        name=card.name or weights.stem,
        input_shape=card.input_shape or _input_shape(card.architecture, card.model_args),
        created=card.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=card.versions or current_versions(),
    )
    card_bytes = stamped.to_json().encode("utf-8")
    weights_bytes = safetensors.torch.save(
        _tensors_to_save(model, filter_history, dynamics), metadata={"format": "pt"}
    )
    temps: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temps.append(files.write_temp(folder, weights.name, weights_bytes))
        temps.append(files.write_temp(folder, card_path.name, card_bytes))
        card_path.unlink(missing_ok=True)
        os.replace(temps[0], weights)
        os.replace(temps[1], card_path)
        files.fsync_folder(folder)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise CheckpointError(
                f"disk full while saving {_shown(weights)} ({err.strerror}): "
                "free some space and save again"
            ) from err
        raise CheckpointError(f"could not save {weights}: {err.strerror or err}") from err
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return weights


def _shown(path: Path) -> str:
    """A path as a user reads it: relative to the repository when inside it (runs/x)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def state_bytes(model: nn.Module) -> int:
    """The size of a model's tensors: a lower bound for its checkpoint file."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def ensure_free_space(folder: Path, needed: int) -> None:
    """Refuse before a long run when `folder`'s disk cannot hold `needed` bytes (the nearest
    existing ancestor is measured: the folder itself may not exist yet)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:  # cannot tell: the save itself will say if it does not fit
        return
    if free < needed:
        raise CheckpointError(
            f"disk full: the checkpoint needs at least {_size_text(needed)} in {_shown(folder)} "
            f"but {_size_text(free)} is free; free some space first"
        )


def ensure_writable(folder: Path) -> None:
    """Refuse before a long run when files cannot be created in `folder` (a read-only file
    system, no permission): a file is created there and removed again."""
    probe = folder / f".write-check-{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"cannot write in {_shown(folder)} ({err.strerror or err}): choose another --out"
        ) from None


def inside_shipped(path: Path) -> bool:
    """Whether `path` (after `..` and symbolic links) lies in trained/, the shipped folder."""
    shipped = TRAINED_DIR.resolve()
    resolved = path.resolve()
    return resolved == shipped or resolved.is_relative_to(shipped)


def validate_name(name: str, folder: Path) -> Path:
    """A user-typed checkpoint name → `folder/NAME.safetensors`, or LensError saying why not."""
    name = name.strip().removesuffix(WEIGHTS_SUFFIX)
    if not name:
        raise LensError("give the checkpoint a name")
    if "\x00" in name or "/" in name or "\\" in name or os.sep in name:
        raise LensError(f"{name!r}: a checkpoint name cannot hold a path; give a plain name")
    if name.startswith("."):
        raise LensError(f"{name!r}: a checkpoint name cannot start with a dot")
    if len(name) > MAX_NAME_LENGTH:
        raise LensError(f"checkpoint name is {len(name)} characters; keep it to {MAX_NAME_LENGTH}")
    if not NAME_PATTERN.fullmatch(name) or name.endswith("."):
        raise LensError(
            f"{name!r}: use letters, digits, '-', '_' and '.' only (not ending with '.')"
        )
    if name.split(".")[0].lower() in WINDOWS_RESERVED:
        raise LensError(f"{name!r} is a reserved file name on Windows; choose another")
    target = folder / f"{name}{WEIGHTS_SUFFIX}"
    if target.resolve().parent != folder.resolve():
        raise LensError(f"{name!r} would be saved outside {folder}")
    return target
