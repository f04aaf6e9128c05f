"""The forecast as the JSON document of the CLI contract (CONTRACTS.md, ``trainwright forecast``)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from trainwright.forecast.engine import Band, ForecastResult


def _number(value: float) -> float | None:
    """Six significant digits; ``None`` (JSON null) for a figure that could not be computed."""
    return float(f"{value:.6g}") if math.isfinite(value) else None


def rows(timestamps: pd.DatetimeIndex, band: Band) -> list[dict[str, Any]]:
    """One ``{timestamp, mean, lower_80, upper_80, lower_95, upper_95}`` row per step."""
    return [
        {
            "timestamp": stamp.isoformat(),
            "mean": _number(float(band.mean[i])),
            "lower_80": _number(float(band.lower[80][i])),
            "upper_80": _number(float(band.upper[80][i])),
            "lower_95": _number(float(band.lower[95][i])),
            "upper_95": _number(float(band.upper[95][i])),
        }
        for i, stamp in enumerate(timestamps)
    ]


def to_document(result: ForecastResult) -> dict[str, Any]:
    """The contract keys, plus the explanation, warnings, gaps filled and timings."""
    backtest = result.backtest
    return {
        "interval_seconds": result.interval_seconds,
        "season_lengths": list(result.season_lengths),
        "models": {
            name: {"weight": report.weight, "mase": _number(report.mase), **report.params}
            for name, report in result.models.items()
        },
        "forecast": rows(result.timestamps, result.band),
        "scenarios": {
            name: rows(result.timestamps, band) for name, band in result.scenarios.items()
        },
        "backtest": {
            "mase": _number(backtest.mase),
            "seasonal_naive_mase": _number(backtest.seasonal_naive_mase),
            "coverage_80": _number(backtest.coverage_80),
            "coverage_95": _number(backtest.coverage_95),
            "origins": backtest.origins,
            "horizon": backtest.horizon,
            "interval_method": backtest.interval_method,
        },
        "explanation": result.explanation,
        "gaps_filled": list(result.gaps_filled),
        "refresh": result.refresh,
        "fit_seconds": round(result.fit_seconds, 3),
        "warnings": list(result.warnings),
    }
