"""Suite-wide settings.

Property tests run derandomized: the same examples on every run, so CI cannot
turn red by chance. ``HYPOTHESIS_PROFILE=explore`` searches fresh examples.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
