"""Capacity view: a request-rate forecast becomes GPUs per step through the planner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainwright.forecast import capacity_forecast, forecast, from_pairs, parse_scenario, prepare
from trainwright.forecast.engine import ForecastResult
from trainwright.planner import InferenceRequest, plan_inference

TEMPLATE = InferenceRequest(
    model="llama-3.1-8b",
    gpu="H100-SXM",
    precision="bf16",
    prompt_tokens=512,
    output_tokens=256,
    ttft_slo_ms=500,
    itl_slo_ms=50,
)


@pytest.fixture(scope="module")
def rps_forecast() -> ForecastResult:
    """Four weeks of daily peak request rates between about 20 and 80 per second."""
    rng = np.random.default_rng(12)
    t = np.arange(28)
    rps = 50.0 + 25.0 * np.sin(2 * np.pi * t / 7) + rng.normal(0.0, 2.0, 28)
    stamps = pd.date_range("2026-10-05", periods=28, freq="D")
    prepared = prepare(from_pairs([s.isoformat() for s in stamps], rps.tolist()))
    return forecast(
        prepared, horizon=7, models=["stl"], scenarios=[parse_scenario("launch=2")], origins=2
    )


def test_gpus_per_step_grow_from_p50_to_p95(rps_forecast: ForecastResult) -> None:
    plan = capacity_forecast(rps_forecast, TEMPLATE, quantile="p95")
    assert len(plan.steps) == 7
    for step in plan.steps:
        assert step.rps["p50"] <= step.rps["p80"] <= step.rps["p95"]
        assert step.gpus["p50"] <= step.gpus["p80"] <= step.gpus["p95"]
        assert step.gpus["p95"] == step.replicas["p95"] * plan.tensor_parallel


def test_the_peak_is_what_the_planner_gives_for_the_peak_rate(
    rps_forecast: ForecastResult,
) -> None:
    plan = capacity_forecast(rps_forecast, TEMPLATE, quantile="p95")
    assert plan.gpu == "H100-SXM"
    assert plan.peak_gpus == max(s.gpus["p95"] for s in plan.steps)
    direct = plan_inference(TEMPLATE.model_copy(update={"rps": plan.peak_rps * 1.001}))
    assert plan.peak_gpus == direct.replicas * direct.tensor_parallel
    assert plan.peak_rps == pytest.approx(float(rps_forecast.band.upper[95].max()), rel=1e-5)
    assert plan.peak_usd_per_hour > 0


def test_a_launch_scenario_doubling_traffic_needs_more_gpus(rps_forecast: ForecastResult) -> None:
    base = capacity_forecast(rps_forecast, TEMPLATE, quantile="p80")
    launch = capacity_forecast(rps_forecast, TEMPLATE, quantile="p80", scenario="launch")
    assert launch.peak_gpus > base.peak_gpus
    assert launch.peak_rps == pytest.approx(2 * base.peak_rps, rel=1e-3)


def test_without_a_gpu_the_planner_chooses_one_at_the_peak(rps_forecast: ForecastResult) -> None:
    plan = capacity_forecast(rps_forecast, TEMPLATE.model_copy(update={"gpu": None}))
    assert plan.gpu
    assert all(s.gpus["p95"] % plan.tensor_parallel == 0 for s in plan.steps)
    assert plan.to_dict()["peak"]["gpus"] == plan.peak_gpus


def test_an_unknown_scenario_names_the_ones_the_forecast_has(rps_forecast: ForecastResult) -> None:
    with pytest.raises(
        ValueError, match=r"scenario 'promo' is not in the forecast \(it has: launch\)"
    ):
        capacity_forecast(rps_forecast, TEMPLATE, scenario="promo")
