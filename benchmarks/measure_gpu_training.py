"""Measure fine-tuning peak memory and speed on a real GPU, to check the planner.

Builds randomly initialized models from the planner's catalog shapes (no weights
or network needed) with Hugging Face transformers and PEFT, runs a few optimizer
steps per configuration in a fresh process, and prints one JSON line each:
``max_memory_reserved`` / ``max_memory_allocated`` (bytes), seconds per step and
tokens per second. The results are kept in ``tests/data/measured-own-h100.csv`` and
compared with the planner in ``docs/planner-accuracy.md``.

Run on a CUDA machine: ``python3 benchmarks/measure_gpu_training.py > out.jsonl``
(needs torch, transformers, peft; not run by ``make bench``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
    ),
}

CASES = [
    {"model": "llama-3.1-8b", "method": "lora", "micro_batch": 2, "seq_len": 2048, "ckpt": True},
    {"model": "llama-3.1-8b", "method": "lora", "micro_batch": 2, "seq_len": 2048, "ckpt": False},
    {"model": "llama-3.1-8b", "method": "lora", "micro_batch": 4, "seq_len": 4096, "ckpt": True},
    {"model": "llama-3.2-1b", "method": "lora", "micro_batch": 8, "seq_len": 2048, "ckpt": True},
    {"model": "llama-3.2-1b", "method": "full", "micro_batch": 4, "seq_len": 2048, "ckpt": True},
    {"model": "llama-3.2-1b", "method": "full", "micro_batch": 4, "seq_len": 2048, "ckpt": False},
    {"model": "qwen2.5-7b", "method": "lora", "micro_batch": 2, "seq_len": 2048, "ckpt": True},
    {"model": "qwen2.5-7b", "method": "lora", "micro_batch": 1, "seq_len": 4096, "ckpt": False},
    {"model": "llama-3.1-8b", "method": "lora", "micro_batch": 1, "seq_len": 8192, "ckpt": True},
]


def run_case(case: dict) -> dict:  # type: ignore[type-arg]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = SHAPES[case["model"]]
    qwen = case["model"].startswith("qwen")
    config_cls, model_cls = (
        (Qwen2Config, Qwen2ForCausalLM) if qwen else (LlamaConfig, LlamaForCausalLM)
    )
    config = config_cls(**shape, max_position_embeddings=131072, attn_implementation="sdpa")
    full = case["method"] == "full"
    # Full fine-tuning: fp32 weights + bf16 autocast (HF Trainer's bf16=True). LoRA: bf16 base.
    dtype = torch.float32 if full else torch.bfloat16
    torch.set_default_dtype(dtype)
    with torch.device("cuda"):
        model = model_cls(config)
    torch.set_default_dtype(torch.float32)
    if case["ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if full:
        params = model.parameters()
    else:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    model.train()
    tokens = torch.randint(
        0, shape["vocab_size"], (case["micro_batch"], case["seq_len"]), device="cuda"
    )
    # Count the training steps only, not building the model.
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(4):
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=full):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    step = min(times[1:])
    return {
        **case,
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "max_memory_reserved": torch.cuda.max_memory_reserved(),
        "max_memory_allocated": torch.cuda.max_memory_allocated(),
        "step_seconds": step,
        "tokens_per_second": case["micro_batch"] * case["seq_len"] / step,
    }


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(run_case(json.loads(sys.argv[2]))), flush=True)
        return 0
    for case in CASES:
        result = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(case)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            print(result.stdout.strip().splitlines()[-1], flush=True)
        else:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            print(json.dumps({**case, "error": tail}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
