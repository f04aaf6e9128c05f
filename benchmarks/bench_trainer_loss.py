"""Peak memory and step time of the trainer's loss: today's plain loss vs the chunked one.

A Llama with a 32,768-token vocabulary (hidden 64, 2 layers, so the output head is
most of the model, as in small models with large vocabularies) trains one step on
4 x 512 tokens, CPU fp32, one thread, with the trainer's own code: the model and its
LoRA adapters from ``trainwright_trainer.model.build_model`` and the loss from
``trainwright_trainer.loss.causal_lm_loss_sum``, either from the whole logits
(``training.loss_chunk_tokens: 0``, the loss before this change) or fused with the
head in chunks of 1,024 tokens (the default).

Each variant runs in its own process (``--child``). After one warm-up step (AdamW's
state allocated) the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``
5, Linux 4.0+) and the step's peak is VmHWM minus the resident size before it;
``MALLOC_MMAP_THRESHOLD_`` makes every allocation of 64 KiB or more its own mapping,
so freed tensors leave the resident set and the figure is the step's own. Step time
is the CPU time of the process (one thread: other processes on a shared machine do not
inflate it, as they do wall time), the median of ``--steps`` steps.

Expected: the logits are 2,048 x 32,768 fp32 values (256 MiB); the plain loss keeps
them, a copy of the shifted slice, the saved log-softmax and its gradient (about
4 x 256 MiB), the chunked loss one 1,024-token chunk (128 MiB) and the gradients.

Run: ``python benchmarks/bench_trainer_loss.py [--steps 5]`` (about 2 minutes).
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

VOCAB = 32_768
HIDDEN = 64
LAYERS = 2
SEQ_LEN = 512
MICRO_BATCH = 4
CHUNK_TOKENS = 1024
VARIANTS = {
    "full, plain loss": ("full", 0),
    "full, chunked loss": ("full", CHUNK_TOKENS),
    "lora, plain loss": ("lora", 0),
    "lora, chunked loss": ("lora", CHUNK_TOKENS),
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
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ_LEN,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(root / "model"), safe_serialization=True)
    return root / "model"


def child(model_dir: str, method: str, chunk_tokens: int, steps: int) -> dict[str, Any]:
    import torch

    from trainwright_trainer.config import parse_config
    from trainwright_trainer.loss import causal_lm_loss_sum, install_chunked_loss
    from trainwright_trainer.model import build_model

    torch.set_num_threads(1)
    cfg = parse_config(
        {
            "model": {"path": model_dir, "dtype": "fp32"},
            "method": method,
            "data": {"path": "unused.jsonl", "seq_len": SEQ_LEN},
            "training": {"loss_chunk_tokens": chunk_tokens},
        }
    )
    bundle = build_model(cfg, torch.device("cpu"))
    model = bundle.model
    head = install_chunked_loss(model, cfg.training.loss_chunk_tokens)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, VOCAB, (MICRO_BATCH, SEQ_LEN), generator=generator)
    batch = {
        "input_ids": input_ids,
        "labels": input_ids.clone(),
        "position_ids": torch.arange(SEQ_LEN).repeat(MICRO_BATCH, 1),
    }

    def step() -> float:
        started = time.process_time()
        loss = causal_lm_loss_sum(model, batch, head=head) / (MICRO_BATCH * (SEQ_LEN - 1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.process_time() - started

    step()  # warm-up: AdamW's state exists from here on
    Path("/proc/self/clear_refs").write_text("5")
    resting_kib = _status_kib("VmRSS")
    seconds = [step() for _ in range(steps)]
    peak_kib = _status_kib("VmHWM")
    return {
        "step_peak_bytes": (peak_kib - resting_kib) * 1024,
        "step_seconds": statistics.median(seconds),
        "tokens_per_second": MICRO_BATCH * SEQ_LEN / statistics.median(seconds),
        "trainable_params": bundle.trainable_params,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "METHOD", "CHUNK"))
    args = parser.parse_args()
    if args.child:
        model_dir, method, chunk = args.child
        print(json.dumps(child(model_dir, method, int(chunk), args.steps)))
        return 0
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-loss-") as tmp:
        model_dir = _model_dir(Path(tmp))
        for name, (method, chunk) in VARIANTS.items():
            command = [sys.executable, __file__, "--steps", str(args.steps)]
            command += ["--child", str(model_dir), method, str(chunk)]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"vocabulary {VOCAB}, hidden {HIDDEN}, {LAYERS} layers, {MICRO_BATCH} x {SEQ_LEN} "
        f"tokens a step, CPU fp32, 1 thread, median of {args.steps} steps"
    )
    print(f"{'variant':<22} {'step peak MiB':>14} {'step CPU s':>10} {'tokens/CPU s':>12}")
    for name, r in results.items():
        print(
            f"{name:<22} {r['step_peak_bytes'] / 2**20:>14.0f} {r['step_seconds']:>10.3f} "
            f"{r['tokens_per_second']:>12.0f}"
        )
    for method in ("full", "lora"):
        plain, chunked = results[f"{method}, plain loss"], results[f"{method}, chunked loss"]
        saved = 1 - chunked["step_peak_bytes"] / plain["step_peak_bytes"]
        speed = plain["step_seconds"] / chunked["step_seconds"]
        print(f"{method}: chunked loss peak {saved:.0%} lower, step {speed:.2f}x as fast")
    ratio = (
        results["lora, chunked loss"]["step_seconds"]
        / results["full, chunked loss"]["step_seconds"]
    )
    print(f"LoRA step time / full step time (chunked): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
