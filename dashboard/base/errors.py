"""Errors a user can act on.

Every failure that comes from user input (a name, a file, a shape, missing data) is raised as a
`LensError` whose message is one line saying what went wrong and what to do next. The command
line prints that line and exits non-zero; the pages show it with `st.error`. Anything else is a
bug and keeps its traceback.
"""


class LensError(Exception):
    """A failure caused by input, with a one-line message meant for the user."""


class UnknownNameError(LensError, KeyError):
    """A model or dataset name that is not in the registry; the message lists valid names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DatasetUnavailableError(LensError):
    """Dataset files are missing and could not be downloaded."""


class CheckpointError(LensError):
    """A checkpoint file that cannot be read safely or does not fit the architecture."""


class ShapeError(LensError):
    """An input shape a model cannot take."""
