"""CNN Lens: look inside convolutional networks.

The library behind the Streamlit pages. One module per step of the data flow:
data → models → training → checkpoints → probe → metrics → figures, with
`ui` as the only module that imports Streamlit.
"""

import sys

__version__ = "0.1.0"

if sys.argv[:1] == ["-m"]:  # being found by `python -m dashboard …`: see __main__
    from dashboard.base import interrupt

    interrupt.quit_quietly_on_ctrl_c()
