"""Serving physics: weights, KV budget, decode/prefill time, queueing and replicas."""

from __future__ import annotations

import math

import pytest

from trainwright.planner import (
    InfeasibleError,
    InferenceRequest,
    PlannerError,
    get_model,
    kv_cache_bytes_per_token,
    plan_inference,
    recommend_inference,
)
from trainwright.planner.inference import (
    experts_touched_fraction,
    kv_cache_bytes_per_token_per_gpu,
    weight_bytes,
)
from trainwright.planner.queueing import erlang_c

GIB = 2**30


def _plan(**fields: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = {"model": "llama-3.1-8b", "gpu": "H100-SXM", "batch": 1}
    base.update(fields)
    return plan_inference(InferenceRequest(**base))  # type: ignore[arg-type]


def test_int4_weights_with_group_32_cost_five_bits_per_linear_weight() -> None:
    model = get_model("llama-2-7b")
    sixteen_bit = model.total_params - model.linear_params
    expected = model.linear_params * (0.5 + 4 / 32) + 2 * sixteen_bit
    assert weight_bytes(model, "int4", 32) == pytest.approx(expected)
    assert weight_bytes(model, "bf16") == 2 * model.total_params


def test_decode_at_batch_one_streams_the_weights_at_eighty_percent_of_bandwidth() -> None:
    # Llama 2 7B bf16 on A100-80GB: the weights but the input embedding table (its
    # 32,000 x 4,096 rows are gathered, not streamed), 13.22 GB / (0.8 x 2.039 TB/s),
    # plus 32 layers x 40 µs.
    plan = _plan(model="llama-2-7b", gpu="A100-80GB-SXM", tensor_parallel=1, prompt_tokens=5)
    streamed_bytes = 2 * (6.738415616e9 - 32000 * 4096)
    expected_seconds = streamed_bytes / (0.8 * 2.039e12) + 32 * 40e-6
    assert plan.latency.itl_seconds == pytest.approx(expected_seconds, rel=0.01)
    # gpt-fast measured 104.9 tokens/s on a power-capped A100.
    assert plan.throughput.decode_tokens_per_second_per_user == pytest.approx(104.9, rel=0.05)


def test_prefill_of_2048_tokens_on_an_a100_is_compute_bound() -> None:
    plan = _plan(
        model="llama-2-7b",
        gpu="A100-80GB-SXM",
        precision="fp16",
        prompt_tokens=2048,
        output_tokens=1,
        tensor_parallel=1,
    )
    compute = (2 * 6.738e9 * 2048 + 2 * 32 * 2048**2 * 4096) / (0.6 * 312e12)
    assert plan.latency.ttft_seconds > compute
    assert plan.latency.ttft_seconds == pytest.approx(0.164, abs=0.005)


def test_max_concurrent_sequences_follows_the_vllm_memory_budget() -> None:
    plan = _plan(prompt_tokens=512, output_tokens=256)
    budget = plan.memory.kv_cache_budget_bytes
    per_sequence = 768 * 131_072
    assert plan.memory.max_concurrent_sequences == budget // per_sequence
    # 0.9 x 79.6 GiB - 15 GiB weights - activation peak - 1 GiB non-torch: ~55 GiB for KV.
    assert budget / GIB == pytest.approx(54.6, abs=1.0)


def test_erlang_c_matches_the_textbook_value() -> None:
    # Two servers offered one Erlang: P(wait) = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(4, 4.0) == 1.0


def test_replicas_grow_with_the_request_rate_beyond_a_plain_division() -> None:
    light = _plan(batch=None, rps=1, ttft_slo_ms=1000, itl_slo_ms=50)
    heavy = _plan(batch=None, rps=40, ttft_slo_ms=1000, itl_slo_ms=50)
    assert light.replicas * light.tensor_parallel == 1
    assert heavy.replicas * heavy.tensor_parallel > 1
    capacity = (
        heavy.replicas
        * heavy.batch
        / (heavy.latency.ttft_seconds + 256 * heavy.latency.itl_seconds)
    )
    # Headroom for queueing: the fleet runs at most 90% busy.
    assert 40 / capacity <= 0.9 + 1e-9
    assert heavy.latency.itl_seconds <= 0.050


def test_an_itl_slo_caps_the_batch_per_replica() -> None:
    loose = _plan(batch=None, rps=20, itl_slo_ms=200)
    tight = _plan(batch=None, rps=20, itl_slo_ms=15)
    assert tight.batch < loose.batch
    assert tight.latency.itl_seconds <= 0.015
    assert tight.cost.usd_per_hour >= loose.cost.usd_per_hour


def test_seventy_b_in_bf16_needs_tensor_parallelism_on_80gb_cards() -> None:
    plan = _plan(model="llama-3.1-70b", gpu="H100-SXM")
    assert plan.tensor_parallel == 2
    assert plan.memory.kv_cache_bytes_per_token == 327_680


def test_recommendation_picks_the_cheapest_fleet_that_meets_the_slos() -> None:
    plan = recommend_inference(
        InferenceRequest(model="llama-3.1-8b", rps=20, ttft_slo_ms=500, itl_slo_ms=50)
    )
    assert plan.latency.ttft_seconds <= 0.5 and plan.latency.itl_seconds <= 0.05
    assert all(plan.cost.usd_per_hour <= alt.cost.usd_per_hour for alt in plan.recommendations)
    assert plan.cost.usd_per_million_tokens == pytest.approx(
        plan.cost.usd_per_hour / (20 * 256 * 3600) * 1e6, rel=1e-3
    )


def test_a_model_too_big_for_eight_gpus_is_infeasible_with_the_memory_needed() -> None:
    with pytest.raises(InfeasibleError) as error:
        _plan(model="llama-3.1-405b", gpu="L4")
    assert error.value.min_memory_bytes > 24 * 10**9
    assert math.isfinite(error.value.min_memory_bytes)


def test_fp8_on_a_gpu_without_fp8_is_rejected() -> None:
    with pytest.raises(PlannerError, match="fp8"):
        _plan(gpu="A100-80GB-SXM", precision="fp8")


def test_mixtral_decode_at_batch_one_reads_two_of_eight_experts() -> None:
    mixtral = get_model("mixtral-8x7b")
    assert experts_touched_fraction(mixtral, 1) == pytest.approx(0.25)
    assert experts_touched_fraction(mixtral, 2) == pytest.approx(1 - 0.75**2)
    assert experts_touched_fraction(get_model("llama-3.1-8b"), 1) == 1.0
    one = _plan(model="mixtral-8x7b", tensor_parallel=2, batch=1)
    many = _plan(model="mixtral-8x7b", tensor_parallel=2, batch=64)
    assert one.latency.itl_seconds < 0.5 * many.latency.itl_seconds


def test_kv_heads_are_replicated_when_tensor_parallelism_exceeds_them() -> None:
    qwen = get_model("qwen2.5-7b")  # 4 KV heads
    full = kv_cache_bytes_per_token(qwen, "bf16")
    assert kv_cache_bytes_per_token_per_gpu(qwen, "bf16", 2) == full / 2
    assert kv_cache_bytes_per_token_per_gpu(qwen, "bf16", 4) == full / 4
    assert kv_cache_bytes_per_token_per_gpu(qwen, "bf16", 8) == full / 4
