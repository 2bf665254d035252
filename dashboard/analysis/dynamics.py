"""Reading a run's training dynamics for display: which curves to draw against which clock, and
TensorBoard's "distributions" (percentile bands over epochs) from the stored histograms.

The record itself (what fit() samples and the checkpoint keeps) is `models.dynamics`; this
module only reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from torch import nn

from dashboard.models.dynamics import DynamicsLog, Series, weight_tensors

# TensorBoard's distribution bands: the basis points of its compressed histograms (min, the
# normal distribution's ±1.5σ, ±1σ, ±0.5σ, median, max), in per cent.
BAND_PERCENTILES = (0.0, 6.68, 15.87, 30.85, 50.0, 69.15, 84.13, 93.32, 100.0)
STATISTIC_NAMES = {
    "weight_norm": "weight norm ‖w‖₂",
    "grad_norm": "gradient norm ‖∇w‖₂",
    "update_ratio": "update-to-weight ratio ‖Δw‖/‖w‖",
    "dead_share": "dead units (never fired in the window)",
}
STATISTIC_LABELS = {  # short, for a narrow selectbox
    "weight_norm": "weight norm",
    "grad_norm": "gradient norm",
    "update_ratio": "update ratio",
    "dead_share": "dead units",
}
CLOCKS = {"step": "optimizer step", "epoch": "epoch", "seconds": "wall clock (s)"}


class Distribution(NamedTuple):
    """One parameter tensor's histograms over the epochs that stored one."""

    epochs: np.ndarray  # (E,) epoch numbers; 0 = the initial weights
    edges: np.ndarray  # (bins + 1,) the fixed bin edges
    counts: np.ndarray  # (E, bins + 2) [below edges[0], bins…, at or above edges[-1]]

    @property
    def elements(self) -> int:
        return int(self.counts[0].sum()) if len(self.counts) else 0

    @property
    def outside(self) -> np.ndarray:
        """(E,) values beyond the bins (underflow + overflow) per epoch."""
        return self.counts[:, 0] + self.counts[:, -1]


def statistic_title(statistic: str) -> str:
    """A figure's title for the statistic: its name with a capital first letter."""
    name = STATISTIC_NAMES[statistic]
    return name[:1].upper() + name[1:]


def clock(series: Series, name: str) -> np.ndarray:
    """The series' x values: global step, position in epochs, or seconds since the start."""
    return {"step": series.steps, "epoch": series.epochs, "seconds": series.seconds}[name]


def line_names(log: DynamicsLog, statistic: str) -> list[str]:
    """What a statistic has a line for: activation calls for dead shares, tensors otherwise."""
    return list(log.activations) if statistic == "dead_share" else list(log.tensors)


def default_tensors(names: Sequence[str], model: nn.Module | None = None) -> list[str]:
    """The weights of the conv and linear layers (what "every layer" means in a first look);
    without the model to ask, every tensor called `…weight`."""
    if model is None:
        return weight_tensors(names)
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
    chosen = {
        f"{n}.weight" if n else "weight" for n, m in model.named_modules() if isinstance(m, kinds)
    }
    found = [n for n in names if n in chosen]
    return found or weight_tensors(names)


def distribution(log: DynamicsLog, tensor: str) -> Distribution:
    """`tensor`'s stored histograms, epochs in order; KeyError when it has none."""
    if tensor not in log.edges:
        raise KeyError(f"no histograms stored for {tensor}")
    epochs = [e for e in sorted(log.histograms) if tensor in log.histograms[e]]
    counts = np.stack([log.histograms[e][tensor].numpy().astype(np.int64) for e in epochs])
    return Distribution(np.asarray(epochs), log.edges[tensor].double().numpy(), counts)


def histogram_percentiles(
    edges: np.ndarray, counts: np.ndarray, percentiles: Sequence[float] = BAND_PERCENTILES
) -> np.ndarray:
    """Percentiles of the values a histogram counted, the values spread evenly inside each bin
    (TensorBoard's linear interpolation). `counts` = [under, bins…, over]: values beyond the
    bins sit at the outer edges. The 0th and 100th are the outer edges of the first and last
    occupied bins. → (len(percentiles),)."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    under, inside, over = counts[0], counts[1:-1], counts[-1]
    total = counts.sum()
    if total == 0:
        return np.full(len(percentiles), np.nan)
    occupied = np.flatnonzero(inside)
    lowest = edges[0] if under or not len(occupied) else edges[occupied[0]]
    highest = edges[-1] if over or not len(occupied) else edges[occupied[-1] + 1]
    cumulative = under + np.concatenate([[0.0], np.cumsum(inside)])  # at each edge
    out = []
    for p in percentiles:
        rank = p / 100.0 * total
        if p <= 0:
            out.append(lowest)
        elif p >= 100:
            out.append(highest)
        elif rank <= under:
            out.append(edges[0])
        elif rank >= total - over:
            out.append(edges[-1])
        else:  # cumulative[k] < rank <= cumulative[k + 1]: inside bin k
            k = int(np.searchsorted(cumulative, rank, side="left")) - 1
            share = (rank - cumulative[k]) / inside[k]
            out.append(edges[k] + share * (edges[k + 1] - edges[k]))
    return np.asarray(out)


def bands(dist: Distribution, percentiles: Sequence[float] = BAND_PERCENTILES) -> np.ndarray:
    """(E, len(percentiles)) percentiles of each epoch's histogram."""
    return np.stack([histogram_percentiles(dist.edges, c, percentiles) for c in dist.counts])


class LineSummary(NamedTuple):
    """One line's numbers over the run (NaN where it has no finite sample)."""

    name: str
    first: float  # the first sample's value
    last: float  # the last sample's value
    median: float  # over the run's finite samples
    smallest: float
    largest: float


def line_summaries(series: Series, statistic: str, names: Sequence[str]) -> list[LineSummary]:
    """Each chosen line's first, last, median, smallest and largest sampled value."""
    out = []
    for name in names:
        values = np.asarray(series.values[statistic][name], dtype=np.float64)
        finite = values[np.isfinite(values)]
        spread = (np.median(finite), finite.min(), finite.max()) if len(finite) else (np.nan,) * 3
        ends = (values[0], values[-1]) if len(values) else (np.nan, np.nan)
        out.append(LineSummary(name, *(float(v) for v in (*ends, *spread))))
    return out
