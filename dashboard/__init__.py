"""CNN Lens: look inside convolutional networks.

The library behind the pages and the command line, in layers that follow the data flow (each
imports only itself and the layers below; docs/architecture.md is the map):

    cli/        the command line                    ui/       the Streamlit glue (only here)
    report/     HTML report, atlas sheet            figures/  plotly figures by subject
    training/   fit, background runs, comparing     analysis/ probe, metrics, attributions, atlas…
    models/     architectures, checkpoints, cards   data/     datasets, downloads, samples
    base/       errors, paths, settings, cache, atomic files, Stop, image decoding
"""

import sys

__version__ = "0.1.0"

if sys.argv[:1] == ["-m"]:  # being found by `python -m dashboard …`: see __main__
    from dashboard.base import interrupt

    interrupt.quit_quietly_on_ctrl_c()
