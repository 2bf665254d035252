"""Training runs of this browser session (the Train page): starting one in the background,
drawing its progress and live curves while it trains, and saving it under a name."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base import paths
from dashboard.base.errors import LensError
from dashboard.ui.choices import add_model_choice, checkpoint_key, select_model
from dashboard.ui.loaders import dataset_split
from dashboard.ui.show import Metric, figure, metric_row, percent, plain, show_error
from dashboard.ui.state import held

if TYPE_CHECKING:
    from dashboard.training import runs

TRAIN_RUNS_KEY = "train_runs"  # this session's TrainingRuns, oldest first (per browser session)
OWNER_KEY = "train_owner"  # who owns a run: one active run per browser session
TRAIN_DRAWN_ACTIVE_KEY = "train_drawn_active"  # the last full run drew an active run
TRAIN_FOLLOWS_KEY = "train_follows"  # the sidebar choice the architecture default came from
NAMED_KEY = "train_named"  # the run the save box's default name was made for
TRAIN_SETTING_PREFIX = "train_w_"  # every setting's permanent key (the widget's: "_" + it)
STOP_WAIT_S = 1.0  # Stop waits this long for the run to end before the page redraws
KEEP_RUNS = 8  # runs (their curves) a session keeps for comparing
CURVE_AXIS_KEY, CURVE_SMOOTHING_KEY = "train_curve_axis", "train_curve_smoothing"
CURVE_LOG_KEY = "train_curve_log"


def train_setting(name: str, default) -> dict:
    """A widget's arguments keeping its value under TRAIN_SETTING_PREFIX + name while the user
    visits other pages (Streamlit drops a widget's own key when its page is left)."""
    return held(TRAIN_SETTING_PREFIX + name, default)


def session_runs() -> list[runs.TrainingRun]:
    """This session's runs, oldest first (the Compare page overlays them too)."""
    return st.session_state.setdefault(TRAIN_RUNS_KEY, [])


def clock(seconds: float | None) -> str:
    """A duration as 12.3 s, 4:05 or 1:02:03."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
        if minutes >= 60
        else f"{minutes}:{secs:02d}"
    )


def start_training(spec: runs.RunSpec, initial) -> None:
    """Start a run in the background (weights from `initial` when given) and redraw the page;
    this session keeps its last KEEP_RUNS runs, only the newest with its weights."""
    from dashboard.training import runs

    try:
        with st.spinner("Loading the dataset…"):
            train = dataset_split(spec.dataset, "train", spec.input_size)
            test = dataset_split(spec.dataset, "test", spec.input_size)
        run = runs.start_run(
            spec,
            train,
            test,
            initial=initial,
            label=spec.label,
            owner=st.session_state.setdefault(OWNER_KEY, uuid.uuid4().hex),
            alive=session_alive_check(),
        )
    except LensError as err:
        show_error(err)
        return
    kept = session_runs()
    for old in kept:
        old.release()  # only the newest run's weights can be saved: keep memory bounded
    kept.append(run)
    del kept[:-KEEP_RUNS]
    st.rerun()  # redraw the page with Start disabled and the live panel ticking


def status_box(run: runs.TrainingRun) -> None:
    from dashboard.training import runs

    box = {
        runs.RUNNING: st.info,
        runs.STOPPING: st.info,
        runs.FINISHED: st.success,
        runs.STOPPED: st.warning,
    }.get(run.status, st.error)
    box(f"Run {run.id} {run.reason}" if run.status == runs.RUNNING else run.reason)


def curve_controls() -> tuple[str, float, bool]:
    """The live curves' x axis, smoothing and log scale (kept across runs and pages)."""
    from dashboard.training import curves

    bar = st.container(horizontal=True, gap="medium", vertical_alignment="bottom")
    axis = bar.segmented_control(
        "x axis",
        list(curves.AXES),
        format_func=curves.AXES.get,
        required=True,
        **held(CURVE_AXIS_KEY, "epoch"),
    )
    smoothing = bar.slider(
        "Smoothing",
        0.0,
        0.99,
        step=0.01,
        help="TensorBoard's exponential moving average of the train line (0: raw); the raw "
        "line stays faint behind it.",
        width=260,
        **held(CURVE_SMOOTHING_KEY, 0.0),
    )
    log_y = bar.toggle("Log scale (loss)", **held(CURVE_LOG_KEY, False))
    return axis or "epoch", smoothing, log_y


def curve_charts(run: runs.TrainingRun) -> None:
    from dashboard import figures
    from dashboard.training import curves

    events = run.events_since(0)
    if not events:
        return
    axis, smoothing, log_y = curve_controls()
    columns = st.columns(2)
    for column, metric in zip(columns, ("accuracy", "loss"), strict=True):
        fig = figures.training_curves(
            [curves.live_curve(events, f"run {run.id}", metric, axis)],
            metric=metric,
            title=f"Run {run.id}: {metric}",
            x_title=curves.AXES[axis],
            smoothing=smoothing,
            log_y=log_y and metric == "loss",
        )
        fig.update_layout(height=360, showlegend=False)
        with column:
            figure(fig, f"run-{run.id}-{metric}", key=f"live_{metric}")


def stop_run(run: runs.TrainingRun) -> None:
    """Stop, and wait a moment: a run that ends at once is drawn stopped by this very rerun."""
    run.stop()
    run.join(STOP_WAIT_S)


def draw_run(run: runs.TrainingRun) -> None:
    """A run's name, Stop button, status, progress, speed, accuracies and live curves."""
    from dashboard.training import runs

    active = not run.done
    head, stop = st.columns([5, 1])
    # The run's own dataset, not the sidebar's: the sidebar may have changed since it started.
    head.markdown(f"**Run {run.id}** — {plain(run.label)} — {plain(run.spec.dataset)}")
    if run.skipped:  # an image folder's unreadable files: left out, and counted
        head.caption(f"{run.skipped} unreadable files skipped. Data: {plain(run.dataset_source)}")
    stop.button(
        "Stop",
        key=f"train_stop_{run.id}",
        on_click=stop_run,
        args=(run,),
        disabled=not active or run.status == runs.STOPPING,
        width="stretch",
    )
    status_box(run)
    p = run.progress()
    where = (
        f"epoch {p.epoch}/{p.epochs}, step {p.step}/{p.steps_per_epoch}"
        if p.steps_per_epoch
        else "preparing…"
    )
    st.progress(p.fraction, text=f"{where} — {p.fraction:.0%}")
    metric_row(
        [
            Metric("Images / s", f"{p.images_per_second:,.0f}"),
            Metric("Elapsed", clock(p.elapsed)),
            Metric("ETA", clock(p.eta) if active else "—"),
            Metric("Train loss", "—" if p.train_loss is None else f"{p.train_loss:.4f}"),
            Metric("Train accuracy", percent(p.train_accuracy)),
            Metric("Test accuracy", percent(p.test_accuracy)),
        ]
    )
    curve_charts(run)
    if run.result is not None:
        for note in run.notes + run.result.notes:
            st.caption(note)


def active_runs_caption() -> None:
    from dashboard.training import runs

    st.caption(
        f"Runs training on this server now: {len(runs.active_runs())} of {runs.MAX_ACTIVE_RUNS}."
    )


def live_panel() -> None:
    """The newest run, redrawn by a fragment while it trains."""
    # The count is redrawn with the progress: runs in other tabs start and end meanwhile.
    active_runs_caption()
    kept = session_runs()
    if not kept:
        return
    run = kept[-1]
    run.heartbeat()  # this tab still shows the run (see dashboard/runs.py)
    if run.done and st.session_state.get(TRAIN_DRAWN_ACTIVE_KEY):
        st.session_state[TRAIN_DRAWN_ACTIVE_KEY] = False
        st.rerun()  # the whole page: the save box appears and the redraws stop
    draw_run(run)


def shown_path(path) -> str:

    try:
        return str(path.resolve().relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(path)


def save_panel(run: runs.TrainingRun) -> None:
    """Save a finished run under a name; it becomes the selected model on every page."""
    from dashboard.training import runs

    if run.saved_as is not None:
        st.success(f"Saved as {shown_path(run.saved_as)}; it is the selected model on every page.")
        return
    if run.result is None or run.status == runs.DIVERGED:
        if run.status == runs.DIVERGED:
            st.caption("A diverged run is not saved: lower the learning rate and start again.")
        return
    st.subheader("Save this run")
    if st.session_state.get(NAMED_KEY) != run.id:
        st.session_state[NAMED_KEY] = run.id
        st.session_state[TRAIN_SETTING_PREFIX + "save_name"] = runs.default_name(
            run
        )  # its widget shows it
        st.session_state[TRAIN_SETTING_PREFIX + "overwrite"] = False
    left, right = st.columns([2, 1])
    name = left.text_input(
        "Name",
        **train_setting("save_name", ""),
        help=f"Letters, digits, '-', '_' and '.'; saved in {shown_path(paths.RUNS_DIR)}/ as "
        "NAME.safetensors with its card NAME.json.",
    )
    try:
        target = runs.saved_path(name)
    except LensError as err:
        show_error(err)
        return
    overwrite = False
    if runs.exists(target):
        st.warning(f"A run named {target.stem!r} already exists in {shown_path(target.parent)}.")
        overwrite = right.checkbox(
            "overwrite the existing run", **train_setting("overwrite", False)
        )
    if not st.button("Save", type="primary", key="train_save"):
        return
    try:
        saved = runs.save_run(run, name, overwrite=overwrite)
    except LensError as err:
        show_error(err)
        return
    key = checkpoint_key(saved)
    add_model_choice(key)
    select_model(key)
    st.session_state[TRAIN_FOLLOWS_KEY] = key  # the saved model's settings are the ones shown
    st.rerun()


def session_alive_check():  # -> Callable[[], bool] | None
    """A check, safe to call from any thread, that this browser session is still connected
    (its tab open); None when not served by `streamlit run` (e.g. under AppTest)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or not Runtime.exists():
        return None
    runtime, session_id = Runtime.instance(), ctx.session_id
    return lambda: runtime.is_active_session(session_id)
