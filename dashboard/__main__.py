"""`python -m dashboard {train,evaluate,summary,…}`.

The package's import has already made a Ctrl-C during start-up quit in one line (_interrupt).
"""

import os
import signal
import sys

from dashboard.cli import EXIT_INTERRUPTED, main

try:
    code = main()
except KeyboardInterrupt:  # between the command's end and here: it was stopped all the same
    code = EXIT_INTERRUPTED
if code != EXIT_INTERRUPTED:
    # The command is done: a Ctrl-C during the interpreter's shutdown (torch's finalizers take
    # a moment) is ignored, so the exit code stays the command's. Python leaves an ignored
    # signal ignored while it shuts down, where it would put back the system's own action.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
# Interrupted: the command has saved what it keeps and said so. The interpreter's shutdown
# could still report the interrupt as a death by SIGINT instead of 130: leave at once.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
