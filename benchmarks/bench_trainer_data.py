"""Trainer data pipeline throughput on CPU: tokenize+mask+pack, best-fit packing, loader.

Run: ``.venv/bin/python benchmarks/bench_trainer_data.py`` (about half a minute).
Uses the tiny test tokenizer (tests/trainer_fixtures.py) on synthetic alpaca and chat
rows, so the figures measure our pipeline, not a big vocabulary.

With a CUDA GPU it also trains an ~86M-parameter Llama (bf16, sdpa) on the same rows
packed and unpacked and prints real (non-padding) tokens/s of each, plus how far a packed
document's logits are from the same document run alone (leakage check).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from trainer_fixtures import tiny_tokenizer
from trainwright_trainer.config import DataConfig
from trainwright_trainer.data import PackedDataset, ShardedLoader, best_fit_pack, build_dataset

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


def bench_packing_on_gpu(tmp: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        print("packed vs unpacked training throughput: needs a CUDA GPU; not run on this machine")
        return
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    seq_len = 2048
    data = str(tmp / "alpaca.jsonl")
    packed = build_dataset(DataConfig(path=data, seq_len=seq_len), tok, cache_dir=tmp / "cache")
    unpacked = build_dataset(
        DataConfig(path=data, seq_len=seq_len, pack=False), tok, cache_dir=tmp / "cache"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=seq_len,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).to("cuda", torch.bfloat16)
    print(f"GPU {torch.cuda.get_device_name(0)}: Llama {_millions(model)}M parameters, bf16, sdpa")
    _leakage_on_gpu(model, packed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for name, dataset in (("packed", packed), ("unpacked", unpacked)):
        loader = ShardedLoader(dataset, rank=0, world_size=1, micro_batch_size=4, seed=0)
        batches = iter(loader)
        real_tokens = 0
        for step in range(24):
            if step == 4:  # after warm-up
                torch.cuda.synchronize()
                started = time.perf_counter()
                real_tokens = 0
            batch = {k: v.to("cuda") for k, v in next(batches).items()}
            model(**batch, use_cache=False).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            real_tokens += int((batch["input_ids"] != tok.pad_token_id).sum())
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        print(
            f"train {name:8s} (efficiency {dataset.stats.packing_efficiency:.3f}): "
            f"{20 * 4 * seq_len / seconds:,.0f} tokens/s processed, "
            f"{real_tokens / seconds:,.0f} real tokens/s"
        )


def _millions(model: Any) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}"


def _leakage_on_gpu(model: Any, packed: PackedDataset) -> None:
    import torch

    row = packed[0]
    positions = torch.tensor([row["position_ids"]], device="cuda")
    ids = torch.tensor([row["input_ids"]], device="cuda")
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    second = slice(starts[1], starts[2])
    with torch.no_grad():
        together = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        alone = model(input_ids=ids[:, second], use_cache=False).logits
    gap = (together[:, second].float() - alone.float()).abs().max().item()
    print(f"leakage check: max |packed - alone| logit = {gap:.4f} (bf16 rounding is ~0.03)")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_prepare(Path(tmp))
        bench_packing()
        bench_loader(Path(tmp))
        bench_packing_on_gpu(Path(tmp))


if __name__ == "__main__":
    main()
