"""Training dynamics: every layer's statistics over a run (weight norm, gradient norm, the
update-to-weight ratio, dead units), smoothed as TensorBoard does, and TensorBoard's
"distributions" of one parameter tensor over the epochs, from what training recorded: the
selected checkpoint's record, or a run of this session from the Train page."""

import streamlit as st

from dashboard import ui

ui.setup_page("Training dynamics", icon=":material/monitoring:")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
from dashboard.analysis import dynamics  # noqa: E402

# Session-state keys: stable names, so a link can seed them.
SOURCE_KEY, STAT_KEY, SMOOTH_KEY = "dyn_source", "dyn_statistic", "dyn_smoothing"
CLOCK_KEY, TENSORS_KEY, UNITS_KEY = "dyn_clock", "dyn_tensors", "dyn_activations"
TENSOR_KEY, VIEW_KEY = "dyn_tensor", "dyn_view"
STATISTICS = tuple(dynamics.STATISTIC_NAMES)
CLOCKS = tuple(dynamics.CLOCKS)
CLOCK_LABELS = {"step": "step", "epoch": "epoch", "seconds": "wall clock"}
LOG_BY_DEFAULT = ("update_ratio", "grad_norm")  # they span orders of magnitude across layers

model, view = ui.model_or_stop(selection)

st.title("Training dynamics")
st.caption(
    "How every layer moved while the network trained — TensorBoard's scalars and "
    "distributions, from the statistics recorded during training."
)

own = ui.checkpoint_dynamics(selection, model, view)
runs = ui.dynamics_runs()
if own is None:
    if any("training dynamics are damaged" in w for w in view.warnings):
        why = f"**{ui.plain(view.label)}**'s recorded dynamics are damaged and were skipped"
    elif selection.is_checkpoint:
        why = f"**{ui.plain(view.label)}** was trained without recording its dynamics"
    elif view.untrained:
        why = f"**{ui.plain(view.label)}** is untrained: it has no training to show"
    else:
        why = f"**{ui.plain(view.label)}** comes with published weights and no training record"
    st.info(
        f"{why}. Runs record them by default: train on the **Train** page (this page then "
        "shows the run, live while it trains, and the checkpoint it saves), or on the command "
        "line with `python -m dashboard train --model NAME --dataset NAME` and pick the saved "
        "checkpoint in the sidebar.",
        icon=":material/monitoring:",
    )
choices = ([ui.DYNAMICS_SELECTED] if own is not None else []) + list(runs)
if not choices:
    st.stop()
labels = {ui.DYNAMICS_SELECTED: f"the selected model: {view.label}"}
labels |= {key: f"run {run.id} of this session: {run.label}" for key, run in runs.items()}
if len(choices) > 1 or own is None:
    picked = st.selectbox(
        "Dynamics of",
        choices,
        format_func=lambda k: labels[k],
        help="The selected model's own record, or a run you started on the Train page.",
        **ui.kept(SOURCE_KEY, choices, choices[0]),
    )
else:
    picked = choices[0]
source = own if picked == ui.DYNAMICS_SELECTED else ui.run_dynamics(runs[picked])
assert source is not None
if picked != ui.DYNAMICS_SELECTED and not runs[picked].done:
    st.caption(
        ":material/autorenew: This run is still training: its lines follow it every few "
        "seconds; its histograms come when it ends."
    )

# ---------------------------------------------------------------------------- statistics

st.subheader("Every layer over training")
for key, options, default in ((STAT_KEY, STATISTICS, "update_ratio"), (CLOCK_KEY, CLOCKS, "step")):
    if st.session_state.get(key) not in options:  # the default, in the address bar too
        st.session_state[key] = default
ui.url_bound("statistic", STAT_KEY, ui.one_of(STATISTICS))
ui.url_bound("x", CLOCK_KEY, ui.one_of(CLOCKS))
with ui.controls():
    row = st.columns([2.2, 1.6, 2.2, 1.2], gap="medium", vertical_alignment="bottom")
    statistic = row[0].selectbox(
        "Statistic",
        STATISTICS,
        format_func=dynamics.STATISTIC_LABELS.get,
        help="Weight norm ‖w‖₂ after the step; gradient norm ‖∇w‖₂ of the step; update ratio "
        "‖Δw‖/‖w‖ (about 1e-3 is healthy: far below, the layer barely learns; far above, it "
        "thrashes); dead units: the share of a ReLU layer's channels that never fired in the "
        "batches before the sample.",
        **ui.kept(STAT_KEY, STATISTICS, "update_ratio"),
    )
    clock = row[1].radio(
        "x axis",
        CLOCKS,
        format_func=CLOCK_LABELS.get,
        horizontal=True,
        **ui.kept(CLOCK_KEY, CLOCKS, "step"),
    )
    smoothing = row[2].slider(
        "Smoothing",
        0.0,
        0.99,
        step=0.01,
        help="TensorBoard's: an exponential moving average (0 = raw); the raw values stay "
        "faint behind the smoothed line.",
        **ui.held(SMOOTH_KEY, 0.6),
    )
    log_key = f"dyn_log_{statistic}"
    log_y = row[3].toggle(
        "Log scale",
        disabled=statistic == "dead_share",
        **ui.held(log_key, statistic in LOG_BY_DEFAULT),
    )
    if statistic == "dead_share":
        options, default, key = list(source.activations), list(source.activations), UNITS_KEY
        what = "Activation layers"
    else:
        options, default, key = list(source.tensors), list(source.defaults), TENSORS_KEY
        what = "Tensors"
    names = st.multiselect(
        what,
        options,
        help="Every parameter tensor by its state-dict name; at first the weights of the conv "
        "and linear layers."
        if statistic != "dead_share"
        else "Every ReLU-like layer (a second call of one module is name#1).",
        **ui.kept(key, options, default),
    )

if not names:
    st.info(f"Pick at least one of the {len(options)} {what.lower()} to draw.")
else:
    log_y = bool(log_y) and statistic != "dead_share"
    run = runs.get(picked)  # None: the selected model's own record
    ui.dynamics_lines_panel(source, run, statistic, tuple(names), float(smoothing), clock, log_y)

# ------------------------------------------------------------------------- distributions

st.subheader("Distributions over epochs")
if source.log is None or not source.log.histograms:
    st.info(
        "The histograms of a run come with its record once it has finished (for the session's "
        "newest run) or been saved: save the run on the Train page and pick it in the sidebar."
    )
    st.stop()
tensors = [t for t in source.tensors if t in source.log.edges]
with ui.controls("Distribution controls"):
    row = st.columns([3, 2], gap="medium", vertical_alignment="bottom")
    first = source.defaults[0] if source.defaults else tensors[0]
    tensor = row[0].selectbox(
        "Tensor",
        tensors,
        help="Each parameter tensor's values were counted into fixed bins before training and "
        "after every epoch.",
        **ui.kept(TENSOR_KEY, tensors, first),
    )
    shown = row[1].radio(
        "View",
        ui.DISTRIBUTION_VIEWS,
        horizontal=True,
        help="Percentile bands as TensorBoard's distributions (min, 7, 16, 31, 50, 69, 84, 93 %, "
        "max, read from the histograms); or every histogram as one row of a heatmap.",
        **ui.kept(VIEW_KEY, ui.DISTRIBUTION_VIEWS, ui.DISTRIBUTION_VIEWS[0]),
    )
ui.figure(ui.dynamics_distribution(source, tensor, shown), f"distribution-{tensor}")
