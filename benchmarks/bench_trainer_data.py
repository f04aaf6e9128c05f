"""Trainer data pipeline throughput on CPU: tokenize+mask+pack, best-fit packing, loader.

Run: ``.venv/bin/python benchmarks/bench_trainer_data.py`` (about half a minute).
Uses the tiny test tokenizer (tests/trainer_fixtures.py) on synthetic alpaca and chat
rows, so the figures measure our pipeline, not a big vocabulary.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from trainer_fixtures import tiny_tokenizer
from trainwright_trainer.config import DataConfig
from trainwright_trainer.data import ShardedLoader, best_fit_pack, build_dataset

ROWS = 10_000
SEQ_LEN = 1024
WORDS = [
    "the",
    "model",
    "learns",
    "a",
    "token",
    "from",
    "the",
    "data",
    "and",
    "the",
    "loss",
    "goes",
    "down",
    "after",
    "each",
    "step",
    "of",
    "training",
    "with",
    "a",
    "small",
    "learning",
    "rate",
    "and",
    "a",
    "checkpoint",
    "saved",
    "every",
    "hour",
]


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def _write_rows(path: Path, fmt: str, rng: random.Random) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(ROWS):
            if fmt == "alpaca":
                row: dict[str, object] = {
                    "instruction": _sentence(rng, 5, 20),
                    "input": "",
                    "output": _sentence(rng, 10, 120),
                }
            else:
                row = {
                    "messages": [
                        {"role": "user", "content": _sentence(rng, 5, 20)},
                        {"role": "assistant", "content": _sentence(rng, 10, 120)},
                    ]
                }
            handle.write(json.dumps(row) + "\n")
    return path


def bench_prepare(tmp: Path) -> None:
    tok = tiny_tokenizer()
    rng = random.Random(0)
    for fmt in ("alpaca", "chat"):
        data = _write_rows(tmp / f"{fmt}.jsonl", fmt, rng)
        cfg = DataConfig(path=str(data), seq_len=SEQ_LEN)
        started = time.perf_counter()
        dataset = build_dataset(cfg, tok, cache_dir=tmp / "cache")
        seconds = time.perf_counter() - started
        s = dataset.stats
        print(
            f"prepare {fmt:6s}: {s.rows_total} rows, {s.tokens} tokens in {seconds:.2f} s = "
            f"{s.rows_total / seconds:,.0f} rows/s, {s.tokens / seconds:,.0f} tokens/s; "
            f"{s.sequences} sequences of {SEQ_LEN}, packing efficiency {s.packing_efficiency:.4f}"
        )
        started = time.perf_counter()
        build_dataset(cfg, tok, cache_dir=tmp / "cache")
        print(f"prepare {fmt:6s} again (cache hit): {time.perf_counter() - started:.3f} s")


def bench_packing() -> None:
    rng = random.Random(1)
    lengths = [min(int(rng.lognormvariate(5.0, 0.9)) + 1, 4096) for _ in range(200_000)]
    started = time.perf_counter()
    rows = best_fit_pack(lengths, 4096)
    seconds = time.perf_counter() - started
    efficiency = sum(lengths) / (len(rows) * 4096)
    print(
        f"best-fit packing: 200,000 documents (median {statistics.median(lengths):.0f} tokens) "
        f"into {len(rows):,} rows of 4096 in {seconds:.2f} s, efficiency {efficiency:.4f}"
    )


def bench_loader(tmp: Path) -> None:
    cfg = DataConfig(path=str(tmp / "alpaca.jsonl"), seq_len=SEQ_LEN)
    dataset = build_dataset(cfg, tiny_tokenizer(), cache_dir=tmp / "cache")
    loader = ShardedLoader(dataset, rank=0, world_size=1, micro_batch_size=8, seed=0)
    started = time.perf_counter()
    batches = sum(1 for _ in loader)
    seconds = time.perf_counter() - started
    print(
        f"loader: {batches} batches of 8x{SEQ_LEN} in {seconds:.3f} s = "
        f"{batches * 8 * SEQ_LEN / seconds:,.0f} tokens/s"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_prepare(Path(tmp))
        bench_packing()
        bench_loader(Path(tmp))


if __name__ == "__main__":
    main()
