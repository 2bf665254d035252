"""Attribution: which pixels made the model give a class its score, by six methods, all Captum's.

- Saliency (Simonyan et al. 2014): the gradient of the class logit with respect to the input
  (`Saliency(abs=False)`: the signed gradient; the absolute display map is its magnitude).
- Integrated Gradients (Sundararajan et al. 2017): the gradient averaged along the straight
  path from a baseline to the image, times (image − baseline). The attributions add up to
  logit(image) − logit(baseline) up to Captum's convergence delta, reported with the map.
  The baseline says what "absent" means: black pixels, the dataset's mean colour (0 after
  normalization), or the image blurred.
- SmoothGrad (Smilkov et al. 2017): Captum's `NoiseTunnel` averaging another method (Saliency
  by default) over noisy copies of the image; the noise's standard deviation is a share of the
  dataset's pixel range, and its seed is fixed so a map is reproducible.
- Occlusion (Zeiler & Fergus 2014): the logit's drop when a square window is replaced by the
  baseline, averaged over the windows covering each pixel. The window is a seventh of the image
  side and the stride half of it, so every input size takes ~170 evaluations.
- Grad-CAM (Selvaraju et al. 2017) at a layer (default: the last conv block's output, after
  its activation, as pytorch-grad-cam recommends), upsampled bilinearly to the input.
- Guided Grad-CAM: Grad-CAM times guided backpropagation (ReLU gradients replaced).

The model is the cached one every Streamlit session shares and must never change. The gradient
methods run on it under the probe's lock (so no other session's hooks interleave with Captum's),
in eval mode, every module's own mode restored after; Captum asks `torch.autograd.grad` for the
input's (or the layer's) gradient only, so no parameter's `.grad` is written. Guided
backpropagation hooks every ReLU's backward pass, so it runs on a private copy with ReLUs that
do not work in place (lenet5: 0.3 ms to copy; a VGG-16's 528 MB: ~0.3 s). Long jobs (the sanity
cascade, the faithfulness curves) make one private copy and use it for every method.

A map comes as a record: the attribution with the input's shape (C, H, W) — Grad-CAM's
(1, H, W) once upsampled — and two 2-D display maps, signed (Σ over channels) and absolute
(Σ over channels of |·|). Pixels are ranked (deletion/insertion, the sanity check) by the
absolute map for the methods that measure sensitivity (Saliency, SmoothGrad, Guided Grad-CAM:
a gradient's sign says which way a pixel should move, not whether it is evidence) and by the
signed map for those whose values are contributions to the logit (Integrated Gradients,
Occlusion, Grad-CAM): evidence for the class first.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dashboard.analysis import gradcam, probe
from dashboard.base.errors import LensError, ShapeError, UnknownNameError
from dashboard.base.work import seeded
from dashboard.data import DatasetInfo

METHODS = (
    "saliency",
    "integrated-gradients",
    "smoothgrad",
    "occlusion",
    "grad-cam",
    "guided-grad-cam",
)
TITLES = {
    "saliency": "Saliency",
    "integrated-gradients": "Integrated Gradients",
    "smoothgrad": "SmoothGrad",
    "occlusion": "Occlusion",
    "grad-cam": "Grad-CAM",
    "guided-grad-cam": "Guided Grad-CAM",
}
BASELINES = ("black", "mean", "blur")
SMOOTHABLE = ("saliency", "integrated-gradients")  # what SmoothGrad's noise tunnel may average
# Ranked by magnitude (see the module's docstring); the others by their signed values.
BY_MAGNITUDE = frozenset({"saliency", "smoothgrad", "guided-grad-cam"})
LAYER_METHODS = frozenset({"grad-cam", "guided-grad-cam"})
BLUR_SIGMA = 0.1  # the blurred baseline's Gaussian σ as a share of the image side (2.8 px at 28)
OCCLUSION_WINDOW = 7  # the occlusion window is the image side over this (4 px at 28, 32 at 224)
BATCH_VALUES = 8_000_000  # input numbers per forward batch inside a method (float32: 32 MB)


@dataclass(frozen=True)
class Settings:
    """How the methods run; the defaults are the papers' usual choices."""

    baseline: str = "black"  # IG and Occlusion: what an absent pixel is (see BASELINES)
    # IG: points on the path (Gauss-Legendre). 50 keep the delta < 1 % of the logit difference
    # for the predicted class on lenet5; a class whose logit barely moves may need 500.
    steps: int = 50
    layer: str | None = None  # Grad-CAM, Guided Grad-CAM: None = the last conv block's output
    smooth_over: str = "saliency"  # the method SmoothGrad averages
    noise_samples: int = 25  # SmoothGrad: noisy copies (Smilkov et al. use 50; 25 look alike)
    noise_level: float = 0.15  # SmoothGrad: σ as a share of the pixel range (paper: 10–20 %)
    window: int | None = None  # Occlusion: window side in pixels; None = side / 7
    stride: int | None = None  # Occlusion: None = half the window
    seed: int = 0  # SmoothGrad's noise


@dataclass(frozen=True)
class Attribution:
    """One method's answer for one image and one class."""

    method: str
    target: int  # the class explained
    values: np.ndarray  # (C, H, W) float32; Grad-CAM (1, H, W) upsampled
    signed: np.ndarray  # (H, W) Σ over channels
    absolute: np.ndarray  # (H, W) Σ over channels of |values|
    logit: float  # the model's logit for `target` on the image
    probability: float  # its softmax probability
    baseline_logit: float | None = None  # IG: the logit for `target` at the baseline
    convergence_delta: float | None = None  # IG: Σ values − (logit − baseline_logit)
    layer: str | None = None  # Grad-CAM, Guided Grad-CAM: the layer read
    layer_map: np.ndarray | None = None  # Grad-CAM: (h, w) at the layer's resolution
    settings: Settings = field(default_factory=Settings)
    seconds: float = 0.0
    note: str = ""  # a caveat the display should show (e.g. no ReLU for guided backprop)

    @property
    def title(self) -> str:
        return TITLES[self.method]

    @property
    def ranking(self) -> np.ndarray:
        """The (H, W) map pixels are ranked by: magnitude or signed (module docstring)."""
        return self.absolute if self.method in BY_MAGNITUDE else self.signed

    @property
    def attribution_sum(self) -> float:
        return float(self.values.astype(np.float64).sum())


@dataclass(frozen=True)
class MapBatch:
    """A method's maps for a batch of images, as tensors (the batch form used by long jobs)."""

    values: torch.Tensor  # (B, C, H, W), or (B, 1, H, W) for Grad-CAM
    layer_maps: torch.Tensor | None = None  # Grad-CAM: (B, 1, h, w)
    deltas: torch.Tensor | None = None  # IG: (B,)
    baseline_logits: torch.Tensor | None = None  # IG: (B,) logit of the target at the baseline

    def display(self, method: str) -> torch.Tensor:
        """(B, H, W) ranking maps: Σ|·| over channels for BY_MAGNITUDE, else Σ."""
        values = self.values.abs() if method in BY_MAGNITUDE else self.values
        return values.sum(dim=1)


# ---------------------------------------------------------------------------------------------
# Which layer Grad-CAM reads: the same layers, and the same default, as the Activations page's
# Grad-CAM (`gradcam`): the layers with (C, H, W) outputs that run once per forward, and the
# last conv block's output.

cam_layers = gradcam.spatial_layers
default_layer = gradcam.default_layer


# ---------------------------------------------------------------------------------------------
# Baselines and method parameters


def baseline_images(x: torch.Tensor, info: DatasetInfo, kind: str) -> torch.Tensor:
    """(B, C, H, W) baselines for normalized images `x`, in the same units.

    black: pixel value 0, i.e. −mean/std per channel; mean: the dataset's mean colour, 0 after
    normalization; blur: the image under a Gaussian of σ = a tenth of its side (blurring and
    normalizing commute: both act per channel, the blur's weights sum to one).
    """
    if kind == "black":
        mean = torch.as_tensor(info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (-mean / std).expand_as(x).clone()
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "blur":
        return blur(x)
    raise UnknownNameError(f"unknown baseline {kind!r}; choose {', '.join(BASELINES)}")


def blur(x: torch.Tensor) -> torch.Tensor:
    """A Gaussian blur of σ = BLUR_SIGMA × the image side, reflected at the borders."""
    from torchvision.transforms.functional import gaussian_blur

    side = min(x.shape[-2:])
    sigma = max(BLUR_SIGMA * side, 0.5)
    radius = min(int(np.ceil(2 * sigma)), (side - 1) // 2)  # reflect padding needs < side
    return gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])


def occlusion_window(size: tuple[int, int], settings: Settings) -> tuple[int, int]:
    """(window, stride) in pixels: a seventh of the shorter side and half of that, unless set."""
    side = min(size)
    window = settings.window or max(2, round(side / OCCLUSION_WINDOW))
    window = min(window, side)
    stride = settings.stride or max(1, window // 2)
    return window, stride


def noise_sigma(info: DatasetInfo, level: float) -> float:
    """SmoothGrad's σ in normalized units: `level` × the pixel range 0..1 after normalization."""
    return float(level / np.mean(info.std))


def check_settings(settings: Settings) -> None:
    if settings.baseline not in BASELINES:
        raise UnknownNameError(
            f"unknown baseline {settings.baseline!r}; choose {', '.join(BASELINES)}"
        )
    if settings.smooth_over not in SMOOTHABLE:
        raise UnknownNameError(
            f"SmoothGrad averages {' or '.join(SMOOTHABLE)}, not {settings.smooth_over!r}"
        )
    if settings.steps < 1 or settings.noise_samples < 1:
        raise LensError("steps and noise samples must be at least 1")
    if not 0 < settings.noise_level <= 1:
        raise LensError(f"noise level must be in (0, 1], got {settings.noise_level}")
    for name in ("window", "stride"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise LensError(f"occlusion {name} must be at least 1 pixel, got {value}")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise UnknownNameError(f"unknown method {method!r}; choose {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------------------
# The model, shared or owned


def private_copy(model: nn.Module) -> nn.Module:
    """A copy of the model for hooks that change gradients: eval mode, ReLUs not in place
    (guided backprop's backward hooks cannot follow an in-place ReLU), same device."""
    own = copy.deepcopy(model).eval()
    for module in own.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return own


@contextmanager
def shared(model: nn.Module) -> Iterator[nn.Module]:
    """Hold the probe's lock, eval mode and autograd; restore every module's own mode."""
    with gradcam._shared_model(model), torch.enable_grad():  # gradcam's lock and modes
        yield model


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, K) class scores under no_grad; a model that does not return them is refused."""
    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise LensError("attribution needs a classifier: the model must return (B, classes)")
    return out


class Explainer:
    """Runs the methods on one model for images normalized with `info`; never changes it.

    `owned=True` says the model is the caller's private copy (the sanity cascade, the
    faithfulness curves): the methods then run on it directly, without the lock or a copy.
    `forward_only`, if given, is a faster model that answers like it (`metrics`' inference
    copy), owned too, for the method that needs no gradient (Occlusion).
    """

    def __init__(
        self,
        model: nn.Module,
        info: DatasetInfo,
        settings: Settings | None = None,
        *,
        owned: bool = False,
        forward_only: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.forward_only = forward_only
        self.info = info
        self.settings = settings or Settings()
        check_settings(self.settings)
        self.owned = owned
        self._copy: nn.Module | None = model if owned else None
        self._flow: probe.ShapeFlow | None = None

    @contextmanager
    def _model_for(self, method: str) -> Iterator[nn.Module]:
        if method == "occlusion" and self.forward_only is not None:
            yield self.forward_only
        elif self.owned:
            with torch.enable_grad():
                yield self.model
        elif method == "guided-grad-cam":
            if self._copy is None:
                self._copy = private_copy(self.model)
            with torch.enable_grad():
                yield self._copy
        else:
            with shared(self.model) as model:
                yield model

    def layer(self) -> str:
        """The Grad-CAM layer: the one set, else the last conv block's output."""
        if self.settings.layer:
            return self.settings.layer
        if self._flow is None:
            self._flow = probe.shape_flow(self.model, self.info.input_shape)
        layer = default_layer(self._flow)
        if layer is None:
            raise LensError("the model has no conv layer, so Grad-CAM has no map to read")
        return layer

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) logits of normalized images."""
        with self._model_for("logits") as model:
            return logits(model, x.to(_device(model)))

    def maps(self, x: torch.Tensor, targets: Sequence[int] | torch.Tensor, method: str) -> MapBatch:
        """One method's maps for a batch `x` (B, C, H, W) and one target class per image."""
        check_method(method)
        x = x.detach().to(_device(self.model), torch.float32)
        targets = torch.as_tensor(targets, dtype=torch.long, device=x.device).view(-1)
        if x.dim() != 4 or len(targets) != len(x):
            raise ShapeError(f"need images (B, C, H, W) and B targets, got {tuple(x.shape)}")
        layer = self.layer() if method in LAYER_METHODS else None
        with self._model_for(method) as model, warnings.catch_warnings():
            # Captum's notices: hooks set on ReLUs (removed after), inputs set to need grads.
            warnings.simplefilter("ignore", UserWarning)
            return _run(model, x, targets, method, self.settings, self.info, layer)

    def explain(self, x: torch.Tensor, method: str, target: int | None = None) -> Attribution:
        """One method for one image `x` (1, C, H, W); `target` None explains the predicted class."""
        if x.dim() != 4 or x.shape[0] != 1:
            raise ShapeError(f"explain takes one image shaped (1, C, H, W), got {tuple(x.shape)}")
        check_method(method)
        scores = self.scores(x)[0]
        K = scores.shape[0]
        target = int(scores.argmax()) if target is None else int(target)
        if not 0 <= target < K:
            raise LensError(f"class {target} is out of range: the model has {K} classes")
        start = time.perf_counter()
        batch = self.maps(x, [target], method)
        seconds = time.perf_counter() - start
        values = batch.values[0].detach().float().cpu()
        layer = self.layer() if method in LAYER_METHODS else None
        return Attribution(
            method=method,
            target=target,
            values=values.numpy(),
            signed=values.sum(dim=0).numpy(),
            absolute=values.abs().sum(dim=0).numpy(),
            logit=float(scores[target]),
            probability=float(torch.softmax(scores.double(), dim=0)[target]),
            baseline_logit=_first(batch.baseline_logits),
            convergence_delta=_first(batch.deltas),
            layer=layer,
            layer_map=(
                batch.layer_maps[0, 0].detach().cpu().numpy()
                if batch.layer_maps is not None
                else None
            ),
            settings=self.settings,
            seconds=seconds,
            note=self._note(method),
        )

    def _note(self, method: str) -> str:
        if method == "guided-grad-cam" and not any(
            isinstance(m, nn.ReLU) for m in self.model.modules()
        ):
            return "the model has no ReLU modules: guided backpropagation is the plain gradient"
        return ""


def _first(values: torch.Tensor | None) -> float | None:
    return None if values is None else float(values[0])


def _run(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    settings: Settings,
    info: DatasetInfo | None,  # None: a method that needs no baseline (Grad-CAM)
    layer: str | None,
) -> MapBatch:
    from captum import attr  # 0.5 s to import: only when a map is asked for

    per_image = int(np.prod(x.shape[1:]))
    batch = max(1, BATCH_VALUES // per_image)  # images per forward inside a method
    target = targets.tolist()
    if method == "saliency":
        values = attr.Saliency(model).attribute(x, target=target, abs=False)
        return MapBatch(values.detach())
    if method == "integrated-gradients":
        baseline = baseline_images(x, info, settings.baseline)
        values, deltas = attr.IntegratedGradients(model).attribute(
            x,
            baselines=baseline,
            target=target,
            n_steps=settings.steps,
            internal_batch_size=max(batch, len(x)),
            return_convergence_delta=True,
        )
        base = logits(model, baseline).gather(1, targets[:, None])[:, 0]
        return MapBatch(values.detach(), deltas=deltas.detach(), baseline_logits=base)
    if method == "smoothgrad":
        return MapBatch(_smoothgrad(attr, model, x, target, settings, info, batch))
    if method == "occlusion":
        window, stride = occlusion_window(tuple(x.shape[-2:]), settings)
        C = x.shape[1]
        values = attr.Occlusion(model).attribute(
            x,
            sliding_window_shapes=(C, window, window),
            strides=(C, stride, stride),
            baselines=baseline_images(x, info, settings.baseline),
            target=target,
            perturbations_per_eval=max(1, batch // len(x)),
        )
        return MapBatch(values.detach())
    module = dict(model.named_modules()).get(layer or "")
    if module is None or not layer:
        raise UnknownNameError(f"no layer named {layer!r} in the model")
    if method == "grad-cam":
        try:
            cam = attr.LayerGradCam(model, module).attribute(
                x, target=target, relu_attributions=True
            )
        except AssertionError as err:  # Captum's way of saying its hook saw nothing
            raise LensError(f"Grad-CAM failed at {layer}: {err}") from err
        _check_spatial(cam, layer)
        cam = cam.detach()
        values = attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
        return MapBatch(values, layer_maps=cam)
    # Guided Grad-CAM: the model here is a private copy (Explainer._model_for).
    _check_spatial(_layer_output(model, module, x[:1]), layer)
    values = attr.GuidedGradCam(model, module).attribute(
        x, target=target, interpolate_mode="bilinear"
    )
    return MapBatch(values.detach())


def _smoothgrad(
    attr: object,
    model: nn.Module,
    x: torch.Tensor,
    target: list[int],
    settings: Settings,
    info: DatasetInfo,
    batch: int,
) -> torch.Tensor:
    sigma = noise_sigma(info, settings.noise_level)
    samples = settings.noise_samples
    if settings.smooth_over == "saliency":
        inner, kwargs = attr.Saliency(model), {"abs": False}  # type: ignore[attr-defined]
        per_call = max(1, batch // len(x))
    else:
        inner = attr.IntegratedGradients(model)  # type: ignore[attr-defined]
        kwargs = {
            "baselines": baseline_images(x, info, settings.baseline),
            "n_steps": settings.steps,
            "internal_batch_size": max(batch, len(x)),
        }
        per_call = max(1, batch // (len(x) * settings.steps))
    with seeded(settings.seed):  # the same noise every time, the global RNG kept
        values = attr.NoiseTunnel(inner).attribute(  # type: ignore[attr-defined]
            x,
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=min(samples, per_call),
            stdevs=sigma,
            target=target,
            **kwargs,
        )
    return values.detach()


def _layer_output(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What `module` outputs for `x` (one forward with a scoped hook)."""
    kept: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, args, out: kept.append(out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if not kept or not isinstance(kept[0], torch.Tensor):
        raise LensError("the layer produced no tensor output")
    return kept[0]


def _check_spatial(tensor: torch.Tensor, layer: str) -> None:
    if tensor.dim() != 4:
        raise ShapeError(f"{layer} has no spatial output, so it has no Grad-CAM map")


# ---------------------------------------------------------------------------------------------
# One image, one or all methods


def explain(
    model: nn.Module,
    x: torch.Tensor,
    info: DatasetInfo,
    method: str,
    *,
    target: int | None = None,
    settings: Settings | None = None,
) -> Attribution:
    """One method's map of class `target` (None: the predicted class) for one image (1, C, H, W)
    normalized with `info`. The model is not changed (see the module's docstring)."""
    return Explainer(model, info, settings).explain(x, method, target)


def explain_all(
    model: nn.Module,
    x: torch.Tensor,
    info: DatasetInfo,
    methods: Sequence[str] = METHODS,
    *,
    target: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Attribution]:
    """Several methods side by side for one image: one shape flow, at most one model copy."""
    explainer = Explainer(model, info, settings)
    return {method: explainer.explain(x, method, target) for method in methods}


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> gradcam.GradCam:
    """Grad-CAM of class `target` at `layer` for one normalized image `x` (1, C, H, W), as the
    Activations page shows it: Captum's LayerGradCam (ReLU'd) at the layer's resolution, and
    upsampled bilinearly to the input. The shared model is used under the probe's lock."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ShapeError(f"Grad-CAM takes one image shaped (1, C, H, W), got {tuple(x.shape)}")
    if not layer or dict(model.named_modules()).get(layer) is None:
        raise UnknownNameError(f"no layer named {layer!r} in the model")
    x = x.detach().to(_device(model), torch.float32)
    with shared(model) as used:
        scores = logits(used, x)
        if not 0 <= target < scores.shape[1]:
            raise LensError(f"class {target} is out of range: the model has {scores.shape[1]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            batch = _run(
                used, x, torch.tensor([target]), "grad-cam", Settings(layer=layer), None, layer
            )
    assert batch.layer_maps is not None  # the grad-cam branch always returns its layer's map
    return gradcam.GradCam(
        layer=layer,
        target=int(target),
        score=float(scores[0, target]),
        raw=batch.layer_maps[0, 0].cpu().numpy().astype(np.float32),
        heatmap=batch.values[0, 0].cpu().numpy().astype(np.float32),
    )
