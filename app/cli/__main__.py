"""`python -m app.cli`: the `devise` command."""

import sys

from app.cli import main

sys.exit(main())
