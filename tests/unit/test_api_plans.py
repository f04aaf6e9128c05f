"""A TrainingJob spec becomes a planner request, and the planner's answer becomes status.plan."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from trainwright.api.plans import (
    forecast_status_from,
    gpu_product_label,
    inference_request_from,
    plan_status_from,
    recommendation_from_inference,
    recommendation_from_training,
    training_request_from,
)
from trainwright.api.v1alpha1 import CapacityPlan, TrainingJob
from trainwright.planner.inference import recommend_inference
from trainwright.planner.training import recommend_training
from trainwright.resources import trainer_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_GPUS = ["H100-SXM", "A100-80GB-SXM", "L4"]
NOW = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)


def example(name: str) -> TrainingJob:
    return TrainingJob.from_body(yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8")))


def test_the_request_carries_the_spec_fields_the_planner_sizes_with() -> None:
    request = training_request_from(example("training-lora.yaml").spec, gpu_candidates=DEMO_GPUS)
    assert request.model == "llama-3.1-8b"
    assert request.method == "lora"
    assert request.gpu == "H100-SXM"
    assert request.num_gpus == 8
    assert request.dataset_tokens == 20_000_000
    assert request.lora_rank == 16
    assert request.max_cost_usd == 200
    assert request.deadline_seconds == 43200
    # A pinned GPU type is not narrowed further by the cluster's inventory.
    assert request.gpu_candidates is None


def test_gpu_type_auto_searches_only_the_gpu_types_the_cluster_has() -> None:
    request = training_request_from(
        example("training-qlora-auto.yaml").spec, gpu_candidates=DEMO_GPUS
    )
    assert request.gpu is None
    assert request.gpu_candidates == DEMO_GPUS
    assert request.max_gpus == 4
    assert request.optimizer == "paged_adamw8bit"


def test_a_config_path_model_needs_the_parsed_config() -> None:
    body = yaml.safe_load((EXAMPLES / "training-lora.yaml").read_text(encoding="utf-8"))
    body["spec"]["model"] = {"configPath": "/models/custom/config.json"}
    with pytest.raises(ValueError, match=r"configPath needs the parsed config\.json"):
        training_request_from(TrainingJob.from_body(body).spec)


def test_the_planned_lora_job_becomes_a_status_plan_the_builders_can_run() -> None:
    job = example("training-lora.yaml")
    plan = recommend_training(training_request_from(job.spec, gpu_candidates=DEMO_GPUS))
    status = plan_status_from(plan, now=NOW)
    assert status.gpu_type == "H100-SXM"
    assert status.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert status.num_gpus == status.nodes * status.gpus_per_node == 8
    assert status.micro_batch_size == plan.micro_batch
    assert status.gradient_accumulation_steps == plan.gradient_accumulation
    assert status.memory_per_gpu_bytes == plan.memory.per_gpu_bytes
    assert status.memory_per_gpu_bytes <= (status.memory_capacity_bytes or 0)
    assert status.estimated_cost_usd == plan.cost.total_usd
    assert plan.duration_seconds is not None
    expected_finish = NOW + dt.timedelta(seconds=plan.duration_seconds)
    assert status.estimated_finish_time == expected_finish.replace(microsecond=0)
    assert len(status.recommendations) <= 5
    manifest = trainer_job(job, status, attempt=0)
    selector = manifest["spec"]["template"]["spec"]["nodeSelector"]
    assert selector["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_the_stored_plan_survives_a_round_trip_through_the_status_json() -> None:
    job = example("training-qlora-auto.yaml")
    plan = recommend_training(training_request_from(job.spec, gpu_candidates=DEMO_GPUS))
    status = plan_status_from(plan, now=NOW)
    stored = TrainingJob.from_body({**job.to_manifest(), "status": {"plan": status.to_manifest()}})
    assert stored.status.plan == status


def test_a_training_recommendation_is_one_replica_of_the_whole_run() -> None:
    job = example("training-qlora-auto.yaml")
    plan = recommend_training(training_request_from(job.spec, gpu_candidates=DEMO_GPUS))
    recommendation = recommendation_from_training(plan)
    assert recommendation.replicas == 1
    assert recommendation.gpus == plan.num_gpus
    assert recommendation.usd_per_hour == plan.cost.usd_per_hour


@pytest.mark.parametrize(
    ("gpu_type", "label"),
    [
        ("H100-SXM", "NVIDIA-H100-80GB-HBM3"),
        ("A100-80GB-SXM", "NVIDIA-A100-SXM4-80GB"),
        ("L4", "NVIDIA-L4"),
    ],
)
def test_the_demo_gpu_types_map_to_the_labels_their_nodes_carry(gpu_type: str, label: str) -> None:
    # The same labels as hack/k8s/inventory.yaml's fake nodes.
    assert gpu_product_label(gpu_type) == label


def test_an_unknown_gpu_type_has_no_product_label() -> None:
    assert gpu_product_label("TPU-v5e") is None


def capacity_plan(name: str) -> CapacityPlan:
    return CapacityPlan.from_body(yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8")))


def test_a_serving_plan_asks_the_planner_for_the_manifest_rate_and_slos() -> None:
    request = inference_request_from(capacity_plan("capacityplan-chat.yaml").spec)
    assert request.model == "llama-3.1-8b"
    assert request.rps == 20
    assert request.ttft_slo_ms == 500
    assert request.itl_slo_ms == 50
    assert request.gpu_candidates == DEMO_GPUS


def test_a_forecast_peak_overrides_the_rate_and_the_cluster_narrows_the_gpu_types() -> None:
    spec = capacity_plan("capacityplan-chat.yaml").spec
    request = inference_request_from(spec, rps=41.5, gpu_candidates=["L4", "H100-SXM"])
    assert request.rps == 41.5
    assert request.gpu_candidates == ["H100-SXM", "L4"]


def test_a_serving_recommendation_counts_replicas_times_tensor_parallel_gpus() -> None:
    plan = recommend_inference(inference_request_from(capacity_plan("capacityplan-chat.yaml").spec))
    recommendation = recommendation_from_inference(plan)
    assert recommendation.gpus == plan.replicas * plan.tensor_parallel
    assert recommendation.requests_per_second is not None
    assert recommendation.requests_per_second >= 20
    assert recommendation.ttft_seconds is not None and recommendation.ttft_seconds <= 0.5
    assert recommendation.itl_seconds is not None and recommendation.itl_seconds <= 0.05
    assert recommendation.usd_per_hour == plan.cost.usd_per_hour


def test_a_training_capacity_plan_is_not_sized_as_serving() -> None:
    spec = yaml.safe_load((EXAMPLES / "training-lora.yaml").read_text(encoding="utf-8"))["spec"]
    workload = {k: spec[k] for k in ("model", "method", "dataset")}
    plan = CapacityPlan.from_body({"spec": {"workload": {"training": workload}}})
    with pytest.raises(ValueError, match=r"spec\.workload\.inference is not set"):
        inference_request_from(plan.spec)


def test_the_forecast_status_reports_the_horizon_peaks_and_the_rate_sized_for() -> None:
    # The attributes forecast_status_from reads from a trainwright.forecast.ForecastResult.
    band = SimpleNamespace(
        mean=np.array([10.0, 18.0, 14.0]),
        upper={80: np.array([12.0, 21.5, 16.0]), 95: np.array([13.0, 24.25, 17.0])},
    )
    result = SimpleNamespace(band=band, interval_seconds=3600, backtest=SimpleNamespace(mase=0.53))
    status = forecast_status_from(
        result,  # type: ignore[arg-type]
        quantile="p80",
        horizon_seconds=604800,
        now=NOW,
    )
    assert (status.peak_rps, status.p80_rps, status.p95_rps) == (18.0, 21.5, 24.25)
    assert status.sized_for_rps == 21.5
    assert status.interval_seconds == 3600
    assert status.mase == 0.53
    assert status.generated_time == NOW
