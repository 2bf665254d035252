"""Streamlit glue: the only layer that imports Streamlit. Pages call `ui.setup_page(...)` and
`ui.sidebar()` first, then draw with what is re-exported here (`from dashboard import ui; ui.X`).

Loaders are cached by strings (path + modification time), never by objects; results that
outlive the process (predictions, features) are kept on disk by content (dashboard.base.cache).

    state           permanent session-state keys; `keep`/`store`, `held`/`kept`: widget values
                    that survive page switches
    present         presentation mode and the sidebar's presenting and sharing switches
    show            figures with downloads, the shared figure cache, tables, metric rows,
                    `plain` (text from files made safe for Markdown), errors, progress bars
    links           the view in the address bar (`url_bound`), models named in links
    choices         the models offered and the one selected (`Selection`, choice keys, labels)
    data_roots      the data root, the server's options, the folders the app may read
    loaders         cached model, shape flow, dataset splits, predictions
    navigation      the pages in order, links to them, going to the Activations page
    sidebar         `setup_page` and `sidebar()`
    html_report     the "Build HTML report" button
    overlay         runs' training curves overlaid with their hyper-parameters
    cards           the Model page's card of the selected model and of the dataset
    training_runs   the Train page's background runs: start, live progress, save
    live_training   the Train page's live filters, maps and prediction while a run trains
    checkpoint_pair two checkpoints side by side (Compare): partners, distances, one image
    representations layer features, projector neighbours and probes (Representations)
    image_input     the image a model looks at: test image, upload or drawing (Activations
                    and the pages after it)
    activations     the forward pass of one input, dead channels, Grad-CAM (Activations)
    filters         a layer's weights now or at a saved epoch, their figures (Filters)
    confusion       the matrix, report, top confusions and a cell's gallery (Confusion)
    lab, lab_channels, lab_widgets
                    the Convolution lab's tabs and the widgets that keep its numbers
    channels        tiles and examples that open a channel or Activations, the atlas in the
                    report, Stop for feature visualization (Channels)
    flow_graph      the dataflow graph traced with torch.fx and the Graph / Blocks switch
                    (Shape flow)
    evaluation      test answers, per-class curves, calibration, top losses (Evaluation)
    dynamics        a checkpoint's or a session run's training dynamics, their figures
                    (Training dynamics)
    attribution     the explained image's source, every method's cached map, the sanity and
                    faithfulness checks run beside the page with Stop (Attribution)

Inside this package, modules import each other directly, never through this file.
"""

from dashboard.ui.attribution import (
    attribution_facts,
    attribution_figure,
    attribution_maps,
    attribution_methods,
    current_job,
    display_controls,
    faithfulness_context,
    faithfulness_key,
    faithfulness_results,
    image_source,
    job_panel,
    sanity_results,
    show_job_error,
    start_faithfulness,
    start_sanity,
    stored_faithfulness,
    target_picker,
)
from dashboard.ui.cards import (
    MEASURED_KEY,
    accuracy_metric,
    accuracy_panel,
    architecture_facts,
    card_panel,
    dataset_panel,
    hyperparameters,
    measured,
    outputs_mismatch,
    small_curves,
)
from dashboard.ui.checkpoint_pair import (
    classes_for,
    distances,
    pairing,
    partner_candidates,
    partners_of,
    passed,
    short_name,
    weights_table,
)
from dashboard.ui.choices import (
    ARCH_PREFIX,
    CKPT_PREFIX,
    ZOO_PREFIX,
    Selection,
    add_model_choice,
    checkpoint_key,
    checkpoint_keys,
    checkpoint_path,
    model_choices,
    model_label,
    select_model,
)
from dashboard.ui.data_roots import (
    DATA_ROOT_KEY,
    ROOT_MESSAGE_KEY,
    ROOT_PICK_KEY,
    allowed_roots,
    data_root,
    data_root_field,
    folder_refusal,
    pinned_data_root,
    server_options,
)
from dashboard.ui.dynamics import (
    DISTRIBUTION_VIEWS,
    DYNAMICS_SELECTED,
    checkpoint_dynamics,
    dynamics_distribution,
    dynamics_lines_panel,
    dynamics_runs,
    run_dynamics,
)
from dashboard.ui.evaluation import (
    class_score_table,
    evaluated_answers,
    evaluation_curves,
    fitted_calibration,
    top_loss_gallery,
    top_loss_table,
)
from dashboard.ui.flow_graph import BLOCKS, GRAPH, graph_view, model_graph, view_switch
from dashboard.ui.html_report import onnx_button, report_button
from dashboard.ui.links import (
    RUN_LINK,
    SHIPPED_PREFIX,
    URL_ADOPTED_KEY,
    index_below,
    model_link,
    one_of,
    url_bound,
)
from dashboard.ui.live_training import live_views
from dashboard.ui.loaders import (
    UNTRAINED_SEED,
    ModelView,
    data_id,
    dataset_split,
    filter_history,
    info_key,
    input_shape_for,
    load_data,
    load_model,
    model_id,
    model_or_stop,
    mtime_of,
    predictions,
    shape_flow,
)
from dashboard.ui.navigation import (
    ACTIVATIONS_PAGE,
    PAGES,
    navigation,
    neuron_window_opened,
    open_in_activations,
    page_overview,
)
from dashboard.ui.overlay import SHORT_HEADERS, runs_overlay, saved_checkpoints
from dashboard.ui.present import (
    IMAGE_FORMAT_KEY,
    PRESENT_KEY,
    PRESENT_QUERY,
    PRESENT_SCALE,
    PRESENTATION_CSS,
    controls,
    presenting,
    share_controls,
)
from dashboard.ui.representations import (
    chart_picked,
    focus_panel,
    gallery_rows,
    image_count,
    layer_features,
    picked_gallery,
    probe_results,
    report_map_toggle,
    representation_layers,
    require_made_for,
    thumbnail_card,
)
from dashboard.ui.show import (
    Metric,
    cached_figure,
    figure,
    layer_table,
    lazy_tabs,
    metric_row,
    percent,
    plain,
    progress_bar,
    show_error,
    table,
    untrained_warning,
    work_bar,
)
from dashboard.ui.sidebar import model_warnings, setup_page, sidebar
from dashboard.ui.state import (
    DATASET_KEY,
    DATASET_NOTE_KEY,
    EXTRA_MODELS_KEY,
    FOLDER_CHOICE,
    FOLDER_KEY,
    LINK_NOTE_KEY,
    MODEL_KEY,
    REGISTRY_DATASETS,
    held,
    keep,
    kept,
    store,
)
from dashboard.ui.training_runs import (
    TRAIN_DRAWN_ACTIVE_KEY,
    TRAIN_FOLLOWS_KEY,
    TRAIN_RUNS_KEY,
    TRAIN_SETTING_PREFIX,
    clock,
    draw_run,
    live_panel,
    save_panel,
    session_alive_check,
    session_runs,
    start_training,
    train_setting,
)

__all__ = [
    "ACTIVATIONS_PAGE",
    "ARCH_PREFIX",
    "BLOCKS",
    "CKPT_PREFIX",
    "DATASET_KEY",
    "DATASET_NOTE_KEY",
    "DATA_ROOT_KEY",
    "DISTRIBUTION_VIEWS",
    "DYNAMICS_SELECTED",
    "EXTRA_MODELS_KEY",
    "FOLDER_CHOICE",
    "FOLDER_KEY",
    "GRAPH",
    "IMAGE_FORMAT_KEY",
    "LINK_NOTE_KEY",
    "MEASURED_KEY",
    "MODEL_KEY",
    "PAGES",
    "PRESENTATION_CSS",
    "PRESENT_KEY",
    "PRESENT_QUERY",
    "PRESENT_SCALE",
    "REGISTRY_DATASETS",
    "ROOT_MESSAGE_KEY",
    "ROOT_PICK_KEY",
    "RUN_LINK",
    "SHIPPED_PREFIX",
    "SHORT_HEADERS",
    "TRAIN_DRAWN_ACTIVE_KEY",
    "TRAIN_FOLLOWS_KEY",
    "TRAIN_RUNS_KEY",
    "TRAIN_SETTING_PREFIX",
    "UNTRAINED_SEED",
    "URL_ADOPTED_KEY",
    "ZOO_PREFIX",
    "Metric",
    "ModelView",
    "Selection",
    "accuracy_metric",
    "accuracy_panel",
    "add_model_choice",
    "allowed_roots",
    "architecture_facts",
    "attribution_facts",
    "attribution_figure",
    "attribution_maps",
    "attribution_methods",
    "cached_figure",
    "card_panel",
    "chart_picked",
    "checkpoint_dynamics",
    "checkpoint_key",
    "checkpoint_keys",
    "checkpoint_path",
    "class_score_table",
    "classes_for",
    "clock",
    "controls",
    "current_job",
    "data_id",
    "data_root",
    "data_root_field",
    "dataset_panel",
    "dataset_split",
    "display_controls",
    "distances",
    "draw_run",
    "dynamics_distribution",
    "dynamics_lines_panel",
    "dynamics_runs",
    "evaluated_answers",
    "evaluation_curves",
    "faithfulness_context",
    "faithfulness_key",
    "faithfulness_results",
    "figure",
    "filter_history",
    "fitted_calibration",
    "focus_panel",
    "folder_refusal",
    "gallery_rows",
    "graph_view",
    "held",
    "hyperparameters",
    "image_count",
    "image_source",
    "index_below",
    "info_key",
    "input_shape_for",
    "job_panel",
    "keep",
    "kept",
    "layer_features",
    "layer_table",
    "lazy_tabs",
    "live_panel",
    "live_views",
    "load_data",
    "load_model",
    "measured",
    "metric_row",
    "model_choices",
    "model_graph",
    "model_id",
    "model_label",
    "model_link",
    "model_or_stop",
    "model_warnings",
    "mtime_of",
    "navigation",
    "neuron_window_opened",
    "one_of",
    "onnx_button",
    "open_in_activations",
    "outputs_mismatch",
    "page_overview",
    "pairing",
    "partner_candidates",
    "partners_of",
    "passed",
    "percent",
    "picked_gallery",
    "pinned_data_root",
    "plain",
    "predictions",
    "presenting",
    "probe_results",
    "progress_bar",
    "report_button",
    "report_map_toggle",
    "representation_layers",
    "require_made_for",
    "run_dynamics",
    "runs_overlay",
    "sanity_results",
    "save_panel",
    "saved_checkpoints",
    "select_model",
    "server_options",
    "session_alive_check",
    "session_runs",
    "setup_page",
    "shape_flow",
    "share_controls",
    "short_name",
    "show_error",
    "show_job_error",
    "sidebar",
    "small_curves",
    "start_faithfulness",
    "start_sanity",
    "start_training",
    "store",
    "stored_faithfulness",
    "table",
    "target_picker",
    "thumbnail_card",
    "top_loss_gallery",
    "top_loss_table",
    "train_setting",
    "untrained_warning",
    "url_bound",
    "view_switch",
    "weights_table",
    "work_bar",
]
