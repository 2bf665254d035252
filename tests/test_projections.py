"""Projections and nearest neighbours on real LeNet-5 features of real MNIST digits, checked
against numpy's SVD and scikit-learn's neighbour search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dashboard import data
from dashboard.analysis import projections as proj
from dashboard.analysis import representations as rep
from dashboard.base.errors import LensError
from dashboard.models import checkpoints

TRAINED = Path(__file__).resolve().parent.parent / "trained"


@pytest.fixture(scope="module")
def features(shared_datasets: Path) -> dict[str, np.ndarray]:
    """fc1 (120 features) of 1,500 test digits and conv1 flattened (4,704) of 250."""
    model = checkpoints.load_checkpoint(TRAINED / "lenet5-mnist.safetensors").model
    test = data.load_split("mnist", "test", data_root=shared_datasets)
    blocks = {b.name: b for b in rep.model_blocks(model, (1, 28, 28))}
    chosen = rep.sample_indices(len(test), 1500)
    pooled = rep.extract_features(model, test, [blocks["classifier.fc1"]], indices=chosen)
    flat = rep.extract_features(
        model, test, [blocks["features.conv1"]], indices=chosen[:250], flatten=True
    )
    return {
        "fc1": pooled.layers["classifier.fc1"],
        "conv1": flat.layers["features.conv1"],
        "labels": pooled.labels,
    }


def _svd_reference(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(first `dims` principal coordinates, every component's share of the variance)."""
    centered = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    return u[:, :dims] * s[:dims], s**2 / np.sum(s**2)


@pytest.mark.parametrize("layer", ["fc1", "conv1"])  # exact eigen-solver / randomized SVD
def test_pca_equals_numpy_svd(features: dict[str, np.ndarray], layer: str) -> None:
    x = features[layer]
    projection = proj.pca(x, 3, seed=0)
    coords, shares = _svd_reference(x, 3)
    kept = len(projection.explained)
    assert kept == proj.PCA_COMPONENTS
    np.testing.assert_allclose(projection.explained[:10], shares[:10], rtol=1e-3, atol=1e-7)
    assert projection.explained.sum() <= 1 + 1e-9
    assert (np.diff(projection.explained) <= 1e-12).all()  # largest first
    assert projection.coords.shape == (len(x), 3)
    assert projection.coords.dtype == np.float32
    for axis in range(3):  # each axis up to its sign
        sign = np.sign(coords[:, axis] @ projection.coords[:, axis])
        scale = np.abs(coords[:, axis]).max()
        np.testing.assert_allclose(
            sign * projection.coords[:, axis], coords[:, axis], atol=2e-3 * scale
        )


def test_pca_of_fewer_features_than_dimensions_pads_with_zeros() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2) ** 1.5
    projection = proj.pca(x, 3)
    assert projection.coords.shape == (10, 3)
    assert np.all(projection.coords[:, 2] == 0)
    assert projection.explained.sum() == pytest.approx(1.0)


def _run(method: str, x: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, list[float]]:
    seen: list[float] = []
    result = proj.project(method, x, dims, seed=seed, on_progress=lambda f, _: seen.append(f))
    assert result.method == method
    assert result.seed == seed
    return result.coords, seen


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_tsne_and_umap_are_reproducible_with_their_seed(
    features: dict[str, np.ndarray], method: str
) -> None:
    x = features["fc1"][:300]
    first, progress = _run(method, x, 2, seed=3)
    again, _ = _run(method, x, 2, seed=3)
    other, _ = _run(method, x, 2, seed=4)
    assert first.shape == (300, 2)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert progress == sorted(progress)
    assert progress[0] == 0.0
    assert progress[-1] == 1.0
    assert 3 <= len(progress) <= 105  # reported along the way, at most once per percent
    # The map keeps the digits apart: most points' nearest map neighbour shares their class.
    labels = features["labels"][:300]
    distances = np.linalg.norm(first[:, None] - first[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(axis=1)] == labels).mean() > 0.9


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_three_dimensional_maps(features: dict[str, np.ndarray], method: str) -> None:
    coords = proj.project(method, features["fc1"][:300], 3, seed=0).coords
    assert coords.shape == (300, 3)
    assert np.isfinite(coords).all()
    assert coords[:, 2].std() > 0


def test_tsne_starts_from_fifty_principal_components(features: dict[str, np.ndarray]) -> None:
    reduced = proj._reduced(features["conv1"], seed=0)
    assert reduced.shape == (250, proj.PRE_REDUCE)
    assert proj._reduced(features["fc1"][:100], seed=0).shape == (100, proj.PRE_REDUCE)
    assert proj._reduced(features["fc1"][:30], seed=0).shape == (30, 120)  # too few images


def test_nearest_neighbours_equal_scikit_learn(features: dict[str, np.ndarray]) -> None:
    from sklearn.neighbors import NearestNeighbors

    x = features["fc1"]
    search = NearestNeighbors(n_neighbors=9, metric="cosine", algorithm="brute").fit(x)
    for index in (0, 17, 1499):
        found = proj.nearest_neighbours(x, index, k=8)
        distances, rows = search.kneighbors(x[index : index + 1])
        others = rows[0][rows[0] != index][:8]
        np.testing.assert_array_equal(found.indices, others)
        np.testing.assert_allclose(
            found.similarity, 1 - distances[0][rows[0] != index][:8], atol=1e-6
        )
        assert index not in found.indices


def test_exact_neighbours_for_umap_are_the_nearest(features: dict[str, np.ndarray]) -> None:
    x = np.vstack([features["fc1"][:700], features["fc1"][:5]])  # five duplicated rows
    indices, distances = proj.exact_neighbours(x, 6, chunk=256)
    exact = np.sqrt(((x[:, None, :].astype(np.float64) - x[None]) ** 2).sum(axis=2))
    smallest = np.sort(exact, axis=1)[:, :6]
    np.testing.assert_allclose(distances, smallest, rtol=1e-5, atol=1e-5)
    chosen = np.take_along_axis(exact, indices, axis=1)  # the rows found are that near
    np.testing.assert_allclose(chosen, smallest, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(indices[5:700, 0], np.arange(5, 700))  # itself first …
    assert np.all(distances[:, 0] == 0)  # … at exactly 0, and so is a duplicate
    assert set(indices[700][:2]) == {0, 700}
    assert distances[700][1] == 0


def test_neighbours_of_a_dead_vector_and_bad_requests() -> None:
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    found = proj.nearest_neighbours(x, 0, k=10)
    assert list(found.indices) == [1, 2, 3]
    assert np.all(found.similarity == 0)
    with pytest.raises(LensError, match="not among"):
        proj.nearest_neighbours(x, 4)
    with pytest.raises(LensError, match="at least one"):
        proj.nearest_neighbours(x, 0, k=0)


def test_bad_projection_requests_say_what_is_wrong(features: dict[str, np.ndarray]) -> None:
    x = features["fc1"][:50]
    with pytest.raises(LensError, match="unknown projection"):
        proj.project("isomap", x)
    with pytest.raises(LensError, match="2 or 3"):
        proj.project("pca", x, 4)
    with pytest.raises(LensError, match="at least 5"):
        proj.project("tsne", x[:3])
    broken = x.copy()
    broken[2, 1] = np.nan
    with pytest.raises(LensError, match="NaN"):
        proj.project("umap", broken)
