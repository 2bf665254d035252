"""Training-dynamics figures on a real run's record: the histograms count every weight, the
percentile bands are the histograms' (and within a bin of the real weights'), the smoothing is
TensorBoard's EMA computed by hand, and each figure draws exactly those numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dashboard.analysis import dynamics
from dashboard.figures import dynamics as figures
from dashboard.models import checkpoints
from dashboard.models.dynamics import UPDATE_RATIO_GUIDE
from tests.dynamics_run import EVERY, dynamics_checkpoint  # noqa: F401 (a fixture)
from tests.test_page_filters import array

pytestmark = pytest.mark.reads_data


@pytest.fixture(scope="module")
def loaded(dynamics_checkpoint: Path) -> checkpoints.LoadedCheckpoint:  # noqa: F811
    return checkpoints.load_checkpoint(dynamics_checkpoint)


def weights(path: Path) -> dict[str, np.ndarray]:
    """The saved weights as float64, read straight from the file (no model built)."""
    state = load_file(str(path))
    return {k: v.double().numpy() for k, v in state.items() if not k.startswith("lens_history")}


def hand_ema(values, weight: float) -> list[float]:
    """TensorBoard's smoothing written out: a running average debiased by 1 − wⁿ."""
    out, last = [], 0.0
    for n, v in enumerate(values, start=1):
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


def interpolated_percentile(edges: np.ndarray, counts: np.ndarray, p: float) -> float:
    """The p-th percentile of a histogram by inverting its piecewise-linear CDF (np.interp over
    the cumulative counts at the edges): another way to the same number."""
    inside = counts[1:-1].astype(np.float64)
    cumulative = counts[0] + np.concatenate([[0.0], np.cumsum(inside)])
    rank = p / 100 * counts.sum()
    keep = np.concatenate([[True], np.diff(cumulative) > 0])  # flat stretches: first edge only
    return float(np.interp(rank, cumulative[keep], edges[keep]))


def test_every_histogram_counts_every_value_of_its_tensor(loaded, dynamics_checkpoint):  # noqa: F811
    log = loaded.dynamics
    assert log is not None
    saved = weights(dynamics_checkpoint)
    assert sorted(log.histograms) == [0, 1, 2]
    for name in log.tensors:
        dist = dynamics.distribution(log, name)
        assert list(dist.epochs) == [0, 1, 2]
        assert (dist.counts.sum(axis=1) == saved[name].size).all(), name
        assert dist.elements == saved[name].size
        # the last epoch's histogram is numpy's of the saved weights in the same bins
        inside, _ = np.histogram(saved[name].ravel(), bins=dist.edges)
        np.testing.assert_array_equal(dist.counts[-1, 1:-1], inside, err_msg=name)


def test_percentile_bands_are_the_histograms_and_the_weights(loaded, dynamics_checkpoint):  # noqa: F811
    log = loaded.dynamics
    saved = weights(dynamics_checkpoint)
    for name in dynamics.default_tensors(log.tensors, loaded.model):
        dist = dynamics.distribution(log, name)
        bands = dynamics.bands(dist)
        assert bands.shape == (3, len(dynamics.BAND_PERCENTILES))
        assert (np.diff(bands, axis=1) >= 0).all()
        for row, counts in zip(bands, dist.counts, strict=True):
            for p, value in zip(dynamics.BAND_PERCENTILES[1:-1], row[1:-1], strict=True):
                assert value == pytest.approx(interpolated_percentile(dist.edges, counts, p))
            occupied = np.flatnonzero(counts[1:-1])
            assert row[0] == dist.edges[occupied[0]]
            assert row[-1] == dist.edges[occupied[-1] + 1]
        # and within one bin of the real weights' percentiles (min and max included), those
        # beyond the bins (fc1's largest weights outgrew them) taken at the bins' edge
        real = np.percentile(saved[name].ravel(), dynamics.BAND_PERCENTILES)
        real = np.clip(real, dist.edges[0], dist.edges[-1])
        width = dist.edges[1] - dist.edges[0]
        np.testing.assert_array_less(np.abs(bands[-1] - real), width + 1e-9, err_msg=name)


def test_percentiles_of_a_small_histogram_by_hand():
    """Two bins [0, 1) and [1, 2) holding 1 and 3 values: the median (rank 2 of 4) lies a third
    into the second bin; the minimum and maximum are the outer edges of the occupied bins."""
    edges = np.array([-1.0, 0.0, 1.0, 2.0])
    counts = np.array([0, 0, 1, 3, 0])
    out = dynamics.histogram_percentiles(edges, counts, (0, 25, 50, 100))
    np.testing.assert_allclose(out, [0.0, 1.0, 1 + 1 / 3, 2.0])
    # values beyond the bins sit at the outer edge
    out = dynamics.histogram_percentiles(edges, np.array([2, 0, 1, 1, 0]), (0, 25, 100))
    np.testing.assert_allclose(out, [-1.0, -1.0, 2.0])


def test_smoothed_lines_are_tensorboards_ema_with_the_raw_faint_behind(loaded):
    series = loaded.dynamics.series()
    assert len(series) == 14  # steps 5, 10, …, 30, 32 (epoch end), 35, …, 60, 64
    assert list(series.steps[:7]) == [5, 10, 15, 20, 25, 30, 32]
    values = series.values["grad_norm"]
    names = ["features.conv1.weight", "classifier.fc3.weight"]
    fig = figures.statistic_lines(
        dynamics.clock(series, "epoch"),
        {n: values[n] for n in names},
        statistic="grad_norm",
        y_title="gradient norm",
        x_title="epoch",
        smoothing=0.6,
    )
    raw = [t for t in fig.data if t.showlegend is False]
    smooth = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in smooth] == names
    for name, faint, line in zip(names, raw, smooth, strict=True):
        np.testing.assert_array_equal(faint.y, values[name])
        np.testing.assert_allclose(line.y, hand_ema(values[name], 0.6), rtol=1e-12)
        np.testing.assert_array_equal(line.x, series.epochs)
        assert faint.line.color.endswith("0.25)")
    assert series.epochs[-1] == 2.0


def test_update_ratio_has_a_log_axis_and_the_rule_of_thumb(loaded):
    series = loaded.dynamics.series()
    ratios = series.values["update_ratio"]
    fig = figures.statistic_lines(
        dynamics.clock(series, "step"),
        dict(ratios),
        statistic="update_ratio",
        y_title="update ratio",
        x_title="step",
        smoothing=0.0,
        log_y=True,
    )
    assert fig.layout.yaxis.type == "log"
    (guide,) = fig.layout.shapes
    assert guide.y0 == guide.y1 == UPDATE_RATIO_GUIDE
    assert len(fig.data) == len(ratios)  # no smoothing: the raw lines only
    for trace in fig.data:
        np.testing.assert_array_equal(trace.y, ratios[trace.name])
        np.testing.assert_array_equal(trace.x, series.steps)
    # on a log axis a zero is a gap, not a point at the bottom
    shown = figures.shown_values(np.array([0.0, 1e-3, np.inf]), statistic="x", log_y=True)
    assert np.isnan(shown[[0, 2]]).all()
    assert shown[1] == 1e-3


def test_dead_shares_are_drawn_in_per_cent(loaded):
    series = loaded.dynamics.series()
    dead = series.values["dead_share"]
    assert list(dead) == list(loaded.dynamics.activations)
    fig = figures.statistic_lines(
        series.seconds, dict(dead), statistic="dead_share", y_title="%", x_title="s", smoothing=0
    )
    for trace in fig.data:
        np.testing.assert_allclose(trace.y, 100 * dead[trace.name])
    assert fig.layout.yaxis.ticksuffix == " %"


def test_band_and_heatmap_figures_draw_the_histograms(loaded):
    dist = dynamics.distribution(loaded.dynamics, "features.conv2.weight")
    bands = dynamics.bands(dist)
    fig = figures.distribution_bands(dist.epochs, bands, dynamics.BAND_PERCENTILES, title="t")
    median = fig.data[-1]
    assert median.name == "median"
    np.testing.assert_array_equal(median.y, bands[:, 4])
    labels = [t.name for t in fig.data if t.fill == "tonexty"]
    assert labels == ["min–max", "7 %–93 %", "16 %–84 %", "31 %–69 %"]
    heat = figures.histogram_heatmap(dist.epochs, dist.edges, dist.counts, title="t")
    z = array(heat.data[0].z) if isinstance(heat.data[0].z, dict) else np.asarray(heat.data[0].z)
    np.testing.assert_allclose(z, 100 * dist.counts[:, 1:-1] / dist.elements)
    np.testing.assert_allclose(z.sum(axis=1), 100.0)  # no value beyond the bins in this run
    np.testing.assert_allclose(heat.data[0].x, (dist.edges[:-1] + dist.edges[1:]) / 2)
    assert list(heat.data[0].y) == [0, 1, 2]
    # the value axis spans the occupied bins (and one more each side), not the empty margins
    occupied = np.flatnonzero(dist.counts[:, 1:-1].sum(axis=0))
    width = dist.edges[1] - dist.edges[0]
    low, high = heat.layout.xaxis.range
    assert low == pytest.approx(dist.edges[occupied[0]] - width)
    assert high == pytest.approx(dist.edges[occupied[-1] + 1] + width)


def test_default_layers_are_the_conv_and_linear_weights(loaded):
    names = dynamics.default_tensors(loaded.dynamics.tensors, loaded.model)
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    expected = [f"{n}.weight" for n, m in loaded.model.named_modules() if isinstance(m, kinds)]
    assert names == expected
    assert len(names) == 5
    assert loaded.dynamics.every == EVERY


def test_log_ticks_are_one_two_five_and_written_whole():
    ticks = figures.log_ticks(np.array([0.0023, 0.018, 0.0, np.nan]))
    assert ticks == [0.002, 0.005, 0.01, 0.02]
    fig = figures.statistic_lines(
        np.arange(2), {"a": np.array([0.0023, 0.018])}, statistic="update_ratio",
        y_title="r", x_title="s", smoothing=0, log_y=True,
    )  # fmt: skip
    assert list(fig.layout.yaxis.ticktext) == ["0.001", "0.002", "0.005", "0.01", "0.02"]
