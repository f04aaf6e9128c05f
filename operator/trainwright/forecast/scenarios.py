"""Named what-ifs applied to a forecast: ``NAME=EXPR`` on the command line.

Three forms, each a multiplier per forecast step:

- ``launch=1.5``: every step times 1.5;
- ``growth=growth:5%/month`` (or ``growth:0.05/30d``, or the shorthand
  ``+5%/month``): compound growth from the forecast origin,
  ``(1 + rate) ** (elapsed_seconds / period_seconds)``;
- ``promo=step:1.3@2026-12-01``: times 1.3 from that date (UTC) on.

Period units: ``h``, ``d``, ``w``, ``month`` (30.436875 days) and ``year``
(365.2425 days), with an optional count (``30d``, ``2w``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from trainwright.forecast._errors import ScenarioError

_UNIT_SECONDS = {
    "h": 3_600.0,
    "d": 86_400.0,
    "w": 604_800.0,
    "month": 2_629_746.0,
    "year": 31_556_952.0,
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_GROWTH = re.compile(
    r"^(?:growth:)?(?P<rate>[+-]?\d+(?:\.\d+)?)(?P<pct>%?)/(?P<count>\d+)?(?P<unit>h|d|w|month|year)$"
)
_STEP = re.compile(r"^step:(?P<factor>\d+(?:\.\d+)?)@(?P<when>.+)$")
SYNTAX_HELP = (
    "NAME=MULTIPLIER (launch=1.5), NAME=growth:RATE/PERIOD (growth=growth:5%/month, "
    "growth:0.05/30d, +5%/month) or NAME=step:FACTOR@DATE (promo=step:1.3@2026-12-01)"
)


@dataclass(frozen=True)
class Scenario:
    """A named multiplier path: constant, compound growth, or a step from a date."""

    name: str
    expression: str
    multiplier: float = 1.0
    growth_rate: float = 0.0
    growth_period_seconds: float = 0.0
    step_at: pd.Timestamp | None = None

    def factors(self, timestamps: pd.DatetimeIndex, origin: pd.Timestamp) -> NDArray[np.float64]:
        """The multiplier for each forecast timestamp (``origin`` = last observation)."""
        factors = np.full(len(timestamps), self.multiplier, dtype=np.float64)
        if self.growth_period_seconds > 0:
            elapsed_seconds = (timestamps.asi8 - origin.value) / 1e9
            factors *= (1.0 + self.growth_rate) ** (elapsed_seconds / self.growth_period_seconds)
        if self.step_at is not None:
            factors = np.where(timestamps >= self.step_at, factors, 1.0)
        return factors


def parse_scenario(text: str) -> Scenario:
    """Parse ``NAME=EXPR``; raises :class:`ScenarioError` naming the accepted forms."""
    name, sep, expression = text.partition("=")
    name, expression = name.strip(), expression.strip()
    if not sep or not _NAME.match(name) or not expression:
        raise ScenarioError(f"--scenario {text!r} must look like {SYNTAX_HELP}")
    growth = _GROWTH.match(expression)
    if growth:
        rate = float(growth["rate"]) / (100.0 if growth["pct"] else 1.0)
        if rate <= -1.0:
            raise ScenarioError(f"--scenario {text!r}: a growth rate must be above -100%")
        period_seconds = int(growth["count"] or 1) * _UNIT_SECONDS[growth["unit"]]
        if period_seconds <= 0:
            raise ScenarioError(f"--scenario {text!r}: the growth period must be positive")
        return Scenario(
            name=name,
            expression=expression,
            growth_rate=rate,
            growth_period_seconds=period_seconds,
        )
    step = _STEP.match(expression)
    if step:
        try:
            when = pd.Timestamp(step["when"])
        except ValueError:
            raise ScenarioError(
                f"--scenario {text!r}: {step['when']!r} is not an ISO 8601 date"
            ) from None
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
        return Scenario(
            name=name, expression=expression, multiplier=float(step["factor"]), step_at=when
        )
    try:
        multiplier = float(expression)
    except ValueError:
        raise ScenarioError(f"--scenario {text!r} must look like {SYNTAX_HELP}") from None
    if not multiplier > 0 or multiplier == float("inf"):
        raise ScenarioError(f"--scenario {text!r}: the multiplier must be a positive number")
    return Scenario(name=name, expression=expression, multiplier=multiplier)
