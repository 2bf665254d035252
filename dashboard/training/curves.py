"""A training run's history as curves: the record the curve figures draw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Run:
    """One training run's curve: train and test values of one metric at (fractional) epochs."""

    label: str
    epochs: Sequence[float]  # 1, 2, … or fractions such as 1.25 for live step updates
    train: Sequence[float | None]  # accuracy as a fraction 0..1 (drawn in %), or loss
    test: Sequence[float | None] = field(default_factory=list)  # None where not measured
