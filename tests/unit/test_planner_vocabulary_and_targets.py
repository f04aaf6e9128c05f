"""One vocabulary for every layer, LoRA target modules, and GPU classes as catalog data."""

from __future__ import annotations

import typing

import pytest

from trainwright import vocabulary
from trainwright.api.plans import training_request_from
from trainwright.api.v1alpha1.capacityplan import InferenceWorkload
from trainwright.api.v1alpha1.trainingjob import TrainingJobSpec
from trainwright.cli import main
from trainwright.planner import PlannerError, TrainingRequest, get_gpu, get_model, plan_training
from trainwright.planner.memory import lora_trainable_params
from trainwright.planner.throughput import base_hfu
from trainwright.planner.training import TrainingRequest as PlannerTrainingRequest
from trainwright_trainer import config as trainer_config

LLAMA_8B = get_model("llama-3.1-8b")


def _literal_values(annotation: object) -> set[str]:
    return set(typing.get_args(annotation))


def test_the_api_planner_and_trainer_accept_the_same_methods_strategies_and_optimizers() -> None:
    api = TrainingJobSpec.model_fields
    planner = PlannerTrainingRequest.model_fields
    # A user may also ask for auto; the trainer gets the method it resolved to.
    assert _literal_values(api["method"].annotation) == set(vocabulary.METHOD_CHOICES)
    assert _literal_values(planner["method"].annotation) == set(vocabulary.METHOD_CHOICES)
    assert set(vocabulary.METHOD_CHOICES) == {"auto", *vocabulary.METHODS}
    assert _literal_values(api["strategy"].annotation) == set(vocabulary.STRATEGY_CHOICES)
    assert _literal_values(planner["strategy"].annotation) == set(vocabulary.STRATEGY_CHOICES)
    assert _literal_values(planner["cloud"].annotation) == set(vocabulary.CLOUDS)
    assert trainer_config.METHODS == vocabulary.METHODS
    assert trainer_config.STRATEGIES == vocabulary.STRATEGIES
    assert trainer_config.PEFT_METHODS == vocabulary.ADAPTER_METHODS
    # Every optimizer a job may run is one the planner can size.
    assert set(vocabulary.OPTIMIZERS) <= set(vocabulary.PLANNER_OPTIMIZERS)
    precision = InferenceWorkload.model_fields["precision"].annotation
    assert _literal_values(precision) == set(vocabulary.INFERENCE_PRECISIONS)


def test_the_cli_offers_the_vocabularys_clouds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "training", "--model", "llama-3.1-8b", "--method", "lora", "--cloud", "x"])
    assert exit_info.value.code == 2
    assert ", ".join(f"'{c}'" for c in vocabulary.CLOUDS) in capsys.readouterr().err


def test_q_and_v_projections_alone_train_a_sixth_of_the_all_linear_adapters() -> None:
    # Llama 3.1 8B, r 16: q (4096 -> 4096) and v (4096 -> 1024) in 32 layers.
    named = lora_trainable_params(LLAMA_8B, 16, ("q_proj", "v_proj"))
    assert named == 16 * 32 * ((4096 + 4096) + (4096 + 1024))
    assert named == lora_trainable_params(LLAMA_8B, 16, "qv")
    every = lora_trainable_params(LLAMA_8B, 16, ("all-linear",))
    assert every == lora_trainable_params(LLAMA_8B, 16, "all")
    # q 8192 + k 5120 + v 5120 + o 8192 + gate 18432 + up 18432 + down 18432 per layer.
    assert every == 16 * 32 * 81920


def test_a_trainingjobs_target_modules_reach_the_plan() -> None:
    spec = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://d/a.jsonl", "tokens": 10_000_000},
        "resources": {"gpuType": "H100-SXM", "gpus": 1},
        "lora": {"rank": 16, "targetModules": ["q_proj", "v_proj"]},
    }
    narrow = plan_training(training_request_from(TrainingJobSpec.model_validate(spec)))
    spec["lora"] = {"rank": 16}
    every = plan_training(training_request_from(TrainingJobSpec.model_validate(spec)))
    # Fewer adapters: less optimizer state (fp32 m, v and the adapter weights).
    assert narrow.memory.optimizer_bytes < every.memory.optimizer_bytes / 6
    assert narrow.throughput.tokens_per_second > every.throughput.tokens_per_second


def test_an_unknown_target_module_is_named_in_one_sentence() -> None:
    spec = TrainingJobSpec.model_validate(
        {
            "model": {"name": "llama-3.1-8b"},
            "method": "lora",
            "dataset": {"uri": "pvc://d/a.jsonl"},
            "lora": {"targetModules": ["q_proj", "mystery"]},
        }
    )
    with pytest.raises(PlannerError, match=r"spec.lora.targetModules: .*'mystery'"):
        training_request_from(spec)


def test_gpu_class_is_catalog_data_and_h100_pcie_is_not_credited_above_sxm() -> None:
    sxm, pcie = get_gpu("H100-SXM"), get_gpu("H100-PCIe")
    assert (sxm.architecture, sxm.form_factor, sxm.switched_peers) == ("hopper", "sxm", True)
    assert (pcie.architecture, pcie.form_factor, pcie.switched_peers) == ("hopper", "pcie", False)
    assert base_hfu(pcie) <= base_hfu(sxm) == 0.50
    request = {"model": "llama-3.1-8b", "method": "lora", "num_gpus": 1, "micro_batch": 2}
    on_sxm = plan_training(TrainingRequest(gpu="H100-SXM", **request))
    on_pcie = plan_training(TrainingRequest(gpu="H100-PCIe", **request))
    assert on_pcie.throughput.tokens_per_second < on_sxm.throughput.tokens_per_second
    assert on_pcie.throughput.mfu <= on_sxm.throughput.mfu
