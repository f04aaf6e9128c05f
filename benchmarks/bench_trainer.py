"""Overhead of the trainer's loop over a bare PyTorch loop, on CPU (goal: at most 5%).

Both loops train the same model from the same weights on the same packed
sequences, with the same loss (mean cross-entropy over label tokens), AdamW and
gradient clipping. The bare loop is just forward / backward / clip / step. Ours
is the real ``Recipe`` in a world of one (no torchrun): rank agreement of the
guard flags, the non-finite check, the spike detector, the learning-rate
schedule, the JSONL step log, Prometheus gauges and the progress file, with
no checkpoint inside the timed loop. Tokens/s is trained tokens over the wall
time of the step loop, and also over the process's CPU time (one thread), which
other processes on a shared machine do not inflate; each figure is the median
of ``--repeats`` runs, alternating which loop goes first.

Two model sizes: the tests' tiny Llama (hidden 64, 2 layers; a step is a few
milliseconds, so fixed per-step costs show most) and a small one (hidden 256,
4 layers).

Run: ``python benchmarks/bench_trainer.py [--steps 30] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "trainer-image"), str(ROOT / "tests")]

SIZES = {
    "tiny (h64 x 2 layers)": {"hidden": 64, "layers": 2, "heads": 4},
    "small (h256 x 4 layers)": {"hidden": 256, "layers": 4, "heads": 4},
}
SEQ_LEN = 128
MICRO_BATCH = 4
LEARNING_RATE = 1e-3


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _build_model(out_dir: Path, hidden: int, layers: int, heads: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer_fixtures import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def _config(model_dir: Path, work: Path, steps: int) -> Any:
    from trainer_fixtures import TRAINER_DATA_DIR
    from trainwright_trainer.config import parse_config

    return parse_config(
        {
            "model": {"path": str(model_dir)},
            "method": "full",
            "data": {
                "path": str(TRAINER_DATA_DIR / "text.txt"),
                "seq_len": SEQ_LEN,
                "cache_dir": str(work / "data-cache"),
            },
            "training": {
                "epochs": 1000,
                "max_steps": steps,
                "micro_batch_size": MICRO_BATCH,
                "learning_rate": LEARNING_RATE,
                "lr_scheduler": "constant",
                "seed": 1,
                # The bare loop's loss over whole logits: this measures the loop, not the
                # loss (the fused, chunked loss is bench_trainer_loss.py's subject).
                "loss_chunk_tokens": 0,
            },
            "distributed": {"strategy": "ddp", "backend": "gloo"},
            "checkpoint": {"dir": str(work / "ckpt"), "interval_steps": 10**6, "keep_last": 1},
            "metrics": {"port": 0, "log_interval_steps": 10**6},
            "output": {"dir": str(work / "out")},
        }
    )


def our_loop(model_dir: Path, work: Path, steps: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of the trainer's Recipe (world of one)."""
    import shutil

    from trainwright_trainer.train import Recipe

    shutil.rmtree(work / "ckpt", ignore_errors=True)
    os.environ.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": _free_port(),
        }
    )
    recipe = Recipe(_config(model_dir, work, steps))
    try:
        recipe.setup()
        recipe.train()
        seconds, cpu_seconds = recipe.loop_seconds, recipe.loop_cpu_seconds
    finally:
        recipe.cleanup()
    tokens = steps * MICRO_BATCH * SEQ_LEN
    return tokens / seconds, tokens / cpu_seconds


def bare_loop(model_dir: Path, work: Path, steps: int) -> tuple[float, float]:
    """(tokens per wall second, per CPU second) of forward / backward / clip / AdamW."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from trainwright_trainer.data import load_prepared, prepare_dataset
    from trainwright_trainer.data.loader import ShardedLoader
    from trainwright_trainer.model import load_tokenizer

    cfg = _config(model_dir, work, steps)
    dataset = load_prepared(
        prepare_dataset(cfg.data, load_tokenizer(cfg), cache_dir=cfg.data_cache_dir)
    )
    loader = ShardedLoader(dataset, rank=0, world_size=1, micro_batch_size=MICRO_BATCH, seed=1)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.0}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LEARNING_RATE,
        betas=(0.9, 0.95),
    )
    iterator = iter(loader)
    started = time.monotonic()
    cpu_started = time.process_time()
    for _ in range(steps):
        try:
            batch = next(iterator)
        except StopIteration:
            loader.set_epoch(loader.epoch + 1)
            iterator = iter(loader)
            batch = next(iterator)
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        ) / max(int((labels != -100).sum()), 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    tokens = steps * MICRO_BATCH * SEQ_LEN
    return tokens / (time.monotonic() - started), tokens / (time.process_time() - cpu_started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # two shared cores: one thread each keeps timings stable
    logging.disable(logging.WARNING)
    print(
        f"trainer loop vs bare PyTorch loop, CPU fp32, 1 thread, {args.steps} steps, "
        f"micro-batch {MICRO_BATCH} x seq {SEQ_LEN}, median of {args.repeats}"
    )
    print(
        f"{'model':26} {'bare tok/s':>10} {'ours tok/s':>10} {'overhead':>8}   "
        f"{'bare tok/cpu-s':>14} {'ours tok/cpu-s':>14} {'overhead':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        for name, size in SIZES.items():
            work = Path(tmp) / name.split()[0]
            model_dir = _build_model(work / "model", size["hidden"], size["layers"], size["heads"])
            ours: list[tuple[float, float]] = []
            bare: list[tuple[float, float]] = []
            for repeat in range(args.repeats):
                # Alternate which loop goes first so warm caches favour neither.
                if repeat % 2:
                    ours.append(our_loop(model_dir, work, args.steps))
                    bare.append(bare_loop(model_dir, work, args.steps))
                else:
                    bare.append(bare_loop(model_dir, work, args.steps))
                    ours.append(our_loop(model_dir, work, args.steps))
            row = [name]
            for i in (0, 1):
                bare_tps = statistics.median(b[i] for b in bare)
                ours_tps = statistics.median(o[i] for o in ours)
                overhead = (bare_tps - ours_tps) / bare_tps * 100
                width = 10 if i == 0 else 14
                row.append(f"{bare_tps:{width}.0f} {ours_tps:{width}.0f} {overhead:7.1f}%")
            print(f"{row[0]:26} {row[1]}   {row[2]}")
    # Wall time swings with other processes on a shared machine; CPU time of the
    # process (one thread) does not, so the CPU-time overhead is the figure to read.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
