"""The command line: `python -m dashboard {train,evaluate,summary,atlas,probes,explain}`.

Contract (DESIGN.md): progress on stderr, one JSON object last on stdout, and for bad input a
non-zero exit with a one-line reason on stderr — never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.base import work
from dashboard.base.errors import LensError

if TYPE_CHECKING:  # the command line imports torch only for the command that runs
    from dashboard.data import Split
    from dashboard.training import Event, World

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line, like every other failure here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'3,32,32' (or 3x32x32) → (3, 32, 32)."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"input shape must be C,H,W integers, got {text!r}"
        ) from None
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(
            f"input shape must be three positive integers C,H,W, got {text!r}"
        )
    return shape  # type: ignore[return-value]


def standard_json(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with every NaN or infinite number replaced by null, each one named in a note
    under "notes" (JSON has no NaN: `json.dumps` would write a token other parsers refuse)."""
    notes: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{where} is {value} (not a finite number): written as null")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(payload, "")
    if notes:
        cleaned["notes"] = [*cleaned.get("notes", []), *notes]
    return cleaned


def print_json(payload: dict[str, Any]) -> None:
    """The one JSON object a command prints last on stdout: standard JSON, always."""
    sys.stdout.write(json.dumps(standard_json(payload), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _summary(args: argparse.Namespace) -> int:
    from dashboard.analysis import summary

    flow, title = summary.flow_for(args.target, input_shape=args.input_shape, model_name=args.model)
    broken = flow.broken
    if args.json:
        print_json(summary.flow_to_json(flow, title))
    else:
        sys.stdout.write(summary.flow_to_text(flow, title) + "\n")
    if broken is not None:
        where = f"{broken.layer} breaks: " if broken.layer else ""
        print(f"summary: {where}{broken.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


# --- train -------------------------------------------------------------------------------------

EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: a stopped run is saved but not finished


MAX_SEED = 2**32 - 1  # the range every seeded library accepts (numpy's too)
THREADS_PER_CORE = 4  # more only slows torch down; 100,000 crashed OpenMP's thread pool


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 1, got {value}")
    return value


def _whole_at_least_0(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {value}")
    return value


def _snapshot_layers(text: str) -> int | None:
    """'all' → None (every conv layer that fits the snapshot budget), else a count ≥ 0."""
    return None if text.strip().lower() == "all" else _whole_at_least_0(text)


def _seed(text: str) -> int:
    value = _whole(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED:,}, got {value:,}")
    return value


def max_threads() -> int:
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def _threads(text: str) -> int:
    value = _positive_int(text)
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


def _print_data_notes(*splits: Split) -> None:
    """What loading the data left out or found odd (an image folder's empty classes, links
    not followed), once each, as notes on stderr."""
    for note in dict.fromkeys(note for split in splits for note in split.notes):
        print(f"note: {note}", file=sys.stderr)


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
            _print_data_notes(train, test)
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


# --- evaluate ----------------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from dashboard import training
    from dashboard.analysis import metrics
    from dashboard.base import cache

    start = time.perf_counter()
    loaded, split = _checkpoint_split(args)
    card = loaded.card
    dataset = split.info.name
    device = training.resolve_device(args.device)
    model = loaded.model.to(device)
    if not len(split):
        raise LensError(f"{dataset} has no {args.split} images")
    outputs = _output_count(model, split, device)  # before classifying thousands of images
    if outputs != len(split.info.classes):
        raise LensError(
            f"{loaded.path.name} has {outputs} outputs but {dataset} has "
            f"{len(split.info.classes)} classes"
        )
    model_id = cache.checkpoint_digest(loaded.path, card.architecture, card.model_args)
    with _PredictProgress() as progress:
        pred = metrics.cached_predict(
            model, split, model_id, batch_size=args.batch_size, device=device, progress=progress
        )
    if not progress.ran:
        print(f"evaluate: predictions read from the cache ({cache.results_dir()})", file=sys.stderr)
    classes = list(pred.classes)
    cm = metrics.confusion(pred)
    rep = metrics.report(pred)
    per_class = {
        name: {
            "precision": rep[name]["precision"],
            "recall": rep[name]["recall"],
            "f1": rep[name]["f1-score"],
            "support": int(rep[name]["support"]),
        }
        for name in classes
    }
    calibration_extras = _calibration_summary(args, loaded, model, model_id, device, pred)
    for name, scores in calibration_extras.pop("per_class").items():
        per_class[name].update(scores)
    picked = pred.probabilities[np.arange(len(pred.labels)), pred.labels]
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(picked) else None
    top = metrics.top_confusions(cm, classes, k=5)
    _print_report_table(per_class, pred.accuracy, split, top)
    if calibration_extras["temperature"] is not None:
        print(
            f"calibration: ECE {calibration_extras['ece']:.2%}; temperature "
            f"{calibration_extras['temperature']:.3f} (fitted on "
            f"{calibration_extras['temperature_fitted_on']}) takes it from "
            f"{calibration_extras['ece_before_temperature']:.2%} to "
            f"{calibration_extras['ece_after_temperature']:.2%} on "
            f"{calibration_extras['calibration_measured_on']}",
            file=sys.stderr,
        )
    print_json(
        {
            "checkpoint": str(loaded.path),
            "dataset": split.info.name,
            "dataset_source": split.source,
            "split": args.split,
            "images": len(pred.labels),
            "accuracy": pred.accuracy,
            "loss": loss,
            "confusion_matrix": cm.tolist(),
            "per_class": per_class,
            "classes": classes,
            "top_confusions": [list(t) for t in top],
            **calibration_extras,
            "seconds": round(time.perf_counter() - start, 3),
            "warnings": loaded.warnings,
        }
    )
    return 0


def _output_count(model: Any, split: Split, device: Any) -> int:
    """How many scores the model gives for one image of the split (its first)."""
    import torch

    from dashboard import data
    from dashboard.analysis import metrics

    x, _ = next(data.iterate_batches(data.take_first(split, 1), 1, shuffle=False, device=device))
    with metrics.evaluating(model):
        return int(torch.as_tensor(model(x)).shape[-1])


class _PredictProgress:
    """A tqdm bar of images classified, on stderr, drawn only when predictions really run (a
    cached answer draws nothing); `ran` says whether they did."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.ran = False

    def __enter__(self) -> _PredictProgress:
        return self

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        self.ran = True
        if self.bar is None:
            self.bar = tqdm(
                total=total, desc="classifying", unit="img", file=sys.stderr, leave=False
            )
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_report_table(
    per_class: dict[str, dict[str, float]],
    accuracy: float,
    split: Split,
    top: list[tuple[str, str, int]],
) -> None:
    width = max(8, *(len(name) for name in per_class))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    lines += [
        f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  "
        f"{row['support']:7,d}"
        for name, row in per_class.items()
    ]
    lines.append(f"accuracy {accuracy:.2%} on {split.source}")
    if top:
        lines.append(
            "most confused (true → predicted): " + ", ".join(f"{t} → {p} ({n})" for t, p, n in top)
        )
    print("\n".join(lines), file=sys.stderr)


# --- a checkpoint and a split ------------------------------------------------------------------


def _checkpoint_split(args: argparse.Namespace) -> tuple[Any, Split]:
    """(the loaded checkpoint, its dataset's split --split): sized like the model's input,
    limited to --limit images, normalized with the statistics the model was trained with."""
    loaded = _load_checkpoint(args)
    return loaded, _model_split(args, loaded, args.split, limit=args.limit)


def _load_checkpoint(args: argparse.Namespace) -> Any:
    """The checkpoint --model names (its warnings printed on stderr)."""
    from dashboard.models import checkpoints

    loaded = checkpoints.load_checkpoint(args.checkpoint, architecture=args.model)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return loaded


def _model_split(
    args: argparse.Namespace, loaded: Any, split_name: str, *, limit: int | None = None
) -> Split:
    """One split of --dataset (default: the card's) as `loaded`'s model takes it: sized like
    its input, its first `limit` images, normalized with the statistics it was trained with."""
    from dashboard import data

    card = loaded.card
    dataset = args.dataset or card.dataset
    if not dataset:
        raise LensError(f"{loaded.path.name} has no card naming its dataset; pass --dataset NAME")
    shape = card.input_shape
    size = shape[1] if shape else None

    def check_channels(channels: int) -> None:
        if shape and channels != shape[0]:
            raise LensError(
                f"{loaded.path.name} takes {shape[0]}-channel images but {dataset} has {channels}"
            )

    if not dataset.startswith(data.FOLDER_PREFIX):  # before any image is read or downloaded
        check_channels(data.dataset_info(dataset, input_size=size).channels)
    split = data.take_first(
        data.load_split(
            dataset, split_name, data_root=args.data_root, download=args.download, input_size=size
        ),
        limit,
    )
    _print_data_notes(split)
    check_channels(split.info.channels)  # an image folder's, known once it is read
    saved = card.normalization if split.info.name == card.dataset else None
    if saved:  # the statistics the model was trained with, even if the registry's change later
        info = dataclasses.replace(split.info, mean=tuple(saved["mean"]), std=tuple(saved["std"]))
        split = dataclasses.replace(split, info=info)
    return split


@contextlib.contextmanager
def _progress_bar(unit: str, label: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr, fed by a (done, total) callback; drawn from the first call on, so a
    failure before any progress prints its one line alone."""
    from tqdm import tqdm

    bars: list[Any] = []

    def advance(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(desc=label, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
            )
        bars[0].total = total
        bars[0].update(done - bars[0].n)

    try:
        yield advance
    finally:
        for bar in bars:
            bar.close()


def _atlas(args: argparse.Namespace) -> int:
    from dashboard import training

    loaded, split = _checkpoint_split(args)
    device = training.resolve_device(args.device)
    model = loaded.model.to(device)
    with work.cpu_threads(args.threads):
        return _atlas_run(args, loaded, split, model, device)


def _atlas_run(args: argparse.Namespace, loaded: Any, split: Split, model: Any, device: Any) -> int:
    from dashboard.analysis import atlas, feature_vis
    from dashboard.report import atlas_sheet
    from dashboard.training import commands

    with _progress_bar("img", f"atlas of {args.layer}") as advance:
        result = atlas.compute_atlas(
            model, split, args.layer, top=args.top, negatives=False, device=device, progress=advance
        )
    visuals = None
    if args.visualize:
        settings = feature_vis.VisSettings(steps=args.steps, seed=args.seed)
        with _progress_bar("step", "feature visualization") as advance:
            vis = feature_vis.visualize_channels(
                model,
                args.layer,
                split.info.input_shape,
                split.info.mean,
                split.info.std,
                settings=settings,
                device=device,
                progress=advance,
            )
        visuals = vis.rgb()
    title = f"{loaded.path.stem} · {args.layer} · {split.source}"
    image = atlas_sheet.sheet(
        result, split.images, title=title, visualizations=visuals, classes=split.info.classes
    )
    out = (
        Path(args.out) / f"{commands.slug(loaded.path.stem)}-{commands.slug(args.layer)}-atlas.png"
    )
    print(f"wrote {atlas_sheet.save_png(image, out)}", file=sys.stderr)
    record = atlas.to_json(result)
    if args.json:
        print_json(record)
    else:
        sys.stdout.write(_atlas_table(result, split.info.classes) + "\n")
    return 0


def _atlas_table(result: Any, classes: tuple[str, ...]) -> str:
    """One line per channel: its best image and activation, selectivity, dead share."""
    favourite = result.preferred_class
    lines = [f"{'channel':>7}  {'top image':>9}  {'max':>9}  {'selectivity':>11}  "
             f"{'class':<12}  {'dead':>6}"]  # fmt: skip
    for c in range(result.channels):
        best = result.top(c)[0]
        lines.append(
            f"{c:>7}  {best.index:>9}  {best.activation:>9.4g}  {result.selectivity[c]:>11.3f}  "
            f"{classes[favourite[c]][:12]:<12}  {result.dead_share[c]:>6.1%}"
        )
    lines.append(f"{result.layer}: {result.values_of}; {result.images:,} {result.split} images")
    return "\n".join(lines)


# --- probes ------------------------------------------------------------------------------------

PROBE_IMAGES = 10_000  # default training and test images of `probes` (a seeded sample of each)


def _probes(args: argparse.Namespace) -> int:
    from dashboard.analysis import representations
    from dashboard.base import cache

    loaded = _load_checkpoint(args)
    model, card = loaded.model, loaded.card
    model_id = cache.checkpoint_digest(loaded.path, card.architecture, card.model_args)
    splits = {name: _model_split(args, loaded, name) for name in ("train", "test")}
    blocks = representations.model_blocks(model, splits["test"].info.input_shape)
    features = {}
    for (name, split), count in zip(
        splits.items(), (args.train_images, args.test_images), strict=True
    ):
        chosen = representations.sample_indices(len(split), count)
        with _progress_bar("%", f"{name} features") as advance:
            features[name] = representations.cached_features(
                model, model_id, split, blocks, indices=chosen, on_progress=_percent(advance)
            )
        print(f"{name}: {len(chosen):,} images of {split.source}", file=sys.stderr)
    with _progress_bar("%", "probes") as advance:
        report = representations.probe_layers(
            features["train"], features["test"], on_progress=_percent(advance)
        )
    if args.json:
        print_json(report.to_json())
        return 0
    width = max(len(p.layer) for p in report.layers)
    lines = [f"{'layer':<{width}}  features  probe %   k-NN %  silhouette"]
    for p in report.layers:
        sil = "—" if p.silhouette is None else f"{p.silhouette:+.3f}"
        lines.append(
            f"{p.layer:<{width}}  {p.features:8,d}  {100 * p.probe_accuracy:7.2f}  "
            f"{100 * p.knn_accuracy:7.2f}  {sil:>10}"
        )
    lines.append(
        f"the model itself: {100 * report.model_accuracy:.2f} % on the same "
        f"{report.test_images:,} test images (probes trained on {report.train_images:,})"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _percent(advance: Callable[[int, int], None]) -> Callable[[float, str], None]:
    """A (fraction, text) progress report fed to a (done, total) bar, in per cent."""
    return lambda fraction, _text: advance(round(100 * fraction), 100)


# --- explain, and evaluate's calibration -------------------------------------------------------


def _calibration_summary(
    args: argparse.Namespace, loaded: Any, model: Any, model_id: str, device: Any, pred: Any
) -> dict[str, Any]:
    """evaluate's calibration, per-class curve scores and top losses. The temperature is fitted
    on training images the model never saw (after the card's first `train_images`), else on
    half of the evaluated predictions (evaluation.calibrate says which)."""
    import numpy as np
    import torch

    from dashboard import data
    from dashboard.analysis import evaluation, metrics

    if not np.isfinite(pred.probabilities).all():  # non-finite weights: no curve, no calibration
        print("note: calibration and curves left out: the outputs are not finite", file=sys.stderr)
        keys = ("ece", "temperature", "ece_before_temperature", "ece_after_temperature")
        return {**dict.fromkeys(keys), "top_losses": [], "per_class": {}}
    card = loaded.card
    dataset = args.dataset or card.dataset
    # Another dataset than the card's: none of its training images was seen. Without a card
    # naming its dataset (a bare state dict) nobody knows which were.
    trained_on = card.training.get("train_images") if dataset == card.dataset else 0
    held_out = None
    if isinstance(trained_on, int) and card.dataset and args.split == "test":
        try:
            train = _model_split(args, loaded, "train")
        except LensError as err:  # no training split here: half of the test split serves
            print(f"note: temperature not fitted on training images ({err})", file=sys.stderr)
            train = None
        # A bundled sample's images are not the first ones of the split the model saw.
        usable = 0 if train is None or train.is_sample else len(train)
        unseen = evaluation.held_out_range(usable, trained_on)
        if train is not None and len(unseen):
            print(f"temperature: {len(unseen):,} unseen training images", file=sys.stderr)
            chosen = data.subset(train, torch.arange(unseen.start, unseen.stop))
            held_out = metrics.cached_predict(
                model, chosen, model_id, batch_size=args.batch_size, device=device
            )
    enough = held_out is not None or len(pred.labels) >= 2  # else no temperature to fit
    calibration = evaluation.calibrate(pred, held_out) if enough else None
    return {
        **evaluation.summary(pred, calibration),
        "per_class": evaluation.per_class_scores(pred),
    }


def _finite(value: float | None) -> float | None:
    """A number for strict JSON: NaN and infinities become null."""
    return value if value is None or math.isfinite(value) else None


def _explain(args: argparse.Namespace) -> int:
    from dashboard import data, training
    from dashboard.analysis import attribution
    from dashboard.figures import attribution as attribution_figures

    if args.out:
        attribution_figures.check_png_path(Path(args.out))
    loaded, split = _checkpoint_split(args)
    if not 0 <= args.image < len(split):
        raise LensError(
            f"image {args.image} does not exist: the {args.split} split has {len(split):,}"
        )
    device = training.resolve_device(args.device)
    model = loaded.model.to(device)
    pixels = split.images[args.image]  # (C, H, W) uint8
    x = data.normalize(pixels[None], split.info.mean, split.info.std).to(device)
    settings = attribution.Settings(baseline=args.baseline, steps=args.steps, layer=args.layer)
    print(
        f"explaining {args.split} image {args.image} of {split.info.title} with "
        f"{attribution.TITLES[args.method]}",
        file=sys.stderr,
        flush=True,
    )
    result = attribution.explain(
        model, x, split.info, args.method, target=args.target, settings=settings
    )
    if args.out:
        default = "absolute" if result.method in attribution.BY_MAGNITUDE else "signed"
        signed = (args.display or default) == "signed"
        picture = attribution_figures.overlay_picture(
            pixels.numpy(), result.signed if signed else result.absolute, signed=signed
        )
        attribution_figures.save_png(picture, Path(args.out))
        print(f"wrote {args.out}", file=sys.stderr)
    is_ig = result.method == "integrated-gradients"
    payload = {
        "image": args.image,
        "target": result.target,
        "method": result.method,
        "shape": list(result.values.shape),
        "attribution_sum": _finite(result.attribution_sum),
        "logit": _finite(result.logit) if is_ig else None,
        "baseline_logit": _finite(result.baseline_logit) if is_ig else None,
        "convergence_delta": _finite(result.convergence_delta) if is_ig else None,
    }
    if args.json:
        print_json(payload)
    else:
        classes = split.info.classes
        name = classes[result.target] if result.target < len(classes) else result.target
        lines = [
            f"{result.title} of class {name} (index {result.target}) for {args.split} image "
            f"{args.image}: sum {result.attribution_sum:.6g}, logit {result.logit:.6g}, "
            f"probability {result.probability:.2%}"
        ]
        if is_ig:
            lines.append(
                f"baseline ({settings.baseline}) logit {result.baseline_logit:.6g}, "
                f"convergence delta {result.convergence_delta:.3g}"
            )
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        default=None,
        help="datasets folder (default: $CNN_LENS_DATA, else a user cache)",
    )
    parser.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="download a missing dataset (default: yes)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dashboard", description="CNN Lens command line")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    summary = commands.add_parser(
        "summary", help="per-layer shapes, parameters, multiply-adds and receptive fields"
    )
    summary.add_argument(
        "target", help="a model name (e.g. lenet5, tv:resnet18) or a checkpoint file"
    )
    summary.add_argument(
        "--input-shape",
        type=parse_input_shape,
        default=None,
        help="C,H,W (default: the model's own)",
    )
    summary.add_argument("--model", default=None, help="architecture of a bare state dict")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(run=_summary)

    from dashboard.training import OPTIMIZERS, SCHEDULES, SNAPSHOT_BUDGET, TrainConfig

    defaults = TrainConfig()
    train = commands.add_parser(
        "train",
        help="train a model on a dataset and save a checkpoint (torchrun for several processes)",
    )
    train.add_argument("--model", required=True, help="architecture, e.g. lenet5 or tv:resnet18")
    train.add_argument(
        "--dataset",
        required=True,
        help="mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse or folder:PATH",
    )
    train.add_argument("--epochs", type=_positive_int, default=defaults.epochs)
    train.add_argument(
        "--batch-size",
        type=_positive_int,
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
        type=_positive_int,
        default=None,
        help="resize the images to N×N (default: the dataset's size)",
    )
    train.add_argument(
        "--limit-train",
        type=_positive_int,
        default=None,
        help="train on the first N training images only",
    )
    train.add_argument(
        "--limit-test",
        type=_positive_int,
        default=None,
        help="test on the first N test images only",
    )
    train.add_argument(
        "--out", default=None, help="checkpoint path, no suffix (default: runs/MODEL-DATASET-TIME)"
    )
    train.add_argument(
        "--dynamics-every",
        type=_whole_at_least_0,
        default=defaults.dynamics_every,
        help="steps between samples of every layer's norms, update ratio and dead units (0: off)",
    )
    train.add_argument(
        "--dead-window",
        type=_positive_int,
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
    _add_data_arguments(train)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy, confusion matrix and per-class report of a checkpoint"
    )
    evaluate.add_argument("checkpoint", help="NAME.safetensors (with its card) or a .pt/.pth")
    evaluate.add_argument("--model", default=None, help="architecture of a bare state dict")
    evaluate.add_argument("--dataset", default=None, help="default: the card's dataset")
    evaluate.add_argument("--split", choices=("test", "train"), default="test")
    evaluate.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="images per forward pass (default: 256, fewer for big images)",
    )
    evaluate.add_argument(
        "--limit", type=_positive_int, default=None, help="the first N images of the split only"
    )
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _add_data_arguments(evaluate)
    evaluate.set_defaults(run=_evaluate)

    from dashboard.analysis.atlas import DEFAULT_TOP
    from dashboard.analysis.feature_vis import VisSettings

    atlas = commands.add_parser(
        "atlas",
        help="what every channel of a layer responds to over a split: a PNG sheet and JSON",
    )
    atlas.add_argument("checkpoint", help="NAME.safetensors (with its card) or a .pt/.pth")
    atlas.add_argument("--layer", required=True, help="a conv, activation or pooling layer")
    atlas.add_argument(
        "--top", type=_positive_int, default=DEFAULT_TOP, help="images per channel (default 9)"
    )
    atlas.add_argument("--model", default=None, help="architecture of a bare state dict")
    atlas.add_argument("--dataset", default=None, help="default: the card's dataset")
    atlas.add_argument("--split", choices=("test", "train"), default="test")
    atlas.add_argument(
        "--limit", type=_positive_int, default=None, help="the first N images of the split only"
    )
    atlas.add_argument(
        "--visualize", action="store_true", help="add each channel's feature visualization"
    )
    atlas.add_argument(
        "--steps", type=_positive_int, default=VisSettings.steps, help="feature visualization steps"
    )
    atlas.add_argument(
        "--seed", type=int, default=VisSettings.seed, help="feature visualization seed"
    )
    atlas.add_argument("--out", default=".", help="folder for the PNG sheet (default: here)")
    atlas.add_argument("--json", action="store_true", help="print JSON instead of a table")
    atlas.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    atlas.add_argument(
        "--threads", type=_positive_int, default=None, help="CPU threads (default: torch's)"
    )
    _add_data_arguments(atlas)
    atlas.set_defaults(run=_atlas)

    probes = commands.add_parser(
        "probes", help="how separable the classes are at each layer: linear probe, k-NN, silhouette"
    )
    probes.add_argument("checkpoint", help="NAME.safetensors (with its card) or a .pt/.pth")
    probes.add_argument("--model", default=None, help="architecture of a bare state dict")
    probes.add_argument("--dataset", default=None, help="default: the card's dataset")
    probes.add_argument(
        "--train-images",
        type=_positive_int,
        default=PROBE_IMAGES,
        help=f"training images the probes learn from (default {PROBE_IMAGES:,}, a seeded sample)",
    )
    probes.add_argument(
        "--test-images",
        type=_positive_int,
        default=PROBE_IMAGES,
        help=f"test images they are scored on (default {PROBE_IMAGES:,}, a seeded sample)",
    )
    probes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_data_arguments(probes)
    probes.set_defaults(run=_probes)

    from dashboard.analysis.attribution import BASELINES, METHODS

    explain = commands.add_parser(
        "explain", help="an attribution map of one test image (Captum), as JSON and a PNG"
    )
    explain.add_argument("checkpoint", help="NAME.safetensors (with its card) or a .pt/.pth")
    explain.add_argument("--image", type=int, required=True, help="index of the image in the split")
    explain.add_argument("--split", choices=("test", "train"), default="test")
    explain.add_argument("--method", choices=METHODS, required=True)
    explain.add_argument(
        "--target", type=int, default=None, help="class index to explain (default: predicted)"
    )
    explain.add_argument(
        "--baseline",
        choices=BASELINES,
        default="black",
        help="Integrated Gradients and Occlusion: what an absent pixel is (default: black)",
    )
    explain.add_argument(
        "--steps", type=_positive_int, default=50, help="Integrated Gradients' path steps"
    )
    explain.add_argument(
        "--layer", default=None, help="Grad-CAM layer (default: the last conv block's output)"
    )
    explain.add_argument(
        "--display",
        choices=("signed", "absolute"),
        default=None,
        help="the PNG's map (default: absolute for gradients, signed for contributions)",
    )
    explain.add_argument("--out", default=None, help="write the overlay to this PNG file")
    explain.add_argument("--model", default=None, help="architecture of a bare state dict")
    explain.add_argument("--dataset", default=None, help="default: the card's dataset")
    explain.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps")
    explain.add_argument("--json", action="store_true", help="print the JSON record")
    _add_data_arguments(explain)
    explain.set_defaults(run=_explain, limit=None)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # `python -m dashboard` quits at once on a Ctrl-C while it imports; from here on a
        # Ctrl-C is Python's KeyboardInterrupt again (train saves its partial run on it).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.run(args))
    except LensError as err:
        print(f"{parser.prog} {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileNotFoundError as err:
        print(
            f"{parser.prog} {args.command}: file not found: {Path(err.filename or '')}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
