"""LoRA's overhead on CPU: step time and peak memory of full fine-tuning, LoRA today, and
LoRA with each of the trainer's speed options, one process and two FSDP2 ranks.

The model is a Llama from a transformers config (hidden 512, MLP 1,376, 6 layers,
8 heads, vocabulary 32,000, untied head; 51.7 M parameters), random init, trained on
random tokens: micro-batch 4 x 256 tokens, AdamW, with the trainer's own code: the
model and adapters from ``trainwright_trainer.model.build_model`` (the config options
under test), the chunked loss, and the optimizer, clipping and wrapper of
``trainwright_trainer.distributed.build_engine``. LoRA is r 16, alpha 32 on every
linear layer but the head. Variants:

- ``full``: full fine-tune (fp32 weights and AdamW states).
- ``lora today``: the defaults before this change (``lora.dropout`` 0.05, fp32
  adapters, eager layers).
- one row per option: ``lora.dropout: 0`` (peft then skips the dropout op and the
  dropped copy of each adapted layer's input), ``training.compile_layers`` (inductor),
  and in bf16 (this CPU's AVX-512 BF16) ``lora.adapter_dtype`` fp32 (today) vs compute.
- ``lora all``: dropout 0 and compiled layers (fp32); ``lora all, bf16``: with
  compute-dtype adapters too.
- ``fsdp2 x2``: the same three of full, LoRA today and LoRA all, under FSDP2 on two
  gloo ranks launched by torchrun (``distributed.strategy: fsdp``).

Each variant runs in its own process(es), one thread per rank. Step time is the median
of ``--steps`` steps after ``--warmup`` (compiling happens there), as the CPU time of the
process (rank 0), which other processes on a shared machine do not inflate, and as wall
time. Memory: after the warm-up the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs`` 5) and ``peak RSS`` is VmHWM over the measured steps (model,
optimizer state and the step's activations); ``step`` is that peak minus the resident
size before the steps. ``MALLOC_MMAP_THRESHOLD_`` gives every allocation of 64 KiB or
more its own mapping, so freed tensors leave the resident set. tokens/CPU s is the
tokens a step of one rank trains over its CPU seconds. GFLOP: the step's matmul and
attention FLOPs (forward and backward) counted by ``torch.utils.flop_counter`` on one
more eager step, a figure the machine's load cannot move (not for compiled layers).

Run: ``python benchmarks/bench_lora.py [--steps 3] [--warmup 1] [--no-fsdp] [--only 'a;b']``
(8 to 25 minutes on two shared cores: inductor compiles twice).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "trainer-image"), str(ROOT / "tests")]

VOCAB = 32_000
HIDDEN = 512
INTERMEDIATE = 1376
LAYERS = 6
HEADS = 8
SEQ_LEN = 256
MICRO_BATCH = 4

TODAY: dict[str, Any] = {"lora": {"dropout": 0.05}}
ALL: dict[str, Any] = {"lora": {"dropout": 0.0}, "training": {"compile_layers": True}}
BF16 = {"model": {"dtype": "bf16"}}
COMPUTE_ADAPTERS = {"lora": {"adapter_dtype": "compute"}}


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for section, values in part.items():
            merged[section] = {**merged.get(section, {}), **values}
    return merged


# name -> (method, config overrides, ranks)
VARIANTS: dict[str, tuple[str, dict[str, Any], int]] = {
    "full": ("full", {}, 1),
    "lora today": ("lora", TODAY, 1),
    "lora, dropout 0": ("lora", _merge(TODAY, {"lora": {"dropout": 0.0}}), 1),
    "lora, compiled layers": ("lora", _merge(TODAY, {"training": {"compile_layers": True}}), 1),
    "lora today, bf16": ("lora", _merge(TODAY, BF16), 1),
    "lora, bf16, compute adapters": (
        "lora",
        _merge(TODAY, BF16, COMPUTE_ADAPTERS),
        1,
    ),
    "lora all": ("lora", ALL, 1),
    "lora all, bf16": ("lora", _merge(ALL, BF16, COMPUTE_ADAPTERS), 1),
    "fsdp2 x2: full": ("full", {}, 2),
    "fsdp2 x2: lora today": ("lora", TODAY, 2),
    "fsdp2 x2: lora all": ("lora", ALL, 2),
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _model_dir(root: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=SEQ_LEN,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(root / "model"), safe_serialization=True)
    return root / "model"


def child(model_dir: str, spec: dict[str, Any], steps: int, warmup: int) -> dict[str, Any]:
    import torch

    from trainwright_trainer.config import parse_config
    from trainwright_trainer.distributed import build_engine, init_distributed
    from trainwright_trainer.loss import causal_lm_loss_sum, install_chunked_loss
    from trainwright_trainer.model import build_model

    torch.set_num_threads(1)
    overrides = spec["overrides"]
    config = _merge(
        {
            "model": {"path": model_dir, "dtype": "fp32"},
            "data": {"path": "unused.jsonl", "seq_len": SEQ_LEN},
            "training": {"micro_batch_size": MICRO_BATCH, "learning_rate": 1e-4},
            "distributed": {"strategy": "fsdp" if spec["ranks"] > 1 else "ddp"},
            "checkpoint": {"async_save": False},
        },
        {"lora": {"rank": 16, "alpha": 32}} if spec["method"] != "full" else {},
        overrides,
    )
    cfg = parse_config({**config, "method": spec["method"]})
    env = init_distributed(cfg)
    torch.manual_seed(0)
    bundle = build_model(cfg, env.device)
    head = install_chunked_loss(bundle.model, cfg.training.loss_chunk_tokens)
    engine = build_engine(
        cfg,
        env,
        bundle.model,
        bundle.compute_dtype,
        micro_batch_size=MICRO_BATCH,
        gradient_accumulation_steps=1,
    )
    generator = torch.Generator().manual_seed(env.rank)
    input_ids = torch.randint(0, VOCAB, (MICRO_BATCH, SEQ_LEN), generator=generator)
    batch = {
        "input_ids": input_ids,
        "labels": input_ids.clone(),
        "position_ids": torch.arange(SEQ_LEN).repeat(MICRO_BATCH, 1),
    }

    def step() -> tuple[float, float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        with engine.accumulate(last=True):
            loss = causal_lm_loss_sum(engine.model, batch, head=head) / input_ids.numel()
            engine.backward(loss)
        engine.clip_grad_norm(1.0)
        engine.optimizer_step()
        engine.zero_grad()
        return time.process_time() - cpu, time.perf_counter() - wall, float(loss)

    for _ in range(warmup):
        step()
    Path("/proc/self/clear_refs").write_text("5")
    resting_kib = _status_kib("VmRSS")
    timings = [step() for _ in range(steps)]
    peak_kib = _status_kib("VmHWM")
    cpu_seconds = statistics.median(t[0] for t in timings)
    flops = None
    if not cfg.training.compile_layers:  # the counter sees eager ops, not inductor's kernels
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
    return {
        "step_cpu_seconds": cpu_seconds,
        "step_wall_seconds": statistics.median(t[1] for t in timings),
        "tokens_per_cpu_second": input_ids.numel() / cpu_seconds,
        "peak_rss_bytes": peak_kib * 1024,
        "step_peak_bytes": (peak_kib - resting_kib) * 1024,
        "trainable_params": bundle.trainable_params,
        "params": bundle.params,
        "last_loss": timings[-1][2],
        "compile_fallback": bundle.compiler.failure if bundle.compiler else None,
        "step_gflops": flops / 1e9 if flops is not None else None,
        "rank": env.rank,
    }


def _run_variant(
    model_dir: Path, name: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    method, overrides, ranks = VARIANTS[name]
    spec = json.dumps({"method": method, "overrides": overrides, "ranks": ranks})
    script = [__file__, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    script += ["--child", str(model_dir), spec]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc-per-node={ranks}", *script]
    else:
        command = [sys.executable, *script]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{name}: exit {out.returncode}: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(
        next(line for line in out.stdout.splitlines() if line.startswith("{"))
    )
    return result


def _print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"Llama hidden {HIDDEN}, {LAYERS} layers, vocabulary {VOCAB}; {MICRO_BATCH} x {SEQ_LEN} "
        f"tokens a step per rank; CPU, 1 thread per rank; median of {args.steps} steps after "
        f"{args.warmup}"
    )
    header = (
        f"{'variant':<30} {'CPU s':>6} {'wall s':>6} {'tok/CPU s':>9} "
        f"{'peak RSS MiB':>12} {'step MiB':>8} {'GFLOP':>6} {'vs today':>8}"
    )
    print(header)
    today = results.get("lora today")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<30} failed: {r['error']}")
            continue
        base = results.get("fsdp2 x2: lora today" if name.startswith("fsdp2") else "lora today")
        if "bf16" in name:
            base = results.get("lora today, bf16")
        speed = (
            f"{base['step_cpu_seconds'] / r['step_cpu_seconds']:.2f}x"
            if base and "error" not in base
            else ""
        )
        gflops = f"{r['step_gflops']:.0f}" if r.get("step_gflops") is not None else "-"
        print(
            f"{name:<30} {r['step_cpu_seconds']:>6.3f} {r['step_wall_seconds']:>6.3f} "
            f"{r['tokens_per_cpu_second']:>9.0f} {r['peak_rss_bytes'] / 2**20:>12.0f} "
            f"{r['step_peak_bytes'] / 2**20:>8.0f} {gflops:>6} {speed:>8}"
        )
    for name, r in results.items():
        if r.get("compile_fallback"):
            print(f"{name}: torch.compile fell back to eager: {r['compile_fallback']}")
    full = results.get("full")
    best = results.get("lora all")
    if full and today and best and not any("error" in r for r in (full, today, best)):
        print(
            f"LoRA / full step CPU time: today {today['step_cpu_seconds'] / full['step_cpu_seconds']:.2f}, "
            f"with all options {best['step_cpu_seconds'] / full['step_cpu_seconds']:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-fsdp", action="store_true", help="skip the two-rank FSDP2 rows")
    parser.add_argument("--only", help="variant names separated by ;")
    parser.add_argument("--child", nargs=2, metavar=("MODEL_DIR", "SPEC"))
    args = parser.parse_args()
    if args.child:
        model_dir, spec = args.child
        result = child(model_dir, json.loads(spec), args.steps, args.warmup)
        if result["rank"] == 0:  # ranks share stdout: one line, not two interleaved
            print(json.dumps(result), flush=True)
        return 0
    names = args.only.split(";") if args.only else list(VARIANTS)
    if args.no_fsdp:
        names = [n for n in names if VARIANTS[n][2] == 1]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        model_dir = _model_dir(Path(tmp))
        for name in names:
            started = time.monotonic()
            try:
                results[name] = _run_variant(model_dir, name, args, env)
            except RuntimeError as exc:
                results[name] = {"error": str(exc)}
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    _print_table(results, args)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
