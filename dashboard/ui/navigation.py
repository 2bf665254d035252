"""The app's pages in reading order, the sidebar's links to them, the home page's map of them,
and going to another page with a choice made.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.base import paths

PAGES = (
    ("app.py", "Home", ":material/home:", "this overview and the selected model's layers"),
    (
        "pages/1_Model.py",
        "Model",
        ":material/deployed_code:",
        "pick a shipped checkpoint, upload yours, or take one from torchvision's zoo",
    ),
    (
        "pages/2_Train.py",
        "Train",
        ":material/model_training:",
        "train with live curves, stop any time, save, compare runs",
    ),
    (
        "pages/13_Training_dynamics.py",
        "Training dynamics",
        ":material/monitoring:",
        "every layer's norms, update ratios and dead units over training; weight distributions",
    ),
    (
        "pages/3_Shape_flow.py",
        "Shape flow",
        ":material/account_tree:",
        "every layer's shape, parameters, multiply-adds, receptive field and formula",
    ),
    (
        "pages/4_Filters.py",
        "Filters",
        ":material/grid_on:",
        "the learned kernels of every conv layer, across epochs, beside Sobel and Prewitt",
    ),
    (
        "pages/5_Activations.py",
        "Activations",
        ":material/layers:",
        "what each layer sees of an image you pick, upload or draw; Grad-CAM",
    ),
    (
        "pages/6_Confusion_matrix.py",
        "Confusion matrix",
        ":material/grid_view:",
        "where the model gets confused: click a cell to see its images",
    ),
    (
        "pages/12_Evaluation.py",
        "Evaluation",
        ":material/query_stats:",
        "how sure and how right: PR and ROC curves, calibration, top losses",
    ),
    (
        "pages/7_Compare.py",
        "Compare",
        ":material/compare:",
        "runs' curves overlaid; two checkpoints' weights, filters and activations side by side",
    ),
    (
        "pages/8_Convolution_lab.py",
        "Convolution lab",
        ":material/calculate:",
        "convolution and pooling by hand, then any neuron of the model",
    ),
    (
        "pages/9_Channels.py",
        "Channels",
        ":material/blur_on:",
        "what each channel responds to: its top images, classes, feature visualization",
    ),
    (
        "pages/10_Representations.py",
        "Representations",
        ":material/scatter_plot:",
        "how each layer arranges the test images: projector, linear probes, layer similarity",
    ),
    (
        "pages/11_Attribution.py",
        "Attribution",
        ":material/highlight:",
        "which pixels made the prediction, by six methods, with the checks that say which to trust",
    ),
)


def _existing_pages() -> list[tuple[str, str, str, str]]:
    return [page for page in PAGES if (paths.REPO_ROOT / page[0]).exists()]


def _running_as_app() -> bool:
    """True under `streamlit run app.py`; False when one page runs alone (AppTest on a page),
    where links to the other pages cannot resolve."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    main = getattr(ctx, "main_script_path", "") if ctx else ""
    return bool(main) and Path(main).resolve() == (paths.REPO_ROOT / "app.py").resolve()


def navigation() -> None:
    """Links to every page that exists, with readable names."""
    st.markdown("## :material/center_focus_strong: CNN Lens")
    if _running_as_app():
        for script, label, icon, _ in _existing_pages():
            st.page_link(script, label=label, icon=icon)
    st.divider()


def page_overview() -> None:
    """The home page's map of the app: one link and one line per page."""
    columns = st.columns(3)
    for i, (script, label, icon, what) in enumerate(_existing_pages()[1:]):
        with columns[i % 3].container(border=True):
            st.page_link(script, label=f"**{label}**", icon=icon)
            st.caption(what)


ACTIVATIONS_PAGE = "pages/5_Activations.py"


NEURON_OPEN_KEY = "act_neuron_open"  # a link asks Activations to open its one-neuron window


def open_in_activations(
    index: int, layer: str | None = None, neuron: tuple[int, int, int] | None = None
) -> None:
    """Go to the Activations page with test image `index` picked (by index), and `layer` shown
    with its one-neuron window at `neuron` (channel, y, x) when given."""
    from dashboard.analysis import inputs

    st.session_state[inputs.IMAGE_INDEX_KEY] = int(index)
    st.session_state["lens_image_split"] = "test"
    st.session_state[inputs.SOURCE_KEY] = inputs.SOURCE_TEST
    st.session_state["lens_image_mode"] = "by index"  # the Activations page's picker
    params = {inputs.IMAGE_QUERY: str(index)}
    if layer is not None:
        st.session_state[inputs.LAYER_KEY] = params["layer"] = layer
    if neuron is not None:
        for key, value in zip(
            ("act_neuron_c", "act_neuron_y", "act_neuron_x"), neuron, strict=True
        ):
            st.session_state[key] = int(value)
        st.session_state[NEURON_OPEN_KEY] = True
    st.switch_page(ACTIVATIONS_PAGE, query_params=params)


def clicked_customdata(chart_key: str) -> list | None:
    """The customdata of the point the reader clicked in the chart under `chart_key` (None: a
    click elsewhere, or no click yet)."""
    from dashboard.analysis.picks import point_custom

    event = st.session_state.get(chart_key) or {}
    for point in (event.get("selection") or {}).get("points", []):
        custom = point_custom(point)
        if custom:
            return custom
    return None


def neuron_window_opened() -> bool:
    """Whether a link has asked for Activations' one-neuron window open. It stays asked for the
    session: Streamlit applies `expanded` when it changes, so a constant answer leaves the
    window as the reader last left it, while a False after True would fold it at the next run."""
    return bool(st.session_state.get(NEURON_OPEN_KEY, False))
