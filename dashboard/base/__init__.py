"""What everything stands on, importing nothing of ours from above and no torch at import time:
errors a user can act on, where things live (paths) and what the server remembers (settings),
the on-disk result cache, atomic file writes, Stop and thread budgets for long work (work),
Ctrl-C at start-up (interrupt), the safe gate every image passes (images), table widths."""
