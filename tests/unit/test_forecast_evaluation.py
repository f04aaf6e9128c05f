"""Out-of-sample evaluation: where its origins fall and what it scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainwright.forecast import forecast, from_pairs, prepare
from trainwright.forecast.engine import PreparedSeries
from trainwright.forecast.evaluation import _head, evaluate


def _weekly(days: int = 120) -> PreparedSeries:
    rng = np.random.default_rng(3)
    t = np.arange(days)
    values = 300.0 + 0.5 * t + np.array([20, 25, 22, 18, 10, -40, -55])[t % 7]
    values = values + rng.normal(0.0, 4.0, days)
    stamps = pd.date_range("2026-01-05", periods=days, freq="D")
    return prepare(from_pairs([s.isoformat() for s in stamps], values.tolist()))


def _errors_from(prepared: PreparedSeries, origin: int, horizon: int) -> list[float]:
    values = prepared.series.values
    fitted = forecast(_head(prepared, origin), horizon=horizon, models=["stl"])
    return np.abs(values[origin : origin + horizon] - fitted.band.mean).tolist()


def test_rolling_origins_a_step_apart_end_at_the_last_point() -> None:
    prepared = _weekly()
    result = evaluate(prepared, horizon=7, origins=4, step=2, models=["stl"])
    assert result.points == 28 and result.origins == 4
    # origins 107, 109, 111, 113: the last window is the series' last seven points
    assert result.ensemble_abs_errors[-7:] == pytest.approx(_errors_from(prepared, 113, 7))
    assert result.ensemble_abs_errors[:7] == pytest.approx(_errors_from(prepared, 107, 7))


def test_default_origins_are_one_horizon_apart() -> None:
    prepared = _weekly()
    result = evaluate(prepared, horizon=7, origins=2, models=["stl"])
    assert result.ensemble_abs_errors[:7] == pytest.approx(_errors_from(prepared, 106, 7))
    assert result.mase < result.seasonal_naive_mase


def test_too_many_origins_for_the_series_is_an_error() -> None:
    with pytest.raises(ValueError, match="need more points"):
        evaluate(_weekly(30), horizon=7, origins=20, step=7, models=["stl"])
