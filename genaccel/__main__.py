"""`python -m genaccel` (and `accelerate launch -m genaccel batch ...`): the command line."""

import sys

from genaccel.cli import main

sys.exit(main())
