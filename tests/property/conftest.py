"""Hypothesis settings for the property suite: modest example counts, no deadlines.

The whole property suite must stay well under 30 s on a 2-core machine; the
``S3SYNC_HYPOTHESIS_PROFILE=thorough`` profile runs many more examples.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile(
    "default-s3sync", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("S3SYNC_HYPOTHESIS_PROFILE", "default-s3sync"))
