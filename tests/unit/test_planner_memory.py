"""Training memory formulas against hand-checked numbers."""

from __future__ import annotations

import pytest

from trainwright.planner import get_model
from trainwright.planner.memory import (
    NF4_DOUBLE_QUANT_BYTES_PER_PARAM,
    activation_bytes_per_token_layer,
    base_weight_bytes,
    cross_attention_bytes,
    hf_eager_bytes_per_token_layer,
    hf_fp32_bytes_per_token_layer,
    lora_trainable_params,
    training_memory,
)

GIB = 2**30
LLAMA_8B = get_model("llama-3.1-8b")
MEGATRON_22B = get_model("megatron-22b")
T0_3B = get_model("t0-3b")
MT0_XXL = get_model("mt0-xxl")
BLOOMZ = get_model("bloomz-7b1")


def _memory(**overrides: object):  # type: ignore[no-untyped-def]
    fields: dict[str, object] = {
        "method": "full",
        "precision": "bf16",
        "strategy": "ddp",
        "data_parallel": 1,
        "tensor_parallel": 1,
        "pipeline_parallel": 1,
        "micro_batch": 1,
        "seq_len": 2048,
        "recompute": "full",
        "optimizer": "adamw",
        "lora_rank": 16,
        "framework": "torchtune",
    }
    fields.update(overrides)
    model = fields.pop("model", LLAMA_8B)
    return training_memory(model, **fields)  # type: ignore[arg-type]


def test_korthikanti_gpt_layer_keeps_34_plus_5as_over_h_bytes_per_token() -> None:
    # 22B: h=6144, a=64, s=2048: 34h + 5·a·s = 208,896 + 655,360 bytes per token per layer.
    per_token = activation_bytes_per_token_layer(
        MEGATRON_22B,
        tensor_parallel=1,
        sequence_parallel=False,
        flash_attention=False,
        compiled=False,
        seq_len=2048,
    )
    assert per_token == 34 * 6144 + 5 * 64 * 2048


def test_tensor_parallel_divides_24h_and_scores_but_not_the_10h_outside() -> None:
    per_token = activation_bytes_per_token_layer(
        MEGATRON_22B,
        tensor_parallel=8,
        sequence_parallel=False,
        flash_attention=False,
        compiled=False,
        seq_len=2048,
    )
    assert per_token == pytest.approx(6144 * (10 + 24 / 8) + 5 * 64 * 2048 / 8)


def test_flash_attention_removes_the_sequence_squared_term() -> None:
    eager = activation_bytes_per_token_layer(
        MEGATRON_22B,
        tensor_parallel=1,
        sequence_parallel=False,
        flash_attention=False,
        compiled=False,
        seq_len=8192,
    )
    flash = activation_bytes_per_token_layer(
        MEGATRON_22B,
        tensor_parallel=1,
        sequence_parallel=False,
        flash_attention=True,
        compiled=False,
        seq_len=8192,
    )
    assert eager - flash == 5 * 64 * 8192
    assert flash == 34 * 6144


def test_llama_layer_keeps_gqa_qkv_and_four_gated_mlp_tensors() -> None:
    # 12h + 4·g·h + 8f with h=4096, g=1/4, f=14336 (bf16, no dropout).
    per_token = activation_bytes_per_token_layer(
        LLAMA_8B,
        tensor_parallel=1,
        sequence_parallel=False,
        flash_attention=True,
        compiled=False,
        seq_len=2048,
    )
    assert per_token == 12 * 4096 + 4 * 0.25 * 4096 + 8 * 14336


def test_full_fine_tuning_with_adamw_needs_16_bytes_per_parameter_of_model_state() -> None:
    memory = _memory()
    states = memory.weights_bytes + memory.gradients_bytes + memory.optimizer_bytes
    assert states == pytest.approx(16 * LLAMA_8B.total_params, rel=1e-6)


@pytest.mark.parametrize(
    ("strategy", "bytes_per_param"),
    [("zero1", 4 + 12 / 8), ("zero2", 2 + 14 / 8), ("zero3", 16 / 8), ("fsdp", 16 / 8)],
)
def test_zero_stages_shard_model_states_as_the_zero_paper_says(
    strategy: str, bytes_per_param: float
) -> None:
    memory = _memory(strategy=strategy, data_parallel=8)
    states = memory.weights_bytes + memory.gradients_bytes + memory.optimizer_bytes
    working_set = 0 if strategy in ("zero1", "zero2") else 3 * LLAMA_8B.total_params * 2 / 32
    expected = bytes_per_param * LLAMA_8B.total_params + working_set
    assert states == pytest.approx(expected, rel=1e-3)


def test_eight_bit_adamw_keeps_two_bytes_and_paged_keeps_none_on_the_device() -> None:
    eight_bit = _memory(optimizer="adamw8bit")
    paged = _memory(optimizer="paged_adamw8bit")
    assert eight_bit.optimizer_bytes / LLAMA_8B.total_params == pytest.approx(2.0, abs=0.01)
    assert paged.optimizer_bytes == 0


def test_sgd_keeps_momentum_and_master_weights() -> None:
    assert _memory(optimizer="sgd").optimizer_bytes == pytest.approx(8 * LLAMA_8B.total_params)


def test_qlora_nf4_with_double_quantization_costs_4_127_bits_per_weight() -> None:
    assert pytest.approx(4.127, abs=0.001) == NF4_DOUBLE_QUANT_BYTES_PER_PARAM * 8
    sixteen_bit = LLAMA_8B.total_params - LLAMA_8B.linear_params
    expected = LLAMA_8B.linear_params * NF4_DOUBLE_QUANT_BYTES_PER_PARAM + 2 * sixteen_bit
    assert base_weight_bytes(LLAMA_8B, "qlora", "bf16") == pytest.approx(expected)
    assert expected / GIB == pytest.approx(5.31, abs=0.01)


def test_lora_rank_8_on_every_linear_of_llama_31_8b_trains_21_million_parameters() -> None:
    assert lora_trainable_params(LLAMA_8B, 8) == 20_971_520


def test_logits_of_a_128k_vocabulary_outweigh_checkpointed_layers() -> None:
    memory = _memory(method="lora", micro_batch=4, seq_len=4096)
    # 16,384 tokens x 128,256 vocab x 6.5 bytes (bf16 logits, fp32 log-softmax per chunk,
    # one chunk's fp32 upcast).
    assert memory.logits_bytes == int(16_384 * 128_256 * 6.5)
    assert memory.logits_bytes > memory.layer_activations_bytes


def test_gradient_checkpointing_keeps_only_layer_inputs_and_one_layer() -> None:
    full = _memory(recompute="full", micro_batch=2)
    off = _memory(recompute="off", micro_batch=2)
    tokens = 2 * 2048
    per_layer = 12 * 4096 + 4 * 0.25 * 4096 + 8 * 14336
    assert full.layer_activations_bytes == pytest.approx(tokens * (2 * 4096 * 32 + per_layer))
    assert off.layer_activations_bytes == pytest.approx(tokens * per_layer * 32)


def test_optimizer_in_backward_keeps_one_gradient_tensor_at_a_time() -> None:
    memory = _memory(optimizer_in_backward=True, optimizer="paged_adamw8bit")
    assert memory.gradients_bytes == 128_256 * 4096 * 2
    assert memory.overlap_bytes == 0


def test_cpu_offload_under_fsdp_leaves_only_a_two_layer_working_set_on_the_gpu() -> None:
    memory = _memory(strategy="fsdp", data_parallel=8, cpu_offload=True)
    layer_bytes = LLAMA_8B.total_params * 2 / 32
    assert memory.optimizer_bytes == 0 and memory.gradients_bytes == 0
    assert memory.weights_bytes == pytest.approx(2 * layer_bytes + layer_bytes, rel=1e-6)


def test_hf_peft_lora_saves_72h_per_token_and_layer_on_llama_31_8b() -> None:
    # (36 + 4g)h + 10f: fp32 norm inputs, PEFT's fp32 input casts, SDPA q/k/v/out, MLP.
    per_token = hf_eager_bytes_per_token_layer(LLAMA_8B, 1, True, 2048, True)
    assert per_token == 37 * 4096 + 10 * 14336
    # An H100 measured 304.5 kB (benchmarks/measure_gpu_training.py).
    assert per_token / 304_500 == pytest.approx(1.0, abs=0.04)


def test_hf_amp_full_fine_tuning_keeps_18_bytes_per_parameter() -> None:
    memory = _memory(framework="hf", micro_batch=1)
    # fp32 weights + autocast's bf16 copies (6) + fp32 gradients (4) + AdamW m, v (8).
    assert memory.weights_bytes == pytest.approx(6 * LLAMA_8B.total_params, rel=1e-6)
    assert memory.gradients_bytes == pytest.approx(4 * LLAMA_8B.total_params, rel=1e-6)
    assert memory.optimizer_bytes == pytest.approx(8 * LLAMA_8B.total_params, rel=1e-6)


def test_hf_eager_loss_reserves_14_bytes_per_logit() -> None:
    memory = _memory(framework="hf", method="lora", micro_batch=2, seq_len=2048)
    assert memory.logits_bytes == 4096 * 128_256 * 14


def test_gradients_reuse_freed_activations_without_accumulation_on_one_gpu() -> None:
    alone = _memory(recompute="off", micro_batch=2)
    assert alone.overlap_bytes == min(alone.gradients_bytes, alone.activations_bytes) > 0
    parts = (
        alone.weights_bytes
        + alone.gradients_bytes
        + alone.optimizer_bytes
        + alone.activations_bytes
        + alone.other_bytes
    )
    assert alone.per_gpu_bytes == parts - alone.overlap_bytes
    ddp = _memory(recompute="off", micro_batch=2, data_parallel=8)
    accumulating = _memory(recompute="off", micro_batch=2, microbatches=4)
    assert ddp.overlap_bytes == 0 and accumulating.overlap_bytes == 0


def test_lora_on_query_and_value_of_llama_2_7b_trains_4_2_million_parameters() -> None:
    # torchtune's 7B_lora configs: rank 8 on q_proj and v_proj of 32 layers.
    assert lora_trainable_params(get_model("llama-2-7b"), 8, "qv") == 8 * 32 * 2 * (4096 + 4096)


def test_lora_on_a_t5_adapts_query_and_value_of_self_and_cross_attention() -> None:
    per_attention = 8 * 2 * (2048 + 2048)
    assert lora_trainable_params(T0_3B, 8, "qv") == per_attention * (24 + 24 + 24)


def test_lora_on_bloom_adapts_the_fused_query_key_value_projection_once() -> None:
    assert lora_trainable_params(BLOOMZ, 8, "qkv") == 8 * 30 * (4096 + 3 * 4096)
    assert lora_trainable_params(BLOOMZ, 8, "qv") == lora_trainable_params(BLOOMZ, 8, "qkv")


def test_fp32_bloom_block_with_lora_on_query_key_value_keeps_41h_plus_4as_bytes() -> None:
    # norms 8h, q k v 12h, GELU input 4·4h, one adapted input with its dropout mask 5h.
    per_token = hf_fp32_bytes_per_token_layer(
        BLOOMZ, flash_attention=False, seq_len=64, adapters=True, targets="qkv"
    )
    assert per_token == 41 * 4096 + 4 * 32 * 64


def test_fp32_t5_block_counts_dropout_masks_and_the_gated_gelu_mlp() -> None:
    h, f, a, s = 4096, 10240, 64, 64
    per_token = hf_fp32_bytes_per_token_layer(
        MT0_XXL, flash_attention=False, seq_len=s, adapters=True, targets="qv"
    )
    assert per_token == 8 * h + 12 * h + 9 * a * s + 2 * h + 13 * f + 2 * 5 * h


def test_cross_attention_keeps_k_and_v_of_every_source_token() -> None:
    source = cross_attention_bytes(
        T0_3B,
        source_tokens=512,
        target_tokens=0,
        source_len=64,
        flash_attention=False,
        adapters=True,
        targets="qv",
        bytes_per_value=4,
    )
    assert source == 512 * (8 * 2048 + 5 * 2048)


def test_mt0_xxl_lora_in_fp32_holds_its_fp32_weights_plus_4_gib_of_activations() -> None:
    memory = _memory(
        model=MT0_XXL,
        method="lora",
        precision="fp32",
        micro_batch=8,
        seq_len=64,
        target_len=4,
        recompute="off",
        lora_rank=8,
        lora_targets="qv",
        framework="hf",
        flash_attention=False,
    )
    assert memory.weights_bytes / GIB == pytest.approx(12.92e9 * 4 / GIB, rel=0.01)
    assert 3.5 < memory.activations_bytes / GIB < 5
    # Decoder logits: 8 sequences x 4 target tokens x 250112 entries x 12 bytes.
    assert memory.logits_bytes == 8 * 4 * 250112 * 12


def test_the_decoder_of_an_encoder_decoder_sees_target_tokens_only() -> None:
    short = _memory(model=T0_3B, method="lora", recompute="off", seq_len=512, target_len=8)
    long = _memory(model=T0_3B, method="lora", recompute="off", seq_len=512, target_len=512)
    assert long.logits_bytes == 64 * short.logits_bytes
    assert long.activations_bytes > short.activations_bytes


def test_zero3_parameter_offload_keeps_the_live_budget_plus_the_largest_tensor() -> None:
    memory = _memory(
        model=BLOOMZ,
        method="lora",
        precision="fp32",
        strategy="zero3",
        cpu_offload=True,
        micro_batch=8,
        seq_len=64,
        recompute="off",
        lora_rank=8,
        framework="hf",
    )
    # DeepSpeed's coordinator prefetches whole tensors while fewer than 1e9 parameters are
    # gathered: 1e9 plus the 250880 x 4096 embedding, fp32 (1.99e9 measured on its own code
    # by benchmarks/measure_zero3_live_params.py).
    assert memory.weights_bytes == pytest.approx((1e9 + 250880 * 4096) * 4, rel=1e-6)
    assert memory.optimizer_bytes == 0 and memory.gradients_bytes == 0
    # DeepSpeed's 5e8-element fp32 reduce bucket sits in other_bytes.
    assert memory.other_bytes > 500_000_000 * 4


def test_torchtune_keeps_adapters_and_their_adamw_state_in_bf16() -> None:
    torchtune = _memory(method="lora", lora_rank=8, framework="torchtune")
    hf = _memory(method="lora", lora_rank=8, framework="hf")
    adapters = lora_trainable_params(LLAMA_8B, 8)
    assert torchtune.optimizer_bytes == pytest.approx(adapters * 4, abs=4)
    assert hf.optimizer_bytes == pytest.approx(adapters * 8, abs=8)


def test_paged_32_bit_adamw_keeps_no_state_on_the_device() -> None:
    assert _memory(optimizer="paged_adamw").optimizer_bytes == 0


def test_foreach_adamw_adds_one_v_sized_temporary_at_the_step() -> None:
    fused = _memory(model=T0_3B, precision="fp32", framework="hf", recompute="off")
    foreach = _memory(
        model=T0_3B, precision="fp32", framework="hf", recompute="off", optimizer="adamw_foreach"
    )
    assert foreach.other_bytes - fused.other_bytes == pytest.approx(4 * T0_3B.total_params, abs=8)
    in_backward = _memory(optimizer="adamw_foreach", optimizer_in_backward=True)
    assert in_backward.other_bytes == _memory(optimizer_in_backward=True).other_bytes


def test_trainwrights_fsdp_adamw_steps_by_foreach_with_a_sharded_temporary() -> None:
    fsdp = _memory(framework="hf", strategy="fsdp", data_parallel=8, recompute="off")
    fsdp_fused = _memory(
        framework="hf", strategy="fsdp", data_parallel=8, recompute="off", optimizer="adamw8bit"
    )
    temporary = fsdp.other_bytes - fsdp_fused.other_bytes
    assert temporary == pytest.approx(4 * LLAMA_8B.total_params / 8, rel=0.01)
