"""`python -m dashboard train`: train a model on a dataset and save a checkpoint (torchrun for
several processes); a first Ctrl-C stops after the current step and saves the partial run."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.base.errors import LensError
from dashboard.cli.common import (
    EXIT_INTERRUPTED,
    add_data_arguments,
    positive_int,
    print_data_notes,
    print_json,
    whole,
    whole_at_least_0,
)

if TYPE_CHECKING:  # the command line imports torch only for the command that runs
    from dashboard.data import Split
    from dashboard.training import Event, World


MAX_SEED = 2**32 - 1  # the range every seeded library accepts (numpy's too)
THREADS_PER_CORE = 4  # more only slows torch down; 100,000 crashed OpenMP's thread pool


def _snapshot_layers(text: str) -> int | None:
    """'all' → None (every conv layer that fits the snapshot budget), else a count ≥ 0."""
    return None if text.strip().lower() == "all" else whole_at_least_0(text)


def _seed(text: str) -> int:
    value = whole(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED:,}, got {value:,}")
    return value


def max_threads() -> int:
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def _threads(text: str) -> int:
    value = positive_int(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(
            f"expected at most {max_threads()} threads ({THREADS_PER_CORE} per core on this "
            f"machine's {os.cpu_count() or 1}), got {value:,}"
        )
    return value


def _model_option(text: str) -> tuple[str, Any]:
    """'batch_norm=true' → ('batch_norm', True): JSON values (numbers, true/false) become typed,
    anything else stays text; models.py checks the value against the option's allowed ones."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value.strip()


def _train_out(args: argparse.Namespace) -> Path:
    """Where the checkpoint goes: --out, else runs/NAME or runs/MODEL-DATASET-TIMESTAMP (never
    the shipped trained/ folder), refused up front if it exists and --overwrite is not given."""
    from dashboard.base import paths
    from dashboard.models import checkpoints
    from dashboard.training import commands

    if args.out:
        out = Path(args.out)
        if out.suffix in (".pt", ".pth"):
            raise LensError(f"{out.name}: checkpoints are saved as safetensors; give --out NAME")
        out = out.with_suffix("") if out.suffix == ".safetensors" else out
    elif args.name:
        out = checkpoints.validate_name(args.name, paths.RUNS_DIR).with_suffix("")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = paths.RUNS_DIR / f"{commands.slug(args.model)}-{commands.slug(args.dataset)}-{stamp}"
    if args.name:
        checkpoints.validate_name(args.name, out.parent)
    files = (Path(f"{out}.safetensors"), Path(f"{out}.json"))
    if any(checkpoints.inside_shipped(p) for p in (out.parent, *files)):
        raise LensError(
            f"{out}: trained/ holds the shipped checkpoints, which are never replaced; runs "
            "are saved in runs/ (or give another --out)"
        )
    existing = [p for p in files if p.exists()]
    if existing and not args.overwrite:
        raise LensError(f"{existing[0]} exists; pass --overwrite or choose another --out")
    try:  # a folder that cannot be made or written fails now, not after the training
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LensError(f"cannot create {out.parent}: {err.strerror or err}") from None
    checkpoints.ensure_writable(out.parent)
    return out


class _TrainProgress:
    """A tqdm bar per epoch on stderr, then one line per finished epoch."""

    def __init__(self, epochs: int, enabled: bool) -> None:
        self.epochs = epochs
        self.enabled = enabled
        self.bar: Any = None
        self.sample: Any = None  # the epoch's latest DynamicsEvent

    def __call__(self, event: Event) -> None:
        from tqdm import tqdm

        from dashboard.models.dynamics import DynamicsEvent, sample_line
        from dashboard.training import StepEvent

        if not self.enabled:
            return
        if isinstance(event, DynamicsEvent):
            self.sample = event
            return
        if isinstance(event, StepEvent):
            if self.bar is None:
                self.bar = tqdm(
                    total=event.steps_per_epoch,
                    desc=f"epoch {event.epoch}/{self.epochs}",
                    unit="step",
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                )
            self.bar.set_postfix_str(
                f"loss {event.loss:.4f}, acc {event.accuracy:.2%}, "
                f"{event.images_per_second:,.0f} img/s",
                refresh=False,
            )
            self.bar.update(event.step - self.bar.n)
            return
        self.close()
        test = (
            f", test loss {event.test_loss:.4f} acc {event.test_accuracy:.2%}"
            if event.test_accuracy is not None
            else ""
        )
        partial = f" (stopped after {event.steps}/{event.steps_per_epoch} steps)" * event.partial
        print(
            f"epoch {event.epoch}/{self.epochs}: train loss {event.train_loss:.4f} "
            f"acc {event.train_accuracy:.2%}{test}, lr {event.lr:.3g}, {event.seconds:.1f} s, "
            f"{event.images_per_second:,.0f} img/s{partial}",
            file=sys.stderr,
            flush=True,
        )
        if self.sample is not None and self.sample.epoch == event.epoch:
            print(f"  layers: {sample_line(self.sample)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C asks the run to stop after its current step; a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop.set()
        print(
            "\nstopping after this step and saving (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _load_train_test(args: argparse.Namespace, world: World) -> tuple[Split, Split]:
    from torch import distributed as dist

    from dashboard import data

    def load(split: str, limit: int | None) -> Split:
        loaded = data.load_split(
            args.dataset,
            split,
            data_root=args.data_root,
            download=args.download,
            input_size=args.input_size,
        )
        return data.take_first(loaded, limit)

    # Under torchrun rank 0 loads (and downloads) first; the others then find the files.
    if world.size > 1 and not world.is_main:
        dist.barrier()
    try:
        return load("train", args.limit_train), load("test", args.limit_test)
    finally:
        if world.size > 1 and world.is_main:
            dist.barrier()


def _train(args: argparse.Namespace) -> int:
    import torch

    from dashboard import data, models, training
    from dashboard.models import checkpoints
    from dashboard.training import commands, runs

    # Unknown names and bad settings fail here, before any data is read or downloaded.
    info = data.dataset_info(args.dataset, data_root=args.data_root, input_size=args.input_size)
    options = dict(args.option)
    torch.manual_seed(args.seed)  # the initial weights come from the seed too
    model = models.build_model(
        args.model,
        in_channels=info.channels,
        num_classes=info.num_classes,
        input_size=info.size,
        **options,
    )
    config = training.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        augment=args.augment,
        label_smoothing=args.label_smoothing,
        threads=args.threads,
        snapshot_layers=args.snapshot_layers,
        dynamics_every=args.dynamics_every,
        dead_window=args.dead_window,
    )
    training.check_config(config)
    training.resolve_device(args.device)
    out = _train_out(args)
    # A disk too full for the weights fails now, not after the training (a disk that fills up
    # during the run still fails the save in one line, leaving no temporary file).
    checkpoints.ensure_free_space(out.parent, checkpoints.state_bytes(model))
    with training.distributed_from_env(args.device) as device:
        config.device = device
        world = training.current_world()
        train, test = _load_train_test(args, world)
        if world.is_main:
            print_data_notes(train, test)
        info = train.info
        progress = _TrainProgress(args.epochs, enabled=world.is_main)
        stop = threading.Event()
        try:
            with _ctrl_c_sets(stop):
                result = training.fit(
                    model, train, test, config, on_event=progress, should_stop=stop
                )
        finally:
            progress.close()
        if result.stopped and not stop.is_set():
            raise LensError(result.stopped)  # a NaN loss: nothing worth saving
        if not world.is_main:
            return EXIT_INTERRUPTED if result.stopped else 0
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        dataset_source = f"train: {train.source}; test: {test.source}"
        card = runs.result_card(
            name=args.name or out.name,
            architecture=args.model,
            options=options,
            info=info,
            dataset_source=dataset_source,
            facts=runs.training_facts(
                config,
                info,
                result,
                processes=world.size,
                train_images=len(train),
                test_images=len(test),
            ),
            result=result,
            command=commands.train_command(args, out, world.size),
            notes=result.notes,
            data_root=args.data_root,
        )
        weights = checkpoints.save_checkpoint(
            result.model,
            card,
            out,
            overwrite=args.overwrite,
            filter_history=result.filter_history,
            dynamics=result.dynamics,
        )
    if result.stopped:
        print(f"{result.stopped}; saved the partial run to {weights}", file=sys.stderr)
    print_json(
        {
            "checkpoint": str(weights),
            "test_accuracy": result.final_test_accuracy,
            "test_loss": result.final_test_loss,
            "seconds": round(result.seconds, 2),
            "epochs": len(result.history),
            "images_per_second": round(result.images_per_second, 1),
            "dataset_source": dataset_source,
            "device": result.device,
            "stopped": result.stopped,
            "dynamics": _dynamics_json(result.dynamics),
        }
    )
    return EXIT_INTERRUPTED if result.stopped else 0


def _dynamics_json(log: Any) -> dict[str, Any] | None:
    """The train JSON's `dynamics`: the sampling, and the last epoch's numbers per layer."""
    if log is None:
        return None
    last = log.summaries[-1] if log.summaries else None
    record: dict[str, Any] = {"samples": len(log.steps), "every": log.every, "window": log.window}
    if last is not None:
        record["epoch"] = last.epoch
        record["update_ratio"] = dict(zip(log.tensors, last.update_ratio, strict=True))
        record["dead_share"] = dict(zip(log.activations, last.dead_share, strict=True))
    return record


def add_parser(subparsers: Any) -> None:
    """The `train` command and its arguments."""
    from dashboard.training import OPTIMIZERS, SCHEDULES, SNAPSHOT_BUDGET, TrainConfig

    defaults = TrainConfig()
    train = subparsers.add_parser(
        "train",
        help="train a model on a dataset and save a checkpoint (torchrun for several processes)",
    )
    train.add_argument("--model", required=True, help="architecture, e.g. lenet5 or tv:resnet18")
    train.add_argument(
        "--dataset",
        required=True,
        help="mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse or folder:PATH",
    )
    train.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="images per step, over all processes under torchrun",
    )
    train.add_argument("--lr", type=float, default=defaults.lr, help="(peak) learning rate")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    train.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule)
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crops and flips (default: the dataset's own choice)",
    )
    train.add_argument("--seed", type=_seed, default=defaults.seed)
    train.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or mps")
    train.add_argument(
        "--threads", type=_threads, default=None, help="CPU threads (default: torch's)"
    )
    train.add_argument(
        "--option",
        type=_model_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model option, e.g. activation=sigmoid",
    )
    train.add_argument(
        "--input-size",
        type=positive_int,
        default=None,
        help="resize the images to N×N (default: the dataset's size)",
    )
    train.add_argument(
        "--limit-train",
        type=positive_int,
        default=None,
        help="train on the first N training images only",
    )
    train.add_argument(
        "--limit-test",
        type=positive_int,
        default=None,
        help="test on the first N test images only",
    )
    train.add_argument(
        "--out", default=None, help="checkpoint path, no suffix (default: runs/MODEL-DATASET-TIME)"
    )
    train.add_argument(
        "--dynamics-every",
        type=whole_at_least_0,
        default=defaults.dynamics_every,
        help="steps between samples of every layer's norms, update ratio and dead units (0: off)",
    )
    train.add_argument(
        "--dead-window",
        type=positive_int,
        default=defaults.dead_window,
        help="batches before each sample in which dead units are counted",
    )
    train.add_argument(
        "--snapshot-layers",
        type=_snapshot_layers,
        default=None,
        help="conv layers whose filters are kept per epoch: N (the first N) or all (default: "
        f"all that fit {SNAPSHOT_BUDGET // 1024**2} MB)",
    )
    train.add_argument("--name", default=None, help="the checkpoint's name (default: from --out)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    add_data_arguments(train)
    train.set_defaults(run=_train)
