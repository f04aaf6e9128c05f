"""Forecast accuracy and speed, beside statsforecast's AutoARIMA and AutoETS.

Prints, per series: the out-of-sample MASE of our ensemble, of the seasonal naive
method, of statsforecast's AutoARIMA and AutoETS on the same origins and
horizons, and of each of our models, with wall time per fit + forecast; pooled
P80/P95 coverage; the same for held-out series (statsmodels' nile, sunspots,
macrodata realgdp and cpi, elnino, and three synthetic shapes) that were not used
to build the models or their settings (the candidate weighting rules were compared
on them as well as on the test series); and the time
to fit and forecast one year of hourly data (8,760 points, seasons 24 and 168,
horizon 168; goal: under 20 s).

statsforecast is a peer for comparison only (a dev dependency, never imported by
the product). Its AutoARIMA and AutoETS take one season: on single-season series
they get it; on series with several seasons (hourly: 24 and 168) a seasonal ARIMA
with period 48 or 168 runs for many minutes, so they run as the trend model inside
statsforecast's own MSTL (``MSTL(season_length=[...], trend_forecaster=...)``),
statsforecast's recommended way for multiple seasonality.

Run: .venv/bin/python benchmarks/bench_forecast.py [--full | --rolling] [--no-peers] [--no-held-out]
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
from trainwright.forecast.engine import DEFAULT_MODELS, mase_scale
from trainwright.forecast.evaluation import evaluate, origin_points

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "forecast"


@dataclass(frozen=True)
class Case:
    name: str
    load: Callable[[], PreparedSeries]
    horizon: int
    origins: int
    step: int | None = None  # None: origins one horizon apart


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


def _pairs(stamps: pd.DatetimeIndex, values: Any) -> PreparedSeries:
    return prepare(from_pairs([t.isoformat() for t in stamps], [float(v) for v in values]))


def _annual(name: str, year: str, column: str) -> Callable[[], PreparedSeries]:
    def load() -> PreparedSeries:
        from statsmodels import datasets

        data = getattr(datasets, name).load_pandas().data
        stamps = pd.to_datetime(data[year].astype(int).astype(str) + "-01-01")
        return _pairs(pd.DatetimeIndex(stamps), data[column])

    return load


def _macro(column: str) -> Callable[[], PreparedSeries]:
    def load() -> PreparedSeries:
        from statsmodels.datasets import macrodata

        data = macrodata.load_pandas().data
        stamps = pd.date_range("1959-01-01", periods=len(data), freq="QS")
        return _pairs(stamps, data[column])

    return load


def _elnino() -> PreparedSeries:
    from statsmodels.datasets import elnino

    data = elnino.load_pandas().data
    values = data.drop(columns="YEAR").to_numpy().ravel()
    return _pairs(pd.date_range("1950-01-01", periods=len(values), freq="MS"), values)


def _synthetic_monthly_multiplicative(seed: int = 303) -> PreparedSeries:
    """15 years of monthly demand: growth, a season whose swing grows with the level."""
    rng = np.random.default_rng(seed)
    t = np.arange(180)
    season = 1.0 + 0.25 * np.sin(2 * np.pi * t / 12) + 0.1 * np.cos(4 * np.pi * t / 12)
    values = (500.0 * 1.008**t) * season * np.exp(rng.normal(0.0, 0.04, len(t)))
    return _pairs(pd.date_range("2010-01-01", periods=len(t), freq="MS"), values)


def _synthetic_daily_slope_reversal(seed: int = 202) -> PreparedSeries:
    """Three years of daily demand whose growth turns into decline in the last year."""
    rng = np.random.default_rng(seed)
    t = np.arange(1_095)
    weekly = np.array([4.0, 6.0, 5.0, 5.0, 2.0, -9.0, -13.0])[t % 7]
    trend = 80.0 + np.where(t < 800, 0.08 * t, 64.0 - 0.05 * (t - 800))
    noise = rng.normal(0.0, 3.0, len(t))
    values = trend + weekly + noise + 2.0 * np.sin(2 * np.pi * t / 365.25)
    return _pairs(pd.date_range("2023-01-01", periods=len(t), freq="D"), values)


def _synthetic_hourly_step_down(seed: int = 101) -> PreparedSeries:
    """Six weeks of hourly load, a daily and a weekly cycle, a 15 % drop in week 5."""
    rng = np.random.default_rng(seed)
    t = np.arange(6 * 168)
    daily = 18.0 * np.sin(2 * np.pi * (t % 24 - 6) / 24) ** 2
    weekly = np.where((t // 24) % 7 == 6, -12.0, 0.0)
    level = np.where(t < 4 * 168 + 30, 60.0, 51.0)
    noise = np.zeros(len(t))
    for i in range(1, len(t)):
        noise[i] = 0.7 * noise[i - 1] + rng.normal(0.0, 2.0)
    values = level + daily + weekly + noise
    return _pairs(pd.date_range("2026-03-02", periods=len(t), freq="h"), values)


CASES = [
    Case("AirPassengers", _csv("air_passengers"), 12, 3),
    Case("co2 (monthly)", _co2, 12, 3),
    Case("synthetic daily", _csv("synthetic_daily_level_shift"), 28, 3),
    Case("synthetic hourly", _csv("synthetic_hourly_trend_break"), 168, 2),
    Case("Taylor (30 min)", _taylor, 336, 2),
]

# Held out: not used to build the models or their settings (weighting rules were
# compared on them too); a check that what helps on CASES is not tuned to them.
HELD_OUT = [
    Case("nile (annual)", _annual("nile", "year", "volume"), 10, 3),
    Case("sunspots (annual)", _annual("sunspots", "YEAR", "SUNACTIVITY"), 11, 3),
    Case("realgdp (qtr)", _macro("realgdp"), 8, 3),
    Case("cpi (qtr)", _macro("cpi"), 8, 3),
    Case("elnino (monthly)", _elnino, 12, 3),
    Case("synth monthly mult", _synthetic_monthly_multiplicative, 12, 3),
    Case("synth daily reversal", _synthetic_daily_slope_reversal, 28, 3),
    Case("synth hourly step", _synthetic_hourly_step_down, 168, 2),
]


def _peer_mase(prepared: PreparedSeries, case: Case) -> dict[str, tuple[float, float]]:
    """statsforecast AutoARIMA / AutoETS: MASE and mean seconds per origin."""
    from statsforecast.models import MSTL, AutoARIMA, AutoETS

    values = prepared.series.values
    seasons = list(prepared.season_lengths)
    season = min(seasons, default=1)
    starts = origin_points(len(values), horizon=case.horizon, origins=case.origins, step=case.step)
    scale = mase_scale(values[: starts[0]], season)
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
        for origin in starts:
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mean = make().forecast(y=values[:origin], h=case.horizon)["mean"]
            seconds += time.perf_counter() - started
            errors.extend(np.abs(values[origin : origin + case.horizon] - mean).tolist())
        figures[name] = (float(np.mean(errors)) / scale, seconds / case.origins)
    return figures


def _run_block(title: str, cases: list[Case], args: argparse.Namespace) -> tuple[int, int, int]:
    """Print one table; return P80 hits, P95 hits and points for the pooled coverage."""
    print(title)
    print(
        f"{'series':20} {'h':>4} {'orig':>4} {'ours':>6} {'snaive':>6} {'AutoARIMA':>9} "
        f"{'AutoETS':>8} {'sf best':>7} "
        + " ".join(f"{name:>6}" for name in DEFAULT_MODELS)
        + f" {'ours s':>6} {'peers s':>7}"
    )
    hits_80 = hits_95 = points = 0
    for case in cases:
        prepared = case.load()
        if args.rolling:
            # origins a quarter horizon apart: 12 (4 for week-long horizons, for time)
            case = Case(case.name, case.load, case.horizon, 4 if case.horizon >= 168 else 12,
                        max(1, case.horizon // 4))  # fmt: skip
        elif args.full:
            case = Case(case.name, case.load, case.horizon, case.origins + 2)
        result = evaluate(prepared, horizon=case.horizon, origins=case.origins, step=case.step)
        hits_80, hits_95, points = (
            hits_80 + result.hits_80,
            hits_95 + result.hits_95,
            points + result.points,
        )
        peers = {} if args.no_peers else _peer_mase(prepared, case)
        arima, ets = (peers.get(name, (np.nan, 0.0))[0] for name in ("AutoARIMA", "AutoETS"))
        models = result.model_mase
        per_model = " ".join(
            f"{models[name]:6.3f}" if name in models else f"{'-':>6}" for name in DEFAULT_MODELS
        )
        print(
            f"{case.name:20} {case.horizon:>4} {case.origins:>4} {result.mase:6.3f} "
            f"{result.seasonal_naive_mase:6.3f} {arima:9.3f} {ets:8.3f} {min(arima, ets):7.3f} "
            f"{per_model} {np.mean(result.fit_seconds):6.1f} "
            f"{sum(s for _, s in peers.values()):7.1f}",
            flush=True,
        )
    return hits_80, hits_95, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more origins (slower)")
    parser.add_argument(
        "--rolling",
        action="store_true",
        help="12 origins a quarter horizon apart (4 for horizons of a week or more) instead "
        "of 2-3 one horizon apart: less noise in who wins (slower)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip statsforecast")
    parser.add_argument("--no-held-out", action="store_true", help="only the test series")
    args = parser.parse_args()
    print("forecast accuracy: out-of-sample MASE (lower is better), seconds per fit+forecast")
    print("(peers on multi-season series: statsforecast MSTL with AutoARIMA / AutoETS trend)")
    hits_80, hits_95, points = _run_block("test series (the accuracy tests use them)", CASES, args)
    print(
        f"pooled interval coverage: P80 {hits_80 / points:.3f}, P95 {hits_95 / points:.3f} "
        f"({points} points)"
    )
    if not args.no_held_out:
        hits_80, hits_95, points = _run_block(
            "held out (not used to build models or settings; weighting rules were compared on them)",
            HELD_OUT,
            args,
        )
        print(
            f"held-out interval coverage: P80 {hits_80 / points:.3f}, "
            f"P95 {hits_95 / points:.3f} ({points} points)"
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
