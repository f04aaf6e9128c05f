"""Seasonal periods from the sampling interval, and the choice of a log scale.

Periods follow the calendar cycles demand follows (Hyndman & Athanasopoulos,
*Forecasting: Principles and Practice*, 3rd ed., §2.4, table of seasonal
periods): sub-daily data has a day and a week, daily data a week, weekly data
a year of 52 weeks, monthly data 12, quarterly data 4, yearly data none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from trainwright.forecast._errors import SeriesError
from trainwright.forecast.series import Interval

_DAY_SECONDS = 86_400
_WEEK_SECONDS = 7 * _DAY_SECONDS


def infer_season_lengths(interval: Interval) -> tuple[int, ...]:
    """Seasonal periods, in points, that the interval implies (before checking the length)."""
    if interval.is_calendar:
        return {1: (12,), 3: (4,)}.get(interval.months, ())
    seconds = interval.seconds
    if seconds == _WEEK_SECONDS:
        return (52,)
    if seconds == _DAY_SECONDS:
        return (7,)
    if seconds < _DAY_SECONDS and _DAY_SECONDS % seconds == 0:
        return (_DAY_SECONDS // seconds, _WEEK_SECONDS // seconds)
    return ()


def resolve_season_lengths(
    interval: Interval, points: int, explicit: Sequence[int] | None
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The seasons to model and any notes, after checking two full seasons fit in ``points``.

    Explicit seasons that lack two cycles are an error; inferred ones are
    dropped with a note, unless none is left.
    """
    if explicit:
        for season in explicit:
            if season < 2:
                raise SeriesError(f"--season-length must be at least 2, got {season}")
            if points < 2 * season:
                raise SeriesError(
                    f"--season-length {season} needs at least {2 * season} points (two seasons); "
                    f"the series has {points}"
                )
        return tuple(sorted(set(explicit))), ()
    inferred = infer_season_lengths(interval)
    kept = tuple(m for m in inferred if points >= 2 * m)
    if inferred and not kept:
        shortest = min(inferred)
        raise SeriesError(
            f"the series has {points} points; at least {2 * shortest} (two seasons of {shortest}) "
            "are needed to forecast it (or pass --season-length)"
        )
    notes = tuple(
        f"season {m} dropped: it needs {2 * m} points and the series has {points}"
        for m in inferred
        if m not in kept
    )
    return kept, notes


def seasonal_amplitude_grows_with_level(values: NDArray[np.float64], season: int) -> bool:
    """True when the seasonal swing scales with the level, so a log scale makes it additive.

    Each full cycle gives its mean (level) and standard deviation after removing a
    linear trend within the cycle (swing); a strong positive correlation of swing with
    level over cycles whose levels differ by at least 30 % is the multiplicative
    pattern (Hyndman & Athanasopoulos, *FPP* 3rd ed., §3.1 on log transforms).
    """
    if season < 2 or float(values.min()) <= 0:
        return False
    cycles = len(values) // season
    if cycles < 3:
        return False
    tail = values[len(values) - cycles * season :].reshape(cycles, season)
    x = np.arange(season, dtype=np.float64)
    levels = tail.mean(axis=1)
    swings = np.array([np.std(row - np.polyval(np.polyfit(x, row, 1), x)) for row in tail])
    if float(levels.max()) < 1.3 * float(levels.min()) or float(swings.std()) == 0.0:
        return False
    return bool(np.corrcoef(levels, swings)[0, 1] > 0.7)
