"""The planner sizes the trainer's fused, chunked loss: one chunk of logits, not all of them."""

from __future__ import annotations

import pytest

from trainwright.api.plans import training_request_from
from trainwright.api.v1alpha1 import TrainingJob
from trainwright.planner.lookup import get_model
from trainwright.planner.memory import (
    FUSED_CHUNK_BYTES_PER_VALUE,
    LOGITS_BYTES_PER_VALUE,
    logits_bytes,
    training_memory,
)
from trainwright.vocabulary import LOSS_CHUNK_TOKENS
from trainwright_trainer.config import TrainingConfig

TOKENS = 8 * 4096  # a micro-batch of 8 sequences of 4,096 tokens


def test_the_fused_loss_keeps_one_chunk_of_a_128k_vocabulary_instead_of_all_logits() -> None:
    model = get_model("llama-3.1-8b")
    plain = logits_bytes(model, TOKENS, 1, False, "hf")
    fused = logits_bytes(model, TOKENS, 1, False, "hf", loss_chunk_tokens=1024)
    full = logits_bytes(model, TOKENS, 1, False, "hf", loss_chunk_tokens=1024, head_trains=True)

    assert plain == TOKENS * 128_256 * LOGITS_BYTES_PER_VALUE["hf"]  # 54 GiB of logits
    assert fused == 1024 * 128_256 * FUSED_CHUNK_BYTES_PER_VALUE + TOKENS * 4096 * 2
    assert fused / 2**30 == pytest.approx(1.23, abs=0.01) and plain / fused > 40
    assert full - fused == 128_256 * 4096 * 4  # the head's fp32 gradient, made in forward


def test_a_lora_step_needs_that_much_less_memory_per_gpu() -> None:
    model = get_model("llama-3.1-8b")
    shape = {
        "method": "lora",
        "precision": "bf16",
        "strategy": "ddp",
        "data_parallel": 1,
        "tensor_parallel": 1,
        "pipeline_parallel": 1,
        "recompute": "none",
        "optimizer": "adamw",
        "lora_rank": 16,
    }
    plain = training_memory(model, micro_batch=8, seq_len=4096, framework="hf", **shape)
    fused = training_memory(
        model, micro_batch=8, seq_len=4096, framework="hf", loss_chunk_tokens=1024, **shape
    )

    assert plain.logits_bytes - fused.logits_bytes == pytest.approx(
        logits_bytes(model, TOKENS, 1, False, "hf")
        - logits_bytes(model, TOKENS, 1, False, "hf", loss_chunk_tokens=1024),
        rel=1e-9,
    )
    assert fused.per_gpu_bytes < plain.per_gpu_bytes - 40 * 2**30


def test_trainingjobs_are_planned_with_the_trainers_own_chunk() -> None:
    job = TrainingJob.from_body(
        {
            "apiVersion": "trainwright.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "ft", "namespace": "ml"},
            "spec": {
                "model": {"name": "llama-3.1-8b"},
                "method": "lora",
                "dataset": {"uri": "pvc://d/a.jsonl"},
            },
        }
    )
    request = training_request_from(job.spec)

    assert request.loss_chunk_tokens == LOSS_CHUNK_TOKENS
    assert TrainingConfig().loss_chunk_tokens == LOSS_CHUNK_TOKENS
