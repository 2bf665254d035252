"""Ctrl-C while `python -m dashboard` starts: one line and exit code 130, never a traceback.

Importing torch takes seconds, and a KeyboardInterrupt raised anywhere inside it prints a long
traceback through half-imported modules. So the package, when `python -m dashboard` imports it
(before its __main__ and before any heavy import), installs a handler that writes one line and
leaves at once: nothing has started that needs saving or cleaning up. `cli.main` puts Python's
own handler back once the command runs, so that `train` saves a run stopped by Ctrl-C.
"""

import os
import signal

EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


def _leave(signum: int, frame: object) -> None:
    os.write(2, b"python -m dashboard: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def quit_quietly_on_ctrl_c() -> None:
    signal.signal(signal.SIGINT, _leave)
