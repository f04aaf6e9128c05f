"""The forecasting engine: model search, rolling-origin backtest, weighted ensemble, intervals.

1. The series (on a log scale when its seasonal swing grows with its level) is
   fitted by each model on its last ``fit_window`` points; the model search
   (ARIMA orders, ETS trend) runs once here.
2. A rolling-origin backtest (Tashman 2000, "Out-of-sample tests of forecasting
   accuracy") refits each model's chosen structure at a few origins and scores
   it by MASE (Hyndman & Koehler 2006, "Another look at measures of forecast
   accuracy": mean absolute error over the in-sample mean absolute seasonal
   difference).
3. Models the backtest cannot tell apart from the best one (a 75 % model
   confidence set, Hansen, Lunde & Nason 2011, tested on the per-origin MASE)
   are combined with weights proportional to 1 / MASE (inverse error weighting,
   Bates & Granger 1969); models significantly worse, or over 3x the best, get
   none. The ensemble mean and standard deviation are the weighted sums of the
   models'.
4. Intervals: the backtest's standardized errors ``(actual - mean) / sigma`` are
   pooled; when the model bands cover more than 5 points away from nominal, the
   band multiplier becomes the empirical quantile of ``|z|`` (split-conformal,
   Lei et al. 2018) instead of the normal quantile. Reported coverage is
   leave-one-origin-out, so it is out of sample.
5. :func:`update` refits on new points reusing orders, weights and multipliers,
   and redoes the search only when the error on the new points drifts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from trainwright.forecast._errors import SeriesError
from trainwright.forecast.models import (
    LEVELS,
    MODEL_TYPES,
    Z_BY_LEVEL,
    FittedModel,
    Prediction,
    SeriesContext,
    seasonal_naive,
)
from trainwright.forecast.scenarios import Scenario
from trainwright.forecast.seasonality import (
    infer_season_lengths,
    resolve_season_lengths,
    seasonal_amplitude_grows_with_level,
)
from trainwright.forecast.series import RawSeries, TimeSeries, infer_interval, regularize

FloatArray = NDArray[np.float64]
Transform = Literal["auto", "log", "none"]

DEFAULT_MODELS: tuple[str, ...] = ("arima", "ets", "sarima", "stl", "theta")
# Models worse than this multiple of the best backtest MASE get no weight (broken fits).
ELIGIBLE_MASE_RATIO = 3.0
# Significance level of the backtest's model confidence set (Hansen et al. 2011's 75 % set).
CONFIDENCE_SET_ALPHA = 0.25
# Backtest coverage this far from nominal means the model bands are miscalibrated.
COVERAGE_TOLERANCE = 0.05
# Fewest pooled backtest errors from which empirical interval quantiles are trusted.
MIN_CALIBRATION_ERRORS = 20
# Most backtest origins (a short horizon gets more of them).
MAX_ORIGINS = 10
# New-point MASE above this multiple of the backtest MASE triggers a full refit.
DRIFT_RATIO = 1.5


@dataclass(frozen=True)
class PreparedSeries:
    """A regular series with the seasonal periods it will be modelled with."""

    series: TimeSeries
    season_lengths: tuple[int, ...]
    notes: tuple[str, ...] = ()


def prepare(
    raw: RawSeries,
    *,
    season_lengths: Sequence[int] | None = None,
    max_gap_points: int | None = None,
) -> PreparedSeries:
    """Align ``raw`` to its interval, fill short gaps and settle the seasonal periods."""
    present = raw.timestamps[~np.isnan(raw.values)].sort_values()
    if len(present) < 3:
        raise SeriesError(f"the series has {len(present)} numeric points; at least 3 needed")
    if present.has_duplicates:
        first = present[present.duplicated()][0].isoformat()
        raise SeriesError(f"timestamp {first} appears more than once; each point needs its own")
    interval = infer_interval(present)
    gap_seasons = season_lengths or infer_season_lengths(interval)
    series = regularize(
        raw, season_lengths=gap_seasons, max_gap_points=max_gap_points, interval=interval
    )
    seasons, notes = resolve_season_lengths(interval, len(series), season_lengths)
    return PreparedSeries(series=series, season_lengths=seasons, notes=series.warnings + notes)


@dataclass(frozen=True)
class ModelReport:
    """One model's share of the ensemble and why."""

    weight: float
    mase: float
    params: dict[str, Any]


@dataclass(frozen=True)
class Backtest:
    """Rolling-origin backtest figures (MASE, and out-of-sample interval coverage)."""

    mase: float
    seasonal_naive_mase: float
    coverage_80: float
    coverage_95: float
    origins: int
    horizon: int
    model_mase: dict[str, float]
    interval_method: str


@dataclass(frozen=True)
class Band:
    """A forecast path on the original scale."""

    mean: FloatArray
    lower: dict[int, FloatArray]
    upper: dict[int, FloatArray]

    def scaled(self, factors: FloatArray) -> Band:
        return Band(
            mean=self.mean * factors,
            lower={k: v * factors for k, v in self.lower.items()},
            upper={k: v * factors for k, v in self.upper.items()},
        )


@dataclass(frozen=True)
class _FitState:
    """What :func:`update` reuses: fitted structures, weights, band multipliers, scales."""

    fits: dict[str, FittedModel]
    weights: dict[str, float]
    multipliers: dict[int, float]
    log_scale: bool
    fit_window: int
    mase_scale: float
    nonnegative: bool


@dataclass(frozen=True)
class ForecastResult:
    """A forecast with its backtest, ensemble weights, explanation and scenarios."""

    timestamps: pd.DatetimeIndex
    band: Band
    interval_seconds: int
    season_lengths: tuple[int, ...]
    models: dict[str, ModelReport]
    backtest: Backtest
    model_means: dict[str, FloatArray]
    scenarios: dict[str, Band]
    explanation: dict[str, Any]
    warnings: tuple[str, ...]
    gaps_filled: tuple[dict[str, Any], ...]
    refresh: str
    fit_seconds: float
    last_observation: pd.Timestamp
    state: _FitState = field(repr=False)


# --- helpers -------------------------------------------------------------------------------


def default_horizon(season_lengths: Sequence[int]) -> int:
    """One longest season ahead (a week of hourly data, a year of monthly), else 12 steps."""
    return max(season_lengths, default=12)


def default_fit_window(season_lengths: Sequence[int]) -> int:
    """Points the models see: eight longest seasons, at least 1,200 (recent data matter most)."""
    return max(1_200, 8 * max(season_lengths, default=1))


def mase_scale(values: FloatArray, season: int) -> float:
    """In-sample mean absolute seasonal difference, the MASE denominator (Hyndman & Koehler 2006)."""
    m = season if len(values) > season else 1
    diffs = np.abs(values[m:] - values[:-m])
    scale = float(np.mean(diffs)) if diffs.size else 0.0
    return scale if scale > 0 else max(float(np.mean(np.abs(values))), 1e-9)


def _to_scale(values: FloatArray, log_scale: bool) -> FloatArray:
    return np.log(values) if log_scale else values


def _from_scale(values: FloatArray, log_scale: bool) -> FloatArray:
    return np.exp(np.clip(values, -700, 700)) if log_scale else values


def _combine(predictions: dict[str, Prediction], weights: dict[str, float]) -> Prediction:
    mean = sum((weights[n] * p.mean for n, p in predictions.items() if n in weights), 0.0)
    sigma = sum((weights[n] * p.sigma for n, p in predictions.items() if n in weights), 0.0)
    return Prediction(mean=np.asarray(mean, dtype=np.float64), sigma=np.asarray(sigma))


def ensemble_weights(model_mase: dict[str, float]) -> dict[str, float]:
    """1 / MASE weights for models within ``ELIGIBLE_MASE_RATIO`` of the best (Bates & Granger 1969)."""
    finite = {n: e for n, e in model_mase.items() if math.isfinite(e)}
    if not finite:
        return {n: 1.0 / len(model_mase) for n in model_mase}
    best = min(finite.values())
    raw = {n: 1.0 / max(e, 1e-9) for n, e in finite.items() if e <= ELIGIBLE_MASE_RATIO * best}
    total = sum(raw.values())
    return {n: raw.get(n, 0.0) / total for n in model_mase}


def confidence_set(origin_mase: dict[str, FloatArray]) -> set[str]:
    """Models not significantly worse than the best in the backtest (a 75 % model confidence set).

    ``origin_mase`` holds each model's MASE at every backtest origin. A model stays
    unless its mean loss over the best model's, divided by its standard error across
    origins, exceeds the one-sided t quantile at 25 % (a one-step version of Hansen,
    Lunde & Nason 2011, "The Model Confidence Set", with their 75 % level; Samuels &
    Sekkel 2017 combine the models such a set keeps). Models over
    ``ELIGIBLE_MASE_RATIO`` times the best are out as broken fits.
    """
    from scipy.stats import t as student_t

    mase = {n: float(np.mean(e)) for n, e in origin_mase.items() if np.all(np.isfinite(e))}
    if not mase:
        return set(origin_mase)
    best = min(mase, key=lambda n: mase[n])
    kept = {best}
    for name, value in mase.items():
        if name == best or value > ELIGIBLE_MASE_RATIO * mase[best]:
            continue
        excess = origin_mase[name] - origin_mase[best]
        origins = excess.size
        spread = float(np.std(excess, ddof=1)) if origins > 1 else 0.0
        if spread == 0.0:
            worse = float(np.mean(excess)) > 0.0
        else:
            t_stat = float(np.mean(excess)) / (spread / math.sqrt(origins))
            worse = t_stat > float(student_t.ppf(1.0 - CONFIDENCE_SET_ALPHA, origins - 1))
        if not worse:
            kept.add(name)
    return kept


def _choose_weights(origin_mase: dict[str, FloatArray]) -> dict[str, float]:
    """Inverse-MASE weights over the models in the backtest's confidence set.

    The single best model gets all the weight only when every other model was
    significantly worse; otherwise the models the backtest cannot tell apart are
    combined, which is safer than picking the one that won a few origins by chance.
    """
    kept = confidence_set(origin_mase)
    mase = {n: float(np.mean(e)) if n in kept else math.inf for n, e in origin_mase.items()}
    return ensemble_weights(mase)


def _band_multipliers(z_scores: FloatArray) -> tuple[dict[int, float], str]:
    """Normal quantiles when the model bands cover near nominal, else empirical |z| quantiles."""
    z_abs = np.abs(z_scores[np.isfinite(z_scores)])
    if z_abs.size < MIN_CALIBRATION_ERRORS:
        return dict(Z_BY_LEVEL), "model"
    multipliers: dict[int, float] = {}
    calibrated = False
    for level in LEVELS:
        nominal = level / 100.0
        if abs(float(np.mean(z_abs <= Z_BY_LEVEL[level])) - nominal) <= COVERAGE_TOLERANCE:
            multipliers[level] = Z_BY_LEVEL[level]
            continue
        rank = min(1.0, math.ceil((z_abs.size + 1) * nominal) / z_abs.size)
        multipliers[level] = float(np.quantile(z_abs, rank, method="higher"))
        calibrated = True
    return multipliers, "backtest-calibrated" if calibrated else "model"


def _bands(
    prediction: Prediction, multipliers: dict[int, float], log_scale: bool, nonnegative: bool
) -> Band:
    lower: dict[int, FloatArray] = {}
    upper: dict[int, FloatArray] = {}
    for level in LEVELS:
        lo, hi = prediction.band(level, multipliers[level])
        lower[level] = _from_scale(lo, log_scale)
        upper[level] = _from_scale(hi, log_scale)
    mean = _from_scale(prediction.mean, log_scale)
    if nonnegative:
        mean = np.maximum(mean, 0.0)
        lower = {k: np.maximum(v, 0.0) for k, v in lower.items()}
        upper = {k: np.maximum(v, 0.0) for k, v in upper.items()}
    return Band(mean=mean, lower=lower, upper=upper)


# --- backtest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BacktestRun:
    origins: int
    horizon: int
    actual: FloatArray  # (origins, horizon), original scale
    naive: FloatArray  # seasonal naive means, original scale
    means: dict[str, FloatArray]  # model -> (origins, horizon), model scale
    sigmas: dict[str, FloatArray]


def _plan_origins(
    points: int, horizon: int, seasons: Sequence[int], origins: int
) -> tuple[int, int]:
    """Backtest origins and horizon that leave each training part two longest seasons."""
    min_train = max(2 * max(seasons, default=1) + 2, 16)
    room = points - min_train
    if room < 1:
        return 0, 0
    bt_horizon = max(1, min(horizon, room // origins))
    return max(1, min(origins, room // bt_horizon)), bt_horizon


def _run_backtest(
    values: FloatArray,
    fits: dict[str, FittedModel],
    seasons: tuple[int, ...],
    *,
    origins: int,
    horizon: int,
    fit_window: int,
    log_scale: bool,
) -> _BacktestRun:
    n = len(values)
    naive_season = max(seasons, default=1)
    actual = np.zeros((origins, horizon))
    naive = np.zeros((origins, horizon))
    means = {name: np.zeros((origins, horizon)) for name in fits}
    sigmas = {name: np.zeros((origins, horizon)) for name in fits}
    for i in range(origins):
        origin = n - horizon * (origins - i)
        train = values[:origin][-fit_window:]
        actual[i] = values[origin : origin + horizon]
        naive[i] = seasonal_naive(train, naive_season, horizon).mean
        context = SeriesContext(_to_scale(train, log_scale), seasons)
        for name, fit in fits.items():
            prediction = fit.refit(context).predict(horizon)
            means[name][i] = prediction.mean
            sigmas[name][i] = prediction.sigma
    return _BacktestRun(origins, horizon, actual, naive, means, sigmas)


def _mase(errors: FloatArray, scale: float) -> float:
    return float(np.mean(np.abs(errors))) / scale


def _loo_coverage(z: FloatArray) -> dict[int, float]:
    """Coverage at each origin with multipliers learnt from the other origins, pooled."""
    hits = {level: 0 for level in LEVELS}
    total = 0
    for i in range(z.shape[0]):
        others = np.delete(z, i, axis=0).ravel()
        multipliers, _ = _band_multipliers(others) if others.size else (dict(Z_BY_LEVEL), "")
        for level in LEVELS:
            hits[level] += int(np.sum(np.abs(z[i]) <= multipliers[level]))
        total += z.shape[1]
    return {level: hits[level] / total if total else math.nan for level in LEVELS}


# --- the explanation ------------------------------------------------------------------------


def _strength(remainder: FloatArray, part: FloatArray) -> float:
    """max(0, 1 - Var(R) / Var(part + R)) (Wang, Smith & Hyndman 2006; FPP3 §4.3)."""
    total = float(np.var(part + remainder))
    return round(max(0.0, 1.0 - float(np.var(remainder)) / total), 4) if total > 0 else 0.0


def _explain(
    context: SeriesContext, stl_like: Prediction, horizon: int, log_scale: bool
) -> dict[str, Any]:
    trend, components = context.decomposition
    seasonal_total = sum(components.values(), np.zeros_like(context.values))
    remainder = context.values - trend - seasonal_total
    level = float(trend[-1])
    trend_path = stl_like.mean - context.seasonal_forecast(horizon)
    if log_scale:
        trend_change = math.exp(float(trend_path[-1]) - level) - 1.0
        swings = {m: math.exp(float(np.ptp(c[-m:]))) - 1.0 for m, c in components.items()}
        level_value = math.exp(level)
    else:
        denom = abs(level) or 1.0
        trend_change = (float(trend_path[-1]) - level) / denom
        swings = {m: float(np.ptp(c[-m:])) / denom for m, c in components.items()}
        level_value = level
    variance = float(np.var(context.values)) or 1.0
    return {
        "level_at_origin": round(level_value, 6),
        "trend_change_over_horizon_pct": round(100.0 * trend_change, 3),
        "seasonal_swing_pct": {str(m): round(100.0 * s, 3) for m, s in swings.items()},
        "trend_strength": _strength(remainder, trend),
        "seasonal_strength": {str(m): _strength(remainder, c) for m, c in components.items()},
        "residual_share_of_variance": round(float(np.var(remainder)) / variance, 4),
        "scale": "log" if log_scale else "linear",
    }


# --- the public entry points --------------------------------------------------------------


def _choose_log(values: FloatArray, seasons: Sequence[int], transform: Transform) -> bool:
    if transform == "log":
        if float(values.min()) <= 0:
            raise SeriesError("transform 'log' needs every value above zero")
        return True
    if transform == "none":
        return False
    return seasonal_amplitude_grows_with_level(values, min(seasons, default=1))


def _fit_models(
    names: Sequence[str], context: SeriesContext
) -> tuple[dict[str, FittedModel], list[str]]:
    fits: dict[str, FittedModel] = {}
    notes: list[str] = []
    skipped: list[str] = []
    for name in names:
        model = MODEL_TYPES[name]()
        if not model.suits(context):
            # e.g. the seasonal ARIMA on hourly data: the other models cover it
            skipped.append(f"model {name} does not apply to seasons {list(context.season_lengths)}")
            continue
        try:
            fits[name] = model.fit(context)
        except (ValueError, np.linalg.LinAlgError) as exc:
            notes.append(f"model {name} could not be fitted and was left out: {exc}")
    if not fits:
        raise SeriesError("no model could be fitted to this series: " + "; ".join(notes + skipped))
    return fits, notes


def _validate_models(models: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in models if m not in MODEL_TYPES]
    if unknown or not models:
        raise SeriesError(
            f"--models accepts a comma-separated subset of {','.join(MODEL_TYPES)}; got "
            f"{','.join(models) or 'nothing'}"
        )
    return tuple(dict.fromkeys(models))


def _single_blas_thread() -> Any:
    """Many small matrix products: threads only contend (4x slower on a shared 2-core box)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    return threadpool_limits(limits=1)


def forecast(
    prepared: PreparedSeries,
    *,
    horizon: int | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
    scenarios: Sequence[Scenario] = (),
    transform: Transform = "auto",
    origins: int | None = None,
    fit_window: int | None = None,
) -> ForecastResult:
    """Fit, backtest and combine the models; forecast ``horizon`` steps with P80/P95 bands."""
    with _single_blas_thread():
        return _forecast(
            prepared, horizon=horizon, models=models, scenarios=scenarios,
            transform=transform, origins=origins, fit_window=fit_window,
        )  # fmt: skip


def _forecast(
    prepared: PreparedSeries,
    *,
    horizon: int | None,
    models: Sequence[str],
    scenarios: Sequence[Scenario],
    transform: Transform,
    origins: int | None,
    fit_window: int | None,
) -> ForecastResult:
    started = time.perf_counter()
    names = _validate_models(models)
    series, seasons = prepared.series, prepared.season_lengths
    horizon = horizon or default_horizon(seasons)
    if horizon < 1:
        raise SeriesError(f"--horizon must be a positive integer, got {horizon}")
    window = fit_window or default_fit_window(seasons)
    values = series.values[-window:]
    log_scale = _choose_log(values, seasons, transform)
    context = SeriesContext(_to_scale(values, log_scale), seasons)
    fits, notes = _fit_models(names, context)

    scale = mase_scale(values, min(seasons, default=1))
    if origins is None:
        # Short horizons get more origins so the interval calibration has enough errors.
        origins = 4 if len(values) <= 2_000 else 3
        origins = min(MAX_ORIGINS, max(origins, math.ceil(MIN_CALIBRATION_ERRORS / horizon)))
    bt_origins, bt_horizon = _plan_origins(len(series.values), horizon, seasons, origins)
    if bt_origins:
        run = _run_backtest(
            series.values, fits, seasons, origins=bt_origins, horizon=bt_horizon,
            fit_window=window, log_scale=log_scale,
        )  # fmt: skip
        origin_mase = {
            n: np.mean(np.abs(run.actual - _from_scale(run.means[n], log_scale)), axis=1) / scale
            for n in fits
        }
        model_mase = {n: float(np.mean(e)) for n, e in origin_mase.items()}
        paths = {n: Prediction(run.means[n], run.sigmas[n]) for n in fits}
        weights = _choose_weights(origin_mase)
        ens = _combine(paths, weights)
        sigma = np.maximum(ens.sigma, 1e-12)
        z = (_to_scale(run.actual, log_scale) - ens.mean) / sigma
        multipliers, method = _band_multipliers(z.ravel())
        coverage = _loo_coverage(z)
        backtest = Backtest(
            mase=_mase(run.actual - _from_scale(ens.mean, log_scale), scale),
            seasonal_naive_mase=_mase(run.actual - run.naive, scale),
            coverage_80=coverage[80],
            coverage_95=coverage[95],
            origins=bt_origins,
            horizon=bt_horizon,
            model_mase=model_mase,
            interval_method=method,
        )
    else:
        notes.append("the series is too short for a backtest; models are weighted equally")
        model_mase = {n: math.nan for n in fits}
        weights = {n: 1.0 / len(fits) for n in fits}
        multipliers = dict(Z_BY_LEVEL)
        backtest = Backtest(math.nan, math.nan, math.nan, math.nan, 0, 0, model_mase, "model")
    state = _FitState(
        fits=fits,
        weights=weights,
        multipliers=multipliers,
        log_scale=log_scale,
        fit_window=window,
        mase_scale=scale,
        nonnegative=bool(float(series.values.min()) >= 0),
    )
    return _assemble(
        prepared, state, backtest, horizon, scenarios, tuple(prepared.notes) + tuple(notes),
        refresh="full", started=started,
    )  # fmt: skip


def _assemble(
    prepared: PreparedSeries,
    state: _FitState,
    backtest: Backtest,
    horizon: int,
    scenarios: Sequence[Scenario],
    notes: tuple[str, ...],
    *,
    refresh: str,
    started: float,
) -> ForecastResult:
    series = prepared.series
    predictions = {name: fit.predict(horizon) for name, fit in state.fits.items()}
    ensemble = _combine(predictions, state.weights)
    band = _bands(ensemble, state.multipliers, state.log_scale, state.nonnegative)
    timestamps = series.future_timestamps(horizon)
    origin = series.timestamps[-1]
    reports = {
        name: ModelReport(
            weight=round(state.weights.get(name, 0.0), 4),
            mase=backtest.model_mase.get(name, math.nan),
            params=fit.describe(),
        )
        for name, fit in state.fits.items()
    }
    stl_like = predictions.get("stl") or next(iter(predictions.values()))
    context = next(iter(state.fits.values())).context
    return ForecastResult(
        timestamps=timestamps,
        band=band,
        interval_seconds=series.interval.seconds,
        season_lengths=prepared.season_lengths,
        models=reports,
        backtest=backtest,
        model_means={n: _from_scale(p.mean, state.log_scale) for n, p in predictions.items()},
        scenarios={s.name: band.scaled(s.factors(timestamps, origin)) for s in scenarios},
        explanation=_explain(context, stl_like, horizon, state.log_scale),
        warnings=notes,
        gaps_filled=tuple({"start": g.start, "points": g.points} for g in series.gaps_filled),
        refresh=refresh,
        fit_seconds=time.perf_counter() - started,
        last_observation=origin,
        state=state,
    )


def update(
    previous: ForecastResult,
    prepared: PreparedSeries,
    *,
    horizon: int | None = None,
    scenarios: Sequence[Scenario] = (),
    drift_ratio: float = DRIFT_RATIO,
) -> ForecastResult:
    """Refresh ``previous`` with a longer series, cheaply when its error has not drifted.

    Points after ``previous.last_observation`` are scored against the previous
    forecast; when their MASE exceeds ``drift_ratio`` times the backtest MASE (or
    the seasonal periods changed) the whole search and backtest run again.
    Otherwise each model refits its chosen structure and the weights and band
    multipliers are reused.
    """
    with _single_blas_thread():
        return _update(previous, prepared, horizon, scenarios, drift_ratio)


def _update(
    previous: ForecastResult,
    prepared: PreparedSeries,
    horizon: int | None,
    scenarios: Sequence[Scenario],
    drift_ratio: float,
) -> ForecastResult:
    started = time.perf_counter()
    horizon = horizon or len(previous.timestamps)
    series = prepared.series
    state = previous.state
    new = series.timestamps > previous.last_observation
    overlap = previous.timestamps.isin(series.timestamps[new])
    actual = series.values[new][: int(overlap.sum())]
    reason = ""
    if prepared.season_lengths != previous.season_lengths:
        reason = "the seasonal periods changed"
    elif actual.size:
        new_mase = _mase(actual - previous.band.mean[overlap][: actual.size], state.mase_scale)
        limit = drift_ratio * previous.backtest.mase
        if math.isfinite(limit) and new_mase > limit:
            reason = f"error on new points (MASE {new_mase:.2f}) drifted above {limit:.2f}"
    if reason:
        result = _forecast(
            prepared, horizon=horizon, models=tuple(state.fits), scenarios=scenarios,
            transform="auto", origins=None, fit_window=None,
        )  # fmt: skip
        return replace(result, refresh=f"full: {reason}")
    values = series.values[-state.fit_window :]
    context = SeriesContext(_to_scale(values, state.log_scale), prepared.season_lengths)
    fits = {name: fit.refit(context) for name, fit in state.fits.items()}
    new_state = replace(state, fits=fits, nonnegative=bool(float(series.values.min()) >= 0))
    return _assemble(
        prepared, new_state, previous.backtest, horizon, scenarios, prepared.notes,
        refresh="refit", started=started,
    )  # fmt: skip
