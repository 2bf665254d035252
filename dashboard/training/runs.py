"""Background training runs for the Train page: one daemon thread per run, with its own model.

The page (one per browser session) starts a run with `start_run` and keeps the `TrainingRun` in
its session state; a fragment redraws the progress from `events_since` every half second. A run
never trains a cached model: `start_run` builds a fresh one and, to continue from existing
weights, copies their tensors into it.

A run ends when it finishes, when `stop()` is called (fit() checks the flag after every step),
when the loss goes NaN, or when its browser tab is gone. The last is a heartbeat: the page calls
`heartbeat()` on every redraw and may pass `alive`, a check that its browser session is still
connected (the websocket stays open in a background tab and while the user looks at another
page, when no redraw happens). When neither a heartbeat nor a True `alive()` was seen for
`heartbeat_timeout` seconds (10 by default), `should_stop` answers True and the run ends, so a
closed tab leaves no thread training for nobody. At most `MAX_ACTIVE_RUNS` runs train at once
on a server, and at most one per owner (a browser session).

A run trains on one CPU thread unless its config says otherwise: with torch's default (a team of
OpenMP threads per calling thread), a run inside the Streamlit server fought the script threads
for the cores and trained 10-15× slower on 2 busy cores (170 against 2,400 images/s, course-net).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any, NamedTuple

from torch import nn

from dashboard import data, models, training
from dashboard.base import paths, work
from dashboard.base.errors import LensError
from dashboard.data import DatasetInfo, Split
from dashboard.models import checkpoints
from dashboard.training import EpochEvent, Event, FitResult, StepEvent, TrainConfig, commands
from dashboard.training.curves import history_curve as history_curve
from dashboard.training.curves import live_curve as live_curve
from dashboard.training.live import LIVE_EVERY_S, LiveWeights

HEARTBEAT_TIMEOUT_S = 10.0  # a run with no sign of its browser tab for this long stops itself
ALIVE_CHECK_EVERY_S = 1.0  # `alive()` is asked at most this often (fit polls after every step)
MAX_ACTIVE_RUNS = 2  # on 2 CPU cores a third run would only slow the other two down

# Run states
RUNNING = "running"
STOPPING = "stopping"  # stop requested; the current step and the partial epoch's test still run
FINISHED = "finished"
STOPPED = "stopped"  # by stop() or by the heartbeat timeout; the weights are worth saving
DIVERGED = "diverged"  # NaN or infinite loss: not saved (as on the command line)
FAILED = "failed"  # an error before or during training; `error` says which

log = logging.getLogger(__name__)

_ACTIVE_LOCK = threading.Lock()
_ACTIVE: list[TrainingRun] = []
_IDS = itertools.count(1)


@dataclass(frozen=True)
class RunSpec:
    """What to train: everything the equivalent `python -m dashboard train` command says."""

    architecture: str  # models.py name or tv:NAME
    dataset: str  # the name the splits were loaded with (registry name or folder:PATH)
    config: TrainConfig = field(default_factory=TrainConfig)
    options: Mapping[str, Any] = field(default_factory=dict)  # the model's own options
    limit_train: int | None = None  # first N training images only (a quick run)
    limit_test: int | None = None
    input_size: int | None = None  # the images were resized to this side (None: as stored)
    initial_weights: str = ""  # what the weights start from, in words ("": seeded random)

    @property
    def label(self) -> str:
        """How the run is named beside others: its model, options, optimizer, rate and batch."""
        shown = ", ".join(f"{k}={v}" for k, v in self.options.items())
        model = f"{self.architecture} ({shown})" if shown else self.architecture
        config = self.config
        return f"{model} · {config.optimizer} lr {config.lr:g} · batch {config.batch_size}"


class Progress(NamedTuple):
    """Where a run is, for the progress bar and the numbers beside it."""

    fraction: float  # of all optimizer steps, 0..1
    epoch: int  # 1-based; 0 before the first step event
    epochs: int
    step: int
    steps_per_epoch: int
    images_per_second: float
    elapsed: float  # seconds since the run started (until it ended)
    eta: float | None  # seconds of training left at the current pace; None before the first event
    train_loss: float | None  # over the latest logged steps
    train_accuracy: float | None
    test_loss: float | None  # after the latest epoch
    test_accuracy: float | None


class TrainingRun:
    """One background training run. Thread-safe: the page reads it while the thread writes."""

    def __init__(
        self,
        spec: RunSpec,
        model: nn.Module,
        train: Split,
        test: Split | None,
        *,
        label: str,
        owner: str | None,
        heartbeat_timeout: float,
        alive: Callable[[], bool] | None,
        notes: Sequence[str] = (),
        live_every_s: float | None = LIVE_EVERY_S,
    ) -> None:
        self.id = next(_IDS)
        self.spec = spec
        self.label = label or f"run {self.id}: {spec.architecture}"
        self.owner = owner
        self.info: DatasetInfo = train.info
        self.train_images = len(train)
        self.test_images = len(test) if test is not None else 0
        self.dataset_source = f"train: {train.source}" + (
            f"; test: {test.source}" if test is not None else ""
        )
        # Unreadable files of an image folder, left out of both splits (the sources count them).
        self.skipped = train.skipped + (test.skipped if test is not None else 0)
        self.notes = list(notes)
        self.heartbeat_timeout = heartbeat_timeout
        self.saved_as: Path | None = None  # set by save_run
        self.started = time.monotonic()
        self.ended: float | None = None
        self._model: nn.Module | None = model
        self._splits: tuple[Split, Split | None] | None = (train, test)
        self._alive = alive
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._last_step: StepEvent | None = None
        self._last_epoch: EpochEvent | None = None
        self._status = RUNNING
        self._result: FitResult | None = None
        self._history: list[EpochEvent] = []
        self._abandoned = False
        self._last_sign = self._last_alive_check = self.started
        self.error: str | None = None
        # The live view's copies of the weights; None (with the reason) when the model cannot
        # show one: training goes on without it.
        self.live: LiveWeights | None = None
        self.live_error = ""
        try:
            if live_every_s is not None:
                shown = test if test is not None and len(test) else train
                self.live = LiveWeights(model, shown, live_every_s)
        except Exception as err:  # a model the probe cannot follow still trains
            self.live_error = _one_line(err)
        self._thread = threading.Thread(target=self._work, name=f"cnn-lens-run-{self.id}")
        self._thread.daemon = True  # never keeps the server process alive on shutdown

    # --- what the page reads ---------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    @property
    def result(self) -> FitResult | None:
        """The finished fit (None while running, after a failure, or once released)."""
        return self._result

    @property
    def history(self) -> list[EpochEvent]:
        """Finished (and partial) epochs so far."""
        with self._lock:
            return list(self._history)

    @property
    def abandoned(self) -> bool:
        """True when the run stopped because its browser tab gave no sign of life."""
        return self._abandoned

    @property
    def reason(self) -> str:
        """Why the run is where it is, as one sentence for the page."""
        status = self.status
        result = self._result
        if status == RUNNING:
            return "training"
        if status == STOPPING:
            return "stopping after the current step (the partial epoch is then tested)"
        if status == FINISHED:
            epochs = len(result.history) if result is not None else len(self._history)
            return f"finished: {epochs} epoch{'s' * (epochs != 1)} trained"
        if status == FAILED:
            return f"failed: {self.error}"
        stopped = result.stopped if result is not None else None
        text = stopped or status
        if self._abandoned:
            return (
                text.replace("stopped by user", "stopped")
                + f": its browser tab was gone for {self.heartbeat_timeout:g} s"
            )
        return text

    def events_since(self, index: int) -> list[Event]:
        """Events from `index` on (0: all), in the order fit() sent them."""
        with self._lock:
            return self._events[index:]

    def progress(self) -> Progress:
        with self._lock:
            last, epoch, status = self._last_step, self._last_epoch, self._status
        epochs = self.spec.config.epochs
        end = self.ended if self.ended is not None else time.monotonic()
        if last is None:
            return Progress(
                0.0, 0, epochs, 0, 0, 0.0, end - self.started, None, None, None, None, None
            )
        where, step = last.epoch, last.step
        if epoch is not None and (epoch.epoch, epoch.steps) > (where, step):
            where, step = epoch.epoch, epoch.steps  # stopped between two logged steps
        total = epochs * last.steps_per_epoch
        done_steps = (where - 1) * last.steps_per_epoch + step
        fraction = 1.0 if status == FINISHED else min(1.0, done_steps / total)
        return Progress(
            fraction=fraction,
            epoch=where,
            epochs=epochs,
            step=step,
            steps_per_epoch=last.steps_per_epoch,
            images_per_second=last.images_per_second,
            elapsed=end - self.started,
            eta=last.eta if status in (RUNNING, STOPPING) else 0.0,
            train_loss=last.loss,
            train_accuracy=last.accuracy,
            test_loss=epoch.test_loss if epoch is not None else None,
            test_accuracy=epoch.test_accuracy if epoch is not None else None,
        )

    # --- what the page (or a test) does ----------------------------------------------------

    def stop(self) -> None:
        """Ask the run to end after its current step; returns at once."""
        self._stop.set()
        with self._lock:
            if self._status == RUNNING:
                self._status = STOPPING

    def heartbeat(self) -> None:
        """The page is still drawing this run: keep it alive for another `heartbeat_timeout`."""
        self._last_sign = time.monotonic()

    def should_stop(self) -> bool:
        """fit()'s stop check: the stop flag, or no sign of the browser tab for too long."""
        if self._stop.is_set():
            return True
        now = time.monotonic()
        every = min(ALIVE_CHECK_EVERY_S, self.heartbeat_timeout / 2)
        if self._alive is not None and now - self._last_alive_check >= every:
            self._last_alive_check = now
            if _safe_call(self._alive):
                self._last_sign = now
        if now - self._last_sign > self.heartbeat_timeout:
            self._abandoned = True
            self.stop()
            return True
        return False

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when the run has ended."""
        self._thread.join(timeout)
        return self.done

    def release(self) -> None:
        """Drop the trained weights (the curves stay): bounds a session's memory."""
        self._result = None
        self._model = None
        self.live = None

    # --- the thread ------------------------------------------------------------------------

    def _record(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if isinstance(event, StepEvent):
                self._last_step = event
            elif isinstance(event, EpochEvent):
                self._last_epoch = event
                self._history.append(event)
        live, model = self.live, self._model
        if live is not None and model is not None:
            live.offer(model, event)  # between two steps: the weights are whole

    def _work(self) -> None:
        work.name_os_thread(f"lens-run-{self.id}")  # a leaked run shows in /proc by name
        model, splits = self._model, self._splits
        assert model is not None
        assert splits is not None
        train, test = splits
        status, result, error = FAILED, None, None
        try:
            result = training.fit(
                model,
                train,
                test,
                self.spec.config,
                on_event=self._record,
                should_stop=self.should_stop,
            )
        except LensError as err:
            error = str(err)
        except Exception as err:  # a bug must not vanish with its thread: the page shows it
            log.exception("training run %s failed", self.id)
            error = _one_line(err)
        else:
            if result.stopped is None:
                status = FINISHED
            else:
                status = STOPPED if self._stop.is_set() else DIVERGED
        finally:
            live = self.live
            if live is not None and result is not None:  # the last view shows the final weights
                live.offer(result.model, self._last_epoch, force=True)
            self._splits = None  # the cached splits may be evicted: do not keep them alive
            with _ACTIVE_LOCK:
                if self in _ACTIVE:
                    _ACTIVE.remove(self)
            with self._lock:
                self._result, self.error, self._status = result, error, status
                if result is not None:
                    self._history = list(result.history)
            self.ended = time.monotonic()
            self._done.set()


def _safe_call(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # a runtime shutting down: no sign of life
        return False


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else 'no message'}"


@atexit.register
def _stop_all(wait: float = 5.0) -> None:
    """On interpreter exit, end the runs cleanly: a thread killed inside torch aborts."""
    pending = active_runs()
    for run in pending:
        run.stop()
    deadline = time.monotonic() + wait
    for run in pending:
        run.join(max(0.0, deadline - time.monotonic()))


def active_runs() -> list[TrainingRun]:
    """Runs training on this server now (all sessions)."""
    with _ACTIVE_LOCK:
        return list(_ACTIVE)


# --- starting a run -----------------------------------------------------------------------------


def build_run_model(
    spec: RunSpec, info: DatasetInfo, initial: nn.Module | None = None
) -> tuple[nn.Module, str]:
    """A fresh model for the dataset, seeded like the command line's; with `initial`, every
    tensor of it that fits is copied in (the source is only read). → (model, a note or "")."""
    with work.seeded(spec.config.seed):  # the initial weights come from the seed too
        model = models.build_model(
            spec.architecture,
            in_channels=info.channels,
            num_classes=info.num_classes,
            input_size=info.size,
            **dict(spec.options),
        )
    if initial is None:
        return model, ""
    target = model.state_dict()
    source = initial.state_dict()
    fitting = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    if not fitting:
        raise LensError(
            f"none of the weights of {spec.initial_weights or 'the selected model'} fit "
            f"{spec.architecture} on {info.title}: start from random weights instead"
        )
    model.load_state_dict(fitting, strict=False)  # copies into the new model's own tensors
    fresh = [k for k in target if k not in fitting and not k.endswith("num_batches_tracked")]
    what = spec.initial_weights or "the selected model"
    note = f"started from the weights of {what} ({len(fitting)} of {len(target)} tensors copied"
    if fresh:
        shown = ", ".join(fresh[:3]) + (", …" if len(fresh) > 3 else "")
        note += f"; {shown} start random"
    note += ")"
    return model, note


def start_run(
    spec: RunSpec,
    train: Split,
    test: Split | None,
    *,
    initial: nn.Module | None = None,
    label: str = "",
    owner: str | None = None,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S,
    alive: Callable[[], bool] | None = None,
    max_active: int = MAX_ACTIVE_RUNS,
    live_every_s: float | None = LIVE_EVERY_S,
) -> TrainingRun:
    """Check the settings, build the run's own model and start training it in a daemon thread.

    `train`/`test` are only read (cached splits may be shared by sessions); `initial` is a model
    whose weights to start from, also only read. Bad settings, a model that cannot be built, a
    second run for the same `owner` or more than `max_active` runs raise LensError here, before
    any thread starts. A config without `threads` trains on one (see the module docstring).
    The run copies its weights for the live view every `live_every_s` (None: never).
    """
    if spec.config.threads is None:
        spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, threads=1))
    training.check_config(spec.config)
    training.resolve_device(spec.config.device)
    train = data.take_first(train, spec.limit_train)
    test = data.take_first(test, spec.limit_test) if test is not None else None
    model, note = build_run_model(spec, train.info, initial)
    run = TrainingRun(
        spec,
        model,
        train,
        test,
        label=label,
        owner=owner,
        heartbeat_timeout=heartbeat_timeout,
        alive=alive,
        notes=[note] if note else [],
        live_every_s=live_every_s,
    )
    with _ACTIVE_LOCK:
        mine = [r for r in _ACTIVE if owner is not None and r.owner == owner]
        if mine:
            raise LensError(f"{mine[0].label} is still training: stop it before starting another")
        if len(_ACTIVE) >= max_active:
            raise LensError(
                f"{len(_ACTIVE)} runs are training on this server already (the limit is "
                f"{max_active}); wait for one to end"
            )
        _ACTIVE.append(run)
    try:
        run._thread.start()
    except RuntimeError as err:  # the system cannot start another thread
        with _ACTIVE_LOCK:
            _ACTIVE.remove(run)
        raise LensError(f"could not start the training thread: {err}") from None
    return run


# --- curves and tables --------------------------------------------------------------------------


def epoch_record(event: EpochEvent) -> dict[str, Any]:
    """One epoch as a card stores it."""
    return {
        "epoch": event.epoch,
        "train_loss": event.train_loss,
        "train_accuracy": event.train_accuracy,
        "test_loss": event.test_loss,
        "test_accuracy": event.test_accuracy,
        "lr": event.lr,
        "seconds": round(event.seconds, 3),
        "steps": event.steps,
        "steps_per_epoch": event.steps_per_epoch,
    }


def training_facts(
    config: TrainConfig,
    info: DatasetInfo,
    result: FitResult | None,
    *,
    processes: int,
    train_images: int,
    test_images: int,
    initial_weights: str | None = None,
) -> dict[str, Any]:
    """The hyper-parameters and facts of a training, as a card's `training` stores them (the
    command line's and the Train page's cards alike)."""
    record: dict[str, Any] = {
        "optimizer": config.optimizer,
        "lr": config.lr,
        "schedule": config.schedule,
        "weight_decay": config.weight_decay,
        "batch_size": result.batch_size if result is not None else config.batch_size,
        "epochs": config.epochs,
        "seed": config.seed,
        "device": result.device if result is not None else config.device,
        "augment": info.augment if config.augment is None else config.augment,
        "label_smoothing": config.label_smoothing,
        "processes": processes,
        "train_images": train_images,
        "test_images": test_images,
    }
    if result is not None:
        record["images_per_second"] = round(result.images_per_second, 1)
        record["seconds"] = round(result.seconds, 2)
    if initial_weights:
        record["initial_weights"] = initial_weights
    return record


def training_record(run: TrainingRun) -> dict[str, Any]:
    """The hyper-parameters and facts of a run, as the card's `training` stores them."""
    return training_facts(
        run.spec.config,
        run.info,
        run.result,
        processes=1,
        train_images=run.train_images,
        test_images=run.test_images,
        initial_weights=run.spec.initial_weights,
    )


# An absolute path inside a dataset source: POSIX, drive letter or UNC, up to the next ; ( or ).
_ABSOLUTE_PATH = re.compile(r"(?:(?<=[\s(])|^)(?:/|[A-Za-z]:[\\/]|\\\\)[^;()]*")


def portable_source(text: str, data_root: str | os.PathLike[str] | None = None) -> str:
    """A dataset source as a card records it: every absolute path of this machine replaced by
    where it is relative to the data root ("MNIST/raw in the data root"), to the repository
    ("trained/data/mnist-sample") or to the home folder ("~/pets"), else by its last two parts
    ("…/pets/train"). A card travels; the folders of the machine that trained it do not."""
    roots = [
        (Path(os.path.abspath(paths.data_root(data_root))), "in the data root"),
        (paths.REPO_ROOT, ""),
        (Path.home(), "~"),
    ]

    def shown(match: re.Match[str]) -> str:
        text = match[0].rstrip()
        if not text.startswith("/"):  # a Windows path, written on Windows
            return _last_parts(PureWindowsPath(text))
        path = Path(text)
        for root, where in roots:
            for candidate in dict.fromkeys((root, root.resolve())):
                if path == candidate or path.is_relative_to(candidate):
                    relative = path.relative_to(candidate).as_posix()
                    if where == "~":
                        return f"~/{relative}".rstrip("/.")
                    if where:
                        return f"{relative} {where}" if relative != "." else "the data root"
                    return relative
        return _last_parts(path) + match[0][len(text) :]

    return _ABSOLUTE_PATH.sub(shown, text)


def _last_parts(path: PurePath) -> str:
    """'…/pets/train': the last two names of a path, without its root or drive."""
    names = path.parts[1:] if path.anchor else path.parts
    return "…/" + "/".join(names[-2:])


def result_card(
    *,
    name: str,
    architecture: str,
    options: Mapping[str, Any],
    info: DatasetInfo,
    dataset_source: str,
    facts: dict[str, Any],
    result: FitResult,
    command: str,
    notes: Sequence[str] = (),
    data_root: str | os.PathLike[str] | None = None,
) -> checkpoints.Card:
    """The card of a fit() result: one format for `python -m dashboard train` and the Train
    page. A stopped run's reason leads the notes; the dataset source names no folder of this
    machine (`portable_source`, with the data root the splits were read from)."""
    partial = [f"partial run: {result.stopped}"] if result.stopped else []
    return checkpoints.Card(
        name=name,
        architecture=architecture,
        model_args={
            "in_channels": info.channels,
            "num_classes": info.num_classes,
            "input_size": info.size,
            "options": dict(options),
        },
        input_shape=info.input_shape,
        dataset=info.name,
        dataset_source=portable_source(dataset_source, data_root),
        classes=list(info.classes),
        normalization={"mean": list(info.mean), "std": list(info.std)},
        training=facts,
        history=[epoch_record(e) for e in result.history],
        metrics={"test_accuracy": result.final_test_accuracy, "test_loss": result.final_test_loss},
        command=command,
        notes="; ".join([*partial, *notes]),
        dynamics=result.dynamics.card_record() if result.dynamics is not None else {},
    )


def hyperparameter_row(
    label: str,
    architecture: str,
    options: Mapping[str, Any],
    dataset: str,
    training_facts: Mapping[str, Any],
    test_accuracy: float | None,
) -> dict[str, Any]:
    """One row of the comparison table, the same for a session's run and a saved card."""
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    return {
        "Run": label,
        "Model": f"{architecture} ({shown})" if shown else architecture,
        "Dataset": dataset,
        "Optimizer": training_facts.get("optimizer"),
        "LR": training_facts.get("lr"),
        "Schedule": training_facts.get("schedule"),
        "Batch": training_facts.get("batch_size"),
        "Epochs": training_facts.get("epochs"),
        "Weight decay": training_facts.get("weight_decay"),
        "Seed": training_facts.get("seed"),
        "Train images": training_facts.get("train_images"),
        "Test acc. (%)": None if test_accuracy is None else round(100 * test_accuracy, 2),
    }


def run_row(run: TrainingRun) -> dict[str, Any]:
    tested = [e.test_accuracy for e in run.history if e.test_accuracy is not None]
    accuracy = tested[-1] if tested else None
    return hyperparameter_row(
        run.label, run.spec.architecture, run.spec.options, run.info.name,
        training_record(run), accuracy,
    )  # fmt: skip


def card_row(card: checkpoints.Card) -> dict[str, Any]:
    options = card.model_args.get("options") or {}
    return hyperparameter_row(
        card.name, card.architecture, options, card.dataset, card.training, card.test_accuracy
    )


# --- saving ------------------------------------------------------------------------------------


def equivalent_command(spec: RunSpec, out: Path) -> str:
    """The `python -m dashboard train …` line that repeats the run (from random weights)."""
    target = out.with_suffix("") if out.suffix == checkpoints.WEIGHTS_SUFFIX else out
    with contextlib.suppress(ValueError):  # outside the repository: the absolute path
        target = target.resolve().relative_to(paths.REPO_ROOT)
    config = spec.config
    args = argparse.Namespace(
        model=spec.architecture,
        dataset=spec.dataset,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer=config.optimizer,
        schedule=config.schedule,
        weight_decay=config.weight_decay,
        seed=config.seed,
        device=config.device,
        augment=config.augment,
        label_smoothing=config.label_smoothing,
        threads=config.threads,
        input_size=spec.input_size,
        limit_train=spec.limit_train,
        limit_test=spec.limit_test,
        name=None,
        option=list(spec.options.items()),
    )
    return commands.train_command(args, target, 1)


def run_card(run: TrainingRun, name: str, out: Path) -> checkpoints.Card:
    """The card of a finished or stopped run, as `python -m dashboard train` writes it."""
    result = run.result
    if result is None:
        raise LensError(f"{run.label} has no trained weights to save ({run.reason})")
    notes = [*run.notes, *result.notes]
    if run.spec.initial_weights:
        notes.append("the command line repeats the run from random weights")
    return result_card(
        name=name,
        architecture=run.spec.architecture,
        options=run.spec.options,
        info=run.info,
        dataset_source=run.dataset_source,
        facts=training_record(run),
        result=result,
        command=equivalent_command(run.spec, out),
        notes=notes,
    )


def default_name(run: TrainingRun) -> str:
    """A valid, readable name for the save box: model, dataset, run number."""
    return f"{commands.slug(run.spec.architecture)}-{commands.slug(run.info.name)}-run{run.id}"


def saved_path(name: str, folder: Path | None = None) -> Path:
    """Where `name` would be saved (validated: LensError for a name that is not allowed)."""
    folder = paths.RUNS_DIR if folder is None else folder
    if checkpoints.inside_shipped(folder):  # trained/ itself, a folder in it, or a link to it
        raise LensError("trained/ holds the shipped checkpoints: runs are saved in runs/")
    return checkpoints.validate_name(name, folder)


def exists(target: Path) -> bool:
    """A checkpoint (weights or card) is already at `target`."""
    return target.exists() or target.with_suffix(checkpoints.CARD_SUFFIX).exists()


def save_run(
    run: TrainingRun, name: str, folder: Path | None = None, *, overwrite: bool = False
) -> Path:
    """Save a finished or stopped run as NAME.safetensors + NAME.json in `folder` (runs/ by
    default, never trained/); an existing name needs `overwrite`. → the weights path."""
    target = saved_path(name, folder)
    if run.status == DIVERGED:
        raise LensError(f"{run.reason}; a diverged run is not saved")
    if exists(target) and not overwrite:
        raise LensError(
            f"a run named {target.stem!r} exists in {target.parent}: tick “overwrite the "
            "existing run” or choose another name"
        )
    result = run.result
    card = run_card(run, target.stem, target)
    assert result is not None  # run_card checked it
    try:
        saved = checkpoints.save_checkpoint(
            result.model,
            card,
            target,
            overwrite=overwrite,
            filter_history=result.filter_history,
            dynamics=result.dynamics,
        )
    except OSError as err:  # save_checkpoint wraps its own; this catches anything around it
        raise LensError(f"could not save {target.name}: {err.strerror or err}") from None
    run.saved_as = saved
    return saved
