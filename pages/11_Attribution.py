"""Attribution: which pixels made the model give a class its score — six methods through Captum
side by side on one image — and whether a map can be trusted: the sanity check (Adebayo et al.
2018, cascading randomization) and faithfulness (Petsiuk et al. 2018, deletion and insertion).

The image is the Activations page's (the same session-state keys and `?image=` link); the class
explained is the predicted one unless another is chosen. Both checks run beside the page with a
progress bar and Stop; finished faithfulness curves are kept in the result cache.
"""

from dataclasses import astuple

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Attribution", icon=":material/highlight:")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
from dashboard.analysis import attribution, faithfulness, inputs  # noqa: E402
from dashboard.ui import activations as activations_ui  # noqa: E402
from dashboard.ui import image_input  # noqa: E402

TAB_KEY, TABS = "attr_tab", ("Methods", "Sanity check", "Faithfulness")
SANITY_JOB, SANITY_METHODS_KEY = "attr_sanity_job", "attr_sanity_methods"
FAITH_JOB, FAITH_IMAGES_KEY = "attr_faith_job", "attr_faith_images"

# --------------------------------------------------------------------------- model and data

st.title("Attribution")
try:
    model, view = ui.load_model(selection)
    mtime = ui.mtime_of(selection.model_key)
    flow = ui.shape_flow(selection.model_key, view.input_shape, mtime)
    if flow.broken is not None:
        raise LensError(f"{view.label} cannot take its own input: {flow.broken.reason}")
    source_of_images = ui.image_source(selection, view, flow)
except LensError as err:
    ui.show_error(err)
    st.stop()
split, info, classes = source_of_images.split, source_of_images.info, source_of_images.classes
methods, cam_layer = ui.attribution_methods(flow)
st.caption(
    f"**{ui.plain(view.label)}** on {ui.plain(info.title)} — which pixels made the model give a "
    "class its score, by six methods side by side, and whether each map can be trusted: does it "
    "change when the model's weights are destroyed, and does removing its pixels first really "
    "take the class away?"
)
if view.untrained:
    st.warning(
        "**Untrained — random weights.** These maps explain a model that has learned nothing: "
        "they show what random filters respond to. Train the model or pick a checkpoint.",
        icon=":material/casino:",
    )
if source_of_images.unread is not None:
    ui.show_error(source_of_images.unread)
if source_of_images.unfit:
    st.info(
        f"The test images do not fit this model ({ui.plain(source_of_images.unfit)}). Upload or "
        f"draw an image: it is resized to the model's {info.title.removeprefix('its own ')}.",
        icon=":material/info:",
    )
if cam_layer is None:
    st.info(
        f"{ui.plain(view.label)} has no convolutional layer, so Grad-CAM and Guided Grad-CAM "
        "have no map to read: the other four methods are shown.",
        icon=":material/info:",
    )

# --------------------------------------------------------------------------- image and class

index = image_input.opened_index(split)
top = st.columns([1.1, 1], gap="large")
with top[0]:
    st.subheader("Input")
    source, prepared, index = image_input.pick_input(split, info, classes, selection, index)
x = inputs.model_input(prepared.pixels, info)
try:
    probabilities = activations_ui.forward(selection.model_key, mtime, prepared.key, model, x)[
        "probabilities"
    ]
except LensError as err:
    ui.show_error(err)
    st.stop()
with top[1]:
    st.subheader("What to explain, and how")
    st.markdown(activations_ui.verdict(probabilities, prepared.label, classes))
    target = ui.target_picker(classes, probabilities, prepared.key)
    display = ui.display_controls()
settings = attribution.Settings(
    baseline=display.baseline, layer=cam_layer, smooth_over=display.smooth_over
)
view_key = (selection.model_key, mtime, ui.info_key(info), prepared.key, int(target))
view_key += (astuple(settings),)  # what every map, figure and check of this view depends on
label = f"{ui.plain(classes[target])} ({probabilities[target]:.1%})"

# --------------------------------------------------------------------------- the three parts


def methods_tab() -> None:
    try:
        maps = ui.attribution_maps(
            selection.model_key, mtime, model, x, info, target, methods, settings
        )
    except LensError as err:
        ui.show_error(err)
        return
    kind = "signed: red for the class, blue against" if display.signed else "absolute"
    fig = ui.attribution_figure(
        prepared.pixels,
        maps,
        display,
        (*view_key, methods),
        f"class {classes[target]} · {prepared.name} · {kind} · each map scaled to its 99th "
        "percentile",
    )
    ui.figure(fig, "attribution-methods", key="attr_methods", width="content")
    ui.attribution_facts(maps)
    window, stride = attribution.occlusion_window((info.size, info.size), settings)
    st.caption(
        f"Integrated Gradients: {settings.steps} steps from the {display.baseline} baseline; its "
        "attributions add up to the logit minus the baseline's logit, up to the convergence "
        f"delta. SmoothGrad: {attribution.TITLES[settings.smooth_over]} averaged over "
        f"{settings.noise_samples} noisy copies. Occlusion: a {window}×{window} window of the "
        f"baseline moved {stride} px at a time. Grad-CAM at {cam_layer or '—'}. Times are each "
        "map's first computation."
    )


def sanity_tab() -> None:
    st.caption(
        "Cascading randomization (Adebayo et al. 2018): the layers are re-initialized one at a "
        "time, from the output back to the input, on a copy of the model; after each step every "
        f"method explains {label} again. A map that stays the same does not depend on the model."
    )
    bar = ui.controls("Sanity check")
    chosen = bar.multiselect(
        "Methods",
        methods,
        format_func=attribution.TITLES.get,
        **ui.kept(SANITY_METHODS_KEY, list(methods), list(methods)),
    )
    context = (*view_key, tuple(chosen))
    job = ui.current_job(SANITY_JOB, context)
    running = job is not None and job.running
    if bar.button(
        "Run the sanity check",
        icon=":material/play_arrow:",
        type="primary",
        disabled=running or not chosen,
    ):
        ui.start_sanity(SANITY_JOB, context, model, x, info, chosen, target, settings)
        st.rerun()
    ui.job_panel(SANITY_JOB, context)
    ui.show_job_error(job)
    if job is not None and not job.running and job.result is not None:
        ui.sanity_results(job.result, prepared.pixels, classes, display.opacity, context)
    elif job is None:
        st.info(
            "The cascade explains the image once per layer and method (seconds on a small "
            "model): press Run the sanity check.",
            icon=":material/info:",
        )


def faithfulness_tab() -> None:
    st.caption(
        "Deletion and insertion (Petsiuk et al. 2018): pixels removed, or put back, in the order "
        "of each method's map; a faithful map makes the class's probability fall fast (low area) "
        "and rise fast (high area). Each image explains the class the model predicts for it."
    )
    if split is None:
        st.info(
            "Faithfulness is measured over the selected dataset's test images, which do not fit "
            "this model: pick a dataset the model was made for.",
            icon=":material/info:",
        )
        return
    bar = ui.controls("Faithfulness").container(horizontal=True, gap="medium")
    count = bar.number_input(
        f"Test images (the first; 1 – {len(split):,})",
        1,
        len(split),
        step=10,
        help="Averaged over the first N test images; 100 take about a minute on two cores.",
        **ui.held(FAITH_IMAGES_KEY, min(faithfulness.IMAGES, len(split))),
    )
    cache_key = ui.faithfulness_key(selection, split, methods, count, faithfulness.STEPS, settings)
    context = ui.faithfulness_context(cache_key)
    job = ui.current_job(FAITH_JOB, context)
    running = job is not None and job.running
    kept = None if running else ui.stored_faithfulness(cache_key)
    if bar.button(
        "Run again" if kept is not None else "Measure faithfulness",
        icon=":material/play_arrow:",
        type="secondary" if kept is not None else "primary",
        disabled=running,
    ):
        ui.start_faithfulness(
            FAITH_JOB, cache_key, model, split, methods, count, faithfulness.STEPS, settings
        )
        st.rerun()
    ui.job_panel(FAITH_JOB, context)
    ui.show_job_error(job)
    finished = job.result if job is not None and not job.running else None
    if finished is not None and (finished.stopped or kept is None):
        ui.faithfulness_results(finished)
    elif kept is not None:
        ui.faithfulness_results(kept)
    elif not running:
        st.info(
            f"Every method explains each of the {count:,} images, then 2 × "
            f"{faithfulness.STEPS + 1} altered copies of it go through the model: press "
            "Measure faithfulness. The result is kept for later visits.",
            icon=":material/info:",
        )


if st.session_state.get(TAB_KEY) not in TABS:
    st.session_state[TAB_KEY] = TABS[0]
tabs = st.tabs(TABS, **ui.held(TAB_KEY, TABS[0]))  # a callback: the open tab reruns alone
for tab, draw in zip(tabs, (methods_tab, sanity_tab, faithfulness_tab), strict=True):
    if tab.open:
        with tab:
            draw()
