"""``python -m dynkit`` is the ``dynkit`` command."""

import sys

from dynkit.cli import main

sys.exit(main())
