"""How many parameters DeepSpeed ZeRO-3 keeps gathered at once, measured on its own code.

The planner needs the device-resident parameters of a ZeRO-3 run with parameter offload
(the PEFT README's "LoRA + DeepSpeed ZeRO CPU offload" rows). They are decided by
DeepSpeed's ``PartitionedParameterCoordinator``: it fetches a module's parameters before
the module runs, prefetches upcoming ones while fewer than ``stage3_max_live_parameters``
are available, and after a module runs keeps every parameter whose next use is fewer than
``stage3_max_reuse_distance`` fetched elements away. That bookkeeping is the same on any
accelerator, so this script runs the real coordinator on the CPU (``DS_ACCELERATOR=cpu``,
one gloo rank) and counts, at every fetch and release, the elements of all parameters
whose ``ds_status`` is not ``NOT_AVAILABLE``.

The models are the PEFT README's (T0_3B, mt0-xxl, bloomz-7b1) shrunk 16x in parameters
(hidden, FFN and vocabulary /4 in width, same depth), and every DeepSpeed element budget is
divided by the same 16, so the ratios that decide residency are those of the full-size run.
LoRA r=8 on PEFT's default targets, fp32, batch 8, 64 source tokens (T5: 4 target tokens),
three optimizer steps; the peak from the steps after the first (the first records the
trace and prefetches nothing) is reported, scaled back x16.

Run: DS_ACCELERATOR=cpu .venv/bin/python benchmarks/measure_zero3_live_params.py
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

SCALE = 16  # parameters shrink by this factor (width / 4)
DS_DEFAULTS = {  # deepspeed/runtime/zero/config.py defaults, in elements
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_param_persistence_threshold": 100_000,
    "reduce_bucket_size": 500_000_000,
}


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # "t5" or "bloom"
    hidden: int
    ffn: int
    heads: int
    layers: int
    vocab: int


CASES = (
    Case("t0-3b", "t5", 2048, 5120, 32, 24, 32128),
    Case("mt0-xxl", "t5", 4096, 10240, 64, 24, 250112),
    Case("bloomz-7b1", "bloom", 4096, 16384, 32, 30, 250880),
)


def _model(case: Case) -> Any:
    import transformers
    from peft import LoraConfig, TaskType, get_peft_model

    w = 4  # width divisor: matrices shrink 16x
    if case.family == "t5":
        config = transformers.T5Config(
            d_model=case.hidden // w,
            d_ff=case.ffn // w,
            d_kv=64,
            num_heads=case.heads // w,
            num_layers=case.layers,
            num_decoder_layers=case.layers,
            vocab_size=case.vocab // w,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            dropout_rate=0.1,
            decoder_start_token_id=0,
            pad_token_id=0,
        )
        model = transformers.T5ForConditionalGeneration(config)
        task = TaskType.SEQ_2_SEQ_LM
    else:
        config = transformers.BloomConfig(
            hidden_size=case.hidden // w,
            n_layer=case.layers,
            n_head=case.heads // w,
            vocab_size=case.vocab // w,
        )
        model = transformers.BloomForCausalLM(config)
        task = TaskType.CAUSAL_LM
    lora = LoraConfig(task_type=task, r=8, lora_alpha=32, lora_dropout=0.1)
    return get_peft_model(model, lora), config


def measure(case: Case, steps: int, offload_param: bool) -> dict[str, Any]:
    import deepspeed
    import torch
    from deepspeed.runtime.zero import partitioned_param_coordinator as ppc
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    torch.manual_seed(0)
    model, config = _model(case)
    total = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    zero: dict[str, Any] = {"stage": 3, "contiguous_gradients": True}
    zero.update({k: v // SCALE for k, v in DS_DEFAULTS.items()})
    if offload_param:
        zero["offload_param"] = {"device": "cpu"}
    ds_config = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "steps_per_print": 10**9,
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    params = list(engine.module.parameters())

    peak = {"now": 0}

    def available() -> int:
        return sum(p.ds_numel for p in params if p.ds_status != ZeroParamStatus.NOT_AVAILABLE)

    coordinator_cls = ppc.PartitionedParameterCoordinator
    fetch, release = coordinator_cls.fetch_sub_module, coordinator_cls.release_sub_module

    def fetch_and_count(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = fetch(self, *args, **kwargs)
        peak["now"] = max(peak["now"], available())
        return out

    def release_and_count(self: Any, *args: Any, **kwargs: Any) -> Any:
        peak["now"] = max(peak["now"], available())
        return release(self, *args, **kwargs)

    coordinator_cls.fetch_sub_module = fetch_and_count
    coordinator_cls.release_sub_module = release_and_count
    g = torch.Generator().manual_seed(1)
    vocab = config.vocab_size
    per_step = []
    for _ in range(steps):
        peak["now"] = 0
        source = torch.randint(0, vocab, (8, 64), generator=g)
        if case.family == "t5":
            labels = torch.randint(0, vocab, (8, 4), generator=g)
            out = engine(input_ids=source, labels=labels)
        else:
            out = engine(input_ids=source, labels=source)
        engine.backward(out.loss)
        engine.step()
        per_step.append(peak["now"])
    coordinator_cls.fetch_sub_module, coordinator_cls.release_sub_module = fetch, release
    steady = max(per_step[1:]) if len(per_step) > 1 else per_step[0]
    return {
        "model": case.name,
        "offload_param": offload_param,
        "total_params_full_size": total * SCALE,
        "largest_tensor_full_size": largest * SCALE,
        "peak_available_full_size": steady * SCALE,
        "peak_available_fraction": steady / total,
        "per_step_full_size": [s * SCALE for s in per_step],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=[c.name for c in CASES])
    parser.add_argument("--no-offload", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    import deepspeed

    # As the trainer does on CPU: no JIT-compiled shared-memory op, gloo collectives.
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    for case in CASES:
        if case.name not in args.models:
            continue
        started = time.perf_counter()
        row = measure(case, args.steps, offload_param=not args.no_offload)
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
