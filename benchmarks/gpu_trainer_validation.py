"""The trainer on one GPU: a Llama-3.2-1B-shaped model, bf16, FSDP2, full fine-tune and LoRA.

Not part of ``make bench`` (it needs a CUDA GPU). It builds everything offline:
a random-init model with Llama-3.2-1B's shape (Meta's config.json: hidden 2048,
16 layers, 32 heads, 8 KV heads, MLP 8192, vocab 128256, tied embeddings), the
tests' tiny tokenizer (token ids stay below 512, which changes nothing about
the cost per token) and random-word documents, then runs the real trainer
(``Recipe``) and reports, from its step log:

- tokens/s: micro_batch x seq_len / median step seconds after the first 5 steps
- MFU: tokens/s x model FLOPs per token / the GPU's dense bf16 peak
- peak memory: torch.cuda.max_memory_allocated / max_memory_reserved
- checkpoint seconds: the async DCP save mid-run and the final synchronous one

Usage: ``python benchmarks/gpu_trainer_validation.py --out DIR [--steps 40]
[--runs full:fsdp,lora:fsdp,lora:ddp,lora:fsdp:16]`` (a micro-batch too large for
the GPU exercises the OOM ladder with real out-of-memory errors).

A run's fourth field lists the trainer's speed options to turn on, joined by ``+``
(see ``OPTIONS``), so one invocation measures LoRA before and after each of them,
e.g. ``--runs full:fsdp,lora:fsdp,lora:fsdp:4:compile,lora:fsdp:4:compute+compile``.
``--compile-backend`` picks torch.compile's backend for ``compile`` (inductor).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "trainer-image"), str(ROOT / "tests")]

LLAMA_3_2_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}


# The speed options a run can name, as trainer-config overrides (section -> fields).
OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    # torch.compile per decoder layer (training.compile_layers)
    "compile": {"training": {"compile_layers": True}},
    # LoRA adapters stored and run in bf16 instead of peft's fp32 (lora.adapter_dtype)
    "compute": {"lora": {"adapter_dtype": "compute"}},
    # gradient checkpointing
    "ckpt": {"training": {"gradient_checkpointing": True}},
    # LoRA dropout 0.05 (runs use 0, which lets peft skip the dropout op)
    "dropout": {"lora": {"dropout": 0.05}},
}


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def build_inputs(
    work: Path, shape: dict[str, Any], *, documents: int, words_per_document: int
) -> tuple[Path, Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer_fixtures import CORPUS_PATH, build_tiny_tokenizer

    model_dir = work / "llama-3.2-1b-random"
    if not (model_dir / "config.json").exists():
        tokenizer_dir = build_tiny_tokenizer(work / "tokenizer")
        config = LlamaConfig(**shape)
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(str(model_dir), safe_serialization=True)
        del model
        torch.cuda.empty_cache()
        for item in tokenizer_dir.iterdir():
            (model_dir / item.name).write_bytes(item.read_bytes())
    words = CORPUS_PATH.read_text(encoding="utf-8").split()
    rng = random.Random(0)
    data = work / "documents.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for _ in range(documents):
            text = " ".join(rng.choice(words) for _ in range(words_per_document))
            handle.write(json.dumps({"text": text}) + "\n")
    return model_dir, data


def run_one(
    spec: str, model_dir: Path, data: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    parts = spec.split(":")
    method = parts[0]
    strategy = parts[1] if len(parts) > 1 else "fsdp"
    micro = int(parts[2]) if len(parts) > 2 else args.micro_batch
    options = [o for o in parts[3].split("+") if o] if len(parts) > 3 else []
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} in run {spec!r}; known: {sorted(OPTIONS)}")
    import torch

    from trainwright_trainer.config import parse_config
    from trainwright_trainer.train import Recipe

    run_dir = work / f"run-{method}-{strategy}-{micro}-{'-'.join(options) or 'plain'}"
    config: dict[str, Any] = {
        "model": {"path": str(model_dir), "dtype": "bf16"},
        "method": method,
        "data": {
            "path": str(data),
            "seq_len": args.seq_len,
            "cache_dir": str(work / "data-cache"),
        },
        "training": {
            "epochs": 10,
            "max_steps": args.steps,
            "micro_batch_size": micro,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-4 if method == "full" else 1e-3,
            "lr_scheduler": "constant",
            "warmup_steps": 0,
        },
        "distributed": {"strategy": strategy},
        "checkpoint": {
            "dir": str(run_dir / "ckpt"),
            "interval_steps": args.steps // 2,
            "keep_last": 1,
            "async_save": True,
        },
        "metrics": {"port": 0, "log_interval_steps": 10},
        "output": {"dir": str(run_dir / "out")},
    }
    if method != "full":
        config["lora"] = {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
    config["training"]["compile_backend"] = args.compile_backend
    for option in options:
        for section, values in OPTIONS[option].items():
            if section == "lora" and method == "full":
                continue
            config[section] = {**config.get(section, {}), **values}
    os.environ.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": _free_port(),
        }
    )
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    recipe = Recipe(parse_config(config))
    started = time.monotonic()
    caught = _WarningsCaught()
    logging.getLogger("trainwright_trainer.model").addHandler(caught)
    try:
        recipe.setup()
        code = int(recipe.train())
        registry = recipe.metrics.registry
        save_sum = registry.get_sample_value("trainwright_checkpoint_save_seconds_sum")
        save_count = registry.get_sample_value("trainwright_checkpoint_save_seconds_count")
        oom_events = registry.get_sample_value("trainwright_oom_events_total")
        bundle = recipe.bundle
        flops_per_token = recipe.flops_per_token
        compile_failure = _compile_failure(caught)
        peak = recipe.peak_flops
    finally:
        recipe.cleanup()
        logging.getLogger("trainwright_trainer.model").removeHandler(caught)
    wall = time.monotonic() - started
    records = [
        json.loads(line)
        for line in (run_dir / "ckpt" / "train_log.jsonl").read_text().splitlines()
        if '"step"' in line
    ]
    steady = [r["step_seconds"] for r in records[5:]]
    step_seconds = statistics.median(steady)
    tokens_per_step = micro * args.seq_len
    rungs = sorted(
        {
            (r["micro_batch_size"], r["gradient_accumulation_steps"], r["gradient_checkpointing"])
            for r in records
        },
        reverse=True,
    )
    tokens_per_second = tokens_per_step / step_seconds
    result = {
        "method": method,
        "strategy": strategy,
        "options": options,
        "compile_fallback": compile_failure,
        "precision": "bf16",
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu",
        "micro_batch": micro,
        "oom_ladder_rungs": [list(r) for r in rungs],
        "oom_events": oom_events,
        "seq_len": args.seq_len,
        "steps": len(records),
        "exit_code": code,
        "params": bundle.params,
        "trainable_params": bundle.trainable_params,
        "flops_per_token": flops_per_token,
        "median_step_seconds": step_seconds,
        "tokens_per_second": tokens_per_second,
        "mfu": tokens_per_second * flops_per_token / peak if peak else None,
        "peak_memory_allocated_bytes": records[-1].get("max_memory_allocated_bytes"),
        "peak_memory_reserved_bytes": records[-1].get("max_memory_reserved_bytes"),
        "first_loss": records[0]["loss"],
        "last_loss": records[-1]["loss"],
        "checkpoint_saves": save_count,
        "checkpoint_save_seconds_total": save_sum,
        "wall_seconds": wall,
    }
    del recipe
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


class _WarningsCaught(logging.Handler):
    """The trainer's model warnings during one run (a compile fallback says so there)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _compile_failure(caught: _WarningsCaught) -> str | None:
    return next((m for m in caught.messages if "compile_layers" in m), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/trainwright-gpu"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument(
        "--runs",
        default="full:fsdp,lora:fsdp",
        help="comma-separated method:strategy[:micro_batch[:option+option]] runs",
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend for 'compile' runs"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny shape, to check on a CPU")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    shape = dict(LLAMA_3_2_1B)
    if args.tiny:
        shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=1024)
        shape.update(num_attention_heads=4, num_key_value_heads=2)
    model_dir, data = build_inputs(args.work, shape, documents=400, words_per_document=1000)
    print(f"inputs ready in {time.monotonic() - started:.1f}s", flush=True)
    results = []
    for spec in args.runs.split(","):
        try:
            result = run_one(spec, model_dir, data, args.work, args)
        except Exception as exc:  # report and go on to the next run
            result = {"run": spec, "error": f"{type(exc).__name__}: {exc}"}
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
        (args.out / "gpu_validation.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
