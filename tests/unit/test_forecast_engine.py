"""The engine: models, backtest, ensemble weights, calibrated bands, rolling refresh, scenarios."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from trainwright.forecast import (
    ScenarioError,
    SeriesError,
    forecast,
    from_pairs,
    parse_scenario,
    parse_series,
    prepare,
    update,
)
from trainwright.forecast.engine import (
    PreparedSeries,
    _band_multipliers,
    _choose_weights,
    confidence_set,
    ensemble_weights,
)
from trainwright.forecast.models import (
    ArimaModel,
    SarimaModel,
    SeriesContext,
    StlModel,
    ThetaModel,
    _ets_prediction,
    seasonal_naive,
)
from trainwright.forecast.report import to_document

DATA = Path(__file__).resolve().parents[1] / "data" / "forecast"


def weekly_demand(days: int, *, seed: int = 5, level_shift_at: int | None = None) -> PreparedSeries:
    """Daily demand with a weekly cycle, a slow trend and noise, seeded."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    values = 500.0 + 0.8 * t + np.array([40, 45, 42, 38, 30, -80, -115])[t % 7]
    values = values + rng.normal(0.0, 8.0, days)
    if level_shift_at is not None:
        values[level_shift_at:] *= 1.6
    stamps = pd.date_range("2026-01-05", periods=days, freq="D")
    return prepare(from_pairs([s.isoformat() for s in stamps], values.tolist()))


@pytest.fixture(scope="module")
def weekly_result() -> object:
    return forecast(weekly_demand(140), horizon=14)


def test_seasonal_naive_repeats_the_last_cycle() -> None:
    prediction = seasonal_naive(np.arange(10, dtype=np.float64), 4, 6)
    np.testing.assert_array_equal(prediction.mean, [6, 7, 8, 9, 6, 7])
    assert prediction.sigma[4] == pytest.approx(prediction.sigma[0] * np.sqrt(2))


def test_stl_model_carries_a_clean_weekly_cycle_forward_within_one_percent() -> None:
    t = np.arange(70)
    cycle = np.array([10.0, 12.0, 11.0, 9.0, 6.0, -20.0, -28.0])
    values = 300.0 + cycle[t % 7]
    fit = StlModel().fit(SeriesContext(values, (7,)))
    np.testing.assert_allclose(fit.predict(7).mean, 300.0 + cycle, rtol=0.01)


def test_arima_search_finds_one_autoregressive_term_for_an_ar1_series() -> None:
    rng = np.random.default_rng(1)
    values = np.zeros(300)
    for i in range(1, 300):
        values[i] = 0.7 * values[i - 1] + rng.normal()
    fit = ArimaModel().fit(SeriesContext(values + 50.0, ()))
    assert fit.spec.order == (1, 0, 0)
    assert fit.describe()["model"] == "ARIMA(1,0,0) with constant"
    # Stepwise: 8 of the 42 (p + q <= 5, with or without a constant) specifications.
    assert fit.describe()["orders_searched"] == 8


def test_arima_drift_extrapolates_a_straight_line_not_a_parabola() -> None:
    rng = np.random.default_rng(3)
    values = 100.0 + np.cumsum(0.5 + rng.normal(0.0, 1.0, 400))
    fit = ArimaModel().fit(SeriesContext(values, ()))
    assert fit.describe()["trend"] == "drift"
    steps = np.diff(fit.predict(200).mean)
    # A drift adds the same amount each step (about 0.5); a time trend in the
    # differences (SARIMAX trend "t" with d=1) would make the steps grow.
    assert steps[-1] == pytest.approx(steps[10], abs=0.01)
    assert steps[-1] == pytest.approx(0.5, abs=0.15)


def test_theta_continues_a_trend_at_half_its_fitted_slope_plus_the_weekly_cycle() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(140)
    cycle = np.array([10.0, 12.0, 11.0, 9.0, 6.0, -20.0, -28.0])
    values = 200.0 + 1.0 * t + cycle[t % 7] + rng.normal(0.0, 1.0, len(t))
    fit = ThetaModel().fit(SeriesContext(values, (7,)))
    prediction = fit.predict(14)
    # Theta = SES plus half the linear-trend slope (Hyndman & Billah 2003): about 0.5/step.
    assert fit.describe()["drift_per_step"] == pytest.approx(0.5, abs=0.05)
    weekly_step = prediction.mean[7:] - prediction.mean[:7]
    np.testing.assert_allclose(weekly_step, 7 * fit.describe()["drift_per_step"], atol=0.5)
    assert prediction.sigma[13] > prediction.sigma[0] > 0


def test_seasonal_arima_follows_a_weekly_cycle_that_changes_shape() -> None:
    rng = np.random.default_rng(6)
    t = np.arange(182)
    early = np.array([10.0, 12.0, 11.0, 9.0, 6.0, -20.0, -28.0])
    late = np.array([-5.0, 12.0, 11.0, 9.0, 20.0, -20.0, -28.0])
    cycle = np.where(t < 126, early[t % 7], late[t % 7])
    values = 300.0 + 0.2 * t + cycle + rng.normal(0.0, 1.0, len(t))
    fit = SarimaModel().fit(SeriesContext(values, (7,)))
    expected = 300.0 + 0.2 * np.arange(182, 189) + late
    # The seasonal MA(1) lets the pattern evolve: the last eight weeks dominate.
    np.testing.assert_allclose(fit.predict(7).mean, expected, atol=3.0)
    assert fit.describe()["method"] == "ARIMA(1,0,1)(0,1,1)[7] with drift"


def test_seasonal_arima_stays_out_of_multi_season_series() -> None:
    hourly = SeriesContext(np.arange(400.0), (24, 168))
    assert not SarimaModel().suits(hourly)
    assert SarimaModel().suits(SeriesContext(np.arange(40.0), (12,)))
    t = pd.date_range("2026-01-05", periods=400, freq="h")
    prepared = prepare(
        from_pairs([s.isoformat() for s in t], (100 + np.sin(np.arange(400))).tolist())
    )
    with pytest.raises(SeriesError, match="model sarima does not apply to seasons \\[24, 168\\]"):
        forecast(prepared, models=["sarima"])


def test_ets_bands_that_explode_fall_back_to_a_random_walk_band() -> None:
    horizon = 4
    frame = pd.DataFrame(
        {
            "mean": [10.0] * horizon,
            "pi_lower": [9.0, 0.0, -1e9, -np.inf],
            "pi_upper": [11.0, 20.0, 1e9, np.inf],
        }
    )
    residuals = np.array([1.0, -1.0] * 10)
    fake = SimpleNamespace(
        get_prediction=lambda start, end: SimpleNamespace(summary_frame=lambda alpha: frame),
        resid=residuals,
        model=SimpleNamespace(endog=np.linspace(0.0, 20.0, 20)),
    )
    mean, sigma, source = _ets_prediction(fake, 20, horizon)
    assert source == "residual-fallback"
    np.testing.assert_allclose(sigma, np.std(residuals) * np.sqrt([1, 2, 3, 4]))
    np.testing.assert_array_equal(mean, [10.0] * horizon)


def test_weights_follow_inverse_mase_and_drop_a_model_three_times_worse_than_the_best() -> None:
    weights = ensemble_weights({"arima": 0.5, "ets": 1.6, "stl": 1.0})
    assert weights["ets"] == 0.0
    assert weights["arima"] == pytest.approx((1 / 0.5) / (1 / 0.5 + 1 / 1.0))
    assert weights["stl"] == pytest.approx(1 / 3)


def test_a_model_worse_at_every_origin_leaves_the_confidence_set() -> None:
    origin_mase = {
        "arima": np.array([0.50, 0.60, 0.55, 0.52]),
        "ets": np.array([0.70, 0.80, 0.75, 0.71]),  # consistently 0.2 worse: out
        "stl": np.array([0.40, 0.75, 0.50, 0.62]),  # better at two origins, worse at two: in
    }
    assert confidence_set(origin_mase) == {"arima", "stl"}
    weights = _choose_weights(origin_mase)
    assert weights["ets"] == 0.0
    assert weights["arima"] / weights["stl"] == pytest.approx(0.5675 / 0.5425)


def test_the_best_model_takes_all_the_weight_when_the_others_are_clearly_worse() -> None:
    origin_mase = {
        "arima": np.array([0.30, 0.35, 0.32]),
        "ets": np.array([0.50, 0.55, 0.49]),
        "theta": np.array([0.45, 0.60, 0.52]),
    }
    assert _choose_weights(origin_mase) == {"arima": 1.0, "ets": 0.0, "theta": 0.0}


def test_bands_use_empirical_quantiles_when_model_bands_are_too_narrow() -> None:
    z_scores = np.random.default_rng(2).normal(0.0, 2.0, 400)
    multipliers, method = _band_multipliers(z_scores)
    assert method == "backtest-calibrated"
    assert multipliers[80] == pytest.approx(2.0 * 1.2816, rel=0.12)
    assert multipliers[95] == pytest.approx(2.0 * 1.96, rel=0.12)


def test_bands_keep_normal_quantiles_when_model_bands_cover_as_promised() -> None:
    multipliers, method = _band_multipliers(np.random.default_rng(2).normal(0.0, 1.0, 400))
    assert method == "model"
    assert multipliers == {80: pytest.approx(1.2816, abs=1e-4), 95: pytest.approx(1.96, abs=1e-3)}


def test_a_weekly_daily_series_beats_seasonal_naive_in_its_backtest(weekly_result: object) -> None:
    document = to_document(weekly_result)  # type: ignore[arg-type]
    backtest = document["backtest"]
    assert backtest["mase"] < backtest["seasonal_naive_mase"]
    assert backtest["origins"] == 4 and backtest["horizon"] == 14
    assert sum(m["weight"] for m in document["models"].values()) == pytest.approx(1.0, abs=1e-3)
    assert set(document["models"]) == {"arima", "ets", "sarima", "stl", "theta"}


def test_bands_are_nested_around_the_mean(weekly_result: object) -> None:
    rows = to_document(weekly_result)["forecast"]  # type: ignore[arg-type]
    assert len(rows) == 14
    for row in rows:
        assert (
            row["lower_95"] <= row["lower_80"] <= row["mean"] <= row["upper_80"] <= row["upper_95"]
        )
    assert rows[0]["timestamp"] == "2026-05-25T00:00:00+00:00"


def test_the_explanation_attributes_a_strong_weekly_season(weekly_result: object) -> None:
    explanation = to_document(weekly_result)["explanation"]  # type: ignore[arg-type]
    assert explanation["seasonal_strength"]["7"] > 0.9
    assert explanation["trend_strength"] > 0.9
    assert explanation["scale"] == "linear"


def test_air_passengers_is_modelled_on_a_log_scale() -> None:
    prepared = prepare(parse_series((DATA / "air_passengers.csv").read_text()))
    result = forecast(prepared, models=["stl"], origins=2)
    assert result.explanation["scale"] == "log"
    assert result.season_lengths == (12,)
    assert 400 < float(result.band.mean.mean()) < 560


def test_update_refits_without_a_new_search_when_new_points_match_the_forecast() -> None:
    full = weekly_demand(154)
    first = forecast(PreparedSeries(full.series.head(140), (7,)), horizon=14)
    refreshed = update(first, full)
    assert refreshed.refresh == "refit"
    assert refreshed.state.weights == first.state.weights
    assert refreshed.state.fits["arima"].spec == first.state.fits["arima"].spec  # type: ignore[attr-defined]
    assert refreshed.timestamps[0] == full.series.future_timestamps(1)[0]
    assert refreshed.fit_seconds < first.fit_seconds


def test_update_redoes_the_search_when_demand_jumps_away_from_the_forecast() -> None:
    full = weekly_demand(154, level_shift_at=140)
    first = forecast(PreparedSeries(full.series.head(140), (7,)), horizon=14, models=["stl"])
    refreshed = update(first, full)
    assert refreshed.refresh.startswith("full: error on new points")


def test_a_nonnegative_series_is_never_forecast_below_zero() -> None:
    rng = np.random.default_rng(9)
    t = np.arange(84)
    values = np.maximum(0.0, 2.0 + 3.0 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1.5, 84))
    stamps = pd.date_range("2026-01-05", periods=84, freq="D")
    result = forecast(prepare(from_pairs([s.isoformat() for s in stamps], values.tolist())))
    assert float(result.band.lower[95].min()) >= 0.0


def test_an_unknown_model_name_lists_the_accepted_ones() -> None:
    with pytest.raises(
        SeriesError, match="--models accepts a comma-separated subset of arima,ets,sarima,stl,theta"
    ):
        forecast(weekly_demand(56), models=["prophet"])


def test_scenarios_scale_the_forecast_by_multiplier_growth_and_step() -> None:
    result = forecast(
        weekly_demand(84),
        horizon=14,
        models=["stl"],
        scenarios=[
            parse_scenario("launch=1.5"),
            parse_scenario("growth=growth:10%/7d"),
            parse_scenario("promo=step:2@2026-04-05"),
        ],
    )
    base = result.band.mean
    np.testing.assert_allclose(result.scenarios["launch"].mean, 1.5 * base)
    np.testing.assert_allclose(result.scenarios["launch"].upper[95], 1.5 * result.band.upper[95])
    np.testing.assert_allclose(result.scenarios["growth"].mean[6] / base[6], 1.1)
    np.testing.assert_allclose(result.scenarios["growth"].mean[13] / base[13], 1.21)
    promo = result.scenarios["promo"].mean / base
    assert result.timestamps[6].strftime("%Y-%m-%d") == "2026-04-05"
    np.testing.assert_allclose(promo, [1.0] * 6 + [2.0] * 8)


def test_growth_shorthand_reads_a_percentage_per_month() -> None:
    scenario = parse_scenario("g=+5%/month")
    assert scenario.growth_rate == pytest.approx(0.05)
    assert scenario.growth_period_seconds == pytest.approx(2_629_746.0)


@pytest.mark.parametrize("text", ["launch", "launch=fast", "=1.5", "x=-2", "x=growth:-200%/d"])
def test_a_malformed_scenario_is_one_sentence_naming_the_flag(text: str) -> None:
    with pytest.raises(ScenarioError, match=r"^--scenario "):
        parse_scenario(text)
