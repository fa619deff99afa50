"""`python -m fl_pipeline.cli ...`: the same as `fedkb ...`."""

import sys

from fl_pipeline.cli.parser import main

sys.exit(main())
