"""Properties that hold for any model and configuration (hypothesis, seeded)."""

from __future__ import annotations

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from trainwright.planner import list_models
from trainwright.planner.memory import training_memory

MODELS = [m for m in list_models() if m.family != "megatron"]
models = st.sampled_from(MODELS)
methods = st.sampled_from(["full", "lora", "qlora", "dora"])
recomputes = st.sampled_from(["off", "selective", "full"])


@seed(20240501)
@settings(max_examples=60, deadline=None)
@given(
    model=models,
    method=methods,
    recompute=recomputes,
    micro_batch=st.integers(1, 8),
    gpus=st.sampled_from([1, 2, 4, 8, 16, 32]),
)
def test_more_gpus_never_increase_per_gpu_memory_under_zero3(
    model,
    method,
    recompute,
    micro_batch,
    gpus,  # type: ignore[no-untyped-def]
) -> None:
    def per_gpu(count: int) -> int:
        return training_memory(
            model,
            method=method,
            precision="bf16",
            strategy="zero3",
            data_parallel=count,
            tensor_parallel=1,
            pipeline_parallel=1,
            micro_batch=micro_batch,
            seq_len=2048,
            recompute=recompute,
            optimizer="adamw",
            lora_rank=16,
        ).per_gpu_bytes

    assert per_gpu(gpus * 2) <= per_gpu(gpus)


@seed(20240502)
@settings(max_examples=60, deadline=None)
@given(
    model=models,
    method=methods,
    recompute=recomputes,
    seq_len=st.integers(128, 16384),
    extra=st.integers(1, 8192),
    flash=st.booleans(),
    tp=st.sampled_from([1, 2, 4, 8]),
)
def test_longer_sequences_never_decrease_activation_memory(
    model,
    method,
    recompute,
    seq_len,
    extra,
    flash,
    tp,  # type: ignore[no-untyped-def]
) -> None:
    def activations(length: int) -> int:
        return training_memory(
            model,
            method=method,
            precision="bf16",
            strategy="fsdp",
            data_parallel=8,
            tensor_parallel=tp,
            pipeline_parallel=1,
            micro_batch=1,
            seq_len=length,
            recompute=recompute,
            optimizer="adamw",
            lora_rank=16,
            flash_attention=flash,
            sequence_parallel=tp > 1,
        ).activations_bytes

    assert activations(seq_len + extra) >= activations(seq_len)


@seed(20240503)
@settings(max_examples=40, deadline=None)
@given(model=models, micro_batch=st.integers(1, 16))
def test_checkpointing_never_needs_more_memory_than_keeping_everything(
    model,
    micro_batch,  # type: ignore[no-untyped-def]
) -> None:
    def per_gpu(recompute: str) -> int:
        return training_memory(
            model,
            method="lora",
            precision="bf16",
            strategy="ddp",
            data_parallel=1,
            tensor_parallel=1,
            pipeline_parallel=1,
            micro_batch=micro_batch,
            seq_len=2048,
            recompute=recompute,
            optimizer="adamw",
            lora_rank=16,  # type: ignore[arg-type]
        ).per_gpu_bytes

    assert per_gpu("full") <= per_gpu("off")
