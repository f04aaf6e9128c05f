"""Out-of-sample evaluation: the whole forecaster, refitted at several origins.

Each origin hides the last points of the series, runs :func:`forecast` on the
rest (its own inner backtest, weights and interval calibration included) and
scores the hidden points: MASE of the ensemble, of each model and of the
seasonal naive method (Hyndman & Koehler 2006), and the share of points inside
the P80 and P95 bands. The accuracy tests and ``benchmarks/bench_forecast.py``
use it; ``trainwright forecast`` reports the inner backtest instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trainwright.forecast.engine import (
    DEFAULT_MODELS,
    PreparedSeries,
    forecast,
    mase_scale,
)
from trainwright.forecast.models import seasonal_naive
from trainwright.forecast.series import TimeSeries


@dataclass
class Evaluation:
    """Pooled absolute errors and band hits over all origins (original units)."""

    horizon: int
    origins: int = 0
    scale: float = 1.0
    ensemble_abs_errors: list[float] = field(default_factory=list)
    naive_abs_errors: list[float] = field(default_factory=list)
    model_abs_errors: dict[str, list[float]] = field(default_factory=dict)
    hits_80: int = 0
    hits_95: int = 0
    fit_seconds: list[float] = field(default_factory=list)

    @property
    def points(self) -> int:
        return len(self.ensemble_abs_errors)

    @property
    def mase(self) -> float:
        return float(np.mean(self.ensemble_abs_errors)) / self.scale

    @property
    def seasonal_naive_mase(self) -> float:
        return float(np.mean(self.naive_abs_errors)) / self.scale

    @property
    def model_mase(self) -> dict[str, float]:
        return {n: float(np.mean(e)) / self.scale for n, e in self.model_abs_errors.items()}

    @property
    def coverage_80(self) -> float:
        return self.hits_80 / self.points

    @property
    def coverage_95(self) -> float:
        return self.hits_95 / self.points


def _head(prepared: PreparedSeries, points: int) -> PreparedSeries:
    series: TimeSeries = prepared.series.head(points)
    return PreparedSeries(series=series, season_lengths=prepared.season_lengths)


def origin_points(length: int, *, horizon: int, origins: int, step: int | None = None) -> list[int]:
    """Where ``origins`` forecasts start, ``step`` apart (default ``horizon``), the last
    window ending at the last of ``length`` points."""
    step = step or horizon
    first = length - horizon - step * (origins - 1)
    if first < 2:
        raise ValueError(f"{origins} origins {step} apart with horizon {horizon} need more points")
    return [first + step * i for i in range(origins)]


def evaluate(
    prepared: PreparedSeries,
    *,
    horizon: int,
    origins: int = 3,
    step: int | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
) -> Evaluation:
    """Forecast from ``origins`` origins before the end and score the hidden points.

    Origins are ``step`` points apart (default ``horizon``: the forecast windows do
    not overlap); the last window ends at the last point. A smaller step gives more
    origins over the same stretch (Tashman 2000's rolling origin), so the figures
    depend less on which few windows were hidden.
    """
    values = prepared.series.values
    seasons = prepared.season_lengths
    starts = origin_points(len(values), horizon=horizon, origins=origins, step=step)
    result = Evaluation(horizon=horizon, origins=origins)
    result.scale = mase_scale(values[: starts[0]], min(seasons, default=1))
    for origin in starts:
        actual = values[origin : origin + horizon]
        fitted = forecast(_head(prepared, origin), horizon=horizon, models=models)
        band = fitted.band
        result.ensemble_abs_errors.extend(np.abs(actual - band.mean).tolist())
        naive = seasonal_naive(values[:origin], max(seasons, default=1), horizon).mean
        result.naive_abs_errors.extend(np.abs(actual - naive).tolist())
        for name, mean in fitted.model_means.items():
            result.model_abs_errors.setdefault(name, []).extend(np.abs(actual - mean).tolist())
        result.hits_80 += int(np.sum((actual >= band.lower[80]) & (actual <= band.upper[80])))
        result.hits_95 += int(np.sum((actual >= band.lower[95]) & (actual <= band.upper[95])))
        result.fit_seconds.append(fitted.fit_seconds)
    return result
