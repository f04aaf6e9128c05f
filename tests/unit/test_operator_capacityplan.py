"""The CapacityPlan reconcile and its pure parts: recommendations, inventory, forecast sizing."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kmock
import kopf
import numpy as np
import pytest
from kubernetes import client

from trainwright.api.v1alpha1.capacityplan import ForecastSpec
from trainwright.operator.capacityplan import forecast_demand, reconcile, refresh_forecast
from trainwright.operator.context import OperatorContext
from trainwright.operator.kube import Kube
from trainwright.operator.metrics import OperatorMetrics

NS = "serving"
NOW = datetime.datetime(2026, 3, 1, 0, 0, 0, tzinfo=datetime.UTC)
CP = "trainwright.io/v1alpha1/capacityplans"


def _hourly_history(days: int, *, base_rps: float, seed: int) -> list[dict[str, Any]]:
    """Requests per second with a daily cycle (peak 1.5x base at 18:00) and 5% noise."""
    rng = np.random.default_rng(seed)
    start = NOW - datetime.timedelta(days=days)
    points = []
    for hour in range(days * 24):
        daily = 1 + 0.5 * np.sin(2 * np.pi * ((hour % 24) - 12) / 24)
        value = base_rps * daily * (1 + 0.05 * rng.standard_normal())
        stamp = start + datetime.timedelta(hours=hour)
        points.append({"timestamp": stamp.isoformat(), "value": round(max(value, 0.0), 3)})
    return points


def _capacityplan(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trainwright.io/v1alpha1",
        "kind": "CapacityPlan",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


INFERENCE = {
    "model": {"name": "llama-3.1-8b"},
    "precision": "bf16",
    "promptTokens": 512,
    "outputTokens": 256,
    "rps": 20,
    "ttftSloMs": 500,
    "itlSloMs": 50,
}


@pytest.fixture
def context(kmock: kmock.KubernetesEmulator) -> tuple[OperatorContext, list[tuple[str, str]]]:
    for key, kind, namespaced in (
        ("v1/nodes", "Node", False),
        ("v1/pods", "Pod", True),
        (CP, "CapacityPlan", True),
    ):
        kmock.resources[key] = {"kind": kind, "namespaced": namespaced}
    for i in range(2):
        kmock.objects["v1/nodes", None, f"h100-{i}"] = {
            "metadata": {
                "name": f"h100-{i}",
                "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            },
            "status": {"allocatable": {"nvidia.com/gpu": "8"}},
        }
    configuration = client.Configuration()
    configuration.host = str(kmock.url).rstrip("/")
    events: list[tuple[str, str]] = []
    operator_context = OperatorContext(
        kube=Kube(configuration),
        metrics=OperatorMetrics(),
        now=lambda: NOW,
        post_event=lambda _body, type_, reason, _message: events.append((type_, reason)),
        forecast_models=("ets",),
    )
    return operator_context, events


async def _status(context: OperatorContext, name: str) -> dict[str, Any]:
    await asyncio.to_thread(reconcile, context, NS, name)
    body = await asyncio.to_thread(context.kube.get_custom, "capacityplans", NS, name)
    return dict(body["status"])


@pytest.mark.asyncio
async def test_an_inference_plan_gets_a_recommendation_and_todays_inventory(
    kmock: kmock.KubernetesEmulator, context: tuple[OperatorContext, list[tuple[str, str]]]
) -> None:
    operator_context, events = context
    kmock.objects[CP, NS, "chat"] = _capacityplan(
        "chat", workload={"inference": INFERENCE}, gpuTypes=["H100-SXM", "L4"]
    )
    status = await _status(operator_context, "chat")
    best = status["recommendation"]
    assert status["phase"] == "Planned"
    assert best["gpuType"] in {"H100-SXM", "L4"}
    assert best["gpus"] == best["replicas"] * best["tensorParallel"]
    assert best["requestsPerSecond"] >= 20 / best["replicas"] * 0.999
    assert best["ttftSeconds"] <= 0.5 and best["itlSeconds"] <= 0.05
    assert status["recommendations"][0] == best
    assert status["inventory"]["gpus"] == [
        {
            "gpuType": "H100-SXM",
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "nodes": 2,
            "allocatableGpus": 16,
            "freeGpus": 16,
        }
    ]
    h100_rows = [r for r in status["recommendations"] if r["gpuType"] == "H100-SXM"]
    assert all(r["fitsInventory"] == (r["gpus"] <= 16) for r in h100_rows)
    assert all(
        r["fitsInventory"] is False for r in status["recommendations"] if r["gpuType"] == "L4"
    )
    assert events == [("Normal", "Planned")]


@pytest.mark.asyncio
async def test_a_training_workload_is_sized_as_one_gang(
    kmock: kmock.KubernetesEmulator, context: tuple[OperatorContext, list[tuple[str, str]]]
) -> None:
    operator_context, _ = context
    training = {
        "model": {"name": "llama-3.1-8b"},
        "method": "qlora",
        "dataset": {"uri": "s3://data/a.jsonl", "tokens": 50_000_000},
    }
    kmock.objects[CP, NS, "ft"] = _capacityplan(
        "ft", workload={"training": training}, gpuTypes=["H100-SXM"]
    )
    status = await _status(operator_context, "ft")
    best = status["recommendation"]
    assert (best["gpuType"], best["replicas"]) == ("H100-SXM", 1)
    assert best["strategy"] in {"ddp", "fsdp", "zero1", "zero2", "zero3"}
    assert best["estimatedCostUsd"] > 0
    assert status["inventory"]["replicasToday"] == (1 if best["fitsInventory"] else 0)


@pytest.mark.asyncio
async def test_a_model_that_cannot_be_served_is_infeasible_with_the_reason(
    kmock: kmock.KubernetesEmulator, context: tuple[OperatorContext, list[tuple[str, str]]]
) -> None:
    operator_context, events = context
    workload = {**INFERENCE, "model": {"name": "llama-3.1-405b"}, "precision": "bf16"}
    kmock.objects[CP, NS, "huge"] = _capacityplan(
        "huge", workload={"inference": workload}, gpuTypes=["L4"]
    )
    status = await _status(operator_context, "huge")
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert (status["phase"], planned["reason"]) == ("Infeasible", "DoesNotFit")
    assert "GiB per GPU" in planned["message"]
    assert events == [("Warning", "DoesNotFit")]


def _day_ahead_forecast(quantile: str, *, base_rps: float, seed: int) -> dict[str, Any]:
    """A week of hourly history inline, forecast one day ahead with a daily season."""
    return {
        "source": {"inline": _hourly_history(7, base_rps=base_rps, seed=seed)},
        "horizonSeconds": 86400,
        "quantile": quantile,
        "seasonLengths": [24],
    }


@pytest.mark.asyncio
async def test_an_inline_forecast_sizes_for_the_p95_peak_above_todays_rate(
    kmock: kmock.KubernetesEmulator, context: tuple[OperatorContext, list[tuple[str, str]]]
) -> None:
    operator_context, _ = context
    forecast = _day_ahead_forecast("p95", base_rps=10.0, seed=7)
    kmock.objects[CP, NS, "fc"] = _capacityplan(
        "fc", workload={"inference": {**INFERENCE, "rps": 5}}, forecast=forecast
    )
    status = await _status(operator_context, "fc")
    summary = status["forecast"]
    assert 13.5 < summary["peakRps"] < 16.5  # the daily peak of the history is 15 rps
    assert summary["p95Rps"] > summary["p80Rps"] > summary["peakRps"]
    assert summary["sizedForRps"] == summary["p95Rps"]
    assert summary["intervalSeconds"] == 3600
    forecasted = next(c for c in status["conditions"] if c["type"] == "Forecasted")
    assert forecasted["status"] == "True"
    assert (
        status["recommendation"]["requestsPerSecond"] * status["recommendation"]["replicas"]
        >= summary["sizedForRps"] * 0.999
    )


@pytest.mark.asyncio
async def test_a_refresh_refits_the_chosen_models_and_a_new_spec_searches_again(
    kmock: kmock.KubernetesEmulator, context: tuple[OperatorContext, list[tuple[str, str]]]
) -> None:
    operator_context, _ = context
    forecast = _day_ahead_forecast("p80", base_rps=10.0, seed=7)
    kmock.objects[CP, NS, "roll"] = _capacityplan(
        "roll", workload={"inference": {**INFERENCE, "rps": 5}}, forecast=forecast
    )
    first = (await _status(operator_context, "roll"))["forecast"]
    second = (await _status(operator_context, "roll"))["forecast"]
    assert (first["refresh"], second["refresh"]) == ("full", "refit")
    # Same history, same models and weights: the same answer, without the search.
    assert second["p80Rps"] == pytest.approx(first["p80Rps"], rel=1e-6)
    kmock.objects[CP, NS, "roll"] = _capacityplan(
        "roll",
        workload={"inference": {**INFERENCE, "rps": 5}},
        forecast={**forecast, "quantile": "p95"},
    )
    third = (await _status(operator_context, "roll"))["forecast"]
    assert third["refresh"] == "full"
    assert third["sizedForRps"] == third["p95Rps"]


def test_forecast_demand_sizes_for_the_mean_peak_when_asked() -> None:
    spec = ForecastSpec.model_validate(_day_ahead_forecast("mean", base_rps=4.0, seed=3))
    demand = forecast_demand(spec, now=NOW, models=("ets",))
    assert demand.sized_for_rps == demand.status.peak_rps
    assert 5.4 < demand.sized_for_rps < 6.6  # the daily peak is 1.5 x 4 rps
    assert demand.status.horizon_seconds == 86400


@pytest.mark.asyncio
async def test_a_forecast_that_fails_still_plans_for_todays_rate(
    kmock: kmock.KubernetesEmulator, context: tuple[OperatorContext, list[tuple[str, str]]]
) -> None:
    operator_context, _ = context
    two_points = _hourly_history(7, base_rps=10.0, seed=1)[:2]
    forecast = {"source": {"inline": two_points}, "horizonSeconds": 3600}
    kmock.objects[CP, NS, "short"] = _capacityplan(
        "short", workload={"inference": INFERENCE}, forecast=forecast
    )
    status = await _status(operator_context, "short")
    forecasted = next(c for c in status["conditions"] if c["type"] == "Forecasted")
    assert (forecasted["status"], forecasted["reason"]) == ("False", "ForecastFailed")
    assert "at least 3 needed" in forecasted["message"]
    assert status["phase"] == "Planned"
    assert (
        status["recommendation"]["requestsPerSecond"] * status["recommendation"]["replicas"]
        >= 20 * 0.999
    )


class _StopAfter:
    """Stands in for kopf's DaemonStopped: lets the daemon loop ``rounds`` times."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.waits: list[float] = []

    def __bool__(self) -> bool:
        return len(self.waits) > self.rounds

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.mark.asyncio
async def test_the_forecast_daemon_replans_every_refresh_interval(
    kmock: kmock.KubernetesEmulator, context: tuple[OperatorContext, list[tuple[str, str]]]
) -> None:
    operator_context, _ = context
    forecast = {
        "source": {"inline": _hourly_history(7, base_rps=10.0, seed=5)},
        "horizonSeconds": 86400,
        "seasonLengths": [24],
        "refreshSeconds": 900,
    }
    kmock.objects[CP, NS, "tick"] = _capacityplan(
        "tick", workload={"inference": INFERENCE}, forecast=forecast
    )
    stopped = _StopAfter(rounds=1)
    await asyncio.to_thread(
        refresh_forecast,
        stopped=stopped,
        namespace=NS,
        name="tick",
        memo=kopf.Memo(context=operator_context),
    )
    assert stopped.waits[0] == 900
    body = await asyncio.to_thread(operator_context.kube.get_custom, "capacityplans", NS, "tick")
    assert body["status"]["forecast"]["horizonSeconds"] == 86400
    assert body["status"]["phase"] == "Planned"
