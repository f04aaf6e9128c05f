"""Accuracy: the whole forecaster, refitted at out-of-sample origins, on packaged series.

Series: AirPassengers (shipped CSV, 144 months), statsmodels' ``co2`` (monthly
means), pmdarima's Taylor half-hourly electricity demand, and two seeded synthetic
series with known seasonality and a trend break / level shift
(``tests/data/forecast/make_synthetic.py``). On every one the ensemble's MASE must
beat the seasonal naive method and be within 5 % of the best single model; P80
and P95 coverage, pooled over all series, must be near nominal.
"""

from __future__ import annotations

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
def test_the_ensemble_is_within_5_percent_of_the_best_single_model(
    name: str, evaluations: dict[str, Evaluation]
) -> None:
    result = evaluations[name]
    assert result.mase <= 1.05 * min(result.model_mase.values()), (result.mase, result.model_mase)


def test_pooled_interval_coverage_is_near_nominal(evaluations: dict[str, Evaluation]) -> None:
    points = sum(e.points for e in evaluations.values())
    coverage_80 = sum(e.hits_80 for e in evaluations.values()) / points
    coverage_95 = sum(e.hits_95 for e in evaluations.values()) / points
    assert 0.70 <= coverage_80 <= 0.90, coverage_80
    assert 0.88 <= coverage_95 <= 0.99, coverage_95
