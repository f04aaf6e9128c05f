"""Planner accuracy against published measurements: ``python -m trainwright.cli.accuracy``.

Reads ``measured-public.csv`` (I/O, hence here and not in the pure planner),
expresses each row it can as a planner request, and prints or writes
(``--write docs/planner-accuracy.md``) estimate vs measured. Rows that state too
little of their configuration to express are listed with the reason.

Tolerances (issue 2): memory within ±15% or ±1.5 GiB, whichever is larger;
Korthikanti et al. Fig. 1 activations and model states within ±3%; decode
tokens/s within ±25%; TTFT within ±35%. Throughput and pretraining GPU-hour rows
are reported without a tolerance. Serving at real batch sizes is judged by
``trainwright.cli.serving_accuracy`` and written as the document's last section.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from trainwright.cli.serving_accuracy import (
    SERVING_CSV,
    ServingResult,
    evaluate_serving,
    large_batch_hits,
    read_serving_rows,
    render_serving_markdown,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CSV = REPO_ROOT.parent / "shared" / "reference" / "measured-public.csv"
FALLBACK_CSV = REPO_ROOT / "tests" / "data" / "measured-public.csv"
# Our own H100 measurements (benchmarks/measure_gpu_training.py), kept in the repository.
OWN_CSV = REPO_ROOT / "tests" / "data" / "measured-own-h100.csv"
OWN_FIRST_ID = 1001
GIB = 2**30

# One row's request: planner kind, request fields, what to read from the plan.
Extract = Callable[[Any], float]


class RowSpec(NamedTuple):
    kind: str  # "training" or "inference"
    fields: dict[str, Any]
    extract: Extract
    unit_scale: float  # multiply the CSV value by this to get the extracted unit
    tolerance: str  # "memory", "korthikanti", "decode", "ttft", or "report"
    note: str


class RowResult(NamedTuple):
    row_id: int
    model: str
    gpu: str
    metric: str
    measured: float
    estimate: float | None
    error: float | None
    tolerance: str
    within: bool | None
    note: str
    out_of_memory: bool = False


def _reserved_gib(plan: Any) -> float:
    """torch's reserved pool excludes the CUDA context, which the plan counts in other_bytes."""
    from trainwright.planner.memory import CUDA_CONTEXT_BYTES

    return float((plan.memory.per_gpu_bytes - CUDA_CONTEXT_BYTES) / GIB)


def _allocated_gib(plan: Any) -> float:
    """``torch.cuda.max_memory_allocated``: the reserved pool less allocator fragmentation."""
    from trainwright.planner.memory import CUDA_CONTEXT_BYTES, FRAGMENTATION_FRACTION

    memory = plan.memory
    slack = FRAGMENTATION_FRACTION * (memory.activations_bytes + memory.gradients_bytes)
    return float((memory.per_gpu_bytes - CUDA_CONTEXT_BYTES - slack) / GIB)


def _model_state_gib(plan: Any) -> float:
    memory = plan.memory
    return float((memory.weights_bytes + memory.gradients_bytes + memory.optimizer_bytes) / GIB)


def _layer_activations_gib(plan: Any) -> float:
    return float((plan.memory.activations_bytes - plan.memory.logits_bytes) / GIB)


def _tokens_per_second(plan: Any) -> float:
    return float(plan.throughput.tokens_per_second)


def _gpu_hours(plan: Any) -> float:
    return float(plan.duration_seconds * plan.num_gpus / 3600)


def _ttft_ms(plan: Any) -> float:
    return float(plan.latency.ttft_seconds * 1000)


def _decode_tokens_per_second(plan: Any) -> float:
    return float(plan.throughput.decode_tokens_per_second_per_user)


_TORCHTUNE = {
    "micro_batch": 2,
    "seq_len": 2048,
    "gradient_checkpointing": "on",
    "compile": True,
    "strategy": "ddp",
    "framework": "torchtune",
}
_TORCHTUNE_8B = {**_TORCHTUNE, "model": "llama-3.1-8b", "gpu": "RTX-4090", "num_gpus": 1}
_TORCHTUNE_70B = {**_TORCHTUNE, "gpu": "A100-80GB-SXM", "num_gpus": 8, "strategy": "fsdp"}
_FULL_8B = {
    **_TORCHTUNE_8B,
    "method": "full",
    "optimizer": "paged_adamw8bit",
    "optimizer_in_backward": True,
}
_LORA_8B = {**_TORCHTUNE_8B, "method": "lora", "lora_rank": 8}
_QLORA_8B = {**_TORCHTUNE_8B, "method": "qlora", "lora_rank": 8}
_FULL_70B = {**_TORCHTUNE_70B, "model": "llama-3.1-70b", "method": "full", "cpu_offload": True}
_LORA_70B = {**_TORCHTUNE_70B, "model": "llama-3.1-70b", "method": "lora", "lora_rank": 16}
_QLORA_405B = {**_TORCHTUNE_70B, "model": "llama-3.1-405b", "method": "qlora", "lora_rank": 16}
_TT = "torchtune recipe from the notes (bs 2, packed 2048, compile, AC)"
# Row 15's cell says "44.8 GB" where the rest of that table says GiB. Read as GiB:
# torchtune's memory logger (training/memory.py, v0.3-v0.5) divides by 1024**3 and prints
# GiB, and read as 1e9 bytes (41.7 GiB) the figure is under the run's own floor: the
# sharded NF4 weights with their 16-bit embedding and head (25.1 GiB) plus the
# checkpointed layer inputs of 2 x 2048 tokens (2 bytes x h x L = 15.75 GiB) are 40.9 GiB
# before the all-gathered layer (1.5 GiB of NF4), its recomputation and the loss.
_TT_405B = _TT + "; the cell's GB read as GiB, the unit of torchtune's memory logger"


# torchtune's early-2024 Llama 2 7B configs (recipes/configs/llama2/*.yaml of that era):
# LoRA rank 8, batch_size 2, alpaca_cleaned_dataset(max_seq_len=512) unpacked and padded to
# the longest sequence of a batch, so the peak is a batch truncated to 512 tokens; bf16,
# eager CrossEntropyLoss, no compile. Gradient accumulation as the config sets it.
_TT_LLAMA2 = {
    "model": "llama-2-7b",
    "micro_batch": 2,
    "seq_len": 512,
    "framework": "torchtune",
    "lora_rank": 8,
    "strategy": "ddp",
}
_TT2_NOTE = "config defaults: bs 2, alpaca_cleaned max_seq_len 512 (longest batch), bf16, r 8"
_TT_LLAMA2_ROWS = {
    17: {
        "gpu": "RTX-4090",
        "num_gpus": 1,
        "method": "qlora",
        "gradient_checkpointing": "on",
        "global_batch_size": 32,
    },
    18: {
        "gpu": "RTX-4090",
        "num_gpus": 2,
        "method": "lora",
        "lora_targets": "qv",
        "gradient_checkpointing": "off",
        "strategy": "fsdp",
        "global_batch_size": 128,
    },
    19: {
        "gpu": "RTX-4090",
        "num_gpus": 1,
        "method": "lora",
        "lora_targets": "qv",
        "gradient_checkpointing": "on",
        "global_batch_size": 128,
    },
    20: {
        "gpu": "RTX-A6000",
        "num_gpus": 1,
        "method": "full",
        "optimizer": "paged_adamw",
        "optimizer_in_backward": True,
        "gradient_checkpointing": "on",
        "global_batch_size": 2,
    },
}
_TT2_DETAIL = {
    17: "7B_qlora_single_device: NF4, adapters on q, k, v, o and MLP, AC, accumulation 16",
    18: "7B_lora: FSDP on 2 GPUs, adapters on q and v, no AC, accumulation 32",
    19: "7B_lora_single_device: adapters on q and v, AC, accumulation 64",
    20: "7B_full_single_device_low_memory: 32-bit PagedAdamW, optimizer in backward, AC",
}

# The Hugging Face PEFT README use-case table: examples/{conditional_generation,
# causal_language_modeling}/peft_lora_*_accelerate_ds_zero3_offload.py on one A100 80GB.
# fp32 (no mixed precision), AdamW, batch 8, LoRA r=8 on PEFT's default targets (T5: q, v;
# BLOOM: query_key_value), dropout 0.1, eager attention. twitter_complaints tweets: the
# causal example pads to max_length 64; the seq2seq example pads sources to the longest
# tweet in a batch (taken as 64) and targets to the longest label (4 tokens with </s>).
# GPU memory is the scripts' peak torch.cuda.max_memory_allocated in MiB, so GB = GiB.
# The table dates from PEFT 0.1 (February 2023, PyTorch 1.13), whose AdamW stepped
# tensor by tensor by default, so no foreach temporary (see ``adamw_foreach``).
_PEFT = {
    "gpu": "A100-80GB-SXM",
    "num_gpus": 1,
    "precision": "fp32",
    "micro_batch": 8,
    "seq_len": 64,
    "gradient_checkpointing": "off",
    "flash_attention": False,
    "strategy": "ddp",
    "framework": "hf",
    "lora_rank": 8,
}
_PEFT_MODELS = {21: ("t0-3b", "qv", 4), 24: ("mt0-xxl", "qv", 4), 27: ("bloomz-7b1", "qkv", None)}
_PEFT_NOTE = "PEFT example, fp32, batch 8, {seq}, r 8 on {targets}"


def _peft_specs() -> dict[int, RowSpec]:
    specs: dict[int, RowSpec] = {}
    for first, (model, targets, target_len) in _PEFT_MODELS.items():
        base: dict[str, Any] = {**_PEFT, "model": model}
        if target_len is not None:
            base["target_len"] = target_len
        seq = "source 64, target 4 tokens" if target_len else "max_length 64"
        note = _PEFT_NOTE.format(seq=seq, targets=targets)
        lora = {**base, "method": "lora", "lora_targets": targets}
        offload = {**lora, "strategy": "zero3", "cpu_offload": True}
        specs[first] = RowSpec(
            "training", {**base, "method": "full"}, _allocated_gib, 1, "memory", note
        )
        specs[first + 1] = RowSpec("training", lora, _allocated_gib, 1, "memory", note)
        specs[first + 2] = RowSpec(
            "training",
            offload,
            _allocated_gib,
            1,
            "memory",
            note + ", ZeRO-3 param+optimizer offload",
        )
    return specs


def _megatron(model: str, pp: int, micro: int, batch: int, interleave: int) -> dict[str, Any]:
    return {
        "model": model,
        "method": "full",
        "gpu": "A100-80GB-SXM",
        "num_gpus": 8 * pp,
        "tensor_parallel": 8,
        "pipeline_parallel": pp,
        "pipeline_interleave": interleave,
        "micro_batch": micro,
        "global_batch_size": batch,
        "precision": "fp16",
        "fp32_gradients": True,
        "flash_attention": False,
        "strategy": "ddp",
        "seq_len": 2048,
        "framework": "megatron",
    }


_KORTHIKANTI = {
    52: ("megatron-22b", 1, 4, 4, 1),
    55: ("gpt3-175b", 8, 1, 64, 3),
    58: ("turing-530b", 35, 1, 280, 3),
    61: ("megatron-1t", 64, 1, 512, 1),
}


def _korthikanti_specs() -> dict[int, RowSpec]:
    specs: dict[int, RowSpec] = {}
    for first, (model, pp, micro, batch, interleave) in _KORTHIKANTI.items():
        base = _megatron(model, pp, micro, batch, interleave)
        tp_only = {**base, "gradient_checkpointing": "off", "sequence_parallel": False}
        selective = {**base, "gradient_checkpointing": "selective", "sequence_parallel": True}
        note = f"TP8 PP{pp}, micro {micro}, batch {batch}, interleave {interleave}, no flash"
        specs[first] = RowSpec("training", tp_only, _model_state_gib, 1, "korthikanti", note)
        specs[first + 1] = RowSpec(
            "training", tp_only, _layer_activations_gib, 1, "korthikanti", note
        )
        specs[first + 2] = RowSpec(
            "training", selective, _layer_activations_gib, 1, "korthikanti", note + ", SP"
        )
    return specs


def _pretraining(model: str, gpu: str, gpus: int, seq: int, tokens: float, tp: int) -> RowSpec:
    fields = {
        "model": model,
        "method": "full",
        "gpu": gpu,
        "num_gpus": gpus,
        "tensor_parallel": tp,
        "strategy": "fsdp",
        "framework": "megatron",
        "seq_len": seq,
        "dataset_tokens": int(tokens),
    }
    note = f"{gpus} GPUs, TP{tp} + FSDP, {tokens / 1e12:g}T tokens"
    return RowSpec("training", fields, _gpu_hours, 1, "report", note)


def _inference(
    model: str, gpu: str, tp: int, precision: str, prompt: int, out: int
) -> dict[str, Any]:
    return {
        "model": model,
        "gpu": gpu,
        "tensor_parallel": tp,
        "precision": precision,
        "prompt_tokens": prompt,
        "output_tokens": out,
        "batch": 1,
        "quant_group_size": 32,
    }


def row_specs() -> dict[int, RowSpec]:
    """How each expressible CSV row maps onto a planner request."""
    specs: dict[int, RowSpec] = {
        1: RowSpec("training", _FULL_8B, _reserved_gib, 1, "memory", _TT),
        2: RowSpec("training", _FULL_8B, _tokens_per_second, 1, "report", _TT),
        5: RowSpec("training", _LORA_8B, _reserved_gib, 1, "memory", _TT),
        6: RowSpec("training", _LORA_8B, _tokens_per_second, 1, "report", _TT),
        9: RowSpec("training", _QLORA_8B, _reserved_gib, 1, "memory", _TT),
        10: RowSpec("training", _QLORA_8B, _tokens_per_second, 1, "report", _TT),
        11: RowSpec("training", _FULL_70B, _reserved_gib, 1, "memory", _TT),
        12: RowSpec("training", _FULL_70B, _tokens_per_second, 1, "report", _TT),
        13: RowSpec("training", _LORA_70B, _reserved_gib, 1, "memory", _TT),
        14: RowSpec("training", _LORA_70B, _tokens_per_second, 1, "report", _TT),
        15: RowSpec("training", _QLORA_405B, _reserved_gib, 1, "memory", _TT_405B),
        16: RowSpec("training", _QLORA_405B, _tokens_per_second, 1, "report", _TT),
        72: _pretraining("llama-2-7b", "A100-80GB-SXM", 2048, 4096, 2e12, 1),
        73: _pretraining("llama-2-13b", "A100-80GB-SXM", 2048, 4096, 2e12, 1),
        74: _pretraining("llama-2-70b", "A100-80GB-SXM", 2048, 4096, 2e12, 8),
        75: _pretraining("llama-3-8b", "H100-SXM", 16384, 8192, 15e12, 1),
        76: _pretraining("llama-3-70b", "H100-SXM", 16384, 8192, 15e12, 8),
        77: _pretraining("llama-3.1-8b", "H100-SXM", 16384, 8192, 15.6e12, 1),
        78: _pretraining("llama-3.1-70b", "H100-SXM", 16384, 8192, 15.6e12, 8),
        79: _pretraining("llama-3.1-405b", "H100-SXM", 16384, 8192, 15.6e12, 8),
    }
    specs.update(_korthikanti_specs())
    specs.update(_peft_specs())
    for row_id, fields in _TT_LLAMA2_ROWS.items():
        note = f"{_TT2_DETAIL[row_id]}; {_TT2_NOTE}"
        specs[row_id] = RowSpec(
            "training", {**_TT_LLAMA2, **fields}, _reserved_gib, 1e9 / GIB, "memory", note
        )
    ttft = {
        101: ("llama-2-7b", "H100-SXM", 1, "fp8", 128),
        102: ("llama-2-7b", "H100-SXM", 1, "fp8", 2048),
        103: ("llama-2-70b", "H100-SXM", 4, "fp8", 128),
        104: ("llama-2-70b", "H100-SXM", 4, "fp8", 2048),
        105: ("llama-2-7b", "A100-80GB-SXM", 1, "fp16", 128),
        106: ("llama-2-7b", "A100-80GB-SXM", 1, "fp16", 2048),
        107: ("llama-2-70b", "A100-80GB-SXM", 4, "fp16", 128),
        108: ("llama-2-70b", "A100-80GB-SXM", 4, "fp16", 2048),
        109: ("llama-2-7b", "L40S", 1, "fp8", 128),
        110: ("llama-2-7b", "L40S", 1, "fp8", 2048),
    }
    for row_id, (model, gpu, tp, precision, prompt) in ttft.items():
        fields = _inference(model, gpu, tp, precision, prompt, 1)
        note = f"TP{tp} {precision}, prompt {prompt}, batch 1"
        specs[row_id] = RowSpec("inference", fields, _ttft_ms, 1, "ttft", note)
    decode = {
        111: ("llama-2-7b", 1, "bf16"),
        112: ("llama-2-7b", 1, "int8"),
        113: ("llama-2-7b", 1, "int4"),
        114: ("llama-2-70b", 1, "int8"),
        115: ("llama-2-70b", 1, "int4"),
        116: ("llama-2-7b", 2, "bf16"),
        117: ("llama-2-7b", 4, "bf16"),
        118: ("llama-2-7b", 8, "bf16"),
        119: ("llama-2-70b", 2, "bf16"),
        120: ("llama-2-70b", 4, "bf16"),
        121: ("llama-2-70b", 8, "bf16"),
        122: ("llama-2-70b", 8, "int8"),
        123: ("llama-2-70b", 8, "int4"),
    }
    for row_id, (model, tp, precision) in decode.items():
        fields = _inference(model, "A100-80GB-SXM", tp, precision, 5, 200)
        note = f"TP{tp} {precision} (int4 group 32), prompt 5, batch 1"
        specs[row_id] = RowSpec("inference", fields, _decode_tokens_per_second, 1, "decode", note)
    return specs


SKIPPED_REASONS = {
    3: "the row says its configuration deltas vs the RTX 4090 recipe are not stated",
    4: "the row says its configuration deltas vs the RTX 4090 recipe are not stated",
    7: "the row says its configuration deltas vs the RTX 4090 recipe are not stated",
    8: "the row says its configuration deltas vs the RTX 4090 recipe are not stated",
}


_FLAG_NAMES = {"num_gpus": "gpus", "utilization": "mfu"}


def command_line(kind: str, fields: dict[str, Any]) -> str:
    """The `trainwright plan` invocation that reproduces a row's request."""
    parts = ["trainwright plan", kind]
    for name, value in fields.items():
        flag = "--" + _FLAG_NAMES.get(name, name).replace("_", "-")
        if name == "flash_attention":
            if not value:
                parts.append("--no-flash-attention")
        elif name == "sequence_parallel":
            parts.append(flag if value else "--no-sequence-parallel")
        elif value is True:
            parts.append(flag)
        elif value is not False and value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


# Eager PyTorch launches every kernel from Python (~20 per layer): below this prompt
# length the H100 waits on the CPU, which no serving engine does (CUDA graphs, C++).
OWN_PREFILL_JUDGED_FROM_TOKENS = 2048


def own_spec(row: dict[str, str]) -> RowSpec:
    """The request for one of our own H100 rows, read from its columns."""
    if row["metric"].startswith("decode_tokens_per_sec"):
        fields = _inference(row["model"], "H100-SXM", 1, "bf16", int(row["seq_in"]), 2)
        fields["batch"] = int(row["batch_size"])
        note = f"CUDA-graph decode, H100, batch {row['batch_size']}"
        return RowSpec("inference", fields, _decode_tokens_per_second, 1, "decode-own", note)
    if row["metric"] == "first_token_latency":
        prompt = int(row["seq_in"])
        inference = _inference(row["model"], "H100-SXM", 1, "bf16", prompt, 1)
        kind = "ttft-own" if prompt >= OWN_PREFILL_JUDGED_FROM_TOKENS else "report"
        note = "HF eager prefill, H100" + ("" if kind == "ttft-own" else " (CPU launch bound)")
        return RowSpec("inference", inference, _ttft_ms, 1, kind, note)
    if row["precision"] == "fp32":
        return _own_fp32_spec(row)
    fields = {
        "model": row["model"],
        "method": "lora" if row["method"].startswith("LoRA") else "full",
        "gpu": "H100-SXM",
        "num_gpus": 1,
        "micro_batch": int(row["batch_size"]),
        "seq_len": int(row["seq_in"]),
        "gradient_checkpointing": "on" if "checkpointing on" in row["notes"] else "off",
        "lora_rank": 16,
        "framework": "hf",
    }
    note = "HF transformers + PEFT, H100"
    if row["metric"].startswith("peak_mem"):
        return RowSpec("training", fields, _reserved_gib, 1, "memory-own", note)
    return RowSpec("training", fields, _tokens_per_second, 1, "report", note)


def _own_fp32_spec(row: dict[str, str]) -> RowSpec:
    """benchmarks/measure_gpu_peft_fp32.py: the PEFT README setting, run with torch 2.11."""
    targets = "qkv" if "query_key_value" in row["method"] else "qv"
    fields: dict[str, Any] = {
        **_PEFT,
        "gpu": "H100-SXM",
        "model": row["model"],
        "method": "lora" if row["method"].startswith("LoRA") else "full",
        "micro_batch": int(row["batch_size"]),
        "seq_len": int(row["seq_in"]),
        "flash_attention": "SDPA" in row["notes"],
        "optimizer": "adamw_foreach",
    }
    if fields["method"] == "lora":
        fields["lora_targets"] = targets
    if row["seq_out"]:
        fields["target_len"] = int(row["seq_out"])
    note = "HF transformers + PEFT in fp32, H100, torch.optim.AdamW (foreach)"
    return RowSpec("training", fields, _allocated_gib, 1, "memory-own", note)


# Issue 2: memory within tolerance on at least 85% of the rows the CLI can express.
MEMORY_BAR = 0.85


def _tolerance_ok(kind: str, measured: float, estimate: float) -> bool | None:
    error = estimate / measured - 1
    if kind in ("memory", "memory-own"):
        return abs(estimate - measured) <= max(0.15 * measured, 1.5)
    if kind == "korthikanti":
        return abs(error) <= 0.03
    if kind in ("decode", "decode-own"):
        return abs(error) <= 0.25
    if kind in ("ttft", "ttft-own"):
        return abs(error) <= 0.35
    return None


def evaluate_rows(rows: Iterable[dict[str, str]]) -> list[RowResult]:
    """Estimate every row; skipped rows come back with ``estimate`` None and the reason."""
    from trainwright.planner import (
        InferenceRequest,
        TrainingRequest,
        plan_inference,
        plan_training,
    )

    specs = row_specs()
    results: list[RowResult] = []
    for row in rows:
        row_id = int(row["id"])
        spec = own_spec(row) if row_id >= OWN_FIRST_ID else specs.get(row_id)
        reason = SKIPPED_REASONS.get(row_id, "")
        out_of_memory = row["value"].strip().upper().startswith("OOM")
        try:
            measured = float(row["value"])
        except ValueError:
            measured = float("nan")
        if spec is None:
            results.append(
                RowResult(
                    row_id,
                    row["model"],
                    row["gpu"],
                    row["metric"],
                    measured,
                    None,
                    None,
                    "skipped",
                    None,
                    reason or "not expressible",
                )
            )
            continue
        if spec.kind == "training":
            plan: Any = plan_training(TrainingRequest(**spec.fields))
        else:
            plan = plan_inference(InferenceRequest(**spec.fields))
        estimate = spec.extract(plan)
        measured_unit = measured * spec.unit_scale
        note = spec.note
        within: bool | None
        if out_of_memory:
            # "OOM (>80)": the run did not fit, so the estimate is right when the plan
            # says it does not fit. Compared against the GPU's capacity.
            measured_unit = plan.memory.capacity_bytes / GIB
            within = not plan.fits
            note += "; measured OOM: judged on `fits: false`"
        else:
            within = _tolerance_ok(spec.tolerance, measured_unit, estimate)
        results.append(
            RowResult(
                row_id,
                row["model"],
                row["gpu"],
                row["metric"],
                measured_unit,
                estimate,
                estimate / measured_unit - 1,
                spec.tolerance,
                within,
                f"{note}: `{command_line(spec.kind, spec.fields)}`",
                out_of_memory,
            )
        )
    return results


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def summary(results: Sequence[RowResult]) -> dict[str, tuple[int, int]]:
    """(rows within tolerance, rows judged) per tolerance class."""
    counts: dict[str, tuple[int, int]] = {}
    for result in results:
        if result.within is None:
            continue
        hits, total = counts.get(result.tolerance, (0, 0))
        counts[result.tolerance] = (hits + int(result.within), total + 1)
    return counts


_UNITS = {
    "memory": "GiB",
    "korthikanti": "GiB",
    "decode": "tok/s",
    "ttft": "ms",
}


def render_markdown(
    results: Sequence[RowResult],
    source: str,
    serving: Sequence[ServingResult] = (),
) -> str:
    lines = [
        "# Planner accuracy",
        "",
        "Generated by `make accuracy-doc` (`python -m trainwright.cli.accuracy --write "
        "docs/planner-accuracy.md`) from `" + source + "`. Do not edit by hand.",
        "",
        "Rows 1001 and up are our own H100 measurements "
        "(`benchmarks/measure_gpu_training.py`, Hugging Face Transformers + PEFT, kept in "
        "`tests/data/measured-own-h100.csv`, and `benchmarks/measure_gpu_inference.py` for "
        "prefill, `benchmarks/measure_gpu_decode.py` for decode, "
        "`benchmarks/measure_gpu_peft_fp32.py` for the PEFT README's fp32 setting, rows "
        "1401-1404); they are judged as "
        "*memory-own*, *ttft-own* and *decode-own*. Prefill of prompts "
        "shorter than 2048 tokens is reported only: eager PyTorch is CPU launch bound there.",
        "",
        "Tolerances: memory ±15% or ±1.5 GiB (whichever is larger); Korthikanti et al. "
        "Fig. 1 ±3%; decode tokens/s ±25%; TTFT ±35%. Rows marked *report* have no "
        "tolerance. Memory rows compare against PyTorch's reserved pool, which excludes "
        "the CUDA context (the plan counts it in `other_bytes`), or, where the source "
        "reports `torch.cuda.max_memory_allocated` (the PEFT example scripts, our fp32 "
        "runs), against the plan less the context and the allocator's fragmentation.",
        "",
        "## Summary",
        "",
        "| class | within tolerance | rows |",
        "|---|---|---|",
    ]
    counts = summary(results)
    for kind, (hits, total) in sorted(counts.items()):
        lines.append(f"| {kind} | {hits} ({hits / total:.0%}) | {total} |")
    if "memory" in counts:
        hits, total = counts["memory"]
        verdict = "met" if hits >= MEMORY_BAR * total else "**not met**"
        lines += [
            "",
            f"Issue 2's bar for the published memory rows is {MEMORY_BAR:.0%}: "
            f"{hits} of {total} ({hits / total:.0%}), {verdict}. Rows measured as out of "
            "memory count as right when the plan says `fits: false`.",
        ]
    lines += [
        "",
        "## Rows",
        "",
        "| id | model | GPU | metric | measured | estimate | error | class | ok | request |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.estimate is None or r.error is None:
            continue
        ok = {True: "yes", False: "**no**", None: "-"}[r.within]
        measured = f"OOM (>{r.measured:.0f})" if r.out_of_memory else f"{r.measured:,.4g}"
        error = "fits: false" if r.out_of_memory and r.within else f"{r.error:+.1%}"
        lines.append(
            f"| {r.row_id} | {r.model} | {r.gpu} | {r.metric} | {measured} | "
            f"{r.estimate:,.4g} | {error} | {r.tolerance} | {ok} | {r.note} |"
        )
    lines += ["", "## Skipped rows", "", "| id | model | metric | reason |", "|---|---|---|---|"]
    for r in results:
        if r.estimate is None:
            lines.append(f"| {r.row_id} | {r.model} | {r.metric} | {r.note} |")
    if serving:
        lines += ["", *render_serving_markdown(serving)]
    return "\n".join(lines) + "\n"


def render_text(results: Sequence[RowResult]) -> str:
    lines = [f"{'id':>4}  {'metric':<34} {'measured':>12} {'estimate':>12} {'error':>8}  ok"]
    for r in results:
        if r.estimate is None or r.error is None:
            lines.append(f"{r.row_id:>4}  {r.metric[:34]:<34} skipped: {r.note}")
            continue
        ok = {True: "yes", False: "NO", None: "-"}[r.within]
        lines.append(
            f"{r.row_id:>4}  {r.metric[:34]:<34} {r.measured:>12,.4g} {r.estimate:>12,.4g} "
            f"{r.error:>+8.1%}  {ok}"
        )
    for kind, (hits, total) in sorted(summary(results).items()):
        lines.append(f"{kind}: {hits}/{total} within tolerance")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainwright.cli.accuracy",
        description="Compare planner estimates with published measurements.",
    )
    parser.add_argument("--csv", type=Path, help=f"default: {DEFAULT_CSV} (else {FALLBACK_CSV})")
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the markdown report")
    args = parser.parse_args(argv)
    path = args.csv or (DEFAULT_CSV if DEFAULT_CSV.exists() else FALLBACK_CSV)
    try:
        rows = read_rows(path)
    except OSError as exc:
        print(f"accuracy: error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if OWN_CSV.exists():
        rows += read_rows(OWN_CSV)
    results = evaluate_rows(rows)
    sys.stdout.write(render_text(results))
    serving = evaluate_serving(read_serving_rows()) if SERVING_CSV.exists() else []
    for split in ("tuned", "heldout"):
        hits, total = large_batch_hits(serving, split)
        if total:
            print(f"serving {split}: {hits}/{total} within ±25% at batch >= 32")
    if args.write:
        try:
            source = str(path.relative_to(REPO_ROOT.parent))
        except ValueError:
            source = path.name
        args.write.write_text(render_markdown(results, source, serving), encoding="utf-8")
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
