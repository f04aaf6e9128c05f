"""What the dashboards and alerts read from the operator's and the trainer's /metrics.

The gauges are filled from a real TrainingJob status (the Argo CD testdata, written by
the operator's own reconcile), and both expositions pass ``promtool check metrics``
(Prometheus's naming lint: base units, ``_total`` on counters, no reserved labels).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from trainwright.operator.metrics import OperatorMetrics
from trainwright.operator.status import Phase
from trainwright_trainer.metrics import TrainerMetrics

ROOT = Path(__file__).resolve().parents[2]
RUNNING = ROOT / "helm/argocd/trainwright.io/TrainingJob/testdata/progressing_running.yaml"
FORECAST = {"peakRps": 18.2, "p80Rps": 21.0, "p95Rps": 23.5, "sizedForRps": 23.5}


def _value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def operator_metrics() -> OperatorMetrics:
    """An operator that has seen one running TrainingJob and one planned CapacityPlan."""
    metrics = OperatorMetrics()
    status = yaml.safe_load(RUNNING.read_text())["status"]
    with metrics.reconcile("TrainingJob"):
        metrics.set_phase("team-a", "llama8b-lora", Phase.PLANNED)
        metrics.set_phase("team-a", "llama8b-lora", Phase.RUNNING)
        metrics.set_trainingjob_status("team-a", "llama8b-lora", status)
    with metrics.reconcile("CapacityPlan"):
        metrics.set_cluster_gpus(
            [{"gpuType": "H100-SXM", "product": "NVIDIA-H100-80GB-HBM3", "allocatableGpus": 16,
              "freeGpus": 8}]
        )  # fmt: skip
        metrics.set_capacityplan(
            "serving", "chat", gpu_type="H100-SXM", gpus=4, usd_per_hour=39.3,
            forecast=FORECAST, demand_rps=12.5,
        )  # fmt: skip
    metrics.observe_api_request("GET", 0.012)
    return metrics


def trainer_metrics() -> TrainerMetrics:
    metrics = TrainerMetrics(enabled=True, port=0, progress_path=None, total_steps=1221)
    metrics.record_step(
        step=412, epoch=0, loss=1.3172, learning_rate=2e-4, grad_norm=0.84,
        tokens_per_second=61210.5, mfu_ratio=0.41, eta_seconds=27.1, write_file=False,
    )  # fmt: skip
    metrics.observe_checkpoint(3.2, step=200)
    metrics.observe_checkpoint(3.4, step=400)
    metrics.count(metrics.loss_spikes)
    return metrics


def test_a_running_job_exports_its_plan_its_phase_and_the_gpus_it_holds() -> None:
    metrics = operator_metrics()
    job = {"namespace": "team-a", "trainingjob": "llama8b-lora"}
    assert _value(metrics, "trainwright_trainingjob_planned_tokens_per_second", **job) == 63745.4
    assert (
        _value(metrics, "trainwright_trainingjob_planned_memory_per_gpu_bytes", **job)
        == 65855194726
    )
    assert _value(metrics, "trainwright_trainingjob_planned_usd_per_hour", **job) == 98.32
    assert _value(metrics, "trainwright_trainingjob_phase", **job, phase="Running") == 1
    assert _value(metrics, "trainwright_trainingjob_phase", **job, phase="Planned") == 0
    assert (
        _value(metrics, "trainwright_trainingjob_requested_gpus", **job, gpu_type="H100-SXM") == 8
    )
    # status.startTime 2026-03-01T12:00:00Z
    assert _value(metrics, "trainwright_trainingjob_start_timestamp_seconds", **job) == 1772366400


def test_a_job_that_stops_running_releases_its_gpus_and_deletion_forgets_it() -> None:
    metrics = operator_metrics()
    status = yaml.safe_load(RUNNING.read_text())["status"] | {"phase": "Succeeded"}
    metrics.set_trainingjob_status("team-a", "llama8b-lora", status)
    job = {"namespace": "team-a", "trainingjob": "llama8b-lora"}
    assert (
        _value(metrics, "trainwright_trainingjob_requested_gpus", **job, gpu_type="H100-SXM")
        is None
    )
    metrics.forget_trainingjob("team-a", "llama8b-lora")
    exposition = metrics.exposition().decode()
    assert 'trainingjob="llama8b-lora"' not in exposition


def test_a_capacity_plan_exports_its_forecast_bands_and_the_cluster_gpus() -> None:
    metrics = operator_metrics()
    plan = {"namespace": "serving", "capacityplan": "chat"}
    name = "trainwright_capacityplan_forecast_requests_per_second"
    assert [_value(metrics, name, **plan, band=b) for b in ("mean", "p80", "p95")] == [
        18.2, 21.0, 23.5,
    ]  # fmt: skip
    assert _value(metrics, "trainwright_capacityplan_gpus", **plan, gpu_type="H100-SXM") == 4
    assert _value(metrics, "trainwright_capacityplan_demand_requests_per_second", **plan) == 12.5
    assert _value(metrics, "trainwright_cluster_allocatable_gpus", gpu_type="H100-SXM") == 16
    assert _value(metrics, "trainwright_cluster_free_gpus", gpu_type="H100-SXM") == 8
    metrics.forget_capacityplan("serving", "chat")
    assert 'capacityplan="chat"' not in metrics.exposition().decode()


def test_the_trainer_exports_the_checkpoint_age_and_interval() -> None:
    metrics = trainer_metrics()
    try:
        sample = metrics.registry.get_sample_value
        assert sample("trainwright_last_checkpoint_step") == 400
        published = sample("trainwright_last_checkpoint_timestamp_seconds")
        interval = sample("trainwright_checkpoint_interval_seconds")
        assert published is not None and published > 1.7e9
        assert interval is not None and 0 <= interval < 5
        assert sample("trainwright_loss_spikes_total") == 1
    finally:
        metrics.close()


@pytest.mark.prometheus
@pytest.mark.parametrize("endpoint", ["operator", "trainer"])
def test_promtool_check_metrics_is_clean(endpoint: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make system-deps`", pytrace=False)
    if endpoint == "operator":
        text = operator_metrics().exposition()
    else:
        trainer = trainer_metrics()
        text = generate_latest(trainer.registry)
        trainer.close()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert (result.stdout + result.stderr).strip() == b""
