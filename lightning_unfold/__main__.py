"""``python -m lightning_unfold`` is the ``lightning-unfold`` command."""

import sys

from lightning_unfold.cli import main

sys.exit(main())
