"""A training run's history as curves: the record the curve figures draw, from a live run's
events or a card's per-epoch history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dashboard.training.loop import EpochEvent, Event, StepEvent


@dataclass(frozen=True)
class Run:
    """One training run's curve: train and test values of one metric at (fractional) epochs."""

    label: str
    epochs: Sequence[float]  # 1, 2, … or fractions such as 1.25 for live step updates
    train: Sequence[float | None]  # accuracy as a fraction 0..1 (drawn in %), or loss
    test: Sequence[float | None] = field(default_factory=list)  # None where not measured


def _metric(metric: str) -> None:
    if metric not in ("accuracy", "loss"):
        raise ValueError(f'unknown metric {metric!r}; choose "accuracy" or "loss"')


AXES = {"epoch": "epoch", "step": "step", "seconds": "wall-clock seconds"}  # live x axes


def live_curve(
    events: Sequence[Event], label: str, metric: str = "accuracy", axis: str = "epoch"
) -> Run:
    """Train values at every logged step and test values at the end of each epoch, on one x
    axis (`AXES`): fractional epochs such as 1.25, the global step, or seconds since the run
    started (a test value sits at its epoch's last logged step), for `figures.training_curves`."""
    _metric(metric)
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; choose one of {', '.join(AXES)}")
    points: dict[float, list[float | None]] = {}
    seconds = 0.0  # the last logged step's time: where the next epoch's test value sits
    for event in events:
        if isinstance(event, StepEvent):
            seconds = event.elapsed
            x = _position(axis, event.epoch, event.step, event.steps_per_epoch, seconds)
            value = event.accuracy if metric == "accuracy" else event.loss
            points.setdefault(x, [None, None])[0] = value
            continue
        if not isinstance(event, EpochEvent):
            continue  # the layers' statistics (DynamicsEvent) have their own figures
        value = event.test_accuracy if metric == "accuracy" else event.test_loss
        if value is None:
            continue
        x = _position(axis, event.epoch, event.steps, event.steps_per_epoch, seconds)
        points.setdefault(x, [None, None])[1] = value
    xs = sorted(points)
    return Run(label, xs, [points[x][0] for x in xs], [points[x][1] for x in xs])


def _position(axis: str, epoch: int, step: int, per_epoch: int, seconds: float) -> float:
    if axis == "step":
        return float((epoch - 1) * per_epoch + step)
    if axis == "seconds":
        return round(seconds, 6)
    share = step / per_epoch if per_epoch else 1.0
    return round(epoch - 1 + share, 6)


def history_curve(
    history: Sequence[Mapping[str, Any]], label: str, metric: str = "accuracy"
) -> Run:
    """A card's per-epoch history as a curve. A stopped epoch sits at its fraction with its test
    value only: its training numbers cover a few batches and would spike the curve."""
    _metric(metric)
    xs: list[float] = []
    train: list[float | None] = []
    test: list[float | None] = []
    for i, record in enumerate(history, start=1):
        epoch = record.get("epoch", i)
        steps, per_epoch = record.get("steps"), record.get("steps_per_epoch")
        partial = bool(steps and per_epoch and steps < per_epoch)
        xs.append(epoch - 1 + steps / per_epoch if partial else float(epoch))
        train.append(None if partial else _number(record.get(f"train_{metric}")))
        test.append(_number(record.get(f"test_{metric}")))
    return Run(label, xs, train, test)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
