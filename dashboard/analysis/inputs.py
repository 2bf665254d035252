"""What the Activations page looks at: the input image, and which layer shows it.

Inputs come from three places, and all end as the same record, `Prepared`: uint8 pixels shaped
like the dataset's images `(C, H, W)`, normalized by `model_input` exactly as the test split is.

- a test-set image, by index, by class, or among the model's mistakes;
- an uploaded image file (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM), through the same gate as
  folder images (`images.decode`: byte, format and pixel limits checked before any pixel is
  decoded, so a decompression bomb costs a header read, not gigabytes); JPEGs are decoded at a
  reduced scale when they are large; the image is turned upright by its EXIF tag;
  16-bit images are rescaled (not clamped) to 8 bits; the first frame of an animation is used;
  transparency is composited onto the dataset's background. For 1-channel models the image is
  made light-on-dark like MNIST (dark ink on paper is inverted, and the note says so), and for
  digit models it is size-normalized and centred by centre of mass, as MNIST's digits were;
- a digit drawn on a canvas (RGBA pixels), size-normalized the same way.

Layer choice: `activation_partner` pairs a conv/BN/pool/linear layer with the activation module
that follows it in the forward pass, for the page's before/after-the-activation toggle.
The session-state keys other pages use to point this page at an input or a neuron live here too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from dashboard import data
from dashboard.analysis import metrics, probe
from dashboard.base import images
from dashboard.base.errors import LensError

# Session-state keys and the query parameter other pages (the confusion-matrix gallery, the
# convolution lab, links) use to open an input or a neuron on the Activations page.
IMAGE_INDEX_KEY = "lens_image_index"  # int: index into the selected dataset's test split
SOURCE_KEY = "lens_input_source"  # one of SOURCES
LAYER_KEY = "lens_layer"  # str: a layer key as in probe.activations ("name" or "name#k")
NEURON_KEY = "lens_neuron"  # dict: Neuron fields (layer, channel, y, x)
IMAGE_QUERY = "image"  # ?image=123 opens that test image
SOURCE_TEST, SOURCE_UPLOAD, SOURCE_DRAW = "test image", "upload", "draw"
SOURCES = (SOURCE_TEST, SOURCE_UPLOAD, SOURCE_DRAW)

WORK_SIDE = 1024  # images are shrunk to this longer side before any float work
DISPLAY_SIDE = 480  # the "original" returned for display
MNIST_SIZE = 28
MNIST_BOX = 20  # MNIST's digits were scaled to fit 20×20, then centred by mass in 28×28
_INK_LEVEL = 0.3  # share of the brightest ink that counts for the bounding box


@dataclass(frozen=True)
class Prepared:
    """One input, ready for the model, and what to show for it."""

    pixels: np.ndarray  # (C, H, W) uint8 like the dataset's images, before normalization
    original: np.ndarray  # (h, w, 3) uint8: the image as decoded, upright, for display
    notes: tuple[str, ...] = ()  # what preprocessing did, one sentence each
    label: int | None = None  # the true class when known (test images)
    name: str = ""  # for captions: "test image 12", "photo.jpg", "your drawing"

    @property
    def key(self) -> str:
        """Identity for caches: a hash of the pixels the model sees."""
        return input_key(self.pixels)


@dataclass(frozen=True)
class Mistake:
    """One misclassified test image."""

    index: int
    true: int
    predicted: int
    confidence: float  # the probability given to the wrong class

    def label(self, classes: Sequence[str]) -> str:
        return (
            f"#{self.index}: {classes[self.true]} → {classes[self.predicted]} "
            f"({self.confidence:.0%})"
        )


@dataclass(frozen=True)
class Neuron:
    """One activation: layer key, channel, and position in its map (for the convolution lab)."""

    layer: str
    channel: int
    y: int = 0
    x: int = 0


def input_key(pixels: np.ndarray) -> str:
    a = np.ascontiguousarray(pixels)
    digest = hashlib.sha1(a.tobytes(), usedforsecurity=False)
    digest.update(repr((a.shape, str(a.dtype))).encode())
    return digest.hexdigest()[:20]


def model_input(pixels: np.ndarray, info: data.DatasetInfo) -> torch.Tensor:
    """(C, H, W) uint8 → (1, C, H, W) float32 normalized like the split's batches."""
    return data.normalize(torch.from_numpy(np.ascontiguousarray(pixels))[None], info.mean, info.std)


# ---------------------------------------------------------------------------------------------
# Test-set images


def parse_index(value: object, count: int) -> int | None:
    """A query-parameter or typed index if it names an image of the split, else None."""
    try:
        index = int(str(value).strip())
    except ValueError:
        return None
    return index if 0 <= index < count else None


def test_image(split: data.Split, index: int) -> Prepared:
    if not 0 <= index < len(split):
        raise LensError(f"image {index} does not exist: the test split has {len(split):,}")
    pixels = split.images[index].numpy()
    return Prepared(
        pixels=pixels,
        original=_display_rgb(pixels),
        label=int(split.labels[index]),
        name=f"test image {index}",
    )


def class_indices(labels: np.ndarray | torch.Tensor, cls: int) -> np.ndarray:
    """Indices of the images of one class, in split order."""
    return np.flatnonzero(np.asarray(labels) == cls)


def mistakes(pred: metrics.Predictions, true_class: int | None = None) -> list[Mistake]:
    """The misclassified images (metrics.misclassified), optionally of one true class."""
    wrong = metrics.misclassified(pred)
    if true_class is not None:
        wrong = wrong[pred.labels[wrong] == true_class]
    return [
        Mistake(
            int(i),
            int(pred.labels[i]),
            int(pred.predicted[i]),
            float(pred.probabilities[i, pred.predicted[i]]),
        )
        for i in wrong
    ]


# ---------------------------------------------------------------------------------------------
# Uploaded files


def decode_image(raw: bytes, name: str = "") -> np.ndarray:
    """Bytes of an image file → (H, W, 4) uint8 RGBA, upright, longer side ≤ WORK_SIDE.

    Through the image gate (images.decode: size, format, pixel limits checked before Pillow
    decodes a pixel); every failure is a one-line LensError: empty, too large, not an image,
    truncated. Big JPEGs are decoded at 1/2, 1/4 or 1/8 scale.
    """
    image = images.decode(raw, name or "the file", draft_to=WORK_SIDE)
    rgba = images.to_rgba(image)
    rgba.thumbnail((WORK_SIDE, WORK_SIDE), PIL.Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(rgba)


def prepare_upload(
    raw: bytes, info: data.DatasetInfo, *, digits: bool = False, name: str = ""
) -> Prepared:
    """An uploaded image file → the model's input for a dataset like `info`.

    `digits`: size-normalize and centre like MNIST (for digit models; 1 channel only).
    """
    rgba = decode_image(raw, name)
    if info.channels == 1:
        return _prepare_gray(rgba, info, digits=digits, name=name or "upload")
    background = np.rint(np.asarray(info.mean) * 255).astype(np.float64)
    rgb = _composite(rgba, background)
    notes = []
    if _has_transparency(rgba):
        colour = ", ".join(str(int(v)) for v in background)
        notes.append(f"transparent parts filled with the dataset's mean colour ({colour})")
    pixels = data.preprocess_pil(PIL.Image.fromarray(rgb), info).numpy()
    notes.append(_resize_note(rgba, info))
    return Prepared(pixels, _shrink(rgb), tuple(notes), name=name or "upload")


def _prepare_gray(rgba: np.ndarray, info: data.DatasetInfo, *, digits: bool, name: str) -> Prepared:
    """Light ink on black, as MNIST-like datasets are; dark ink on a light ground inverted."""
    luma = _luma(rgba[..., :3]).astype(np.float64)
    alpha = rgba[..., 3].astype(np.float64) / 255
    notes = []
    if _has_transparency(rgba):
        opaque = alpha > 0.5
        ink = float(np.average(luma, weights=alpha)) if alpha.sum() > 0 else 255.0
        dark_ink = bool(opaque.any()) and ink < 128
        shown = _composite(rgba, np.full(3, 255.0 if dark_ink else 0.0))
        if dark_ink:
            luma = 255 - luma
            notes.append("dark ink on a transparent background: inverted to light on black")
        else:
            notes.append("transparent parts filled with black, the dataset's background")
        gray = luma * alpha  # composited onto black
    else:
        shown = rgba[..., :3]
        gray = luma
        if _border_level(gray) > 127:
            gray = 255 - gray
            notes.append(
                "dark on a light background: inverted to light on black, as the training images are"
            )
    if digits:
        gray = _stretch(gray)
        digit = mnist_center(gray)
        notes.append(
            "digit cropped to its ink, scaled to fit 20×20 and centred by centre of mass "
            "in 28×28, as MNIST's digits were"
        )
        pixels = _resize_square(digit, info.size)
        if info.size != MNIST_SIZE:
            notes.append(f"resized to {info.size}×{info.size} for this model")
    else:
        image = PIL.Image.fromarray(np.rint(gray).clip(0, 255).astype(np.uint8))
        pixels = data.preprocess_pil(image, info).numpy()
        notes.append(_resize_note(rgba, info))
    return Prepared(pixels, _shrink(shown), tuple(notes), name=name)


def _resize_note(rgba: np.ndarray, info: data.DatasetInfo) -> str:
    h, w = rgba.shape[:2]
    if (h, w) == (info.size, info.size):
        return f"already {info.size}×{info.size}"
    squash = " (aspect ratio not kept, like the folder images)" if h != w else ""
    return f"resized from {w}×{h} to {info.size}×{info.size}{squash}"


def _has_transparency(rgba: np.ndarray) -> bool:
    return bool((rgba[..., 3] < 255).any())


def _composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Alpha-blend onto a flat colour → (H, W, 3) uint8."""
    alpha = rgba[..., 3:].astype(np.float64) / 255
    rgb = rgba[..., :3].astype(np.float64) * alpha + background * (1 - alpha)
    return np.rint(rgb).clip(0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """PIL's integer luma (ITU-R 601), as data.py turns RGB into one channel."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _border_level(gray: np.ndarray) -> float:
    """Median of the outer ring (5 % of each side, at least one pixel): the background."""
    h, w = gray.shape
    dy, dx = max(1, h // 20), max(1, w // 20)
    ring = np.concatenate(
        [gray[:dy].ravel(), gray[-dy:].ravel(), gray[:, :dx].ravel(), gray[:, -dx:].ravel()]
    )
    return float(np.median(ring))


def _stretch(gray: np.ndarray) -> np.ndarray:
    """Background to 0 and the brightest ink to 255: paper is never quite white."""
    floor = min(_border_level(gray), float(np.percentile(gray, 50)))
    top = float(gray.max())
    if top - floor < 1:
        return np.zeros_like(gray, dtype=np.float64)
    return np.clip((gray - floor) / (top - floor), 0.0, 1.0) * 255


def _shrink(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= DISPLAY_SIDE:
        return np.ascontiguousarray(rgb)
    image = PIL.Image.fromarray(rgb)
    image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), PIL.Image.Resampling.LANCZOS)
    return np.asarray(image)


def _display_rgb(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 → (H, W, 3) uint8."""
    hwc = np.ascontiguousarray(pixels.transpose(1, 2, 0))
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc


def _resize_square(gray28: np.ndarray, size: int) -> np.ndarray:
    """(28, 28) uint8 → (1, size, size) uint8."""
    t = torch.from_numpy(np.ascontiguousarray(gray28))[None]
    if size != gray28.shape[0]:
        t = TF.resize(t, [size, size], antialias=True)
    return t.numpy()


# ---------------------------------------------------------------------------------------------
# MNIST-style digits


def mnist_center(gray: np.ndarray) -> np.ndarray:
    """Light-on-dark digit of any size → (28, 28) uint8 the way MNIST was made.

    Crop to the ink's bounding box, scale the longer side to 20 pixels (aspect kept,
    antialiased), and paste into 28×28 so the centre of mass lands on pixel (14, 14) — where
    MNIST's digits have theirs. Raises LensError when there is no ink.
    """
    g = np.asarray(gray, dtype=np.float64)
    if g.ndim != 2:
        raise LensError(f"a digit must be one 2-D gray image, got shape {g.shape}")
    top = float(g.max(initial=0.0))
    if top <= 0:
        raise LensError("there is no ink in the image: nothing to recognise")
    rows = np.flatnonzero((g >= _INK_LEVEL * top).any(axis=1))
    cols = np.flatnonzero((g >= _INK_LEVEL * top).any(axis=0))
    crop = g[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = MNIST_BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    t = torch.from_numpy(crop.astype(np.float32))[None]
    resized = TF.resize(t, [new_h, new_w], antialias=True)[0].numpy().clip(0, 255)
    if resized.max() > 0:  # keep the ink's brightness: MNIST strokes reach 255
        resized = resized * (min(top, 255.0) / resized.max())
    digit = np.rint(resized).astype(np.uint8)
    cy, cx = _centre_of_mass(digit)
    y0 = int(np.clip(round(MNIST_SIZE / 2 - cy), 0, MNIST_SIZE - new_h))
    x0 = int(np.clip(round(MNIST_SIZE / 2 - cx), 0, MNIST_SIZE - new_w))
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.uint8)
    out[y0 : y0 + new_h, x0 : x0 + new_w] = digit
    return out


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    weights = image.astype(np.float64)
    total = weights.sum()
    ys, xs = np.indices(image.shape)
    return float((ys * weights).sum() / total), float((xs * weights).sum() / total)


def canvas_digit(rgba: np.ndarray | None) -> np.ndarray | None:
    """A canvas drawing (H, W, 4) uint8, light strokes → (28, 28) uint8; None if blank."""
    if rgba is None:
        return None
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise LensError(f"a drawing must be (H, W, 4) RGBA, got shape {a.shape}")
    luma = _luma(a[..., :3]).astype(np.float64)
    alpha = a[..., 3].astype(np.float64) / 255 if a.shape[2] == 4 else 1.0
    gray = luma * alpha  # strokes over a transparent or black background
    if gray.max(initial=0.0) < 32:  # nothing drawn (or only faint dust)
        return None
    return mnist_center(gray)


def prepare_drawing(rgba: np.ndarray | None, info: data.DatasetInfo) -> Prepared | None:
    """A canvas drawing → the model's input; None while the canvas is blank. For 1-channel
    models a digit centred like MNIST's; for colour models the canvas itself, resized."""
    if info.channels != 1:
        return _colour_drawing(rgba, info)
    digit = canvas_digit(rgba)
    if digit is None:
        return None
    notes = ["your strokes cropped, scaled to fit 20×20 and centred by mass in 28×28, as MNIST"]
    if info.size != MNIST_SIZE:
        notes.append(f"resized to {info.size}×{info.size} for this model")
    original = np.asarray(rgba)[..., :3]
    return Prepared(
        _resize_square(digit, info.size), _shrink(original), tuple(notes), name="your drawing"
    )


def _colour_drawing(rgba: np.ndarray | None, info: data.DatasetInfo) -> Prepared | None:
    if rgba is None or canvas_digit(rgba) is None:  # nothing drawn yet
        return None
    rgb = np.ascontiguousarray(np.asarray(rgba)[..., :3])
    pixels = data.preprocess_pil(PIL.Image.fromarray(rgb), info).numpy()
    h, w = rgb.shape[:2]
    notes = (f"your drawing resized from {w}×{h} to {info.size}×{info.size}",)
    return Prepared(pixels, _shrink(rgb), notes, name="your drawing")


# ---------------------------------------------------------------------------------------------
# A model's own input and class names, for models no dataset of the app fits

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's weights were trained with these
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000


def imagenet_categories() -> tuple[str, ...]:
    """ImageNet-1k's class names in output order, from torchvision's weights metadata (part of
    the library: nothing is downloaded). Every torchvision classifier's weights share them."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_names(
    outputs: int, own: Sequence[str] = (), *, imagenet: bool = False
) -> tuple[str, ...]:
    """What to call a model's `outputs`: its own class names when it has as many, ImageNet's
    categories for ImageNet weights, else "class 0", "class 1", …"""
    if len(own) == outputs:
        return tuple(map(str, own))
    if imagenet and outputs == IMAGENET_CLASSES:
        return imagenet_categories()
    return tuple(f"class {i}" for i in range(outputs))


def own_input(
    input_shape: Sequence[int],
    classes: Sequence[str],
    *,
    imagenet: bool = False,
    like: data.DatasetInfo | None = None,
) -> data.DatasetInfo:
    """How to prepare an uploaded or drawn image for a model that no dataset fits: its own
    channels and size, ImageNet's normalization for an ImageNet model (`imagenet`, or 1000
    outputs on 3 channels), else the selected dataset's (`like`) when its channels match, else
    0.5 ± 0.5."""
    channels, height = int(input_shape[0]), int(input_shape[-1])
    if imagenet or (channels == 3 and len(classes) == IMAGENET_CLASSES):
        mean, std, source = IMAGENET_MEAN, IMAGENET_STD, "ImageNet's normalization"
    elif like is not None and like.channels == channels:
        mean, std, source = like.mean, like.std, f"{like.title}'s normalization"
    else:
        mean, std, source = (0.5,) * channels, (0.5,) * channels, "normalized to ±1"
    shape = "×".join(map(str, input_shape))
    return data.DatasetInfo(
        name="",
        title=f"its own {shape} input",
        classes=tuple(classes),
        channels=channels,
        size=height,
        mean=tuple(mean),
        std=tuple(std),
        augment=False,
        description=f"an image resized to {shape}, {source}",
    )


# ---------------------------------------------------------------------------------------------
# Layers: what "after the activation function" means for each layer

ACTIVATION_TYPES = frozenset(
    {
        "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
        "Mish", "Sigmoid", "Tanh", "Hardtanh", "Hardswish", "Hardsigmoid", "Softplus",
        "Softsign", "LogSigmoid", "Tanhshrink",
    }
)  # fmt: skip
_REORDERABLE = ("MaxPool", "AvgPool", "AdaptiveMaxPool", "AdaptiveAvgPool", "Dropout")
_SKIPPED_TYPES = frozenset({"Flatten", "Dropout", "Dropout2d", "Identity", "Unflatten"})


@dataclass(frozen=True)
class Partner:
    """The activation that follows a layer, and how to read "after" from it."""

    key: str  # the activation's layer key
    type: str  # "ReLU", "Tanh", ...
    direct: bool  # True: its output is this layer's "after"; False: apply it to this layer
    between: tuple[str, ...]  # layers between the two (pooling when not direct)


def layer_key(record: probe.LayerRecord) -> str:
    """The key probe.activations uses for this call ("name", or "name#k" for repeats)."""
    return record.name if record.call_index == 0 else f"{record.name}#{record.call_index}"


def viewable_layers(flow: probe.ShapeFlow) -> list[probe.LayerRecord]:
    """Leaf calls worth a look: everything but reshapes and no-ops (flatten, dropout)."""
    return [r for r in flow.leaves if r.type not in _SKIPPED_TYPES and r.output_shape]


def default_layer(flow: probe.ShapeFlow) -> str | None:
    """The first conv layer's key, else the first viewable layer's."""
    layers = viewable_layers(flow)
    for record in layers:
        if record.type == "Conv2d":
            return layer_key(record)
    return layer_key(layers[0]) if layers else None


def is_activation(record: probe.LayerRecord) -> bool:
    return record.type in ACTIVATION_TYPES


def activation_partner(flow: probe.ShapeFlow, key: str) -> Partner | None:
    """The activation module after layer `key` in the forward pass, or None.

    Scans forward in execution order past batch norm, pooling and dropout, and stops at the next
    conv or linear layer. When its output has this layer's shape (conv → BN → ReLU, or a
    residual sum before the ReLU) that output is "after"; when only pooling lies between (the
    course net's conv → max-pool → ReLU), the activation is applied to this layer's own output,
    which is the same numbers before pooling (max-pooling commutes with a monotone activation).
    """
    leaves = flow.leaves
    index = next((i for i, r in enumerate(leaves) if layer_key(r) == key), None)
    if index is None or is_activation(leaves[index]):
        return None
    record = leaves[index]
    between: list[probe.LayerRecord] = []
    for later in leaves[index + 1 :]:
        if is_activation(later):
            names = tuple(layer_key(r) for r in between)
            if later.output_shape == record.output_shape:
                return Partner(layer_key(later), later.type, True, names)
            if all(r.type.startswith(_REORDERABLE) for r in between):
                return Partner(layer_key(later), later.type, False, names)
            return None
        if later.type.startswith(("Conv", "Linear", "Bilinear", "LSTM", "GRU", "RNN")):
            return None
        between.append(later)
    return None


def after_activation(model: nn.Module, partner: Partner, own: torch.Tensor) -> torch.Tensor:
    """A batch of a layer's maps (B, C, …) after its activation, when the partner is not
    `direct`: the partner module applied to them, under the probe's lock (so no other session's
    hooks see this extra call), to a copy (the module may work in place)."""
    module = dict(model.named_modules())[partner.key.partition("#")[0]]
    with probe._LOCK, torch.no_grad():
        return module(own.detach().to(torch.float32).clone())


def dead_layer(flow: probe.ShapeFlow, key: str) -> str | None:
    """The layer whose output says whether `key`'s channels ever fire, or None (logits, …).

    An activation answers for itself; a layer with an activation partner is answered by the
    partner (zero after a ReLU everywhere, also when pooled in between: a max-pool of values
    ≥ 0 is 0 only where they all are); pooling right after an activation answers for itself.
    """
    leaves = flow.leaves
    index = next((i for i, r in enumerate(leaves) if layer_key(r) == key), None)
    if index is None:
        return None
    record = leaves[index]
    if is_activation(record):
        return key
    partner = activation_partner(flow, key)
    if partner is not None:
        return partner.key
    previous = leaves[index - 1] if index else None
    if record.type.startswith(_REORDERABLE) and previous is not None and is_activation(previous):
        return key
    return None


def batch_channel_stats(
    model: nn.Module,
    split: data.Split,
    layers: Sequence[str],
    count: int,
    *,
    chunk: int = 32,
    max_values: int = 8_000_000,
) -> dict[str, list[probe.ChannelStats]]:
    """probe.channel_stats of each layer over the split's first `count` images, all layers from
    the same forward passes. Images go through in chunks holding at most `max_values` captured
    numbers (the first image alone tells how many one image makes), so memory stays bounded for
    big models; means and zero fractions are weighted by chunk size."""
    count = min(count, len(split))
    if count < 1 or not layers:
        raise LensError("no images or no layers to measure dead channels on")
    parts: list[tuple[int, dict[str, list[probe.ChannelStats]]]] = []
    start, step = 0, 1
    while start < count:
        pixels = split.images[start : min(start + step, count)]
        x = data.normalize(pixels, split.info.mean, split.info.std)
        acts = probe.activations(model, x, list(layers))
        parts.append((len(pixels), {k: probe.channel_stats(t) for k, t in acts.items()}))
        if start == 0:  # one image's worth of captured values sets the chunk size
            per_image = sum(t[0].numel() for t in acts.values())
            step = max(1, min(chunk, max_values // max(per_image, 1)))
        start += len(pixels)
    return {key: _combined([(n, stats[key]) for n, stats in parts], count) for key in acts}


def _combined(
    parts: list[tuple[int, list[probe.ChannelStats]]], count: int
) -> list[probe.ChannelStats]:
    return [
        probe.ChannelStats(
            channel=c,
            mean=sum(n * stats[c].mean for n, stats in parts) / count,
            max=max(stats[c].max for _, stats in parts),
            zero_fraction=sum(n * stats[c].zero_fraction for n, stats in parts) / count,
            dead=all(stats[c].dead for _, stats in parts),
        )
        for c in range(len(parts[0][1]))
    ]
