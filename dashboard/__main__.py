"""`python -m dashboard {train,evaluate,summary}`.

The package's import has already made a Ctrl-C during start-up quit in one line (_interrupt).
"""

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
sys.exit(code)
