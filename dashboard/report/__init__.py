"""Files made for sharing: the one-file HTML report of a model (`html`) and the channel atlas's
contact sheet (`atlas_sheet`). The report's names are re-exported here.
"""

from dashboard.report.html import ACTIVATION_LAYERS as ACTIVATION_LAYERS
from dashboard.report.html import ACTIVATION_PIXELS as ACTIVATION_PIXELS
from dashboard.report.html import ACTIVATION_WIDTH as ACTIVATION_WIDTH
from dashboard.report.html import CSS as CSS
from dashboard.report.html import EXAMPLES as EXAMPLES
from dashboard.report.html import HYPER_ORDER as HYPER_ORDER
from dashboard.report.html import MATRIX_TABLE_MAX as MATRIX_TABLE_MAX
from dashboard.report.html import PLOT_CONFIG as PLOT_CONFIG
from dashboard.report.html import SECTIONS as SECTIONS
from dashboard.report.html import AtlasPart as AtlasPart
from dashboard.report.html import ModelFacts as ModelFacts
from dashboard.report.html import RepresentationsPart as RepresentationsPart
from dashboard.report.html import build_report as build_report
from dashboard.report.html import error_page as error_page
from dashboard.report.html import example_indices as example_indices
from dashboard.report.html import file_name as file_name
