"""Run the command-line interface as ``python -m hazardseg``."""

import sys

from hazardseg.cli import main

sys.exit(main())
