"""Hypothesis profiles: a short one for ``make test``, a long one for ``make fuzz``.

``ELEMTA_FUZZ_EXAMPLES`` sets the examples per property (``make fuzz`` passes it).
No example database is kept: a failure prints its example, and CI starts clean.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "elemta",
    max_examples=int(os.environ.get("ELEMTA_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("elemta")
