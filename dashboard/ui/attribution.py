"""What the Attribution page computes and shows: the images a model can be explained on, every
method's map of one image (cached per method), the class to explain and how maps are drawn,
and the two long checks — the sanity cascade and the faithfulness curves — run beside the page
with a progress bar and Stop. Finished faithfulness curves are kept in the result cache
(`dashboard/base/cache.py`) by model content, test images, methods and settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.choices import ZOO_PREFIX, Selection
from dashboard.ui.data_roots import data_root
from dashboard.ui.loaders import ModelView, load_data, model_id
from dashboard.ui.representations import require_made_for
from dashboard.ui.show import cached_figure, figure, show_error, table
from dashboard.ui.state import held, kept
from dashboard.ui.training_runs import session_alive_check

if TYPE_CHECKING:
    import torch

    from dashboard import data
    from dashboard.analysis import attribution, faithfulness, probe, sanity

TARGET_KEY, TARGET_FOR_KEY = "attr_target", "attr_target_for"
SIGN_KEY, OPACITY_KEY, BASELINE_KEY = "attr_sign", "attr_opacity", "attr_baseline"
SMOOTH_KEY = "attr_smooth_over"
SIGNS = ("signed", "absolute")
JOB_REFRESH_S = 0.5  # how often a running check's bar is redrawn
STOP_WAIT_S = 1.0  # Stop waits this long for the check to end before the page redraws
CASCADE_SIDE = 600  # the cascade's grid fits a laptop's column (1280 px wide) unshrunk
FAITHFULNESS_KIND = "faithfulness"  # the result cache's name for finished curves


# --------------------------------------------------------------------------- what to explain


@dataclass(frozen=True)
class ImageSource:
    """Where the explained images come from: the selected dataset's test split when it fits
    the model, else only uploads and drawings, prepared with `info`."""

    split: data.Split | None
    info: data.DatasetInfo
    classes: list[str]
    unfit: str = ""  # why the test images do not fit the model ("" when they do)
    unread: LensError | None = None  # the dataset could not be read


def image_source(selection: Selection, view: ModelView, flow: probe.ShapeFlow) -> ImageSource:
    """The test images when they fit the model; otherwise the model's own input (uploads and
    drawings), with the reason the test images are not offered."""
    from dashboard import data
    from dashboard.analysis import inputs

    like, unfit, unread = None, "", None
    try:
        like = data.dataset_info(selection.dataset, data_root=data_root())
    except LensError as err:
        unread = err
    if like is not None:
        try:
            require_made_for(selection, view, like)
        except LensError as err:
            unfit = str(err)
    if like is not None and not unfit:
        try:
            split = load_data(selection, view)
        except LensError as err:
            unread = err
        else:
            named = len(view.classes) == split.info.num_classes
            classes = view.classes if named else split.info.classes
            return ImageSource(split, split.info, list(classes))
    outputs = flow.output_shape[-1] if flow.output_shape else len(view.classes)
    zoo = selection.model_key.startswith(ZOO_PREFIX)
    classes = list(inputs.class_names(outputs, view.classes, imagenet=zoo))
    info = inputs.own_input(view.input_shape, classes, imagenet=zoo, like=like)
    return ImageSource(None, info, classes, unfit, unread)


def attribution_methods(flow: probe.ShapeFlow) -> tuple[tuple[str, ...], str | None]:
    """(the methods this model allows, the Grad-CAM layer): without a conv layer there is no
    Grad-CAM layer and the two Grad-CAM methods are left out."""
    from dashboard.analysis import attribution

    layer = attribution.default_layer(flow)
    if layer is None:
        methods = tuple(m for m in attribution.METHODS if m not in attribution.LAYER_METHODS)
        return methods, None
    return attribution.METHODS, layer


def target_picker(classes: Sequence[str], probabilities: np.ndarray, input_key: str) -> int:
    """The class to explain: the predicted one for each new input, any class on request."""
    predicted = int(np.argmax(probabilities))
    if st.session_state.get(TARGET_FOR_KEY) != input_key:
        st.session_state[TARGET_FOR_KEY] = input_key  # a new input: explain its answer
        st.session_state[TARGET_KEY] = predicted
    return st.selectbox(
        "Class to explain",
        range(len(classes)),
        format_func=lambda k: (
            f"{classes[k]} ({probabilities[k]:.1%})" + (" — predicted" if k == predicted else "")
        ),
        help="Every map says which pixels raise (or lower) this class's score.",
        **kept(TARGET_KEY, list(range(len(classes))), predicted),
    )


@dataclass(frozen=True)
class Display:
    """How the maps are drawn, and the baseline of the methods that need one."""

    signed: bool
    opacity: float
    baseline: str
    smooth_over: str  # the method SmoothGrad averages over noisy copies


def display_controls() -> Display:
    """Signed or absolute maps, the overlay's opacity, the baseline (IG and Occlusion) and
    what SmoothGrad averages."""
    from dashboard.analysis import attribution

    sign = st.segmented_control(
        "Show",
        SIGNS,
        required=True,
        help="Signed: red pixels speak for the class, blue against it. Absolute: how much "
        "each pixel matters, either way.",
        **kept(SIGN_KEY, list(SIGNS), "signed"),
    )
    opacity = st.slider(
        "Map opacity", 0.0, 1.0, step=0.05, help="0 shows the image alone", **held(OPACITY_KEY, 0.7)
    )
    baseline = st.selectbox(
        "Baseline (Integrated Gradients, Occlusion)",
        attribution.BASELINES,
        format_func={
            "black": "black: pixels off",
            "mean": "mean: the dataset's mean colour",
            "blur": "blur: the image blurred",
        }.get,
        help="What an absent pixel is: IG integrates along the path from it to the image, "
        "Occlusion paints windows with it.",
        **kept(BASELINE_KEY, list(attribution.BASELINES), "black"),
    )
    smooth_over = st.selectbox(
        "SmoothGrad averages",
        attribution.SMOOTHABLE,
        format_func=attribution.TITLES.get,
        help="SmoothGrad adds noise to the image many times and averages this method's maps.",
        **kept(SMOOTH_KEY, list(attribution.SMOOTHABLE), "saliency"),
    )
    return Display(sign == "signed", float(opacity), baseline, smooth_over)


# --------------------------------------------------------------------------- one image's maps


@st.cache_data(max_entries=64, show_spinner=False)
def _explained(
    model_key: str,
    mtime: float,
    input_key: str,
    info_key: tuple,
    method: str,
    target: int,
    settings: tuple,
    _model,
    _x,
    _info,
    _settings,
) -> attribution.Attribution:
    from dashboard.analysis import attribution

    return attribution.explain(_model, _x, _info, method, target=target, settings=_settings)


def attribution_maps(
    model_key: str,
    mtime: float,
    model,
    x: torch.Tensor,
    info: data.DatasetInfo,
    target: int,
    methods: Sequence[str],
    settings: attribution.Settings,
) -> dict[str, attribution.Attribution]:
    """Every method's map of class `target` for the input `x` (1, C, H, W), each computed once
    per model, input, class and settings (a method's time is that first computation's)."""
    from dashboard.analysis import inputs
    from dashboard.ui.loaders import info_key

    key = inputs.input_key(x.numpy())
    found = {}
    with st.spinner("Computing the attribution maps…"):
        import captum.attr  # noqa: F401 - its first import (~1 s) is not the first method's time

        for method in methods:
            found[method] = _explained(
                model_key, mtime, key, info_key(info), method, int(target), astuple(settings),
                model, x, info, settings,
            )  # fmt: skip
    return found


def attribution_figure(
    image: np.ndarray,
    maps: Mapping[str, attribution.Attribution],
    display: Display,
    cache_key: tuple,
    subtitle: str,
):
    """Every method's map over the image, in one row (cached by everything it shows)."""
    from dashboard.figures import attribution as attribution_figures

    def build():
        shown = {a.title: (a.signed if display.signed else a.absolute) for a in maps.values()}
        notes = {a.title: "ⓘ see the table" for a in maps.values() if a.note}
        notes |= {  # Grad-CAM's ReLU zeroes a class nothing at the layer speaks for
            a.title: "empty: no evidence" for a in maps.values() if not np.any(a.absolute)
        }
        return attribution_figures.methods_side_by_side(
            image,
            shown,
            signed=display.signed,
            opacity=display.opacity,
            notes=notes or None,
            title="Every method's map",
            subtitle=subtitle,
        )

    return cached_figure(("attribution", *cache_key, astuple(display)), build)


def attribution_facts(maps: Mapping[str, attribution.Attribution]) -> None:
    """Per method: the sum of its attributions, the target's logit, IG's baseline logit and
    convergence delta (completeness), the time it took, and any caveat."""
    rows = [
        {
            "Method": a.title,
            "Σ attributions": a.attribution_sum,
            "Logit": a.logit,
            "Baseline logit": a.baseline_logit,
            "Convergence delta": a.convergence_delta,
            "Time (ms)": 1000 * a.seconds,
            "Note": a.note or (f"layer {a.layer}" if a.layer else ""),
        }
        for a in maps.values()
    ]
    number = st.column_config.NumberColumn
    table(
        rows,
        {
            "Σ attributions": number(format="%.4g"),
            "Logit": number(format="%.4f"),
            "Baseline logit": number(format="%.4f"),
            "Convergence delta": number(format="%.2e"),
            "Time (ms)": number(format="%.1f"),
        },
    )


# --------------------------------------------------------------------------- checks beside the page


@dataclass
class Job:
    """A long check running in a thread of its own while the page stays live."""

    context: tuple  # what it computes: a result belongs to the view with the same context
    what: str  # the progress bar's words
    unit: str
    done: int = 0
    total: int = 0
    result: Any = None
    error: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    alive: Callable[[], bool] | None = None  # the browser session is still connected

    def should_stop(self) -> bool:
        """Stop was pressed, or the session's tab has closed (nobody will see the result)."""
        return self.stop.is_set() or (self.alive is not None and not self.alive())

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def halt(self) -> None:
        """Stop, and wait a moment: a check that ends at once is drawn by this very rerun."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(STOP_WAIT_S)


def start_job(key: str, context: tuple, what: str, unit: str, work: Callable[[Job], Any]) -> None:
    """Run `work(job)` in a thread (a job of this page under `key` before it is stopped);
    its result or its failure, in one line, is kept on the job."""
    old = st.session_state.get(key)
    if isinstance(old, Job) and old.running:
        old.halt()
    job = Job(context, what, unit, alive=session_alive_check())

    def run() -> None:
        try:
            job.result = work(job)
        except LensError as err:
            job.error = str(err)
        except Exception as err:  # one line in the page, never a traceback
            job.error = f"the check failed: {type(err).__name__}: {err}"

    job.thread = threading.Thread(target=run, name=f"cnn-lens-{key}", daemon=True)
    st.session_state[key] = job
    job.thread.start()


def current_job(key: str, context: tuple) -> Job | None:
    """This view's job under `key`; one started for another view (another image, class or
    model) is stopped, since its result would not be shown."""
    job = st.session_state.get(key)
    if not isinstance(job, Job):
        return None
    if job.context != context:
        if job.running:
            job.stop.set()
        return None
    return job


def job_progress(key: str, context: tuple) -> None:
    """The running check's progress bar and Stop button, redrawn every JOB_REFRESH_S; the
    whole page redraws once it ends, to show the result."""
    job = st.session_state.get(key)
    live = f"{key}_live"
    if not isinstance(job, Job) or job.context != context or not job.running:
        if st.session_state.pop(live, False):
            st.rerun()
        return
    st.session_state[live] = True
    bar, stop = st.columns([6, 1], vertical_alignment="bottom")
    fraction = min(1.0, job.done / job.total) if job.total else 0.0
    counted = f"{job.done:,} of {job.total:,} {job.unit}" if job.total else "starting"
    bar.progress(fraction, text=f"{job.what}: {counted}")
    stop.button(
        "Stop",
        key=f"{key}_stop",
        icon=":material/stop:",
        on_click=job.halt,
        disabled=job.stop.is_set(),
        help="Ends the check after the current step; what was done so far is shown.",
    )


def job_panel(key: str, context: tuple) -> None:
    """`job_progress` as a fragment that reruns itself while this view's check runs."""
    job = current_job(key, context)
    running = job is not None and job.running
    st.fragment(run_every=JOB_REFRESH_S if running else None)(job_progress)(key, context)


# --------------------------------------------------------------------------- the sanity check


def start_sanity(
    key: str, context: tuple, model, x, info, methods: Sequence[str], target: int, settings
) -> None:
    """The cascading randomization of one image and class, in a thread (see `start_job`)."""
    from dashboard.analysis import sanity

    def work(job: Job) -> sanity.SanityCheck:
        return sanity.sanity_check(
            model, x, info, methods, target=target, settings=settings,
            on_progress=job.progress, should_stop=job.should_stop,
        )  # fmt: skip

    start_job(key, context, "Re-initializing the layers one by one", "steps", work)


def sanity_results(
    check: sanity.SanityCheck,
    image: np.ndarray,
    classes: Sequence[str],
    opacity: float,
    cache_key: tuple,
) -> None:
    """The maps after every step, their Spearman ρ with the original (chart and table), and
    which methods are flagged as not depending on the model, in words."""
    from dashboard.analysis import attribution
    from dashboard.figures import attribution as attribution_figures

    methods = list(check.methods)
    titles = [attribution.TITLES[m] for m in methods]
    rho = np.stack([check.correlations(m) for m in methods])
    flagged = check.flagged

    def grid():
        maps = np.stack([[step.maps[m].ranking for step in check.steps] for m in methods])
        return attribution_figures.cascade_grid(
            image,
            maps,
            titles,
            check.layers,
            rho,
            signed=[m not in attribution.BY_MAGNITUDE for m in methods],
            flagged=[flagged[m] for m in methods],
            opacity=opacity,
            max_side=CASCADE_SIDE,
        )

    figure(cached_figure(("cascade", *cache_key, opacity), grid), "sanity-cascade", width="content")
    lines = attribution_figures.cascade_correlations(
        rho, titles, check.layers, threshold=check.threshold
    )
    figure(lines, "sanity-correlations", key="attr_sanity_lines", width="content")
    rows = [
        {
            "Re-initialized down to": layer,
            "Predicts": classes[step.predicted],
            **{title: float(r) for title, r in zip(titles, rho[:, s], strict=True)},
        }
        for s, (layer, step) in enumerate(zip(check.layers, check.steps, strict=True))
    ]
    number = st.column_config.NumberColumn(format="%.3f")
    table(rows, dict.fromkeys(titles, number))
    st.caption(
        "Spearman rank correlation of each map with the trained model's, after re-initializing "
        "the layers from the output back (each row keeps the rows before it); *Predicts*: the "
        "class the model gives the image then. Maps are compared as they are ranked: absolute "
        "for Saliency, SmoothGrad and Guided Grad-CAM, signed for the others."
    )
    if check.stopped:
        st.warning(
            f"Stopped after {len(check.steps) - 1} of the layers: a method is only flagged once "
            "every layer has been re-initialized.",
            icon=":material/stop_circle:",
        )
        return
    last = check.steps[-1].spearman
    bad = [m for m in methods if flagged[m]]
    for m in bad:
        st.warning(
            f"**{attribution.TITLES[m]}** barely changes: with every layer re-initialized its map "
            f"still has ρ = {last[m]:.2f} with the trained model's (≥ {check.threshold:g}). It "
            "shows the image more than the model: do not read it as an explanation.",
            icon=":material/flag:",
        )
    good = [f"{attribution.TITLES[m]} (ρ {last[m]:.2f})" for m in methods if not flagged[m]]
    if good:
        st.success(
            f"Changed with the weights (final ρ below {check.threshold:g}), so they depend on "
            f"what the model learned: {', '.join(good)}.",
            icon=":material/check_circle:",
        )


# --------------------------------------------------------------------------- faithfulness


def faithfulness_key(
    selection: Selection, split: data.Split, methods: Sequence[str], images: int, steps: int,
    settings: attribution.Settings,
) -> dict[str, Any]:  # fmt: skip
    """Everything the curves depend on: the result cache's key."""
    from dashboard.base import cache

    return {
        "model": model_id(selection),
        "split": cache.split_identity(split),
        "methods": list(methods),
        "images": int(images),
        "steps": int(steps),
        "settings": list(astuple(settings)),
        "seed": 0,
    }


def faithfulness_context(key: dict[str, Any]) -> tuple:
    """A faithfulness job's context: its result cache entry's name."""
    from dashboard.base import cache

    return (cache.entry_key(FAITHFULNESS_KIND, key),)


def _to_entry(result: faithfulness.Faithfulness):
    from dashboard.base import cache

    arrays = {
        "fractions": result.fractions,
        "indices": result.indices,
        "targets": result.targets,
        **{f"deletion:{m}": c for m, c in result.deletion.items()},
        **{f"insertion:{m}": c for m, c in result.insertion.items()},
    }
    return cache.Entry(arrays, {"methods": list(result.methods), "seconds": result.seconds})


def _from_entry(entry) -> faithfulness.Faithfulness:
    from dashboard.analysis import faithfulness

    methods = tuple(entry.meta["methods"])
    return faithfulness.Faithfulness(
        methods=methods,
        fractions=entry.arrays["fractions"],
        deletion={m: entry.arrays[f"deletion:{m}"] for m in methods},
        insertion={m: entry.arrays[f"insertion:{m}"] for m in methods},
        indices=entry.arrays["indices"],
        targets=entry.arrays["targets"],
        seconds=float(entry.meta["seconds"]),
    )


def stored_faithfulness(key: dict[str, Any]) -> faithfulness.Faithfulness | None:
    """Curves finished before (this session, another one, an earlier server), else None."""
    from dashboard.base import cache

    if not cache.is_stored(FAITHFULNESS_KIND, key):
        return None

    def missing() -> cache.Entry:  # a damaged entry was deleted: run again
        raise LensError("the kept curves could not be read: run them again")

    try:
        return _from_entry(cache.cached(FAITHFULNESS_KIND, key, missing))
    except (LensError, KeyError):
        return None


def start_faithfulness(
    key: str, cache_key: dict[str, Any], model, split, methods, images: int, steps: int, settings
) -> None:
    """Deletion and insertion curves over the first `images` test images, in a thread; kept in
    the result cache once they are complete (a stopped run is shown, never kept)."""
    from dashboard.analysis import faithfulness
    from dashboard.base import cache

    def work(job: Job) -> faithfulness.Faithfulness:
        result = faithfulness.faithfulness(
            model, split, methods, images=images, steps=steps, settings=settings,
            on_progress=job.progress, should_stop=job.should_stop,
        )  # fmt: skip
        if not result.stopped:
            cache.cached(FAITHFULNESS_KIND, cache_key, lambda: _to_entry(result))
        return result

    start_job(key, faithfulness_context(cache_key), "Deleting and inserting pixels", "images", work)


def faithfulness_results(result: faithfulness.Faithfulness) -> None:
    """The mean curves, the table of areas (the best method bold) and the verdict in words."""
    from dashboard.analysis import faithfulness
    from dashboard.figures import attribution as attribution_figures

    if result.images == 0:
        st.info("Stopped before the first images were done: nothing to show.")
        return
    deletion, insertion = result.mean_curves()
    named = {m: faithfulness.title(m) for m in result.methods}
    figure(
        attribution_figures.faithfulness_curves(
            result.fractions,
            {named[m]: c for m, c in deletion.items()},
            {named[m]: c for m, c in insertion.items()},
            images=result.images,
        ),
        "faithfulness-curves",
        key="attr_faith_curves",
        width="content",
    )
    frame = result.table()
    figure(
        attribution_figures.auc_table(frame),
        "faithfulness-table",
        key="attr_faith_table",
        width="content",
    )
    methods = [m for m in result.methods if m != faithfulness.RANDOM]
    low = min(methods, key=result.deletion_auc.get)
    high = max(methods, key=result.insertion_auc.get)
    by_deletion = f"by deletion (area {result.deletion_auc[low]:.4f}, the lowest)"
    by_insertion = f"by insertion (area {result.insertion_auc[high]:.4f}, the highest)"
    best = (
        f"**{named[low]}**, {by_deletion} and {by_insertion}"
        if low == high
        else f"**{named[low]}** {by_deletion} and **{named[high]}** {by_insertion}"
    )
    st.markdown(
        f"Most faithful on this model, over {result.images:,} test images: {best}. "
        f"A random pixel order scores {result.deletion_auc[faithfulness.RANDOM]:.4f} and "
        f"{result.insertion_auc[faithfulness.RANDOM]:.4f}."
    )
    st.caption(
        "Each test image's pixels are removed (turned black) or inserted (into the blurred "
        "image) in the order of each method's map, 2 % at a time; the curve is the probability "
        "of the class the model predicted for the image; the area is its mean. "
        f"Computed in {result.seconds:.1f} s."
    )
    if result.stopped:
        st.warning(
            f"Stopped after {result.images:,} images: the curves and areas are over them "
            "(not kept; run again for all).",
            icon=":material/stop_circle:",
        )


def show_job_error(job: Job | None) -> None:
    if job is not None and job.error and not job.running:
        show_error(LensError(job.error))
