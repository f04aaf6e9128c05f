"""The calibration store's names and defaults, free of kopf and the Kubernetes client so the
CLI (``trainwright operator`` flags, ``trainwright calibration``) imports them at start-up."""

from __future__ import annotations

STORE_NAME = "trainwright-calibration"
STORE_KEY = "observations.json"
KEEP_PER_SHAPE = 10
MAX_OBSERVATIONS = 300
DEFAULT_STEADY_SECONDS = 300.0
DISABLE_ANNOTATION = "trainwright.io/calibration"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
