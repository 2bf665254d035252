"""A model as an ONNX file, so it opens in Netron, onnxruntime and the rest of the ONNX world.

The graph takes what the model takes: images normalized with the dataset's mean and standard
deviation, any batch size (a dynamic first axis). Those numbers, the class names and the input
shape travel in the file's metadata (`cnn_lens.*`), so a reader of the file alone can prepare
an image. torch's exporter built on torch.export is tried first; a model it cannot trace is
exported by the older TorchScript exporter, and the result says which one wrote the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dashboard.base import files, paths
from dashboard.base.errors import LensError

OPSET = 18
INPUT, OUTPUT = "images", "logits"


@dataclass(frozen=True)
class Exported:
    """An ONNX file written: where, what it takes, and how it was made."""

    path: Path
    input_shape: tuple[int, ...]
    opset: int
    exporter: str  # "torch.export" or "torchscript"
    size: int  # bytes


def onnx_bytes(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    classes: Sequence[str] = (),
) -> tuple[bytes, str]:
    """The ONNX file of `model` for (batch, *input_shape) inputs, and the exporter that made it.
    The model is exported as it is, in eval mode, on the CPU; a copy is not needed (export
    only traces it)."""
    import onnx

    if len(input_shape) != 3 or min(input_shape) < 1:
        raise LensError(f"an ONNX export needs a (C, H, W) input shape, got {tuple(input_shape)}")
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval().cpu()
    example = (torch.zeros(2, *input_shape),)  # two images: the batch axis stays free
    try:
        proto, exporter = _export(model, example)
    finally:
        model.train(was_training).to(device)
    facts = {
        "cnn_lens.input_shape": json.dumps(list(input_shape)),
        "cnn_lens.mean": json.dumps(list(mean)),
        "cnn_lens.std": json.dumps(list(std)),
        "cnn_lens.classes": json.dumps(list(classes)),
    }
    for key, value in facts.items():
        onnx.helper.set_model_props(proto, {**_props(proto), key: value})
    return proto.SerializeToString(), exporter


def _export(model: nn.Module, example: tuple[torch.Tensor]):
    """(onnx.ModelProto, exporter name): torch.export's exporter, else TorchScript's."""
    import onnx

    batch = torch.export.Dim("batch", min=1)
    names = {"opset_version": OPSET, "input_names": [INPUT], "output_names": [OUTPUT]}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, example, dynamo=True, dynamic_shapes=({0: batch},), verbose=False, **names
            )
        return program.model_proto, "torch.export"
    except Exception as first:
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
                torch.onnx.export(model, example, buffer, dynamo=False, dynamic_axes=axes, **names)
        except Exception as second:
            reason = (str(second).strip().splitlines() or [type(second).__name__])[0][:200]
            raise LensError(
                f"the model cannot be exported to ONNX ({reason}; torch.export said: "
                f"{(str(first).strip().splitlines() or [type(first).__name__])[0][:200]})"
            ) from None
        return onnx.load_from_string(buffer.getvalue()), "torchscript"


def _props(proto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    *,
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    classes: Sequence[str] = (),
) -> Exported:
    """Write the model's ONNX file to `path` atomically (a reader never sees half a file).
    Refused: a path inside the shipped `trained/` folder, a folder, or a name without .onnx."""
    target = Path(path).expanduser()
    if target.suffix.lower() != ".onnx":
        raise LensError(f"{target} should end in .onnx")
    if target.is_dir():
        raise LensError(f"{target} is a folder: give a file name ending in .onnx")
    resolved = target.resolve()
    if resolved.is_relative_to(paths.TRAINED_DIR.resolve()):
        raise LensError(f"{target} is inside trained/, the shipped checkpoints: write elsewhere")
    content, exporter = onnx_bytes(model, input_shape, mean=mean, std=std, classes=classes)
    try:
        files.write_atomically(target, content)
    except OSError as err:
        raise LensError(f"cannot write {target}: {err.strerror or err}") from None
    return Exported(target, tuple(input_shape), OPSET, exporter, len(content))
