"""Forecast accuracy and speed, beside statsforecast's AutoARIMA and AutoETS.

Prints, per series: the out-of-sample MASE of our ensemble, of the seasonal naive
method and of statsforecast's AutoARIMA and AutoETS on the same origins and
horizons, with wall time per fit + forecast; pooled P80/P95 coverage; and the time
to fit and forecast one year of hourly data (8,760 points, seasons 24 and 168,
horizon 168; goal: under 20 s).

statsforecast is a peer for comparison only (a dev dependency, never imported by
the product). Its AutoARIMA and AutoETS take one season: on single-season series
they get it; on series with several seasons (hourly: 24 and 168) a seasonal ARIMA
with period 48 or 168 runs for many minutes, so they run as the trend model inside
statsforecast's own MSTL (``MSTL(season_length=[...], trend_forecaster=...)``),
statsforecast's recommended way for multiple seasonality.

Run: .venv/bin/python benchmarks/bench_forecast.py [--full]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainwright.forecast import PreparedSeries, forecast, from_pairs, parse_series, prepare
from trainwright.forecast.engine import mase_scale
from trainwright.forecast.evaluation import evaluate

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "forecast"


@dataclass(frozen=True)
class Case:
    name: str
    load: Callable[[], PreparedSeries]
    horizon: int
    origins: int


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


def hourly_year(seed: int = 21) -> PreparedSeries:
    """One year of hourly request rates: daily and weekly cycles, growth, AR(1) noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(8_760)
    daily = 30.0 * np.sin(2 * np.pi * (t % 24 - 8) / 24)
    weekly = np.where((t // 24) % 7 >= 5, -20.0, 5.0)
    noise = np.zeros(len(t))
    shocks = rng.normal(0.0, 3.0, len(t))
    for i in range(1, len(t)):
        noise[i] = 0.5 * noise[i - 1] + shocks[i]
    values = 120.0 + 0.004 * t + daily + weekly + noise
    stamps = pd.date_range("2025-01-06", periods=len(t), freq="h")
    return prepare(from_pairs([s.isoformat() for s in stamps], values.tolist()))


CASES = [
    Case("AirPassengers", _csv("air_passengers"), 12, 3),
    Case("co2 (monthly)", _co2, 12, 3),
    Case("synthetic daily", _csv("synthetic_daily_level_shift"), 28, 3),
    Case("synthetic hourly", _csv("synthetic_hourly_trend_break"), 168, 2),
    Case("Taylor (30 min)", _taylor, 336, 2),
]


def _peer_mase(prepared: PreparedSeries, case: Case) -> dict[str, tuple[float, float]]:
    """statsforecast AutoARIMA / AutoETS: MASE and mean seconds per origin."""
    from statsforecast.models import MSTL, AutoARIMA, AutoETS

    values = prepared.series.values
    seasons = list(prepared.season_lengths)
    season = min(seasons, default=1)
    scale = mase_scale(values[: len(values) - case.horizon * case.origins], season)
    figures: dict[str, tuple[float, float]] = {}
    peers: tuple[tuple[str, Callable[[], Any]], ...]
    if len(seasons) > 1:
        peers = (
            ("AutoARIMA", lambda: MSTL(season_length=seasons, trend_forecaster=AutoARIMA())),
            ("AutoETS", lambda: MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))),
        )
    else:
        peers = (
            ("AutoARIMA", lambda: AutoARIMA(season_length=season)),
            ("AutoETS", lambda: AutoETS(season_length=season)),
        )
    for name, make in peers:
        errors: list[float] = []
        seconds = 0.0
        for i in range(case.origins):
            origin = len(values) - case.horizon * (case.origins - i)
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mean = make().forecast(y=values[:origin], h=case.horizon)["mean"]
            seconds += time.perf_counter() - started
            errors.extend(np.abs(values[origin : origin + case.horizon] - mean).tolist())
        figures[name] = (float(np.mean(errors)) / scale, seconds / case.origins)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more origins (slower)")
    parser.add_argument("--no-peers", action="store_true", help="skip statsforecast")
    args = parser.parse_args()
    print("forecast accuracy: out-of-sample MASE (lower is better), seconds per fit+forecast")
    print("(peers on multi-season series: statsforecast MSTL with AutoARIMA / AutoETS trend)")
    print(
        f"{'series':18} {'h':>4} {'origins':>7} {'ours':>6} {'snaive':>6} {'AutoARIMA':>9} "
        f"{'AutoETS':>8} {'best model':>16} {'ours s':>7} {'peers s':>8}"
    )
    hits_80 = hits_95 = points = 0
    for case in CASES:
        prepared = case.load()
        origins = case.origins + (2 if args.full else 0)
        case = Case(case.name, case.load, case.horizon, origins)
        result = evaluate(prepared, horizon=case.horizon, origins=case.origins)
        hits_80, hits_95, points = (
            hits_80 + result.hits_80,
            hits_95 + result.hits_95,
            points + result.points,
        )
        peers = {} if args.no_peers else _peer_mase(prepared, case)
        best_name, best_mase = min(result.model_mase.items(), key=lambda kv: kv[1])
        peer_seconds = sum(s for _, s in peers.values())
        print(
            f"{case.name:18} {case.horizon:>4} {case.origins:>7} {result.mase:6.3f} "
            f"{result.seasonal_naive_mase:6.3f} "
            f"{peers.get('AutoARIMA', (np.nan, 0))[0]:9.3f} {peers.get('AutoETS', (np.nan, 0))[0]:8.3f} "
            f"{best_name + f' {best_mase:.3f}':>16} {np.mean(result.fit_seconds):7.1f} "
            f"{peer_seconds:8.1f}",
            flush=True,
        )
    print(
        f"pooled interval coverage: P80 {hits_80 / points:.3f}, P95 {hits_95 / points:.3f} "
        f"({points} points)"
    )
    year = hourly_year()
    started = time.perf_counter()
    result = forecast(year, horizon=168)
    seconds = time.perf_counter() - started
    print(
        f"one year hourly (8,760 points, seasons {list(year.season_lengths)}, horizon 168): "
        f"fit + backtest + forecast {seconds:.1f} s (goal < 20 s); "
        f"backtest MASE {result.backtest.mase:.3f} vs seasonal naive "
        f"{result.backtest.seasonal_naive_mase:.3f}"
    )


if __name__ == "__main__":
    main()
