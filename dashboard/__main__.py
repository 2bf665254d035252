"""`python -m dashboard {train,evaluate,summary,…}`.

The package's import has already made a Ctrl-C during start-up quit in one line (_interrupt).
"""

import os
import sys

from dashboard import _interrupt
from dashboard.cli import EXIT_INTERRUPTED, main

try:
    code = main()
except KeyboardInterrupt:  # between the command's end and here: it was stopped all the same
    code = EXIT_INTERRUPTED
# A Ctrl-C from here to the process's end (flushing, torch's finalizers) quits in one line with
# 130 too, not as an unhandled KeyboardInterrupt (which a shell reads as killed by SIGINT).
_interrupt.quit_quietly_on_ctrl_c()
if code == EXIT_INTERRUPTED:
    # The command has saved what it keeps and said so; the interpreter's shutdown could still
    # report the interrupt as a death by SIGINT instead of this code, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
