"""Figure builders: arrays in, `plotly.graph_objects.Figure` out; no Streamlit, no model code.

One module a subject, all in one look (`style`):

    style        colours, the template, titles that fit, shared conversions
    tiles        many small maps tiled into one heatmap (filters, channels)
    filters      weights: filter grids, kernels, the weight histogram
    activations  one image's channel maps, layer by layer
    images       the input, Grad-CAM over it, predicted probabilities
    curves       training curves, alone or overlaid
    confusion    confusion matrices and their differences
    flow         the shape-flow diagram (a line of blocks)
    graph        the dataflow graph: branches beside the main path, merges where they join
    live         the Train page's live view: filters, maps and prediction while a run trains
    mosaic       labelled image mosaics (atlas, attributions, evaluation)
    atlas, attribution, evaluation, representations, lab
                 the figures of the analysis module of the same name

Every builder is a pure function of its arguments. The names of the first eight modules are
re-exported here, so a page writes `figures.filter_grid(...)`.
"""

from dashboard.figures.activations import (
    activation_grid,
    activation_stack,
)
from dashboard.figures.confusion import (
    confusion_difference,
    confusion_heatmap,
    confusion_shares,
    confusion_text,
)
from dashboard.figures.curves import (
    curve_overlay,
    training_curves,
)
from dashboard.figures.filters import (
    filter_grid,
    labelled_grid,
    rgb_filters,
    weight_histogram,
)
from dashboard.figures.flow import (
    shape_flow_diagram,
)
from dashboard.figures.images import (
    boxed_image,
    gradcam_overlay,
    image_figure,
    probability_bars,
    upsample,
)
from dashboard.figures.style import (
    CORRECT,
    DEAD,
    DIVERGING,
    FONT,
    GAP,
    GRID,
    INK,
    LENS_TEMPLATE,
    MAX_MOSAIC_PIXELS,
    MIN_WIDTH,
    MUTED,
    NARROW_TITLE_PX,
    NORMALIZE_MODES,
    PREDICTED,
    RUN_COLOURS,
    SCALE_MODES,
    WRONG,
    as_numpy,
    figure_html,
    fit_titles,
    image_layout,
    rgb_image,
    text_width_px,
    title_layout,
    wrap,
)
from dashboard.figures.tiles import (
    TileLayout,
    dead_outlines,
    hover_layer,
    hover_records,
    scale_maps,
    tile,
)

__all__ = [
    "CORRECT",
    "DEAD",
    "DIVERGING",
    "FONT",
    "GAP",
    "GRID",
    "INK",
    "LENS_TEMPLATE",
    "MAX_MOSAIC_PIXELS",
    "MIN_WIDTH",
    "MUTED",
    "NARROW_TITLE_PX",
    "NORMALIZE_MODES",
    "PREDICTED",
    "RUN_COLOURS",
    "SCALE_MODES",
    "WRONG",
    "TileLayout",
    "activation_grid",
    "activation_stack",
    "as_numpy",
    "boxed_image",
    "confusion_difference",
    "confusion_heatmap",
    "confusion_shares",
    "confusion_text",
    "curve_overlay",
    "dead_outlines",
    "figure_html",
    "filter_grid",
    "fit_titles",
    "gradcam_overlay",
    "hover_layer",
    "hover_records",
    "image_figure",
    "image_layout",
    "labelled_grid",
    "probability_bars",
    "rgb_filters",
    "rgb_image",
    "scale_maps",
    "shape_flow_diagram",
    "text_width_px",
    "tile",
    "title_layout",
    "training_curves",
    "upsample",
    "weight_histogram",
    "wrap",
]
