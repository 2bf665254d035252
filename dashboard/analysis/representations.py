"""How each layer sees the data: per-block features, linear probes, and layer similarity (CKA).

A *block* is one step of the model's forward path at which the data has a representation worth
looking at: each convolution, each pooling layer and each linear layer, together with the batch
norm, activation and dropout that follow it (a conv block's features are taken after its ReLU,
as linear probes usually are), and each residual or inception unit as a whole (a custom module
such as ResNet's BasicBlock, whose inside is not a chain). Blocks are named by their first layer
("features.conv1") and listed in forward order, as the real forward pass calls them.

Features come from ONE forward pass over the images: a hook on every block reduces the block's
output on the spot — globally average-pooled over the spatial axes for conv maps, or flattened
when asked — so memory holds N × (features of every block), never the feature maps. The pass
runs on a private copy of the model (made under `probe`'s lock, so no session's hooks come
along), laid out channels-last on the CPU; the shared model is never touched.

Probes (Alain & Bengio 2016): a logistic regression trained on one set of images' features and
scored on another's, k-NN accuracy and the silhouette of the classes, per block. CKA: linear
centered kernel alignment (Kornblith et al. 2019), between every pair of one model's blocks and
between the blocks of two models that saw the same images.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dashboard.analysis import probe
from dashboard.analysis.metrics import default_batch
from dashboard.base.errors import LensError, ShapeError, UnknownNameError
from dashboard.data import Split, iterate_batches, subset

# A progress report: (fraction done 0..1, what is being done). Called from the working thread.
Progress = Callable[[float, str], None]

# Features held in memory at most (float32): beyond it a flattened layer asks for fewer images.
MAX_FEATURE_BYTES = 2 * 1024**3
SAMPLE_SEED = 0  # the seed of every image sample, so a cached sample is the same one
INPUT_SUFFIX = ":input"  # "classifier.fc3:input" = what the last linear layer receives

# Probe settings (what tests and the README quote): standardized features, lbfgs logistic
# regression with scikit-learn's default C; k-NN by cosine similarity; silhouette (Euclidean)
# on at most SILHOUETTE_SAMPLE test images, a seeded sample, since it costs N² distances.
PROBE_MAX_ITER = 1000
KNN_K = 10
KNN_BLOCK = 2**25  # test × training similarities held at once: 128 MB of float32
SILHOUETTE_SAMPLE = 2000

_POOLING = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)
_STARTS_BLOCK = (nn.modules.conv._ConvNd, nn.Linear, *_POOLING)
# Layers that keep the shape and belong to the block before them: normalization and activations
# act on the block's own output.
_FOLLOWER_MODULES = {
    "torch.nn.modules.activation",
    "torch.nn.modules.batchnorm",
    "torch.nn.modules.instancenorm",
    "torch.nn.modules.normalization",
}


@dataclass(frozen=True)
class Block:
    """One place in the forward pass whose output is read as a representation."""

    name: str  # its first layer ("features.conv1"), a unit ("layer1.0"), or "fc:input"
    module: str  # the module hooked, with "#k" for the k-th call of a reused module
    capture: str  # "output" of that module, or its "input" (the last linear layer's)
    kind: str  # type of the first layer: "Conv2d", "MaxPool2d", "Linear", "BasicBlock", …
    shape: tuple[int, ...]  # one image's tensor there: (C, H, W) for conv maps, (F,) after
    through: tuple[str, ...]  # the layers the block spans, in order ("…conv1", "…relu1")
    label: str  # for charts: "features.conv1 → relu1", "features.0.0 → ReLU6", "input of fc"

    def features(self, flatten: bool = False) -> int:
        """Numbers per image: C when pooled (conv maps), every value when flattened."""
        return math.prod(self.shape) if flatten or len(self.shape) == 1 else self.shape[0]


def _is_unit(module: nn.Module) -> bool:
    """A container with its own forward (a residual or inception unit): one block, as a whole.
    A Sequential (even a subclass such as torchvision's Conv2dNormActivation) is a chain whose
    layers are blocks of their own."""
    return type(module).forward is not nn.Sequential.forward and any(
        True for _ in module.children()
    )


def _follows(module: nn.Module) -> bool:
    return type(module).__module__ in _FOLLOWER_MODULES


def _passes_through(module: nn.Module) -> bool:
    """Layers that change no value in eval mode (dropout, identity, flatten): skipped, so the
    block before them still ends where its last real layer does."""
    return isinstance(module, (nn.Identity, nn.Flatten, nn.modules.dropout._DropoutNd))


def model_blocks(model: nn.Module, input_shape: tuple[int, ...]) -> list[Block]:
    """The model's blocks in forward order, from one real forward pass of a zero image."""
    return _walk(model, input_shape)[0]


def projector_layers(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Block], str]:
    """(the layers a projector offers, the default one's name): the blocks plus, where it is
    not already a block's output, the input of the last linear layer (course-net's 320
    flattened conv features), in forward order. The default is that input: the features the
    classifier separates; without a linear layer (SqueezeNet), the block before the last conv,
    the one that makes the class maps."""
    blocks, head_input, index = _walk(model, input_shape)
    if head_input is None:
        convs = [i for i, b in enumerate(blocks) if b.kind == "Conv2d"]
        return blocks, blocks[max(convs[-1] - 1 if convs else len(blocks) - 2, 0)].name
    if index is None:
        return blocks, head_input.name
    return [*blocks[:index], head_input, *blocks[index:]], head_input.name


@dataclass
class _Open:
    name: str
    module: str
    kind: str
    shape: tuple[int, ...]
    through: list[str]
    last_type: str = ""  # type of the last layer joined after the first

    def close(self) -> Block:
        label = self.name
        if len(self.through) > 1:
            short = self.through[-1].rsplit(".", 1)[-1]
            label += f" → {self.last_type if short.isdigit() else short}"
        return Block(
            self.name, self.module, "output", self.kind, self.shape, tuple(self.through), label
        )


def _walk(
    model: nn.Module, input_shape: tuple[int, ...]
) -> tuple[list[Block], Block | None, int | None]:
    """(blocks, what the last linear layer receives — None without a linear layer —, and the
    position that input takes among the blocks, or None when it is the output of the block
    before, which then stands for it)."""
    flow = probe.shape_flow(model, input_shape)
    if flow.broken is not None:
        raise ShapeError(f"{flow.broken.layer or 'the model'} breaks: {flow.broken.reason}")
    modules = dict(model.named_modules())
    blocks: list[Block] = []
    current: _Open | None = None
    unit = ""  # the unit being skipped over: its layers are inside its block
    previous_leaf = ""  # key of the leaf called last
    head: tuple[Block, int | None] | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            blocks.append(current.close())
            current = None

    for record in flow.records:
        if unit and record.name.startswith(unit + "."):
            continue
        unit = ""
        module = modules[record.name]
        key = probe._key(record.name, record.call_index)
        kind = type(module).__name__
        if not record.is_leaf:
            if _is_unit(module):
                close()
                current = _Open(record.name, key, kind, record.output_shape, [record.name])
                unit = record.name
                previous_leaf = key
            continue
        if _passes_through(module):
            continue
        if isinstance(module, nn.Linear):
            close()
            same = (  # the block before ends right here and its pooled features are the input
                bool(blocks)
                and blocks[-1].module == previous_leaf
                and blocks[-1].features() == math.prod(blocks[-1].shape) == record.input_shape[0]
            )
            if same:
                head = (blocks[-1], None)
            else:
                name = f"{record.name}{INPUT_SUFFIX}"
                label = f"input of {record.name}"
                shape = record.input_shape
                head = (Block(name, key, "input", kind, shape, (), label), len(blocks))
        if isinstance(module, _STARTS_BLOCK):
            close()
            current = _Open(record.name, key, kind, record.output_shape, [record.name])
        elif (
            current is not None
            and _follows(module)
            and record.input_shape == record.output_shape == current.shape
        ):
            current.module = key
            current.through.append(record.name)
            current.last_type = kind
        else:
            close()
        previous_leaf = key
    close()
    if not blocks:
        raise LensError("the model has no conv, pooling or linear layer to read features from")
    return blocks, *(head or (None, None))


def find_block(blocks: Sequence[Block], name: str) -> Block:
    for block in blocks:
        if block.name == name:
            return block
    raise UnknownNameError(f"no block {name!r}; blocks: {', '.join(b.name for b in blocks)}")


# ---------------------------------------------------------------------------------------------
# Images and features


def sample_indices(total: int, count: int | None, seed: int = SAMPLE_SEED) -> np.ndarray:
    """`count` of `total` image indices, a seeded random sample in split order (all of them when
    count is None or ≥ total). Random, not the first N: an image folder is sorted by class, so
    its first 2,000 images would hold one or two classes."""
    if count is None or count >= total:
        return np.arange(total, dtype=np.int64)
    if count < 1:
        raise LensError(f"need at least one image, got {count}")
    picked = np.random.default_rng(seed).choice(total, size=count, replace=False)
    return np.sort(picked).astype(np.int64)


@dataclass(frozen=True)
class Features:
    """Per-block features of N images, and the model's own answers on them."""

    layers: dict[str, np.ndarray]  # block name → (N, F) float32, in the order asked for
    indices: np.ndarray  # (N,) int64: each image's index in the split (thumbnails, links)
    labels: np.ndarray  # (N,) int64 true classes
    predicted: np.ndarray  # (N,) int64 the model's argmax
    flatten: bool  # True: conv maps flattened; False: globally average-pooled

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predicted).mean()) if len(self) else 0.0

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for a disk cache; layers keyed "layer:007:NAME" so the order survives a
        format that sorts its keys."""
        arrays = {
            "indices": self.indices,
            "labels": self.labels,
            "predicted": self.predicted,
            "flatten": np.array([self.flatten], dtype=np.uint8),
        }
        for i, (name, values) in enumerate(self.layers.items()):
            arrays[f"layer:{i:03d}:{name}"] = values
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Features:
        keys = sorted(k for k in arrays if k.startswith("layer:"))
        return cls(
            layers={k.split(":", 2)[2]: np.asarray(arrays[k], dtype=np.float32) for k in keys},
            indices=np.asarray(arrays["indices"], dtype=np.int64),
            labels=np.asarray(arrays["labels"], dtype=np.int64),
            predicted=np.asarray(arrays["predicted"], dtype=np.int64),
            flatten=bool(np.asarray(arrays["flatten"]).ravel()[0]),
        )


def _private_copy(model: nn.Module, device: str | torch.device) -> tuple[nn.Module, bool]:
    """(a copy in eval mode on `device`, whether it runs channels-last). Copied under the probe
    lock: another session's hooks, registered only under it, are never copied along."""
    with probe._LOCK:
        clone = copy.deepcopy(model)
    clone.eval().to(device)
    channels_last = torch.device(device).type == "cpu" and any(
        isinstance(m, nn.Conv2d) for m in clone.modules()
    )
    if channels_last:
        clone = clone.to(memory_format=torch.channels_last)
    return clone, channels_last


def _reduce(tensor: torch.Tensor, flatten: bool) -> torch.Tensor:
    """(B, C, H, W) → (B, C) by the spatial mean, or (B, C·H·W) flattened; (B, F) as it is."""
    if flatten or tensor.dim() <= 2:
        return tensor.reshape(tensor.shape[0], -1)
    return tensor.mean(dim=tuple(range(2, tensor.dim())))


def extract_features(
    model: nn.Module,
    split: Split,
    blocks: Sequence[Block],
    *,
    indices: np.ndarray | None = None,
    flatten: bool = False,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    on_progress: Progress | None = None,
) -> Features:
    """Every block's features for the images at `indices` (default: the whole split), in ONE
    forward pass; the model's predictions come from the same pass."""
    if not blocks:
        raise LensError("no layers to read features from")
    names = [b.name for b in blocks]
    if len(set(names)) != len(names):
        raise LensError(f"a layer is asked for twice: {', '.join(names)}")
    chosen = np.arange(len(split), dtype=np.int64) if indices is None else np.asarray(indices)
    images = split if indices is None else subset(split, torch.as_tensor(chosen))
    n = len(images)
    widths = [b.features(flatten) for b in blocks]
    needed = 4 * n * sum(widths)
    if needed > MAX_FEATURE_BYTES:
        raise LensError(
            f"{n:,} images × {sum(widths):,} features is {needed / 1024**3:.1f} GB: ask for "
            f"fewer images{' or pooled features' if flatten else ''}"
        )
    out = {b.name: np.empty((n, w), dtype=np.float32) for b, w in zip(blocks, widths, strict=True)}
    predicted = np.empty(n, dtype=np.int64)
    clone, channels_last = _private_copy(model, device)
    modules = dict(clone.named_modules())
    wanted: dict[str, dict[int, list[Block]]] = {}  # module → call index → blocks reading it
    for block in blocks:
        name, call = probe._parse_key(block.module)
        if name not in modules:
            raise UnknownNameError(f"the model has no layer {name!r} (block {block.name})")
        wanted.setdefault(name, {}).setdefault(call, []).append(block)
    calls: dict[tuple[str, str], int] = {}  # (module, "output"/"input") → calls this batch
    batch: dict[str, torch.Tensor] = {}

    def hook_for(name: str, capture: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, *rest: Any) -> None:
            call = calls.get((name, capture), 0)
            calls[name, capture] = call + 1
            for block in wanted[name].get(call, ()):
                if block.capture == capture:
                    tensor = probe._first_tensor(args if capture == "input" else rest[-1])
                    if tensor is not None:
                        batch[block.name] = _reduce(tensor.detach(), flatten).float().cpu()

        return hook

    size = batch_size or default_batch(split)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    done = 0
    with probe._hooks() as handles, torch.inference_mode():
        for name, by_call in wanted.items():
            captures = {b.capture for blocks_ in by_call.values() for b in blocks_}
            if "output" in captures:
                handles.append(modules[name].register_forward_hook(hook_for(name, "output")))
            if "input" in captures:
                handles.append(modules[name].register_forward_pre_hook(hook_for(name, "input")))
        for x, _ in iterate_batches(
            images, size, shuffle=False, device=device, memory_format=layout
        ):
            calls.clear()
            batch.clear()
            logits = probe._output_tensor(clone(x))
            missing = [b.name for b in blocks if b.name not in batch]
            if missing:
                raise LensError(f"the forward pass never reached {', '.join(missing)}")
            stop = done + len(x)
            for name, values in batch.items():
                out[name][done:stop] = values.numpy()
            predicted[done:stop] = logits.argmax(dim=1).cpu().numpy()
            done = stop
            if on_progress is not None:
                on_progress(done / n, f"{done:,} of {n:,} images")
    return Features(
        layers=out,
        indices=chosen.astype(np.int64),
        labels=images.labels.cpu().numpy().astype(np.int64),
        predicted=predicted,
        flatten=flatten,
    )


FEATURES_KIND = "layer-features"  # the result cache's name for them


def features_key(
    model_id: str, split: Split, blocks: Sequence[Block], indices: np.ndarray, flatten: bool
) -> dict[str, Any]:
    """What a set of features depends on: the result cache's key of `cached_features`, and
    part of the keys of results computed from them (probes, CKA, projections)."""
    from dashboard.base import cache

    return {
        "model": model_id,
        "split": cache.split_identity(split),
        "blocks": [[b.name, b.module, b.capture] for b in blocks],
        "images": hashlib.sha256(np.asarray(indices).astype("<i8").tobytes()).hexdigest(),
        "flatten": flatten,
    }


def cached_features(
    model: nn.Module,
    model_id: str,
    split: Split,
    blocks: Sequence[Block],
    *,
    indices: np.ndarray | None = None,
    flatten: bool = False,
    persist: bool = True,
    device: str | torch.device = "cpu",
    on_progress: Progress | None = None,
) -> Features:
    """`extract_features`, computed once per (model content, split, blocks, images, pooling)
    and kept in the result cache (`dashboard/base/cache.py`); `on_progress` hears of the batches
    only when they really run."""
    from dashboard.base import cache

    chosen = np.arange(len(split), dtype=np.int64) if indices is None else np.asarray(indices)
    parts = features_key(model_id, split, blocks, chosen, flatten)

    def compute() -> dict[str, np.ndarray]:
        found = extract_features(
            model,
            split,
            blocks,
            indices=chosen,
            flatten=flatten,
            device=device,
            on_progress=on_progress,
        )
        return found.to_arrays()

    return Features.from_arrays(cache.cached_arrays(FEATURES_KIND, parts, compute, persist=persist))


# ---------------------------------------------------------------------------------------------
# Probes: how separable are the classes at each depth


@dataclass(frozen=True)
class LayerProbe:
    """How well the classes separate in one block's features."""

    layer: str  # block name
    features: int  # numbers per image
    probe_accuracy: float  # logistic regression trained on train features, on test features
    knn_accuracy: float  # KNN_K nearest train images by cosine similarity, majority vote
    silhouette: float | None  # of the true classes in the test features; None if undefined


@dataclass(frozen=True)
class ProbeReport:
    layers: list[LayerProbe]  # forward order
    model_accuracy: float  # the model's own, on the same test images
    train_images: int
    test_images: int
    silhouette_images: int  # test images the silhouette was computed on (a seeded sample)

    def to_json(self) -> dict[str, Any]:
        """The command line's JSON: plain numbers, None (null) where a value is undefined."""
        return {
            "layers": [
                {
                    "layer": p.layer,
                    "features": p.features,
                    "probe_accuracy": p.probe_accuracy,
                    "knn_accuracy": p.knn_accuracy,
                    "silhouette": p.silhouette,
                }
                for p in self.layers
            ],
            "model_accuracy": self.model_accuracy,
            "train_images": self.train_images,
            "test_images": self.test_images,
        }


def probe_classifier() -> Any:
    """The linear probe: standardize, then multinomial logistic regression (lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER))


def probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # near-separable features stop lbfgs at max_iter: still fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier = probe_classifier().fit(train_x, train_y)
    return float((classifier.predict(test_x) == test_y).mean())


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = KNN_K,
) -> float:
    """Share of test images whose k most cosine-similar training images mostly share their
    class (a tie goes to the lowest class, as in scikit-learn's KNeighborsClassifier, which
    this equals; top-k over one matrix product is ~6× cheaper than its brute force)."""
    # torch.tensor copies: the arrays may be the result cache's read-only ones
    train = F.normalize(torch.tensor(train_x, dtype=torch.float32), dim=1)
    test = F.normalize(torch.tensor(test_x, dtype=torch.float32), dim=1)
    labels = torch.tensor(train_y, dtype=torch.int64)
    classes = int(max(labels.max(), int(np.max(test_y)))) + 1
    k = min(k, len(train))
    chunk = max(1, KNN_BLOCK // len(train))  # rows of (chunk, N_train) similarities at a time
    votes = []
    for start in range(0, len(test), chunk):
        nearest = (test[start : start + chunk] @ train.T).topk(k, dim=1).indices
        votes.append(F.one_hot(labels[nearest], classes).sum(dim=1).argmax(dim=1))
    return float((torch.cat(votes).numpy() == np.asarray(test_y)).mean())


def silhouette(x: np.ndarray, y: np.ndarray, sample: int = SILHOUETTE_SAMPLE) -> float | None:
    """Mean silhouette of the true classes (Euclidean) on a seeded sample of at most `sample`
    points; None when it is undefined (one class, or as many classes as points)."""
    from sklearn.metrics import silhouette_score

    keep = sample_indices(len(x), sample)
    x, y = x[keep], y[keep]
    if not 2 <= len(np.unique(y)) <= len(y) - 1:
        return None
    value = float(silhouette_score(x, y, metric="euclidean"))
    return value if math.isfinite(value) else None


def probe_layers(
    train: Features, test: Features, *, on_progress: Progress | None = None
) -> ProbeReport:
    """Probe, k-NN and silhouette for every block both feature sets hold, in `test`'s order."""
    if len(np.unique(train.labels)) < 2:
        raise LensError(f"the {len(train):,} training images hold one class only: use more")
    from threadpoolctl import threadpool_limits

    layers = [name for name in test.layers if name in train.layers]
    records = []
    # Single-threaded BLAS and OpenMP: on problems this small (10,000 × ≤ 512) threads cost
    # more in hand-offs than they save, ~10× the CPU time on a busy machine.
    with threadpool_limits(1):
        for i, name in enumerate(layers):
            if on_progress is not None:
                on_progress(i / len(layers), f"probing {name}")
            tr, te = train.layers[name], test.layers[name]
            records.append(
                LayerProbe(
                    layer=name,
                    features=int(te.shape[1]),
                    probe_accuracy=probe_accuracy(tr, train.labels, te, test.labels),
                    knn_accuracy=knn_accuracy(tr, train.labels, te, test.labels),
                    silhouette=silhouette(te, test.labels),
                )
            )
    if on_progress is not None:
        on_progress(1.0, "probes done")
    return ProbeReport(
        layers=records,
        model_accuracy=test.accuracy,
        train_images=len(train),
        test_images=len(test),
        silhouette_images=min(len(test), SILHOUETTE_SAMPLE),
    )


# ---------------------------------------------------------------------------------------------
# Linear CKA


def _centered(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"CKA needs (N, F) features, got shape {x.shape}")
    return x - x.mean(axis=0, keepdims=True)


def _cross(x: np.ndarray, y: np.ndarray) -> float:
    """‖Yᵀ X‖²_F of centered features, through the cheaper of the two equal forms: the
    features' cross-covariance (F_x·F_y) or the images' Gram matrices (N×N)."""
    n, fx, fy = len(x), x.shape[1], y.shape[1]
    if fx * fy <= n * n:
        return float(np.square(y.T @ x).sum())
    return float(np.sum((x @ x.T) * (y @ y.T)))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two feature sets of the same N images (Kornblith et al. 2019, eq. 5):
    ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centered X and Y; 0 when either is constant."""
    if len(x) != len(y):
        raise ShapeError(f"CKA needs the same images on both sides: {len(x)} vs {len(y)}")
    x, y = _centered(x), _centered(y)
    norms = math.sqrt(_cross(x, x)) * math.sqrt(_cross(y, y))
    return _cross(x, y) / norms if norms > 0 else 0.0


def cka_matrix(
    layers_a: dict[str, np.ndarray],
    layers_b: dict[str, np.ndarray] | None = None,
    *,
    on_progress: Progress | None = None,
) -> np.ndarray:
    """(A's layers × B's layers) linear CKA; B None = A against itself (symmetric, ones on the
    diagonal). The features of both must come from the same images, in the same order."""
    same = layers_b is None
    a = [_centered(v) for v in layers_a.values()]
    b = a if same else [_centered(v) for v in layers_b.values()]
    if a and b and len(a[0]) != len(b[0]):
        raise ShapeError(f"CKA needs the same images on both sides: {len(a[0])} vs {len(b[0])}")
    norm_a = [math.sqrt(_cross(x, x)) for x in a]
    norm_b = norm_a if same else [math.sqrt(_cross(y, y)) for y in b]
    matrix = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        if on_progress is not None:
            on_progress(i / len(a), f"CKA row {i + 1} of {len(a)}")
        for j in range(i if same else 0, len(b)):
            denominator = norm_a[i] * norm_b[j]
            value = _cross(x, b[j]) / denominator if denominator > 0 else 0.0
            matrix[i, j] = value
            if same:
                matrix[j, i] = value
    return matrix


# ---------------------------------------------------------------------------------------------
# Probes and CKA kept in the result cache, keyed by the `features_key` of what they were fed

PROBES_KIND, CKA_KIND = "layer-probes", "layer-cka"


def cached_probes(
    train: Features,
    test: Features,
    train_key: dict[str, Any],
    test_key: dict[str, Any],
    *,
    persist: bool = True,
    on_progress: Progress | None = None,
) -> ProbeReport:
    """`probe_layers`, computed once per pair of feature sets (their `features_key`s)."""
    from dashboard.base import cache

    def compute() -> cache.Entry:
        report = probe_layers(train, test, on_progress=on_progress)
        meta = {**report.to_json(), "silhouette_images": report.silhouette_images}
        return cache.Entry({"model_accuracy": np.array([report.model_accuracy])}, meta)

    key = {"train": train_key, "test": test_key, "max_iter": PROBE_MAX_ITER, "k": KNN_K}
    meta = cache.cached(PROBES_KIND, key, compute, persist=persist).meta
    return ProbeReport(
        layers=[LayerProbe(**layer) for layer in meta["layers"]],
        model_accuracy=meta["model_accuracy"],
        train_images=meta["train_images"],
        test_images=meta["test_images"],
        silhouette_images=meta["silhouette_images"],
    )


def probes_stored(train_key: dict[str, Any], test_key: dict[str, Any]) -> bool:
    """True when `cached_probes` of these feature sets would be read, not computed."""
    from dashboard.base import cache

    key = {"train": train_key, "test": test_key, "max_iter": PROBE_MAX_ITER, "k": KNN_K}
    return cache.is_stored(PROBES_KIND, key)


def cached_cka(
    a: Features,
    a_key: dict[str, Any],
    b: Features | None = None,
    b_key: dict[str, Any] | None = None,
    *,
    persist: bool = True,
) -> np.ndarray:
    """`cka_matrix` of A's layers (against B's, or A's own), computed once per feature sets."""
    from dashboard.base import cache

    def compute() -> dict[str, np.ndarray]:
        return {"cka": cka_matrix(a.layers, None if b is None else b.layers)}

    key = {"a": a_key, "b": b_key}
    return cache.cached_arrays(CKA_KIND, key, compute, persist=persist)["cka"]
