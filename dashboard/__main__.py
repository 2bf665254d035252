"""`python -m dashboard {train,evaluate,summary}`.

The package's import has already made a Ctrl-C during start-up quit in one line (_interrupt).
"""

import sys

from dashboard.cli import main

sys.exit(main())
