"""CNN Lens: look inside convolutional networks.

The library behind the Streamlit pages. One module per step of the data flow:
data → models → training → checkpoints → probe → metrics → figures, with
`ui` as the only module that imports Streamlit.
"""

__version__ = "0.1.0"
