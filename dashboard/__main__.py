"""`python -m dashboard {train,evaluate,summary}`."""

import sys

from dashboard.cli import main

sys.exit(main())
