"""The planner's data: models, GPUs and dated prices, each entry with its source."""

from __future__ import annotations

from trainwright.planner.catalog.gpus import GPUS
from trainwright.planner.catalog.models import MODELS
from trainwright.planner.catalog.prices import PRICES, Price
from trainwright.vocabulary import CLOUDS

__all__ = ["CLOUDS", "GPUS", "MODELS", "PRICES", "Price"]
