"""How long a test awaits anything before it fails instead of hanging: an upper bound,
never asserted on. ``PARLEY_TEST_WAIT`` shortens it where a hang is the expected
failure (``./run mutate`` runs many mutants that make a test wait for what never comes).
"""

from __future__ import annotations

import os

WAIT = float(os.environ.get("PARLEY_TEST_WAIT", "10"))
