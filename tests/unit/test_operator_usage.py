"""status.usage: GPU-hours, dollars, energy and CO2e so far, and status.plan.carbon."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.api.v1alpha1.usage import CarbonSpec
from trainwright.operator.inventory import build_inventory
from trainwright.operator.metrics import OperatorMetrics
from trainwright.operator.planning import plan_trainingjob
from trainwright.operator.progress import progress_status
from trainwright.operator.usage import usage_patch

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(**spec: Any) -> dict[str, Any]:
    return {"spec": {"cloud": "gcp", **spec}}


def _status(
    *, running_since: datetime.datetime, job: str = "ft-a0", usage: Any = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Running",
        "plan": {
            "gpuType": "L4",
            "numGpus": 4,
            "nodes": 1,
            "gpusPerNode": 4,
            "strategy": "ddp",
            "microBatchSize": 1,
            "gradientAccumulationSteps": 1,
            "memoryPerGpuBytes": 1,
            "tokensPerSecond": 1000.0,
            "usdPerHour": 2.84,
        },
        "children": {"job": job},
        "conditions": [
            {
                "type": "Running",
                "status": "True",
                "reason": "PodsReady",
                "message": "Training.",
                "lastTransitionTime": _stamp(running_since),
            }
        ],
    }
    if usage is not None:
        status["usage"] = usage
    return status


def _progress(**fields: Any) -> Any:
    progress = progress_status({"step": 10, **fields}, now=T0)
    assert progress is not None
    return progress


def _account(
    body: dict[str, Any], status: dict[str, Any], now: datetime.datetime, **progress: Any
) -> dict[str, Any]:
    patch = usage_patch(body, status, _progress(**progress), now=now)
    usage: dict[str, Any] = patch["usage"]
    status["usage"] = usage
    return usage


def test_two_hours_on_four_l4s_in_the_netherlands_by_hand() -> None:
    """4 L4 on GCP europe-west4 for 2 h, read at 1 h and 2 h, the trainer at 22% MFU.

    GPU-hours: 4 x 2 = 8. Cost: the plan's $2.84/h (4 x $0.71) x 2 h = $5.68.
    Power: L4 TDP 72 W; load = 0.22 / 0.55 (the L4's tuned efficiency) = 0.4;
    72 x (0.1 + 0.9 x 0.4) = 33.12 W per GPU. GPU energy: 33.12 x 4 x 7200 s = 953,856 J
    = 0.26496 kWh; x PUE 1.10 (Google) = 0.291456 kWh; x 268 g/kWh (Ember 2023, NL)
    = 0.078110208 kg CO2e.
    """
    body = _body(carbon={"region": "europe-west4"})
    status = _status(running_since=T0)
    _account(body, status, T0 + HOUR, mfu=0.22)
    usage = _account(body, status, T0 + 2 * HOUR, mfu=0.22)
    assert usage["gpuHours"] == pytest.approx(8.0)
    assert usage["costUsd"] == pytest.approx(5.68)
    assert usage["gpuEnergyKwh"] == pytest.approx(0.26496)
    assert usage["energyKwh"] == pytest.approx(0.291456)
    assert usage["kgCo2e"] == pytest.approx(0.078110208)
    assert (usage["energySource"], usage["zone"], usage["pue"]) == ("estimated", "NL", 1.1)
    assert usage["gCo2ePerKwh"] == 268 and "Ember" in usage["intensitySource"]
    # The same reading again at the same time changes nothing: nothing to write.
    assert usage_patch(body, status, _progress(mfu=0.22), now=T0 + 2 * HOUR) == {}


def test_measured_energy_adds_up_over_attempts_and_suspended_time_is_not_counted() -> None:
    """Attempt a0 reads 1.8 MJ at 1 h and 3.6 MJ at 2 h; the job is then suspended for 5 h;
    attempt a1 (running again from 7 h) reads 0.9 MJ at 8 h: 4.5 MJ = 1.25 kWh in 3 h
    of 4 GPUs (12 GPU-hours), all measured; x PUE 1.2 and 100 g/kWh (the user's own).
    """
    body = _body(carbon={"gridIntensityGCo2ePerKwh": 100, "pue": 1.2})
    status = _status(running_since=T0)
    _account(body, status, T0 + HOUR, gpu_energy_joules=1.8e6)
    _account(body, status, T0 + 2 * HOUR, gpu_energy_joules=3.6e6)
    resumed = _status(running_since=T0 + 7 * HOUR, job="ft-a1", usage=status["usage"])
    usage = _account(body, resumed, T0 + 8 * HOUR, gpu_energy_joules=0.9e6)
    assert usage["gpuHours"] == pytest.approx(12.0)
    assert usage["costUsd"] == pytest.approx(3 * 2.84)
    assert usage["gpuEnergyKwh"] == pytest.approx(1.25)
    assert usage["measuredGpuEnergyKwh"] == pytest.approx(1.25)
    assert usage["energySource"] == "measured"
    assert usage["kgCo2e"] == pytest.approx(1.25 * 1.2 * 0.1)
    assert (usage["zone"], usage["intensitySource"]) == ("US-MROW", "user override")
    assert (usage["trainerJob"], usage["trainerGpuEnergyJoules"]) == ("ft-a1", 0.9e6)


def test_an_unmetered_interval_then_a_metered_one_is_mixed() -> None:
    status = _status(running_since=T0)
    _account(_body(), status, T0 + HOUR)  # no MFU, no plan estimate: the L4 at its TDP
    usage = _account(_body(), status, T0 + 2 * HOUR, gpu_energy_joules=3.6e5)
    assert usage["gpuEnergyKwh"] == pytest.approx(72 * 4 / 1000 + 0.1)
    assert usage["energySource"] == "mixed"


def test_time_counts_when_rank_0_does_not_answer_and_a_metered_gap_waits_for_its_reading() -> None:
    """Unmetered: an hour without any reading is 4 GPU-hours at the L4's TDP (72 W x 4 =
    0.288 kWh). Metered: 1.8 MJ at 1 h, no answer at 2 h (time counts, energy waits),
    5.4 MJ at 3 h: 5.4 MJ = 1.5 kWh in 12 GPU-hours, all measured."""
    silent = _status(running_since=T0)
    usage = usage_patch(_body(), silent, None, now=T0 + HOUR)["usage"]
    assert usage["gpuHours"] == pytest.approx(4.0)
    assert usage["gpuEnergyKwh"] == pytest.approx(0.288)
    assert usage["energySource"] == "estimated"

    status = _status(running_since=T0)
    _account(_body(), status, T0 + HOUR, gpu_energy_joules=1.8e6)
    gap = usage_patch(_body(), status, None, now=T0 + 2 * HOUR)["usage"]
    assert gap["gpuHours"] == pytest.approx(8.0) and gap["gpuEnergyKwh"] == pytest.approx(0.5)
    assert gap["trainerGpuEnergyJoules"] == 1.8e6
    status["usage"] = gap
    usage = _account(_body(), status, T0 + 3 * HOUR, gpu_energy_joules=5.4e6)
    assert usage["gpuHours"] == pytest.approx(12.0)
    assert usage["gpuEnergyKwh"] == pytest.approx(1.5)
    assert usage["energySource"] == "measured"


def test_nothing_is_accounted_before_the_pods_run() -> None:
    status = _status(running_since=T0)
    status["conditions"][0]["status"] = "False"
    assert usage_patch(_body(), status, _progress(), now=T0 + HOUR) == {}


def test_a_bad_carbon_region_is_refused_naming_the_field_and_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"unknown carbon region 'moon-1'.*grid zone"):
        CarbonSpec.model_validate({"region": "moon-1"})


def test_the_plan_carries_the_whole_runs_estimate_for_the_jobs_region() -> None:
    nodes = [
        {
            "metadata": {"name": "h100-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}},
        }
    ]
    inventory = build_inventory(nodes, [], product_to_gpu={"NVIDIA-H100": "H100-SXM"}.get)
    spec: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://d/a.jsonl", "tokens": 20_000_000},
        "resources": {"gpuType": "H100-SXM", "gpus": 8},
    }
    plans = {}
    for region in ("us-east-1", "eu-north-1"):
        job = TrainingJob.from_body(
            {
                "metadata": {"name": "j", "namespace": "n"},
                "spec": spec | {"carbon": {"region": region}},
            }
        )
        outcome = plan_trainingjob(job, inventory)
        assert outcome.plan is not None and outcome.plan.carbon is not None
        plans[region] = outcome.plan
    east, north = plans["us-east-1"], plans["eu-north-1"]
    assert east.estimated_duration_seconds is not None and east.carbon is not None
    assert east.carbon.gpu_hours == pytest.approx(8 * east.estimated_duration_seconds / 3600)
    assert east.carbon.zone == "US-SRVC" and east.carbon.pue == 1.15
    assert east.carbon.kg_co2e == pytest.approx(east.carbon.energy_kwh * 0.287)
    assert north.carbon is not None and north.carbon.zone == "SE"
    assert north.carbon.kg_co2e == pytest.approx(east.carbon.kg_co2e * 41 / 287)


def test_usage_is_exported_in_base_units() -> None:
    metrics = OperatorMetrics()
    usage = {
        "gpuHours": 2.0,
        "costUsd": 5.68,
        "energyKwh": 0.5,
        "energySource": "measured",
        "kgCo2e": 0.25,
        "zone": "FR",
    }
    metrics.set_trainingjob_status("ns", "ft", {"usage": usage})
    samples = {
        (s.name, s.labels.get("source") or s.labels.get("zone")): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.labels.get("trainingjob") == "ft"
    }
    assert samples[("trainwright_trainingjob_gpu_seconds", None)] == 7200.0
    assert samples[("trainwright_trainingjob_cost_usd", None)] == 5.68
    assert samples[("trainwright_trainingjob_energy_joules", "measured")] == 1.8e6
    assert samples[("trainwright_trainingjob_co2e_kilograms", "FR")] == 0.25
    metrics.forget_trainingjob("ns", "ft")
    assert b'trainingjob="ft"' not in metrics.exposition()


def test_changing_the_grid_does_not_restart_the_run() -> None:
    from trainwright.api.v1alpha1.trainingjob import spec_digest

    spec: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://d/a.jsonl"},
    }

    def digest(**extra: Any) -> str:
        body = {"metadata": {"name": "j", "namespace": "n"}, "spec": spec | extra}
        return spec_digest(TrainingJob.from_body(body).spec)

    assert digest() == digest(carbon={"region": "FR", "pue": 1.3})
    assert digest() != digest(cloud="gcp")  # the price list is a planning input
