"""Feature visualization: inputs optimized to excite a channel or a class.

Channels (Olah et al. 2017, "Feature Visualization", and the Lucid/Lucent code): one image per
channel, every channel of the layer at once (the channels are the batch), each image optimized
by Adam to maximize the MEAN of its channel's map. The regularizers that make the images
readable:

- every step each image is seen through a random jitter (shift), scale and rotation (one
  affine resampling, reflecting at the border), so only patterns that survive small moves win;
- RGB models: the image lives in Lucid's parameterization — a Fourier spectrum scaled by
  1/frequency (`decay_power`), decorrelated colour (Lucid's ImageNet colour-correlation square
  root) and a sigmoid into 0..1 — which favours natural-looking, low-frequency images;
- grayscale models: plain pixels kept in 0..1 (clamped after each step) with a total-variation
  penalty, `tv` × mean |difference of neighbouring pixels|.

Classes (Simonyan et al. 2014, "Deep Inside Convolutional Networks", §2, class model
visualization): an image per class maximizing the class's logit (the unnormalized score)
minus `l2` × ‖I‖² of the zero-centred (normalized) image, starting from the zero image (the
dataset's mean), plain pixels clamped to the model's input range; the random jitter, scale and
rotation are applied too unless `transform=False`.

The value a channel's image is scored on is its values before the activation function where
the atlas has them (a conv: its output or its batch norm's; an activation layer: its input, as
Lucid optimizes "pre-ReLU" tensors, since a ReLU's zero gradient would stall an image that
starts below zero); the result reports the mean and maximum of the channel's atlas values on
the final, untransformed images. Images are in the model's input range: pixels 0..1, which
the dataset's mean/std normalize before the model sees them, exactly like a dataset image.

Everything runs on a private copy of the model (weights with requires_grad off; the shared model
is never touched), random numbers come from one generator per unit seeded by (seed, unit), so a
unit's image does not depend on which other units share its batch, and the same seed gives the
same images. `progress(step, total)` is called every step; `should_stop` is polled every step
and ends the optimization early with the images so far (`stopped=True`).
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dashboard.analysis import atlas, metrics, probe
from dashboard.base.errors import LensError, ShapeError
from dashboard.base.work import cpu_threads, stop_requested

# Lucid's square root of ImageNet's colour correlation (lucid/optvis/param/color.py), its
# columns scaled so that the largest has norm 1.
_COLOR_CORRELATION_SVD_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
COLOR_CORRELATION = _COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(_COLOR_CORRELATION_SVD_SQRT, axis=0)
)


@dataclass(frozen=True)
class VisSettings:
    """How images are optimized; the defaults suit 28–32 px inputs and grow with the image."""

    steps: int = 256  # Adam steps (Lucid's default is 512 for 224-px ImageNet models)
    lr: float = 0.05  # Adam's learning rate on the parameterization (Lucid's)
    seed: int = 0
    jitter: int | None = None  # shift in pixels each step; None: 1/14 of the side, at least 1
    scale: float = 0.05  # zoom drawn in 1 ± scale each step
    rotate: float = 10.0  # rotation drawn in ± degrees each step (Lucid's standard range)
    transform: bool = True  # False: no jitter, scale or rotation (Simonyan's plain ascent)
    decay_power: float = 1.0  # RGB: spectrum amplitude ∝ 1 / frequency^decay_power
    tv: float = 1.0  # grayscale: weight of the total-variation penalty
    l2: float = 0.01  # classes: weight of Simonyan's L2 penalty on the normalized image
    class_lr: float = 0.1  # classes: Adam's learning rate on normalized pixels
    batch: int | None = None  # units optimized together; None: as many as fit ~16 MB of input
    # CPU threads while optimizing (None: torch's). Many small steps: on a busy machine one
    # thread is several times faster than two that wait for each other every step.
    threads: int | None = None


@dataclass(frozen=True)
class FeatureVisualization:
    """Optimized images for some units (channels of a layer, or output classes)."""

    layer: str  # the layer's key, or "classes" for class model visualization
    units: np.ndarray  # (N,) int64 channels or classes
    images: np.ndarray  # (N, C, H, W) float32 in 0..1, the model's input before normalization
    objective: np.ndarray  # (N,) float32 mean of the unit's map (a class: its logit)
    maximum: np.ndarray  # (N,) float32 spatial maximum of the unit's map (a class: its logit)
    steps: np.ndarray  # (1,) int64 steps done per unit
    stopped: np.ndarray  # (1,) bool: ended early by should_stop
    seed: np.ndarray  # (1,) int64

    def rgb(self) -> np.ndarray:
        """(N, H, W, 3) uint8 for display (grayscale repeated)."""
        pixels = np.rint(np.clip(self.images, 0, 1) * 255).astype(np.uint8)
        if pixels.shape[1] == 1:
            pixels = np.repeat(pixels, 3, axis=1)
        return pixels.transpose(0, 2, 3, 1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as an array (the layer's key as UTF-8 bytes), for the disk cache."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        arrays["layer"] = np.frombuffer(self.layer.encode("utf-8"), dtype=np.uint8).copy()
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureVisualization:
        values = {f.name: np.asarray(arrays[f.name]) for f in fields(cls)}
        values["layer"] = values["layer"].astype(np.uint8).tobytes().decode("utf-8")
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Parameterizations: (N, C, H, W) images in 0..1 from trainable tensors


def _frequencies(h: int, w: int) -> torch.Tensor:
    """|f| of each rfft2 coefficient of an h × w image (Lucid's rfft2d_freqs)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)  # (h, w // 2 + 1)


class _FourierImage(nn.Module):
    """Lucid's fft_image + to_valid_rgb(decorrelate=True): spectrum → pixels → colour → 0..1."""

    def __init__(self, init: torch.Tensor, h: int, w: int, decay_power: float) -> None:
        super().__init__()
        self.spectrum = nn.Parameter(init)  # (N, C, h, w // 2 + 1, 2) real and imaginary parts
        scale = 1.0 / torch.clamp(_frequencies(h, w), min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", (scale * math.sqrt(h * w))[None, None, ..., None])
        self.register_buffer("colors", torch.from_numpy(COLOR_CORRELATION.T.copy()))
        self.size = (h, w)

    @staticmethod
    def init_shape(c: int, h: int, w: int) -> tuple[int, ...]:
        return (c, h, w // 2 + 1, 2)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0  # Lucid's "magic"
        if image.shape[1] == 3:  # decorrelated colour → RGB
            image = (image.permute(0, 2, 3, 1) @ self.colors).permute(0, 3, 1, 2)
        return torch.sigmoid(image)

    def project(self) -> None:
        """Nothing to keep in range: the sigmoid does it."""


class _PixelImage(nn.Module):
    """Plain pixels, clamped into [low, high] after every step."""

    def __init__(self, init: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        self.pixels = nn.Parameter(init)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def project(self) -> None:
        self.pixels.copy_(torch.maximum(torch.minimum(self.pixels, self.high), self.low))


# ---------------------------------------------------------------------------------------------
# Random jitter, scale and rotation


def _jitter_pixels(settings: VisSettings, size: int) -> int:
    return settings.jitter if settings.jitter is not None else max(1, round(size / 14))


def _warp(images: torch.Tensor, draws: torch.Tensor, settings: VisSettings) -> torch.Tensor:
    """Each image shifted, scaled and rotated by its own draw (N, 4), as one affine resampling.
    Pixels brought in from outside reflect the image (no flat border to exploit)."""
    H, W = images.shape[2:]
    jitter = _jitter_pixels(settings, max(H, W))
    u = draws.to(images.dtype)
    shift_y = torch.round((u[:, 0] * 2 - 1) * jitter) * 2 / H  # whole pixels, as Lucid's jitter
    shift_x = torch.round((u[:, 1] * 2 - 1) * jitter) * 2 / W
    zoom = 1 + (u[:, 2] * 2 - 1) * settings.scale
    angle = (u[:, 3] * 2 - 1) * math.radians(settings.rotate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )  # (N, 2, 3): output → input coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)  # fmt: skip


def _total_variation(images: torch.Tensor) -> torch.Tensor:
    """(N,) mean absolute difference of vertically and horizontally neighbouring pixels."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


# ---------------------------------------------------------------------------------------------
# The optimization


def frozen_copy(
    model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "cpu"
) -> nn.Module:
    """A private copy whose weights need no gradient (gradients flow to the images only):
    `metrics.inference_copy` (batch norm folded, channels-last on the CPU: resnet18-small's
    forward and backward 1.7× faster) when it answers like a plain copy on random inputs, else
    the plain copy. Copied under the probe's lock, so no other session's hooks ride along."""
    with probe._LOCK:
        plain = copy.deepcopy(model).eval().to(device)
        fast = metrics.inference_copy(model, device)
    x = torch.randn((4, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        expected, got = probe._first_tensor(plain(x)), probe._first_tensor(fast(x))
    agree = got is not None and expected is not None and got.shape == expected.shape
    private = fast if agree and torch.allclose(got, expected, rtol=1e-4, atol=1e-4) else plain
    for p in private.parameters():
        p.requires_grad_(False)
    return private


class _Adam:
    """Adam (Kingma & Ba 2015) on a few tensors, written out: torch.optim's first use imports
    torch._dynamo, 3–8 s on a busy 2-core machine, longer than a whole visualization."""

    def __init__(self, params: list[torch.Tensor], lr: float) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denominator = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denominator, value=-self.lr / (1 - b1**self.t))
            p.grad = None


@dataclass(frozen=True)
class _Problem:
    """What differs between channel and class visualization."""

    # (model input (N, C, H, W), the units' indices (N,)) → (N,) value to maximize
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # the same on the final images → (N,) objective and (N,) maximum to report
    measure: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    # (units, their generators) → the parameterization, whose forward gives its images
    image: Callable[[list[int], list[torch.Generator]], nn.Module]
    penalty: Callable[[torch.Tensor], torch.Tensor]  # (N,) subtracted from the score
    to_model: Callable[[torch.Tensor], torch.Tensor]  # the parameterization's images → input
    to_pixels: Callable[[torch.Tensor], torch.Tensor]  # … → pixels 0..1 for display
    lr: float


def _solve(
    problem: _Problem,
    layer: str,
    units: list[int],
    input_shape: tuple[int, int, int],
    settings: VisSettings,
    device: str | torch.device,
    progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | threading.Event | None,
) -> FeatureVisualization:
    """Adam on each chunk of units: maximize score − penalty through random transforms."""
    if settings.batch is not None:
        batch = max(1, settings.batch)
    else:  # as many as fit metrics' per-batch input budget (28-px: thousands; 224-px: 26)
        batch = max(1, min(len(units), metrics.MAX_BATCH_VALUES // math.prod(input_shape)))
    chunks = [units[i : i + batch] for i in range(0, len(units), batch)]
    total, done = settings.steps * len(chunks), 0
    images, objectives, maxima = [], [], []
    steps, stopped = settings.steps, False
    for chunk in chunks:
        index = torch.as_tensor(chunk, device=device)
        generators = [torch.Generator().manual_seed(settings.seed * 1_000_003 + u) for u in chunk]
        # every step's jitter, scale and rotation, drawn per unit: (steps, N, 4) in [0, 1)
        draws = torch.stack([torch.rand(settings.steps, 4, generator=g) for g in generators], 1)
        image = problem.image(chunk, generators).to(device)
        optimizer = _Adam(list(image.parameters()), problem.lr)
        for step in range(settings.steps):
            if stop_requested(should_stop):
                steps, stopped = min(steps, step), True
                break
            current = image()
            seen = (
                _warp(current, draws[step].to(device), settings) if settings.transform else current
            )
            value = problem.score(problem.to_model(seen), index) - problem.penalty(current)
            (-value.sum()).backward()
            optimizer.step()
            image.project()
            done += 1
            if progress is not None:
                progress(done, total)
        with torch.no_grad():
            final = image()
            objective, maximum = problem.measure(problem.to_model(final), index)
            images.append(problem.to_pixels(final).clamp(0, 1).cpu())
        objectives.append(objective.cpu())
        maxima.append(maximum.cpu())
        if stopped:
            break
    shown = torch.cat(images)
    return FeatureVisualization(
        layer=layer,
        units=np.asarray(units[: len(shown)], dtype=np.int64),
        images=shown.numpy().astype(np.float32),
        objective=torch.cat(objectives).numpy().astype(np.float32),
        maximum=torch.cat(maxima).numpy().astype(np.float32),
        steps=np.array([steps], dtype=np.int64),
        stopped=np.array([stopped]),
        seed=np.array([settings.seed], dtype=np.int64),
    )


def _units(requested: Sequence[int] | None, count: int, what: str) -> list[int]:
    units = list(range(count)) if requested is None else [int(u) for u in requested]
    if not units or min(units) < 0 or max(units) >= count:
        raise LensError(f"{what} must lie in 0..{count - 1}")
    return units


def _checked_flow(model: nn.Module, input_shape: tuple[int, int, int]) -> probe.ShapeFlow:
    flow = probe.shape_flow(model, input_shape)
    if flow.broken is not None:
        raise ShapeError(f"{flow.broken.layer or 'the model'} breaks: {flow.broken.reason}")
    return flow


def _normalization(
    mean: Sequence[float], std: Sequence[float], device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return m, s


def _no_penalty(images: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(images), device=images.device)


def visualize_channels(
    model: nn.Module,
    layer: str,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels: Sequence[int] | None = None,
    settings: VisSettings | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | threading.Event | None = None,
) -> FeatureVisualization:
    """One image per channel of `layer` (all by default) maximizing the channel's mean
    activation; `mean`/`std` are the model's input normalization (its card's)."""
    settings = settings or VisSettings()
    C, H, W = (int(v) for v in input_shape)
    flow = _checked_flow(model, (C, H, W))
    plan = atlas.plan_layer(model, layer)
    out_shape = flow.find(*probe._parse_key(layer)).output_shape
    if len(out_shape) not in (1, 3):
        raise ShapeError(f"{layer} outputs {out_shape}: no channels to visualize")
    units = _units(channels, out_shape[0], "channels")
    private = frozen_copy(model, (C, H, W), device)
    # inference_copy lays conv nets on the CPU out channels-last: inputs likewise
    layout = (
        torch.channels_last if metrics._channels_last(private, device) else torch.preserve_format
    )
    m, s = _normalization(mean, std, device)
    kept: dict[atlas.Tap, torch.Tensor] = {}

    def keeper(tap: atlas.Tap) -> Callable[[torch.Tensor], None]:
        def keep(t: torch.Tensor) -> None:  # a copy: an in-place ReLU may overwrite t later
            kept[tap] = (t if t.dim() == 4 else t[:, :, None, None]).clone()  # (N, C, h, w)

        return keep

    def unit_maps(tap: atlas.Tap, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        run(x)
        return kept[resolved[tap]][torch.arange(len(index)), index].flatten(1)  # (N, h·w)

    def score(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return unit_maps(plan.before, x, index).mean(1)

    def measure(x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = unit_maps(plan.values, x, index)
        return maps.mean(1), maps.amax(1)

    def image(chunk: list[int], generators: list[torch.Generator]) -> nn.Module:
        if C == 3:
            shape = _FourierImage.init_shape(C, H, W)
            init = torch.stack([torch.randn(shape, generator=g) * 0.01 for g in generators])
            return _FourierImage(init, H, W, settings.decay_power)
        init = torch.stack([0.5 + torch.randn((C, H, W), generator=g) * 0.01 for g in generators])
        return _PixelImage(init, torch.zeros(()), torch.ones(()))

    def penalty(images: torch.Tensor) -> torch.Tensor:
        return settings.tv * _total_variation(images)

    problem = _Problem(
        score=score,
        measure=measure,
        image=image,
        penalty=_no_penalty if C == 3 else penalty,
        to_model=lambda x: ((x - m) / s).contiguous(memory_format=layout),
        to_pixels=lambda x: x,
        lr=settings.lr,
    )
    # in the inference copy a folded batch norm is read at its conv (atlas.resolve_tap)
    resolved = {t: atlas.resolve_tap(plan, private, t) for t in (plan.before, plan.values)}
    taps = {tap: keeper(tap) for tap in resolved.values()}
    with atlas.tapped(private, taps) as run, cpu_threads(settings.threads):
        return _solve(problem, layer, units, (C, H, W), settings, device, progress, should_stop)


def visualize_classes(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    classes: Sequence[int] | None = None,
    settings: VisSettings | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | threading.Event | None = None,
) -> FeatureVisualization:
    """Simonyan et al.'s class model: per class an image maximizing logit − l2·‖I‖², I the
    normalized image; pixels stay within the model's input range (0..1 before normalizing)."""
    settings = settings or VisSettings()
    C, H, W = (int(v) for v in input_shape)
    flow = _checked_flow(model, (C, H, W))
    if flow.output_shape is None or len(flow.output_shape) != 1:
        raise ShapeError(f"class model visualization needs class scores, not {flow.output_shape}")
    units = _units(classes, flow.output_shape[0], "classes")
    private = frozen_copy(model, (C, H, W), device)
    m, s = _normalization(mean, std, device)

    def score(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return probe._first_tensor(private(x))[torch.arange(len(index)), index]

    def measure(x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit = score(x, index)
        return logit, logit

    def image(chunk: list[int], generators: list[torch.Generator]) -> nn.Module:
        # the zero image of the normalized input is the dataset's mean image
        return _PixelImage(torch.zeros((len(chunk), C, H, W)), ((0 - m) / s)[0], ((1 - m) / s)[0])

    problem = _Problem(
        score=score,
        measure=measure,
        image=image,
        penalty=lambda x: settings.l2 * x.pow(2).flatten(1).sum(1),
        to_model=lambda x: x,
        to_pixels=lambda x: x * s + m,
        lr=settings.class_lr,
    )
    with cpu_threads(settings.threads):
        return _solve(problem, "classes", units, (C, H, W), settings, device, progress, should_stop)
