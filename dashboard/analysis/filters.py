"""Conv filters as the Filters page (and later the Convolution lab and checkpoint comparison)
sees them: which layers there are, their weights now or at an epoch of training, summary
statistics, and how the first layer's filters compare with the classic edge detectors.

Pure functions of a model, a weight tensor or an image: no Streamlit, nothing cached here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from dashboard.analysis import probe
from dashboard.base.errors import ShapeError, UnknownNameError

FilterHistory = Mapping[int, Mapping[str, torch.Tensor]]  # epoch → layer → (O, I, kh, kw)


def _tensor(x: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A CPU tensor copy of a tensor or an array (read-only cached arrays included)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", dtype)
    numpy_dtype = {torch.float64: np.float64, torch.float32: np.float32}[dtype]
    return torch.from_numpy(np.array(x, dtype=numpy_dtype))


@dataclass(frozen=True)
class ConvLayer:
    """One Conv2d: what the layer picker shows before any weights are drawn."""

    name: str
    out_channels: int
    in_channels: int  # per group: the weights' second axis
    kernel: tuple[int, int]
    groups: int

    @property
    def label(self) -> str:
        """'features.conv2 — 20 filters of 10×5×5'."""
        kh, kw = self.kernel
        grouped = f", {self.groups} groups" if self.groups > 1 else ""
        return f"{self.name} — {self.out_channels} filters of {self.in_channels}×{kh}×{kw}{grouped}"


def conv_layer_list(model: nn.Module) -> list[ConvLayer]:
    """Every Conv2d of the model in definition order (the first is the image's first layer)."""
    return [
        ConvLayer(name, m.out_channels, m.in_channels // m.groups, tuple(m.kernel_size), m.groups)
        for name, m in probe.conv_layers(model)
    ]


def history_epochs(history: FilterHistory, layer: str) -> list[int]:
    """Epochs with a saved snapshot of `layer` (0 = before training), ascending."""
    return sorted(epoch for epoch, layers in history.items() if layer in layers)


def layer_weights(
    model: nn.Module, layer: str, history: FilterHistory | None = None, epoch: int | None = None
) -> torch.Tensor:
    """The layer's weights (O, I, kh, kw) as a float CPU copy: the model's own (epoch None) or
    the snapshot saved at `epoch` of training."""
    if epoch is None:
        return probe.filter_weights(model, layer).float()
    saved = (history or {}).get(epoch, {})
    if layer not in saved:
        epochs = history_epochs(history or {}, layer)
        have = ", ".join(map(str, epochs)) if epochs else "none"
        raise UnknownNameError(f"no snapshot of {layer} at epoch {epoch}; epochs saved: {have}")
    return saved[layer].detach().cpu().float().clone()


@dataclass(frozen=True)
class WeightStats:
    count: int
    mean: float
    std: float  # population standard deviation (NumPy's default)
    min: float
    max: float


def weight_stats(weights: Any) -> WeightStats:
    w = _tensor(weights).ravel()
    if w.numel() == 0:
        raise ShapeError("no weights")
    return WeightStats(
        w.numel(), w.mean().item(), w.std(correction=0).item(), w.min().item(), w.max().item()
    )


def drift(history: FilterHistory, layer: str) -> dict[int, float]:
    """How far training moved the layer: ‖w_epoch − w_first‖ / ‖w_first‖ per saved epoch."""
    epochs = history_epochs(history, layer)
    if not epochs:
        return {}
    first = history[epochs[0]][layer].double()
    norm = first.norm().item() or 1.0
    return {e: (history[e][layer].double() - first).norm().item() / norm for e in epochs}


# ---------------------------------------------------------------------------------------------
# Classic edge detectors beside the first layer


def edge_kernels() -> dict[str, np.ndarray]:
    """Prewitt and Sobel 3×3 kernels (x = horizontal gradient, y = vertical, two diagonals)."""
    return {
        "Prewitt x": np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]),
        "Prewitt y": np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]]),
        "Prewitt 45°": np.array([[0, 1, 1], [-1, 0, 1], [-1, -1, 0]]),
        "Prewitt 135°": np.array([[-1, -1, 0], [-1, 0, 1], [0, 1, 1]]),
        "Sobel x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
        "Sobel y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
        "Sobel 45°": np.array([[0, 1, 2], [-1, 0, 1], [-2, -1, 0]]),
        "Sobel 135°": np.array([[-2, -1, 0], [-1, 0, 1], [0, 1, 2]]),
    }


def classic_kernels(size: tuple[int, int] = (3, 3)) -> dict[str, np.ndarray]:
    """Prewitt and Sobel kernels (`edge_kernels`), resized bilinearly (corners kept)
    to `size` when it is not 3×3, so they can be compared with 5×5 or 11×11 learned filters."""
    kernels = {name: k.astype(np.float64) for name, k in edge_kernels().items()}
    if tuple(size) == (3, 3):
        return kernels
    stack = torch.as_tensor(np.stack(list(kernels.values())))[:, None]  # (8, 1, 3, 3)
    resized = F.interpolate(stack, size=tuple(size), mode="bilinear", align_corners=True)
    return dict(zip(kernels, resized[:, 0].numpy(), strict=True))


def gray_kernels(weights: Any) -> np.ndarray:
    """(O, I, kh, kw) → (O, kh, kw): what each filter does to a gray image, whose channels are
    all equal, is the sum of its per-channel kernels."""
    w = _tensor(weights)
    if w.dim() != 4:
        raise ShapeError(f"filter weights must be (O, I, kh, kw), got {tuple(w.shape)}")
    return w.sum(dim=1).numpy()


@dataclass(frozen=True)
class ClassicMatch:
    """The classic kernel a learned filter is most alike (cosine of the gray-equivalent kernel
    with the resized classic one; negative = the same edge with the opposite sign)."""

    filter: int
    kernel: str
    cosine: float


def classic_matches(weights: Any) -> list[ClassicMatch]:
    """For each filter, the classic kernel with the largest |cosine similarity|."""
    learned = gray_kernels(weights)
    bank = classic_kernels(learned.shape[1:])
    names = list(bank)
    classic = np.stack([bank[n].ravel() for n in names])  # (8, kh·kw)
    classic /= np.linalg.norm(classic, axis=1, keepdims=True)
    flat = learned.reshape(len(learned), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    cosines = (flat / np.where(norms > 0, norms, 1.0)) @ classic.T  # (O, 8)
    best = np.abs(cosines).argmax(axis=1)
    return [ClassicMatch(i, names[k], float(cosines[i, k])) for i, k in enumerate(best.tolist())]


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) → (1, H, W): the mean over channels."""
    if image.dim() != 3:
        raise ShapeError(f"image must be (C, H, W), got {tuple(image.shape)}")
    return image.float().mean(dim=0, keepdim=True)


def filter_responses(weights: Any, image: torch.Tensor) -> np.ndarray:
    """Kernels (O, C, kh, kw) cross-correlated with the image (C, H, W) as `F.conv2d` does:
    (O, H, W), stride 1, no bias. The border is padded by repeating the edge pixels (zero
    padding would draw a false edge around a normalized image), so each map lines up with the
    image pixel for pixel."""
    w, x = _tensor(weights, torch.float32), _tensor(image, torch.float32)
    if w.dim() != 4 or x.dim() != 3 or w.shape[1] != x.shape[0]:
        raise ShapeError(
            f"filters {tuple(w.shape)} cannot be applied to an image of shape {tuple(x.shape)}"
        )
    kh, kw = w.shape[2:]
    padded = F.pad(x[None], ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), mode="replicate")
    return F.conv2d(padded, w)[0].numpy()  # (O, H, W)


def classic_responses(image: torch.Tensor) -> np.ndarray:
    """Each classic 3×3 kernel on the gray image (`to_gray`): (8, H, W) in `classic_kernels`
    order, computed like `filter_responses`."""
    bank = np.stack(list(classic_kernels().values()))[:, None]  # (8, 1, 3, 3)
    return filter_responses(bank, to_gray(image))


def sized_image(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """One uint8 image (C, H, W) at size × size, resized as `data.load_split` resizes a whole
    split (antialiased bilinear): the Filters page needs one image, not a resized split."""
    if pixels.shape[-2:] == (size, size):
        return pixels
    return TF.resize(pixels, [size, size], antialias=True)


def normalization(card: Any, info: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the model expects: its card's when it has one, else the dataset's."""
    saved = getattr(card, "normalization", None) or {}
    if saved.get("mean") and saved.get("std"):
        return tuple(saved["mean"]), tuple(saved["std"])
    return tuple(info.mean), tuple(info.std)
