"""Watching a model while it trains (ConvNetJS's live view): copies of its weights taken between
two steps every few seconds, and what the Train page draws from a copy — the first conv layer's
filters, a later conv layer's, and one fixed test image's maps at a chosen layer with the
prediction.

The training thread only copies tensors (`LiveWeights.offer`, a few microseconds for LeNet, a
few milliseconds for ResNet-18, at most every `LIVE_EVERY_S`); the page's own thread runs the
forward pass of the copy, so the run never waits for a figure. The copy goes into a skeleton of
the model made before training started, under a lock: two tabs drawing at once take turns.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dashboard.analysis import probe
from dashboard.base.errors import UnknownNameError
from dashboard.data import Split, batches
from dashboard.training.loop import EpochEvent, Event, StepEvent

LIVE_EVERY_S = 2.0  # a new copy of the weights at most this often: the page redraws as often
LIVE_IMAGES = 32  # test images the live maps can show (the first of the split: fixed)


@dataclass(frozen=True)
class Snapshot:
    """The weights at one moment of the run."""

    number: int  # 1, 2, … in the order taken
    epoch: int
    step: int  # within the epoch
    steps_per_epoch: int
    elapsed: float  # seconds since the run started
    state: dict[str, torch.Tensor]  # CPU copies of the model's state_dict

    @property
    def where(self) -> str:
        if not self.steps_per_epoch:
            return "the start"
        return f"epoch {self.epoch}, step {self.step}/{self.steps_per_epoch}"


@dataclass(frozen=True)
class LiveView:
    """What the page draws from one snapshot."""

    snapshot: Snapshot
    first_filters: np.ndarray | None  # (C_out, C_in, kh, kw) of the first conv layer
    later_filters: np.ndarray | None  # of the chosen later conv layer
    image: np.ndarray  # the test image, uint8 (C, H, W)
    label: int
    maps: np.ndarray  # the chosen layer's output for the image: (C, H, W) or (C,)
    probabilities: np.ndarray  # softmax over the classes


class LiveWeights:
    """A training model's weights, copied between steps, and the views the page draws of them.

    Made in the thread that starts the run, before training begins: the skeleton is a deep copy
    of the untrained model, and `layers` (the leaf layers with maps, in forward order) come from
    one forward pass of it."""

    def __init__(self, model: nn.Module, images: Split, every_s: float = LIVE_EVERY_S) -> None:
        self.every_s = every_s
        self.images = images.images[:LIVE_IMAGES].clone()
        self.labels = [int(v) for v in images.labels[:LIVE_IMAGES]]
        self.classes = list(images.info.classes)
        self._mean, self._std = images.info.mean, images.info.std
        self._skeleton = copy.deepcopy(model).cpu().eval()
        for parameter in self._skeleton.parameters():
            parameter.requires_grad_(False)
        self.convs = [name for name, _ in probe.conv_layers(self._skeleton)]
        with torch.no_grad():
            maps = probe.activations(self._skeleton, self._batch(0))
        self.layers = [name for name, value in maps.items() if value.dim() == 4]
        self._started = time.monotonic()
        self._last_offer = -float("inf")
        self._latest: Snapshot | None = None
        self._lock = threading.Lock()  # guards _latest
        self._skeleton_lock = threading.Lock()  # one view at a time uses the skeleton

    def _batch(self, index: int) -> torch.Tensor:
        return batches.normalize(self.images[index : index + 1], self._mean, self._std)

    # --- the training thread -------------------------------------------------------------------

    def offer(self, model: nn.Module, event: Event | None = None, *, force: bool = False) -> bool:
        """Copy the weights when `every_s` has passed since the last copy (always with `force`);
        called between two steps. → whether a copy was taken."""
        if event is not None and not isinstance(event, StepEvent | EpochEvent):
            return False  # a dynamics sample: only logged steps and epochs say where the run is
        now = time.monotonic()
        if not force and now - self._last_offer < self.every_s:
            return False
        self._last_offer = now
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        with self._lock:
            previous = self._latest
            epoch, step, per_epoch = _position(event, previous)
            self._latest = Snapshot(
                number=(previous.number if previous else 0) + 1,
                epoch=epoch,
                step=step,
                steps_per_epoch=per_epoch,
                elapsed=now - self._started,
                state=state,
            )
        return True

    # --- the page ------------------------------------------------------------------------------

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._latest

    def view(self, snapshot: Snapshot, image: int, layer: str, later_conv: str | None) -> LiveView:
        """The snapshot's filters, and test image `image`'s maps at `layer` and prediction."""
        if not 0 <= image < len(self.labels):
            raise UnknownNameError(f"live image {image} out of range: 0 … {len(self.labels) - 1}")
        if layer not in self.layers:
            raise UnknownNameError(f"layer {layer!r} has no maps; layers: {', '.join(self.layers)}")
        with self._skeleton_lock, torch.no_grad():
            self._skeleton.load_state_dict(snapshot.state)
            logits, maps = probe.forward_with_activations(
                self._skeleton, self._batch(image), [layer]
            )
        return LiveView(
            snapshot=snapshot,
            first_filters=self._filters(snapshot, self.convs[0] if self.convs else None),
            later_filters=self._filters(snapshot, later_conv),
            image=self.images[image].numpy(),
            label=self.labels[image],
            maps=maps[layer][0].float().numpy(),
            probabilities=torch.softmax(logits[0].float(), dim=0).numpy(),
        )

    def _filters(self, snapshot: Snapshot, conv: str | None) -> np.ndarray | None:
        if conv is None:
            return None
        if conv not in self.convs:
            raise UnknownNameError(f"{conv!r} is not a conv layer; conv layers: {self.convs}")
        return snapshot.state[f"{conv}.weight"].float().numpy()


def _position(event: Event | None, previous: Snapshot | None) -> tuple[int, int, int]:
    """(epoch, step within it, steps per epoch) of the copy: the event's, else the last copy's."""
    if isinstance(event, StepEvent | EpochEvent):
        step = event.step if isinstance(event, StepEvent) else event.steps
        return event.epoch, step, event.steps_per_epoch
    if previous is not None:
        return previous.epoch, previous.step, previous.steps_per_epoch
    return 0, 0, 0
