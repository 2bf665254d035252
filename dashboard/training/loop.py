"""Training: `fit()` runs the optimisation loop and reports through callbacks.

No Streamlit here: the app passes `on_event` (to draw progress) and `should_stop` (its stop
button); the command line passes a progress bar and a Ctrl-C flag. Batches come from the split's
in-memory uint8 tensors and are normalized on the device, so there is no DataLoader, no per-image
transform and no worker process. The same loop runs a single process or one rank of a
DistributedDataParallel job started by torchrun (`distributed_from_env`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from dashboard.analysis.metrics import evaluating, logits_in_batches
from dashboard.base import work
from dashboard.base.errors import LensError, UnknownNameError
from dashboard.data import Split, iterate_batches, subset
from dashboard.models import dynamics
from dashboard.models.dynamics import DynamicsEvent, DynamicsLog

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
MOMENTUM = 0.9  # for "momentum" and "nesterov": the value nearly every CNN paper uses
STEP_GAMMA = 0.1  # "step": the learning rate falls tenfold every third of the epochs
# Evaluation keeps no activations for backward, but a batch whose feature maps outgrow the
# CPU caches is slower per image: bn-cnn tests 2.6× faster in batches of 128 than of 1,000.
EVAL_BATCH = 128
# Per-epoch filter snapshots of every conv layer (snapshot_layers=None) stop at the layer that
# would take the run's snapshots past this: the small nets keep all layers, the CIFAR ResNet
# and VGG the first ones (every layer, every epoch would add ~20 MB to their checkpoints).
SNAPSHOT_BUDGET = 8 * 1024**2
MAX_BINS = 4096


@dataclass
class TrainConfig:
    epochs: int = 5  # passes over the training set; 1 already reaches ~98 % on MNIST
    batch_size: int = 64  # images per optimizer step, summed over all processes under DDP
    lr: float = 1e-3  # peak learning rate: 1e-3 suits adam; plain sgd wants ~0.05
    optimizer: str = "adam"  # sgd | momentum | nesterov (both momentum 0.9) | adam | adamw
    schedule: str = "constant"  # constant | step (×0.1 per third of the run) | cosine | onecycle
    weight_decay: float = 0.0  # L2 penalty on all weights (decoupled for adamw)
    seed: int = 0  # the same seed on the same machine gives the same run, step for step
    device: str = "auto"  # auto: CUDA, then MPS, else CPU; "cuda:1" picks a card
    augment: bool | None = None  # None: the dataset's default (CIFAR crops and flips, digits none)
    label_smoothing: float = 0.0  # softens one-hot targets; 0.1 helps the larger models
    eval_every_epoch: bool = True  # test after every epoch for the live curves, else at the end
    # First N conv layers' filters kept per epoch for the filter slider; None: every conv layer
    # while the run's snapshots fit snapshot_budget bytes (the command line's choice).
    snapshot_layers: int | None = 2
    snapshot_budget: int = SNAPSHOT_BUDGET
    # Every layer's norms, update ratio and dead units, sampled every N steps and at each epoch's
    # end (0: off); the activations are watched in the `dead_window` batches before a sample.
    dynamics_every: int = 50
    dead_window: int = 10
    histogram_bins: int = 64  # per parameter tensor and epoch, range fixed at the start
    log_every: int = 20  # steps between StepEvents: a smooth live curve, cheap to draw
    threads: int | None = None  # CPU threads for this run; None leaves torch's (the caller's)
    # CPU conv nets train in the channels-last layout: 15-30 % less time per step (bench/), the
    # same maths, but other rounding (Adam amplifies it in weights whose gradient is ~0).
    channels_last: bool = False


@dataclass(frozen=True)
class StepEvent:
    """Progress inside an epoch, sent every `log_every` steps and at the epoch's last step."""

    epoch: int  # 1-based
    step: int  # steps done in this epoch, 1-based
    steps_per_epoch: int
    loss: float  # mean training loss over the steps since the previous StepEvent
    accuracy: float  # training accuracy over the same steps (train mode, augmented images)
    lr: float  # learning rate of this step
    images_per_second: float  # training throughput so far (all processes), evaluation excluded
    elapsed: float  # seconds since fit() started
    eta: float  # seconds of training left at the current pace, evaluation not counted


@dataclass(frozen=True)
class EpochEvent:
    """One finished (or, when the run stops, partial) epoch; the history is a list of these."""

    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's training images
    train_accuracy: float
    test_loss: float | None  # None when there is no test split or it was not evaluated
    test_accuracy: float | None
    lr: float  # learning rate of the epoch's last step
    seconds: float  # wall time of the epoch, evaluation included
    images_per_second: float  # training images per second in this epoch (all processes)
    steps: int = 0  # optimizer steps taken; fewer than steps_per_epoch in a stopped epoch
    steps_per_epoch: int = 0

    @property
    def partial(self) -> bool:
        return self.steps < self.steps_per_epoch


Event = StepEvent | EpochEvent | DynamicsEvent


@dataclass
class FitResult:
    model: nn.Module  # the model fit() was given, trained in place (still on the device)
    history: list[EpochEvent]
    stopped: str | None  # None: finished; else why it ended early (user stop, NaN loss)
    filter_history: dict[int, dict[str, torch.Tensor]]  # epoch → conv name → (O, I, kH, kW) cpu
    seconds: float  # wall time of the whole run, evaluation included
    images_per_second: float  # training images per second over the run (all processes)
    final_test_accuracy: float | None
    final_test_loss: float | None
    device: str  # what the run used, e.g. "cpu", "cuda:0", "cpu, 2 processes (gloo)"
    batch_size: int = 0  # the batch size actually used (after clamping to the dataset)
    notes: list[str] = field(default_factory=list)  # adjustments and warnings, one line each
    dynamics: DynamicsLog | None = None  # every layer's statistics and histograms (None: off)


# ---------------------------------------------------------------------------------------------
# Devices and processes


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA, then Apple's MPS, else CPU; an explicit device must be present."""
    text = (name or "auto").strip().lower()
    kind = text.split(":", 1)[0]
    if kind not in DEVICES:
        raise UnknownNameError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise LensError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    if kind == "mps" and not mps_ok:
        raise LensError("device 'mps' requested but Apple's MPS is not available; use --device cpu")
    try:
        return torch.device(text)
    except RuntimeError as err:
        raise LensError(f"bad device {name!r}: {err}") from None


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run; a plain run is a world of one."""

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
    return World()


@contextmanager
def distributed_from_env(device: str = "auto") -> Iterator[str]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK) for the block.

    Yields the device this process should train on: `cuda:LOCAL_RANK` under NCCL, else the
    resolved device with gloo. Without torchrun's variables it is a no-op. The group is
    destroyed on the way out, also after an error.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available() or dist.is_initialized():
        yield device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
        backend = "nccl"
    elif resolved.type == "cpu":
        backend = "gloo"
    else:
        raise LensError(f"distributed training runs on CPU or CUDA, not {resolved.type}")
    dist.init_process_group(backend=backend)
    try:
        yield str(resolved)
    finally:
        dist.destroy_process_group()


def _all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Sum numbers over all processes (identity in a single process)."""
    if world.size == 1:
        return values
    # NCCL reduces only CUDA tensors; gloo only CPU ones.
    where = device if world.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=where)
    dist.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------------------------------------
# Optimizers and schedules


def _fused(params: list[nn.Parameter]) -> dict[str, bool]:
    """One fused kernel per step instead of ~10 small ops per tensor (the same update rule):
    on CPU and CUDA, for floating-point parameters; elsewhere torch's default path."""
    ok = bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )
    return {"fused": True} if ok else {}


def make_optimizer(params: Iterator[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    name, lr, wd = config.optimizer, config.lr, config.weight_decay
    plist = list(params)
    fused = _fused(plist)
    if name == "sgd":
        return torch.optim.SGD(plist, lr=lr, weight_decay=wd, **fused)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(
            plist, lr=lr, momentum=MOMENTUM, nesterov=name == "nesterov", weight_decay=wd, **fused
        )
    if name == "adam":
        return torch.optim.Adam(plist, lr=lr, weight_decay=wd, **fused)
    if name == "adamw":
        return torch.optim.AdamW(plist, lr=lr, weight_decay=wd, **fused)
    raise UnknownNameError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def step_size_epochs(epochs: int) -> int:
    """Epochs between the "step" schedule's tenfold drops: a third of the run, at least one."""
    return max(1, math.ceil(epochs / 3))


@dataclass
class Schedule:
    """A torch scheduler and whether it advances per optimizer step or per epoch."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_step: bool


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> Schedule:
    """constant, step (per epoch), cosine and onecycle (per step, over the whole run)."""
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler
    if config.schedule == "constant":
        return Schedule(None, per_step=False)
    if config.schedule == "step":
        size = step_size_epochs(config.epochs)
        return Schedule(sched.StepLR(optimizer, step_size=size, gamma=STEP_GAMMA), per_step=False)
    if config.schedule == "cosine":
        return Schedule(sched.CosineAnnealingLR(optimizer, T_max=total), per_step=True)
    if config.schedule == "onecycle":
        # Cycling momentum needs one to cycle: plain SGD has none and must stay plain.
        scheduler = sched.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total, cycle_momentum=config.optimizer != "sgd"
        )
        return Schedule(scheduler, per_step=True)
    raise UnknownNameError(
        f"unknown schedule {config.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
    )


# ---------------------------------------------------------------------------------------------
# Checks before a run


def check_config(config: TrainConfig) -> list[str]:
    """Reject what cannot run; return warnings for what runs but is probably not meant."""
    if config.optimizer not in OPTIMIZERS:
        raise UnknownNameError(
            f"unknown optimizer {config.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
        )
    if config.schedule not in SCHEDULES:
        raise UnknownNameError(
            f"unknown schedule {config.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
        )
    if config.epochs < 1:
        raise LensError(f"epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1:
        raise LensError(f"batch size must be at least 1, got {config.batch_size}")
    if not math.isfinite(config.lr) or config.lr < 0:
        raise LensError(f"learning rate must be a number ≥ 0, got {config.lr}")
    if config.dynamics_every < 0 or config.dead_window < 1:
        raise LensError("dynamics_every must be ≥ 0 (0: off) and dead_window ≥ 1")
    if not 2 <= config.histogram_bins <= MAX_BINS:
        raise LensError(f"histogram_bins must be from 2 to {MAX_BINS:,}")
    if not math.isfinite(config.weight_decay) or config.weight_decay < 0:
        raise LensError(f"weight decay must be a number ≥ 0, got {config.weight_decay}")
    if not 0 <= config.label_smoothing < 1:
        raise LensError(f"label smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.log_every < 1 or (config.snapshot_layers or 0) < 0:
        raise LensError("log_every must be ≥ 1 and snapshot_layers ≥ 0")
    if config.threads is not None and config.threads < 1:
        raise LensError(f"threads must be at least 1, got {config.threads}")
    return ["learning rate is 0: the weights will not change"] if config.lr == 0 else []


def _check_model_fits(model: nn.Module, split: Split, device: torch.device) -> None:
    """One image through the model before training, so a mismatch is one clear line."""
    with evaluating(model):
        x, _ = next(
            iterate_batches(
                subset(split, torch.arange(1)),
                1,
                shuffle=False,
                generator=None,
                augment=False,
                device=device,
            )
        )
        try:
            out = model(x)
        except RuntimeError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise LensError(
                f"the model does not take this dataset's {tuple(x.shape[1:])} images: {first}"
            ) from None
    classes = len(split.info.classes)
    if out.ndim != 2 or out.shape[1] < classes:
        raise LensError(
            f"the model outputs {tuple(out.shape[1:])} per image but the dataset has "
            f"{classes} classes; build it with num_classes={classes}"
        )


# ---------------------------------------------------------------------------------------------
# Evaluation and snapshots


def _eval_sums(
    model: nn.Module, split: Split, batch_size: int, device: torch.device
) -> tuple[float, float, float]:
    """(summed loss, correct, count) over a split: sums, so processes can add theirs."""
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for logits, y in logits_in_batches(model, split, batch_size=batch_size, device=device):
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += y.numel()
    return loss_sum, correct, count


def evaluate_model(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over the split: batched, no autograd, mode restored."""
    if len(split.labels) == 0:
        raise LensError("cannot evaluate on an empty split")
    loss_sum, correct, count = _eval_sums(model, split, batch_size, torch.device(device))
    return loss_sum / count, correct / count


def _snapshot_convs(
    model: nn.Module, config: TrainConfig
) -> tuple[list[tuple[str, nn.Conv2d]], str | None]:
    """The conv layers whose filters are kept per epoch, and a note when some are left out."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if config.snapshot_layers is not None:
        return convs[: config.snapshot_layers], None
    kept: list[tuple[str, nn.Conv2d]] = []
    used = 0
    for name, conv in convs:
        size = conv.weight.numel() * conv.weight.element_size() * (config.epochs + 1)
        if used + size > config.snapshot_budget:
            break
        kept.append((name, conv))
        used += size
    if len(kept) == len(convs):
        return kept, None
    rest = sum(c.weight.numel() * c.weight.element_size() for _, c in convs[len(kept) :])
    return kept, (
        f"filter snapshots per epoch cover the first {len(kept)} of {len(convs)} conv layers: "
        f"the others would add {rest * (config.epochs + 1) / 1024**2:.1f} MB to the checkpoint"
    )


def _snapshot(convs: list[tuple[str, nn.Conv2d]]) -> dict[str, torch.Tensor]:
    # Contiguous copies whatever the training layout: safetensors stores only contiguous tensors.
    contiguous = torch.contiguous_format
    return {
        name: conv.weight.detach().to("cpu", memory_format=contiguous, copy=True)
        for name, conv in convs
    }


@contextmanager
def _channels_last_on_cpu(model: nn.Module, device: torch.device) -> Iterator[torch.memory_format]:
    """Train a CPU conv net channels-last (N, H, W, C in memory), yielding the batches' layout.

    oneDNN's convolutions, batch norm and max-pooling are vectorised over channels in that
    layout (max-pool forward ~8× faster for bn-cnn); the maths is unchanged. The model is laid
    out contiguously again on the way out, also after an error, so checkpoints can be saved.
    A model already in another layout, or on a GPU, is left as it is.
    """
    kernels = [p for p in model.parameters() if p.ndim == 4]
    if device.type != "cpu" or not kernels or not all(p.is_contiguous() for p in kernels):
        yield torch.contiguous_format
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield torch.channels_last
    finally:
        model.to(memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------------------------
# The loop


class BatchPlan(NamedTuple):
    """How an epoch is cut into steps, the same on every process."""

    images: int  # images used per epoch (all processes); the rest wait for a later shuffle
    batch_size: int  # global batch
    per_process: int  # each process's share of a batch
    steps_per_epoch: int
    notes: list[str]  # adjustments worth telling the user


def plan_batches(n: int, batch_size: int, processes: int = 1) -> BatchPlan:
    """Cut n shuffled images into global batches of `batch_size`, each split over `processes`.

    Each epoch uses a multiple of the process count, so every process takes equally many steps
    (one that ran out of batches would leave the others waiting forever); a batch larger than
    the data shrinks to the data; a last batch of a single image is dropped, because BatchNorm1d
    cannot train on one.
    """
    usable = n - n % processes
    if usable == 0:
        raise LensError(f"{n} images cannot be shared by {processes} processes")
    notes = []
    if batch_size > usable:
        notes.append(
            f"batch size {batch_size} is larger than the {usable} training images; using {usable}"
        )
        batch_size = usable
    elif batch_size % processes:
        raise LensError(
            f"batch size {batch_size} does not split evenly over {processes} processes; "
            f"use a multiple of {processes}"
        )
    per_process = batch_size // processes
    if per_process > 1 and (usable // processes) % per_process == 1:
        usable -= processes
    steps = math.ceil(usable // processes / per_process)
    return BatchPlan(usable, batch_size, per_process, steps, notes)


def fit(
    model: nn.Module,
    train: Split,
    test: Split | None,
    config: TrainConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | threading.Event | None = None,
) -> FitResult:
    """Train `model` in place on `train`, testing on `test` after each epoch.

    Events go to `on_event`; `should_stop` is polled after every step and ends the run cleanly
    after that step. A NaN or infinite loss ends the run before its step is applied. Under
    torch.distributed each process takes its share of every global batch and only the sums
    travel between processes; every process returns the same history.
    """
    layout = (
        _channels_last_on_cpu(model, resolve_device(config.device))
        if config.channels_last
        else nullcontext(torch.contiguous_format)
    )
    recorder = dynamics.Recorder(
        model, every=config.dynamics_every, window=config.dead_window, bins=config.histogram_bins
    )
    with work.cpu_threads(config.threads), layout as memory_format, recorder:
        return _fit(model, train, test, config, on_event, should_stop, memory_format, recorder)


def _fit(
    model: nn.Module,
    train: Split,
    test: Split | None,
    config: TrainConfig,
    on_event: Callable[[Event], None] | None,
    should_stop: Callable[[], bool] | threading.Event | None,
    memory_format: torch.memory_format,
    recorder: dynamics.Recorder,
) -> FitResult:
    notes = check_config(config)
    if len(train.labels) == 0:
        raise LensError("the training split is empty")
    if test is not None and len(test.labels) == 0:
        raise LensError("the test split is empty")
    world = current_world()
    device = resolve_device(config.device)
    emit = on_event or (lambda event: None)

    # Every process draws the same epoch order from the seed; augmentation differs per process.
    with work.seeded(config.seed, keep_global=False):  # dropout draws from it (one process)
        pass
    order_rng = torch.Generator().manual_seed(config.seed)
    augment_rng = torch.Generator().manual_seed(config.seed + 1 + world.rank)
    augment = train.info.augment if config.augment is None else config.augment

    plan = plan_batches(len(train.labels), config.batch_size, world.size)
    notes += plan.notes
    usable, per_process, steps_per_epoch = plan.images, plan.per_process, plan.steps_per_epoch

    model.to(device)
    if device.type != "cpu":  # uint8 images are small: keep them on the device, gather there
        train = dataclasses.replace(train, images=train.images.to(device))
        if test is not None:
            test = dataclasses.replace(test, images=test.images.to(device))
    _check_model_fits(model, train, device)
    net: nn.Module = model
    if world.size > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    optimizer = make_optimizer(model.parameters(), config)
    schedule = make_schedule(optimizer, config, steps_per_epoch)
    convs, left_out = _snapshot_convs(model, config)
    notes += [left_out] if left_out else []
    filter_history = {0: _snapshot(convs)}
    recorder.start(steps_per_epoch, dynamics.all_reduce_max if world.size > 1 else None)
    test_share = (
        subset(test, torch.arange(world.rank, len(test.labels), world.size))
        if test is not None and world.size > 1
        else test
    )

    def evaluate() -> tuple[float | None, float | None]:
        if test_share is None:
            return None, None
        if world.size > 1:
            # DDP copies rank 0's buffers (BatchNorm statistics) at each forward; copy them once
            # more so every process tests the very model rank 0 saves.
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)
        loss_sum, correct, count = _all_sum(
            list(_eval_sums(model, test_share, EVAL_BATCH, device)), world, device
        )
        return loss_sum / count, correct / count

    history: list[EpochEvent] = []
    stopped: str | None = None
    diverged = False  # the loss went NaN/inf: the model is not worth testing
    start = time.perf_counter()
    train_seconds = 0.0
    images_seen = 0.0  # over all processes
    steps_done = 0
    total_steps = config.epochs * steps_per_epoch
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        net.train()
        order = torch.randperm(len(train.labels), generator=order_rng)[:usable]
        mine = subset(train, order[world.rank :: world.size])
        epoch_loss = epoch_correct = epoch_images = 0.0
        window_loss = window_correct = window_images = 0.0
        step = 0
        lr = optimizer.param_groups[0]["lr"]
        batches = iterate_batches(
            mine,
            per_process,
            shuffle=False,
            generator=augment_rng,
            augment=augment,
            device=device,
            memory_format=memory_format,
        )
        for x, y in batches:
            lr = optimizer.param_groups[0]["lr"]
            recorder.before_step(steps_done + 1)
            logits = net(x)  # (B, K)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            correct = (logits.detach().argmax(dim=1) == y).sum().item()
            # Summed over processes: the global batch's loss, and one verdict for all of them.
            loss_sum, correct, count = _all_sum(
                [loss.item() * y.numel(), correct, y.numel()], world, device
            )
            if not math.isfinite(loss_sum):
                diverged = True
                what = "NaN" if math.isnan(loss_sum) else "infinite"
                stopped = (
                    f"loss became {what} at epoch {epoch}, step {step + 1}: "
                    f"lower the learning rate (now {lr:g})"
                )
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            recorder.after_backward(steps_done + 1)
            optimizer.step()
            if schedule.per_step and schedule.scheduler is not None:
                schedule.scheduler.step()
            step += 1
            steps_done += 1
            epoch_loss += loss_sum
            epoch_correct += correct
            epoch_images += count
            window_loss += loss_sum
            window_correct += correct
            window_images += count
            sample = recorder.after_step(
                epoch=epoch, step=step, global_step=steps_done, elapsed=time.perf_counter() - start
            )
            if sample is not None:
                emit(sample)
            if step % config.log_every == 0 or step == steps_per_epoch:
                now = time.perf_counter()
                running = train_seconds + (now - epoch_start)
                pace = running / steps_done
                emit(
                    StepEvent(
                        epoch=epoch,
                        step=step,
                        steps_per_epoch=steps_per_epoch,
                        loss=window_loss / window_images,
                        accuracy=window_correct / window_images,
                        lr=lr,
                        images_per_second=(images_seen + epoch_images) / max(running, 1e-9),
                        elapsed=now - start,
                        eta=pace * (total_steps - steps_done),
                    )
                )
                window_loss = window_correct = window_images = 0.0
            if (
                steps_done < total_steps
                and _all_sum([float(work.stop_requested(should_stop))], world, device)[0] > 0
            ):
                stopped = f"stopped by user at epoch {epoch}, step {step}"
                break
        epoch_train_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_train_seconds
        images_seen += epoch_images
        if not schedule.per_step and schedule.scheduler is not None and stopped is None:
            schedule.scheduler.step()
        if step == 0:
            break  # the very first step of this epoch failed: nothing to record
        last = epoch == config.epochs or stopped is not None
        test_loss, test_accuracy = (
            evaluate() if (config.eval_every_epoch or last) and not diverged else (None, None)
        )
        filter_history[epoch] = _snapshot(convs)
        recorder.end_epoch(epoch)
        event = EpochEvent(
            epoch=epoch,
            train_loss=epoch_loss / epoch_images,
            train_accuracy=epoch_correct / epoch_images,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            lr=lr,
            seconds=time.perf_counter() - epoch_start,
            images_per_second=epoch_images / max(epoch_train_seconds, 1e-9),
            steps=step,
            steps_per_epoch=steps_per_epoch,
        )
        history.append(event)
        emit(event)
        if stopped is not None:
            break

    final = history[-1] if history else None
    return FitResult(
        model=model,
        history=history,
        stopped=stopped,
        filter_history=filter_history,
        seconds=time.perf_counter() - start,
        images_per_second=images_seen / max(train_seconds, 1e-9),
        final_test_accuracy=final.test_accuracy if final else None,
        final_test_loss=final.test_loss if final else None,
        device=str(device)
        if world.size == 1
        else f"{device}, {world.size} processes ({world.backend})",
        batch_size=plan.batch_size,
        notes=notes,
        dynamics=recorder.log,
    )
