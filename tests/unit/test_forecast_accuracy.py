"""Accuracy: the whole forecaster, refitted at out-of-sample origins, on packaged series.

Series: AirPassengers (shipped CSV, 144 months), statsmodels' ``co2`` (monthly
means), pmdarima's Taylor half-hourly electricity demand, and two seeded synthetic
series with known seasonality and a trend break / level shift
(``tests/data/forecast/make_synthetic.py``). On every one the ensemble's MASE must
beat the seasonal naive method and stay at its measured value (a regression
fails); P80 and P95 coverage, pooled over all series, must be near nominal.

The ensemble is within 5 % of the best single model (known only in hindsight) on
co2 and the hourly synthetic; on AirPassengers, the daily synthetic and Taylor it
is not (docs/forecast.md, "Known gaps"), and the test holds it to today's ratio.
Across the five series it is within 5 % of any one model used for all of them.
statsforecast's figures live in benchmarks/bench_forecast.py, not here (slow).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from trainwright.forecast import PreparedSeries, from_pairs, parse_series, prepare
from trainwright.forecast.evaluation import Evaluation, evaluate

DATA = Path(__file__).resolve().parents[1] / "data" / "forecast"


def _csv(name: str) -> Callable[[], PreparedSeries]:
    return lambda: prepare(parse_series((DATA / f"{name}.csv").read_text()))


def _co2() -> PreparedSeries:
    from statsmodels.datasets import co2

    monthly = co2.load_pandas().data["co2"].resample("MS").mean().dropna()
    return prepare(from_pairs([t.isoformat() for t in monthly.index], monthly.tolist()))


def _taylor() -> PreparedSeries:
    from pmdarima.datasets import load_taylor

    values = load_taylor()
    stamps = pd.date_range("2000-06-05", periods=len(values), freq="30min")
    return prepare(from_pairs([t.isoformat() for t in stamps], values.tolist()))


# Out-of-sample ensemble MASE measured on 2026-11-23 (benchmarks/bench_forecast.py).
MEASURED_MASE = {
    "air_passengers": 0.764,
    "co2_monthly": 0.235,
    "taylor_half_hourly": 0.200,
    "synthetic_hourly_trend_break": 0.486,
    "synthetic_daily_level_shift": 0.951,
}
# Ensemble MASE over the best single model's, where that exceeds the 5 % goal.
KNOWN_GAP_RATIO = {
    "air_passengers": 1.22,  # theta 0.633 (sarima 0.663, arima 0.720)
    "synthetic_daily_level_shift": 1.10,  # sarima 0.871
    "taylor_half_hourly": 1.10,  # arima 0.183
}

# name: (loader, horizon, origins)
SERIES: dict[str, tuple[Callable[[], PreparedSeries], int, int]] = {
    "air_passengers": (_csv("air_passengers"), 12, 3),
    "co2_monthly": (_co2, 12, 3),
    "taylor_half_hourly": (_taylor, 336, 2),
    "synthetic_hourly_trend_break": (_csv("synthetic_hourly_trend_break"), 168, 2),
    "synthetic_daily_level_shift": (_csv("synthetic_daily_level_shift"), 28, 3),
}


@pytest.fixture(scope="module")
def evaluations() -> dict[str, Evaluation]:
    results = {}
    for name, (load, horizon, origins) in SERIES.items():
        results[name] = evaluate(load(), horizon=horizon, origins=origins)
    return results


def test_air_passengers_sum_matches_the_published_series() -> None:
    prepared = _csv("air_passengers")()
    assert len(prepared.series) == 144
    assert float(prepared.series.values.sum()) == 40_363.0


@pytest.mark.parametrize("name", list(SERIES))
def test_the_ensemble_beats_seasonal_naive(name: str, evaluations: dict[str, Evaluation]) -> None:
    result = evaluations[name]
    assert result.mase < result.seasonal_naive_mase, (result.mase, result.seasonal_naive_mase)


@pytest.mark.parametrize("name", list(SERIES))
def test_the_ensemble_keeps_its_measured_accuracy(
    name: str, evaluations: dict[str, Evaluation]
) -> None:
    assert evaluations[name].mase <= MEASURED_MASE[name] * 1.02, evaluations[name].model_mase


@pytest.mark.parametrize("name", list(SERIES))
def test_the_ensemble_stays_near_the_best_single_model(
    name: str, evaluations: dict[str, Evaluation]
) -> None:
    result = evaluations[name]
    ratio = KNOWN_GAP_RATIO.get(name, 1.05)
    assert result.mase <= ratio * min(result.model_mase.values()), (result.mase, result.model_mase)


def test_across_the_series_the_ensemble_is_within_5_percent_of_any_one_model_used_for_all(
    evaluations: dict[str, Evaluation],
) -> None:
    """The choice a user has without the ensemble: one model for every series.

    Geometric mean over the five series of the ensemble's MASE over the model's
    (how forecasting competitions rank methods across a set), for each model that
    forecasts all five (the seasonal ARIMA takes one short season, so not the two
    sub-daily series: on its three the figure is 1.066, docs/forecast.md).
    """
    ratios = {}
    for model in ("arima", "ets", "stl", "theta"):
        logs = [math.log(e.mase / e.model_mase[model]) for e in evaluations.values()]
        ratios[model] = math.exp(sum(logs) / len(logs))
    assert max(ratios.values()) <= 1.05, ratios
    assert ratios["arima"] == pytest.approx(0.995, abs=0.02), ratios  # the closest


def test_pooled_interval_coverage_is_near_nominal(evaluations: dict[str, Evaluation]) -> None:
    points = sum(e.points for e in evaluations.values())
    coverage_80 = sum(e.hits_80 for e in evaluations.values()) / points
    coverage_95 = sum(e.hits_95 for e in evaluations.values()) / points
    assert 0.70 <= coverage_80 <= 0.90, coverage_80
    assert 0.88 <= coverage_95 <= 0.99, coverage_95
