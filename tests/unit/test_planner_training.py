"""Training plans and the recommendation search."""

from __future__ import annotations

import pytest

from trainwright.planner import (
    InfeasibleError,
    PlannerError,
    TrainingRequest,
    get_gpu,
    get_model,
    plan_training,
    prices_from_mapping,
    recommend_training,
)
from trainwright.planner.throughput import (
    exposed_comm_seconds,
    flops_per_token,
    gemm_efficiency,
    training_step,
)

GIB = 2**30
CONTRACT_KEYS = {
    "model",
    "method",
    "gpu",
    "num_gpus",
    "strategy",
    "micro_batch",
    "gradient_accumulation",
    "seq_len",
    "memory",
    "fits",
    "throughput",
    "duration_seconds",
    "cost",
    "recommendations",
    "warnings",
}


def test_qlora_fits_8b_on_a_24gb_card() -> None:
    plan = plan_training(
        TrainingRequest(
            model="llama-3.1-8b",
            method="qlora",
            gpu="L4",
            num_gpus=1,
            micro_batch=1,
            gradient_checkpointing="on",
        )
    )
    assert plan.fits
    assert plan.memory.weights_bytes / GIB == pytest.approx(5.5, abs=0.3)
    assert plan.memory.per_gpu_bytes < plan.memory.capacity_bytes


def test_full_fine_tuning_8b_does_not_fit_one_24gb_card() -> None:
    plan = plan_training(
        TrainingRequest(model="llama-3.1-8b", method="full", gpu="L4", num_gpus=1, micro_batch=1)
    )
    assert not plan.fits
    assert plan.memory.per_gpu_bytes / GIB > 120
    assert "use more GPUs" in plan.warnings[0]


def test_the_contract_document_has_every_key() -> None:
    plan = plan_training(
        TrainingRequest(
            model="llama-3.1-8b",
            method="lora",
            gpu="H100-SXM",
            num_gpus=8,
            dataset_tokens=100_000_000,
        )
    )
    document = plan.to_contract()
    assert set(document) >= CONTRACT_KEYS
    assert set(document["memory"]) >= {
        "per_gpu_bytes",
        "weights_bytes",
        "gradients_bytes",
        "optimizer_bytes",
        "activations_bytes",
        "other_bytes",
        "capacity_bytes",
    }
    memory = document["memory"]
    parts = (
        "weights_bytes",
        "gradients_bytes",
        "optimizer_bytes",
        "activations_bytes",
        "other_bytes",
    )
    assert sum(memory[p] for p in parts) == pytest.approx(memory["per_gpu_bytes"], abs=5)
    assert document["cost"]["total_usd"] == pytest.approx(
        document["cost"]["usd_per_hour"] * document["duration_seconds"] / 3600, rel=1e-3
    )


def test_flops_per_token_are_6n_for_training_and_8n_with_full_recompute() -> None:
    model = get_model("llama-3.1-8b")
    attention = 2 * 32 * 2048 * 4096
    plain, _ = flops_per_token(model, method="full", seq_len=2048, recompute="off")
    _, recomputed = flops_per_token(model, method="full", seq_len=2048, recompute="full")
    assert plain == 6 * model.total_params + 3 * attention
    assert recomputed == 8 * model.total_params + 4 * attention
    lora, _ = flops_per_token(model, method="lora", seq_len=2048, recompute="off", lora_rank=16)
    assert lora / plain == pytest.approx(4 / 6, abs=0.02)


def test_duration_is_dataset_tokens_over_throughput() -> None:
    plan = plan_training(
        TrainingRequest(
            model="llama-3.1-8b",
            method="lora",
            gpu="A100-80GB-SXM",
            num_gpus=1,
            dataset_tokens=50_000_000,
            epochs=2,
        )
    )
    assert plan.duration_seconds == pytest.approx(1e8 / plan.throughput.tokens_per_second, rel=1e-3)
    assert 0.2 < plan.throughput.mfu < 0.6


def test_recommendation_is_the_cheapest_per_token_among_its_alternatives() -> None:
    plan = recommend_training(
        TrainingRequest(model="llama-3.1-70b", method="lora", dataset_tokens=200_000_000)
    )
    assert plan.fits
    assert len(plan.recommendations) >= 3
    assert all(
        plan.cost.total_usd <= alt.cost.total_usd * 1.02
        for alt in plan.recommendations  # type: ignore[operator]
    )
    assert len({alt.gpu for alt in plan.recommendations}) >= 2


def test_a_deadline_forces_more_gpus() -> None:
    relaxed = recommend_training(
        TrainingRequest(
            model="llama-3.1-8b",
            method="full",
            gpu_candidates=["H100-SXM"],
            dataset_tokens=1_000_000_000,
        )
    )
    deadline = relaxed.duration_seconds / 3  # type: ignore[operator]
    rushed = recommend_training(
        TrainingRequest(
            model="llama-3.1-8b",
            method="full",
            gpu_candidates=["H100-SXM"],
            dataset_tokens=1_000_000_000,
            deadline_seconds=deadline,
        )
    )
    assert rushed.num_gpus >= 3 * relaxed.num_gpus
    assert rushed.duration_seconds <= deadline  # type: ignore[operator]


def test_nothing_fits_raises_with_the_smallest_memory_needed() -> None:
    with pytest.raises(InfeasibleError, match="GiB per GPU") as error:
        recommend_training(
            TrainingRequest(
                model="llama-3.1-405b", method="full", gpu_candidates=["L4"], max_gpus=8
            )
        )
    # ZeRO-3 over 8 GPUs: 16 bytes x 405.9e9 / 8 is about 756 GiB before activations.
    assert error.value.min_memory_bytes / GIB > 756


def test_an_impossible_deadline_says_how_long_the_fastest_plan_takes() -> None:
    with pytest.raises(InfeasibleError, match="deadline of 60 s"):
        recommend_training(
            TrainingRequest(
                model="llama-3.1-8b",
                method="lora",
                dataset_tokens=10**10,
                deadline_seconds=60,
                max_gpus=8,
            )
        )


def test_a_deadline_without_dataset_tokens_is_a_usage_error() -> None:
    with pytest.raises(PlannerError, match="dataset_tokens"):
        recommend_training(TrainingRequest(model="llama-3.1-8b", deadline_seconds=3600))


def test_price_overrides_change_the_recommended_gpu() -> None:
    cheap_l40s = prices_from_mapping({"aws": {"L40S": 0.05}})
    plan = recommend_training(
        TrainingRequest(
            model="llama-3.1-8b", method="qlora", prices=cheap_l40s, dataset_tokens=10**8
        )
    )
    assert plan.gpu == "L40S"
    assert plan.cost.usd_per_hour == pytest.approx(0.05 * plan.num_gpus)


def test_tensor_and_pipeline_parallel_split_model_states() -> None:
    plan = plan_training(
        TrainingRequest(
            model="llama-3.1-70b",
            method="full",
            gpu="H100-SXM",
            num_gpus=16,
            tensor_parallel=8,
            pipeline_parallel=2,
            strategy="zero1",
            micro_batch=1,
            gradient_checkpointing="on",
        )
    )
    # 70.55e9 params / 16 GPUs: 2 (weights) bytes each.
    assert plan.memory.weights_bytes == pytest.approx(2 * 70.553706496e9 / 16, rel=1e-3)
    assert plan.gradient_accumulation == 8


def test_gpu_count_must_be_a_multiple_of_the_model_parallel_size() -> None:
    with pytest.raises(PlannerError, match="multiple of tensor_parallel"):
        plan_training(
            TrainingRequest(
                model="llama-3.1-70b", method="full", gpu="H100-SXM", num_gpus=12, tensor_parallel=8
            )
        )


def test_a_ddp_gradient_all_reduce_moves_twice_the_gradients_over_nvlink() -> None:
    # Ring all-reduce of 8B bf16 gradients over 8 H100s: 2 x 7/8 x 16.06 GB / 450 GB/s.
    seconds = exposed_comm_seconds(
        get_model("llama-3.1-8b"),
        get_gpu("H100-SXM"),
        "full",
        "bf16",
        "ddp",
        8,
        1,
        1,
        1,
        0.0,
        4096,
        16,
    )
    assert seconds == pytest.approx(2 * 7 / 8 * 2 * 8.030261248e9 / 450e9, rel=1e-6)


def test_fsdp_gathers_weights_for_every_micro_batch_across_nodes() -> None:
    # 16 GPUs on 2 nodes: per-GPU network share 50 GB/s; 4 micro-batches.
    seconds = exposed_comm_seconds(
        get_model("llama-3.1-8b"),
        get_gpu("H100-SXM"),
        "full",
        "bf16",
        "fsdp",
        16,
        1,
        1,
        2,
        0.0,
        4096,
        16,
        4,
    )
    weights = 2 * 8.030261248e9
    expected = (2 * 15 / 16 * weights * 4 + 15 / 16 * weights) / 50e9
    assert seconds == pytest.approx(expected, rel=1e-6)


def test_the_pipeline_bubble_costs_p_minus_1_over_m_micro_batches() -> None:
    model, gpu = get_model("llama-3.1-70b"), get_gpu("H100-SXM")

    def compute(interleave: int) -> float:
        return training_step(
            model,
            gpu,
            method="full",
            precision="bf16",
            strategy="ddp",
            data_parallel=1,
            tensor_parallel=8,
            pipeline_parallel=4,
            nodes=4,
            micro_batch=1,
            gradient_accumulation=8,
            seq_len=4096,
            recompute="full",
            lora_rank=16,
            pipeline_interleave=interleave,
        ).compute_seconds

    assert compute(1) / compute(10**9) == pytest.approx(1 + 3 / 8, rel=1e-6)
    assert compute(3) / compute(10**9) == pytest.approx(1 + 3 / 24, rel=1e-6)


def test_small_micro_batches_and_narrow_layers_lose_gemm_efficiency() -> None:
    model = get_model("llama-3.1-8b")
    assert gemm_efficiency(model, 4096, 1) == pytest.approx(4096 / 4224 * 4096 / 4352)
    assert gemm_efficiency(model, 512, 8) < 0.6 * gemm_efficiency(model, 4096, 1)


def test_a_memory_fraction_leaves_headroom_by_choosing_more_gpus() -> None:
    request = TrainingRequest(model="llama-3.1-8b", method="full", gpu="H100-SXM", max_gpus=16)
    whole = recommend_training(request)
    tight = recommend_training(request.model_copy(update={"memory_fraction": 0.6}))
    assert whole.memory.per_gpu_bytes > 0.6 * whole.memory.capacity_bytes
    assert tight.memory.per_gpu_bytes <= 0.6 * tight.memory.capacity_bytes
    assert tight.num_gpus > whole.num_gpus
    # The same GPUs pinned: a smaller micro-batch or checkpointing keeps it under the share.
    pinned = plan_training(
        request.model_copy(update={"num_gpus": whole.num_gpus, "memory_fraction": 0.6})
    )
    assert pinned.fits and pinned.memory.per_gpu_bytes <= 0.6 * pinned.memory.capacity_bytes
    assert (pinned.micro_batch, pinned.gradient_checkpointing) != (
        whole.micro_batch,
        whole.gradient_checkpointing,
    )
    # One GPU cannot hold it at all: the warning says how much a plan may use.
    single = plan_training(request.model_copy(update={"num_gpus": 1, "memory_fraction": 0.6}))
    assert not single.fits
    assert "may fill only 60% of it, 47.8 GiB" in single.warnings[0]
