"""The API models accept the contract's manifests, apply defaults and reject bad input in one sentence."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml

from trainwright.api.v1alpha1 import (
    CapacityPlan,
    Condition,
    InvalidResourceError,
    ModelExport,
    PlanStatus,
    TrainingJob,
    find_condition,
    set_condition,
)

CONTRACT_TRAINING_JOB = """
apiVersion: trainwright.io/v1alpha1
kind: TrainingJob
metadata: {name: llama8b-lora}
spec:
  model: {name: llama-3.1-8b}
  method: lora
  dataset: {uri: pvc://datasets/alpaca.jsonl, format: alpaca, tokens: 20000000}
  training: {epochs: 1, seqLen: 2048, learningRate: 2.0e-4}
  resources: {gpuType: auto, maxGpus: 16}
  strategy: auto
  budget: {maxCostUsd: 200, deadlineSeconds: 43200}
  suspend: false
"""

CONTRACT_CAPACITY_PLAN = """
apiVersion: trainwright.io/v1alpha1
kind: CapacityPlan
metadata: {name: chat-serving}
spec:
  workload:
    inference: {model: {name: llama-3.1-8b}, precision: bf16, promptTokens: 512,
                outputTokens: 256, rps: 20, ttftSloMs: 500, itlSloMs: 50}
  forecast:
    source: {prometheus: {url: http://prometheus:9090, query: 'sum(rate(requests_total[5m]))'}}
    horizonSeconds: 604800
    quantile: p95
  gpuTypes: [H100-SXM, A100-80GB-SXM, L4]
  cloud: aws
"""


def training_job(**spec_changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(CONTRACT_TRAINING_JOB)
    body["spec"].update(spec_changes)
    return body


def test_the_contract_training_job_validates_with_its_defaults_filled_in() -> None:
    job = TrainingJob.from_body(training_job())
    assert job.name == "llama8b-lora"
    assert job.spec.method == "lora"
    assert job.spec.dataset.tokens == 20_000_000
    assert job.spec.training.seq_len == 2048
    assert job.spec.training.learning_rate == pytest.approx(2.0e-4)
    assert job.spec.resources.gpu_type == "auto"
    assert job.spec.resources.max_gpus == 16
    assert job.spec.budget is not None and job.spec.budget.max_cost_usd == 200
    assert job.spec.max_restarts == 3
    assert job.spec.training.gradient_checkpointing == "auto"
    assert job.status.phase == "Pending"


def test_a_manifest_round_trips_through_the_model_in_camel_case() -> None:
    job = TrainingJob.from_body(training_job())
    manifest = job.to_manifest()
    assert manifest["spec"]["training"]["seqLen"] == 2048
    assert manifest["spec"]["resources"]["maxGpus"] == 16
    assert manifest["spec"]["budget"]["deadlineSeconds"] == 43200
    assert "seq_len" not in manifest["spec"]["training"]
    assert TrainingJob.from_body(manifest) == job


@pytest.mark.parametrize(
    ("spec_changes", "message"),
    [
        (
            {"resources": {"gpuType": "H100-SXM", "gpus": 0}},
            "TrainingJob spec.resources.gpus: input should be greater than 0.",
        ),
        (
            {"method": "prefix-tuning"},
            "TrainingJob spec.method: must be one of 'auto', 'full', 'lora', 'qlora' or 'dora', "
            "got 'prefix-tuning'.",
        ),
        (
            {"strategy": "zero4"},
            "TrainingJob spec.strategy: must be one of 'auto', 'ddp', 'fsdp', 'zero1', 'zero2' "
            "or 'zero3', got 'zero4'.",
        ),
        (
            {"model": {"name": "llama-3.1-8b", "configPath": "/models/config.json"}},
            "TrainingJob spec.model: set exactly one of name or configPath.",
        ),
        (
            {"method": "full", "lora": {"rank": 8}},
            "TrainingJob spec: lora is only allowed with method auto, lora, qlora or dora, not full.",
        ),
        (
            {"budget": {"maxCostUsd": -5}},
            "TrainingJob spec.budget.maxCostUsd: input should be greater than 0.",
        ),
        ({"gpuCount": 8}, "TrainingJob spec.gpuCount: is not a known field."),
        (
            {"resources": {"gpuType": "auto", "gpusPerNode": 8}},
            "TrainingJob spec.resources: gpusPerNode needs a concrete gpuType, not auto.",
        ),
        (
            {"resources": {"gpuType": "H100-SXM", "gpus": 12, "nodes": 2, "gpusPerNode": 8}},
            "TrainingJob spec.resources: gpus must equal nodes x gpusPerNode.",
        ),
    ],
)
def test_a_bad_training_job_is_rejected_in_one_sentence_naming_the_field(
    spec_changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidResourceError) as caught:
        TrainingJob.from_body(training_job(**spec_changes))
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_a_missing_dataset_is_named_and_further_problems_are_counted() -> None:
    body = training_job(method="sideways")
    del body["spec"]["dataset"]
    with pytest.raises(InvalidResourceError, match=r"^TrainingJob spec\.method: .* \(and 1 more"):
        TrainingJob.from_body(body)


def test_the_contract_capacity_plan_validates() -> None:
    plan = CapacityPlan.from_body(yaml.safe_load(CONTRACT_CAPACITY_PLAN))
    inference = plan.spec.workload.inference
    assert inference is not None
    assert inference.rps == 20
    assert inference.ttft_slo_ms == 500
    assert plan.spec.forecast is not None
    assert plan.spec.forecast.quantile == "p95"
    assert plan.spec.forecast.source.prometheus is not None
    assert plan.spec.forecast.source.prometheus.lookback_seconds == 14 * 24 * 3600
    assert plan.spec.gpu_types == ["H100-SXM", "A100-80GB-SXM", "L4"]


def test_a_capacity_plan_for_training_reuses_the_training_job_fields() -> None:
    spec = yaml.safe_load(CONTRACT_TRAINING_JOB)["spec"]
    workload = {k: spec[k] for k in ("model", "method", "dataset", "training", "resources")}
    body = {"metadata": {"name": "t"}, "spec": {"workload": {"training": workload}}}
    plan = CapacityPlan.from_body(body)
    assert plan.spec.workload.training is not None
    assert plan.spec.workload.training.resources.max_gpus == 16


def test_a_capacity_plan_with_two_workloads_is_rejected() -> None:
    body = yaml.safe_load(CONTRACT_CAPACITY_PLAN)
    spec = yaml.safe_load(CONTRACT_TRAINING_JOB)["spec"]
    body["spec"]["workload"]["training"] = {k: spec[k] for k in ("model", "method", "dataset")}
    with pytest.raises(
        InvalidResourceError,
        match=r"^CapacityPlan spec\.workload: set exactly one of inference or training\.$",
    ):
        CapacityPlan.from_body(body)


def test_gguf_quantization_without_a_gguf_format_is_rejected() -> None:
    body = {
        "metadata": {"name": "x"},
        "spec": {
            "source": {"trainingJob": "llama8b-lora"},
            "formats": ["safetensors"],
            "quantization": "q4_k_m",
            "output": {"uri": "pvc://models/x"},
        },
    }
    with pytest.raises(InvalidResourceError, match="quantization needs format gguf or ollama"):
        ModelExport.from_body(body)


def test_a_model_export_defaults_to_merged_safetensors() -> None:
    export = ModelExport.from_body(
        {"spec": {"source": {"uri": "pvc://ckpt/adapter"}, "output": {"uri": "s3://b/p"}}}
    )
    assert export.spec.formats == ["safetensors"]
    assert export.spec.merge_adapter is True
    assert export.spec.quantization is None


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = set_condition([], type="Planned", status="True", reason="PlanFound", now=T0)
    again = set_condition(
        first, type="Planned", status="True", reason="PlanFound", message="8 x H100", now=T1
    )
    condition = find_condition(again, "Planned")
    assert condition is not None
    assert condition.last_transition_time == T0
    assert condition.message == "8 x H100"


def test_a_condition_moves_its_transition_time_when_its_status_flips_and_keeps_others() -> None:
    conditions = set_condition([], type="Planned", status="True", reason="PlanFound", now=T0)
    conditions = set_condition(conditions, type="Running", status="False", reason="Waiting", now=T0)
    conditions = set_condition(
        conditions, type="Planned", status="False", reason="DoesNotFit", now=T1
    )
    assert [c.type for c in conditions] == ["Planned", "Running"]
    planned = find_condition(conditions, "Planned")
    assert planned is not None and planned.last_transition_time == T1
    assert planned.reason == "DoesNotFit"
    running = find_condition(conditions, "Running")
    assert running is not None and running.last_transition_time == T0


def test_a_condition_reason_must_be_one_camel_case_word() -> None:
    with pytest.raises(ValueError, match="reason"):
        Condition(type="Planned", status="True", reason="plan found", last_transition_time=T0)


def test_the_eta_is_kept_to_the_second_so_the_printer_column_reads_cleanly() -> None:
    plan = PlanStatus(
        gpu_type="L4",
        num_gpus=1,
        nodes=1,
        gpus_per_node=1,
        strategy="ddp",
        micro_batch_size=2,
        gradient_accumulation_steps=1,
        memory_per_gpu_bytes=17_815_837_643,
        tokens_per_second=586.4,
        estimated_finish_time=dt.datetime(2026, 11, 23, 8, 54, 35, 964930, tzinfo=dt.UTC),
    )
    assert plan.to_manifest()["estimatedFinishTime"] == "2026-11-23T08:54:35Z"


def test_the_spec_digest_ignores_fields_left_at_their_defaults_and_follows_set_ones() -> None:
    """A field a newer operator adds, left unset, must not re-plan jobs made before it."""
    from trainwright.api.v1alpha1.trainingjob import spec_digest

    def digest(**changes: Any) -> str:
        return spec_digest(TrainingJob.from_body(training_job(**changes)).spec)

    before = digest()
    assert digest(queue=None, priorityClass=None) == before
    assert digest(suspend=True, maxRestarts=7) == before  # how it runs, not what
    assert digest(queue="team-a") != before
    assert digest(training={"epochs": 2, "seqLen": 2048, "learningRate": 2.0e-4}) != before
