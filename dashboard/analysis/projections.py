"""Feature vectors → 2-D or 3-D points: PCA, t-SNE, UMAP; and nearest neighbours by cosine.

Libraries, chosen by measurement (the README has the numbers):
- PCA: scikit-learn (`svd_solver="auto"`: the exact covariance eigen-decomposition for few
  features, a randomized SVD for many; explained variance against the data's total variance).
- t-SNE: openTSNE, single-threaded. Its Barnes-Hut t-SNE takes about 70 % of scikit-learn's
  CPU time for 5,000 points (both on one thread); it switches to FFT-accelerated gradients
  (FIt-SNE) from 10,000 points in 2-D (below that the FFT grid's fixed cost loses: 6× the time
  of Barnes-Hut at 500 points, 2× at 5,000); its callbacks report the iterations (scikit-learn's
  TSNE can only print). One thread: two threads on a busy 2-core machine cost 2–6× the CPU
  time in spinning. openTSNE adds ~13 MB.
- UMAP: umap-learn, imported only when UMAP is asked for: it brings numba and llvmlite (~210 MB
  installed, seconds to import) and compiles its code in every new process, ~45 CPU-seconds
  before its first map. Handing it exact neighbours (`exact_neighbours`) skips pynndescent
  and about half of that; later maps of 5,000 points take ~5 CPU-seconds.
Both t-SNE and UMAP start from the first 50 principal components when there are more features
(the usual recipe: it drops noise and makes the neighbour search cheap), and both are
reproducible with their seed.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dashboard.base.errors import LensError, ShapeError

Progress = Callable[[float, str], None]  # (fraction done 0..1, what is being done)

METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
PCA_COMPONENTS = 20  # explained-variance bars shown for at most this many components
PCA_POWER_ITERATIONS = 4
PCA_OVERSAMPLE = 10  # extra random columns of the randomized SVD (scikit-learn's default)
PRE_REDUCE = 50  # t-SNE and UMAP start from this many principal components
TSNE_PERPLEXITY = 30.0
TSNE_EARLY_ITER, TSNE_ITER = 250, 500  # openTSNE's defaults: exaggeration phase, then the rest
TSNE_REPORT_EVERY = 25  # iterations between progress reports
UMAP_NEIGHBOURS = 15
MIN_POINTS = 5


@dataclass(frozen=True)
class Projection:
    """N points placed in `dims` dimensions by one method."""

    method: str  # "pca", "tsne" or "umap"
    coords: np.ndarray  # (N, dims) float32
    seed: int
    # PCA: share of the total variance along each of the first components (≤ PCA_COMPONENTS),
    # largest first; empty for t-SNE and UMAP, whose axes carry no variance meaning.
    explained: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def dims(self) -> int:
        return int(self.coords.shape[1])

    @property
    def title(self) -> str:
        return METHODS[self.method]


def _checked(features: np.ndarray, dims: int) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ShapeError(f"features must be (N, F), got shape {x.shape}")
    if dims not in (2, 3):
        raise LensError(f"project into 2 or 3 dimensions, not {dims}")
    if len(x) < MIN_POINTS:
        raise LensError(f"a projection needs at least {MIN_POINTS} images, got {len(x)}")
    if not np.isfinite(x).all():
        raise LensError("the features hold NaN or infinite values (a diverged model?)")
    return x


def pca(
    features: np.ndarray, dims: int = 2, *, components: int = PCA_COMPONENTS, seed: int = 0
) -> Projection:
    """The first `dims` principal components of the features (centered, not scaled)."""
    x = _checked(features, dims)
    kept = min(max(components, dims), *x.shape)
    coords, shares = _principal(x, kept, seed)
    if kept < dims:  # fewer features than dimensions: the missing axes are all zero
        coords = np.pad(coords, ((0, 0), (0, dims - kept)))
    return Projection("pca", np.ascontiguousarray(coords[:, :dims], dtype=np.float32), seed, shares)


def _principal(x: np.ndarray, kept: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the data on its first `kept` principal axes, each axis's share of the variance)."""
    import torch

    from dashboard.base.work import seeded

    centered = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    centered = centered - centered.mean(dim=0)
    # A randomized SVD (Halko et al., as scikit-learn's "randomized" solver) with 10 extra
    # columns and 4 power iterations: the top components match the exact ones to ~1e-6 on real
    # features, in torch's float32 matmuls (0.6 s for 10,000 × 4,096 where scikit-learn's PCA,
    # validating and copying, took 1.3 s).
    columns = min(kept + PCA_OVERSAMPLE, *x.shape)
    with seeded(seed):
        _, singular, v = torch.svd_lowrank(centered, q=columns, niter=PCA_POWER_ITERATIONS)
    v = v[:, :kept]
    v = v * torch.sign(v.gather(0, v.abs().argmax(dim=0, keepdim=True)))  # the largest entry > 0
    total = float(centered.double().pow(2).sum())
    shares = singular[:kept].double().pow(2).numpy() / total if total > 0 else np.zeros(kept)
    return (centered @ v).numpy(), shares


def _reduced(x: np.ndarray, seed: int) -> np.ndarray:
    """The first PRE_REDUCE principal components (the features themselves when fewer)."""
    if x.shape[1] <= PRE_REDUCE or len(x) <= PRE_REDUCE:
        return x
    return _principal(x, PRE_REDUCE, seed)[0]


def tsne(
    features: np.ndarray,
    dims: int = 2,
    *,
    seed: int = 0,
    perplexity: float = TSNE_PERPLEXITY,
    on_progress: Progress | None = None,
) -> Projection:
    """openTSNE's t-SNE (Barnes-Hut; FFT gradients for 10,000+ points in 2-D), initialised
    from PCA."""
    import openTSNE

    x = _checked(features, dims)
    if on_progress is not None:
        on_progress(0.0, "t-SNE: finding neighbours")
    x = _reduced(x, seed)
    total = (TSNE_EARLY_ITER + TSNE_ITER) // TSNE_REPORT_EVERY
    reports = 0

    def report(iteration: int, error: float, embedding: np.ndarray) -> bool:
        nonlocal reports
        reports += 1
        if on_progress is not None:
            on_progress(0.1 + 0.9 * min(reports / total, 1.0), f"t-SNE: KL divergence {error:.3f}")
        return False  # never stop early

    model = openTSNE.TSNE(
        n_components=dims,
        perplexity=min(perplexity, (len(x) - 1) / 3),  # at most a third of the points
        early_exaggeration_iter=TSNE_EARLY_ITER,
        n_iter=TSNE_ITER,
        negative_gradient_method="auto" if dims == 2 else "bh",  # FFT is 2-D only
        callbacks=report,
        callbacks_every_iters=TSNE_REPORT_EVERY,
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = np.asarray(model.fit(x), dtype=np.float32)
    if on_progress is not None:
        on_progress(1.0, "t-SNE done")
    return Projection("tsne", coords, seed)


class _EpochCounter(io.TextIOBase):
    """A 'file' for umap-learn's tqdm bar whose format is "{n}/{total}": each line it writes
    becomes a progress report (umap-learn has no callback of its own)."""

    FORMAT = "{n}/{total}\n"

    def __init__(self, on_progress: Progress) -> None:
        self.on_progress = on_progress
        self.percent = -1  # the last whole percent reported: one report per percent at most

    def write(self, text: str) -> int:
        for line in text.replace("\r", "\n").split("\n"):
            done, sep, total = line.strip().partition("/")
            if sep and done.isdigit() and total.isdigit() and int(total):
                fraction = int(done) / int(total)
                if int(100 * fraction) > self.percent:
                    self.percent = int(100 * fraction)
                    self.on_progress(0.3 + 0.7 * fraction, f"UMAP: epoch {done} of {total}")
        return len(text)


def umap(
    features: np.ndarray,
    dims: int = 2,
    *,
    seed: int = 0,
    neighbours: int = UMAP_NEIGHBOURS,
    on_progress: Progress | None = None,
) -> Projection:
    """umap-learn's UMAP (single-threaded, which a seed requires, and so reproducible)."""
    try:
        import umap as umap_learn
    except ImportError:
        raise LensError("UMAP needs the umap-learn package: pip install umap-learn") from None
    x = _checked(features, dims)
    if on_progress is not None:
        on_progress(0.0, "UMAP: neighbour graph (the first run on a machine also compiles)")
    x = _reduced(x, seed)
    progress = {}
    if on_progress is not None:
        bar = {"bar_format": _EpochCounter.FORMAT, "mininterval": 0, "miniters": 1}
        progress = {"disable": False, "file": _EpochCounter(on_progress), **bar}
    k = min(neighbours, len(x) - 1)
    model = umap_learn.UMAP(
        n_components=dims,
        n_neighbors=k,
        random_state=seed,
        n_jobs=1,
        precomputed_knn=(*exact_neighbours(x, k), None),
        tqdm_kwds=progress,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = np.asarray(model.fit_transform(x), dtype=np.float32)
    if on_progress is not None:
        on_progress(1.0, "UMAP done")
    return Projection("umap", coords, seed)


def exact_neighbours(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(indices, Euclidean distances) of each row's k nearest rows, itself first (distance 0).

    Given to UMAP, they spare it pynndescent's approximate search, whose numba code is compiled
    afresh in every process: ~20 CPU-seconds of a first UMAP call. Distances are computed from
    differences, not from a matrix product, so a point is at exactly 0 from itself and from its
    duplicates, as UMAP's own search finds."""
    import torch

    points = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    indices, distances = [], []
    for start in range(0, len(points), chunk):  # (chunk, N) distances at a time
        block = torch.cdist(
            points[start : start + chunk], points, compute_mode="donot_use_mm_for_euclid_dist"
        )
        found = block.topk(k, dim=1, largest=False)  # sorted, nearest first
        indices.append(found.indices)
        distances.append(found.values)
    return torch.cat(indices).numpy().astype(np.int64), torch.cat(distances).numpy()


def project(
    method: str,
    features: np.ndarray,
    dims: int = 2,
    *,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> Projection:
    """One of METHODS by its key."""
    if method == "pca":
        projection = pca(features, dims, seed=seed)
        if on_progress is not None:
            on_progress(1.0, "PCA done")
        return projection
    if method == "tsne":
        return tsne(features, dims, seed=seed, on_progress=on_progress)
    if method == "umap":
        return umap(features, dims, seed=seed, on_progress=on_progress)
    raise LensError(f"unknown projection {method!r}: choose one of {', '.join(METHODS)}")


PROJECTION_KIND = "projection"  # the result cache's name for them


def cached_project(
    method: str,
    features: np.ndarray,
    features_key: dict,
    dims: int = 2,
    *,
    seed: int = 0,
    persist: bool = True,
    on_progress: Progress | None = None,
) -> Projection:
    """`project`, computed once per (features, method, dims, seed) and kept in the result cache
    (`dashboard/base/cache.py`); `features_key` names the features (their cache key and layer)."""
    from dashboard.base import cache

    def compute() -> dict[str, np.ndarray]:
        found = project(method, features, dims, seed=seed, on_progress=on_progress)
        return {"coords": found.coords, "explained": np.asarray(found.explained, np.float64)}

    parts = {"features": features_key, "method": method, "dims": dims, "seed": seed}
    arrays = cache.cached_arrays(PROJECTION_KIND, parts, compute, persist=persist)
    return Projection(method, arrays["coords"], seed, arrays["explained"])


# ---------------------------------------------------------------------------------------------
# Nearest neighbours


@dataclass(frozen=True)
class Neighbours:
    """The images most like one image, in the layer's feature space."""

    index: int  # the image asked about (a row of the features)
    indices: np.ndarray  # (k,) rows of the features, most similar first, itself left out
    similarity: np.ndarray  # (k,) cosine similarity, −1..1


def nearest_neighbours(features: np.ndarray, index: int, k: int = 8) -> Neighbours:
    """The k rows most cosine-similar to row `index` (ties: the lower row first). A row of zeros
    (a dead feature vector) is similar to nothing: similarity 0 to all."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"features must be (N, F), got shape {x.shape}")
    if not 0 <= index < len(x):
        raise LensError(f"image {index} is not among the {len(x)} shown")
    if k < 1:
        raise LensError(f"ask for at least one neighbour, not {k}")
    norms = np.linalg.norm(x, axis=1)
    unit = x / np.where(norms > 0, norms, 1.0)[:, None]
    similarity = unit @ unit[index]
    similarity[index] = -math.inf
    k = min(k, len(x) - 1)
    order = np.lexsort((np.arange(len(x)), -similarity))[:k]  # by similarity, then by row
    return Neighbours(index, order.astype(np.int64), similarity[order])
