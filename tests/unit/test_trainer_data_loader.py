"""ShardedLoader: deterministic disjoint shards, exact resume, and packed documents kept apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trainer_fixtures import TRAINER_DATA_DIR, tiny_tokenizer
from trainwright_trainer.config import DataConfig
from trainwright_trainer.data import (
    DatasetStats,
    PackedDataset,
    ShardedLoader,
    build_dataset,
    document_causal_mask,
)
from trainwright_trainer.errors import DataError

SEQ_LEN = 8


def _numbered_dataset(n: int) -> PackedDataset:
    """Row i is filled with the value i, so a batch shows which rows it holds."""
    ids = np.repeat(np.arange(n, dtype=np.int32)[:, None], SEQ_LEN, axis=1)
    positions = np.tile(np.arange(SEQ_LEN, dtype=np.int32), (n, 1))
    stats = DatasetStats(
        dataset="numbers", format="text", file_type="jsonl", rows_total=n, rows_bad=0,
        documents=n, sequences=n, seq_len=SEQ_LEN, tokens=n * SEQ_LEN,
        trainable_tokens=n * SEQ_LEN, token_length_min=SEQ_LEN, token_length_mean=SEQ_LEN,
        token_length_p50=SEQ_LEN, token_length_p95=SEQ_LEN, token_length_max=SEQ_LEN,
        truncated_rows=0, split_documents=0, packing_efficiency=1.0, tokenize_seconds=0.0,
    )  # fmt: skip
    return PackedDataset(ids, ids.copy(), positions, stats=stats, report=[])


def _rows(loader: ShardedLoader) -> list[int]:
    return [int(row[0]) for batch in loader for row in batch["input_ids"]]


def test_ranks_get_disjoint_equal_shards_that_cover_the_epoch() -> None:
    dataset = _numbered_dataset(23)
    loaders = [
        ShardedLoader(dataset, rank=r, world_size=3, micro_batch_size=2, seed=7) for r in range(3)
    ]
    shards = [_rows(loader) for loader in loaders]
    assert [len(s) for s in shards] == [6, 6, 6]
    assert [len(loader) for loader in loaders] == [3, 3, 3]
    flat = [i for shard in shards for i in shard]
    assert len(set(flat)) == 18
    assert set(flat) <= set(range(23))


def test_batches_are_int64_tensors_of_micro_batch_by_seq_len() -> None:
    loader = ShardedLoader(_numbered_dataset(8), rank=0, world_size=1, micro_batch_size=4, seed=0)
    batch = next(iter(loader))
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert all(t.dtype == torch.int64 and t.shape == (4, SEQ_LEN) for t in batch.values())


def test_order_is_the_same_for_the_same_seed_and_epoch_and_changes_with_either() -> None:
    dataset = _numbered_dataset(32)

    def fresh(seed: int, epoch: int = 0) -> ShardedLoader:
        loader = ShardedLoader(dataset, rank=1, world_size=2, micro_batch_size=2, seed=seed)
        loader.set_epoch(epoch)
        return loader

    epoch0 = _rows(fresh(3))
    assert _rows(fresh(3)) == epoch0
    assert _rows(fresh(3, epoch=1)) != epoch0
    assert _rows(fresh(4)) != epoch0


def test_resume_from_state_dict_continues_with_the_next_batch() -> None:
    dataset = _numbered_dataset(40)
    uninterrupted = ShardedLoader(dataset, rank=0, world_size=2, micro_batch_size=2, seed=11)
    expected = _rows(uninterrupted)
    first = ShardedLoader(dataset, rank=0, world_size=2, micro_batch_size=2, seed=11)
    iterator = iter(first)
    seen = [int(r[0]) for _ in range(3) for r in next(iterator)["input_ids"]]
    state = first.state_dict()
    assert state == {"epoch": 0, "position": 6, "world_size": 2, "seed": 11, "num_sequences": 40}
    resumed = ShardedLoader(dataset, rank=0, world_size=2, micro_batch_size=2, seed=11)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # the loop calls this; it must keep the restored position
    assert seen + _rows(resumed) == expected


def test_halving_the_micro_batch_mid_epoch_keeps_the_sequence_order() -> None:
    dataset = _numbered_dataset(24)
    expected = _rows(ShardedLoader(dataset, rank=0, world_size=1, micro_batch_size=4, seed=5))
    loader = ShardedLoader(dataset, rank=0, world_size=1, micro_batch_size=4, seed=5)
    iterator = iter(loader)
    rows = [int(r[0]) for r in next(iterator)["input_ids"]]
    loader.set_micro_batch_size(2)
    sizes = []
    for batch in iterator:
        sizes.append(batch["input_ids"].shape[0])
        rows += [int(r[0]) for r in batch["input_ids"]]
    assert rows == expected
    assert sizes == [2] * 10


def test_resuming_on_a_different_world_size_continues_from_the_same_global_point() -> None:
    dataset = _numbered_dataset(48)
    old = [
        ShardedLoader(dataset, rank=r, world_size=4, micro_batch_size=2, seed=1) for r in range(4)
    ]
    consumed: set[int] = set()
    for loader in old:
        iterator = iter(loader)
        for _ in range(3):
            consumed |= {int(r[0]) for r in next(iterator)["input_ids"]}
    new = [
        ShardedLoader(dataset, rank=r, world_size=2, micro_batch_size=2, seed=1) for r in range(2)
    ]
    for loader in new:
        loader.load_state_dict(old[0].state_dict())
    assert [loader.position for loader in new] == [12, 12]
    rest = {i for loader in new for i in _rows(loader)}
    assert consumed.isdisjoint(rest)
    assert consumed | rest == set(range(48))


def test_a_checkpoint_from_other_data_or_seed_is_refused() -> None:
    loader = ShardedLoader(_numbered_dataset(10), rank=0, world_size=1, micro_batch_size=1, seed=1)
    with pytest.raises(DataError, match=r"has 10 sequences but the checkpoint was taken with 12"):
        loader.load_state_dict({"epoch": 0, "position": 3, "world_size": 1, "num_sequences": 12})
    with pytest.raises(DataError, match=r"training\.seed is 1 but the checkpoint was taken with 2"):
        loader.load_state_dict({"epoch": 0, "position": 3, "seed": 2, "num_sequences": 10})


def test_too_little_data_for_one_batch_per_rank_is_a_data_error() -> None:
    with pytest.raises(
        DataError, match=r"has 3 sequences, fewer than one micro-batch for each of 2"
    ):
        ShardedLoader(_numbered_dataset(3), rank=0, world_size=2, micro_batch_size=2, seed=0)


def test_without_drop_last_every_sequence_is_seen_and_ranks_stay_equal() -> None:
    dataset = _numbered_dataset(7)
    shards = [
        _rows(
            ShardedLoader(
                dataset, rank=r, world_size=2, micro_batch_size=3, seed=0, drop_last=False
            )
        )
        for r in range(2)
    ]
    assert [len(s) for s in shards] == [4, 4]
    assert set(shards[0]) | set(shards[1]) == set(range(7))


def test_document_mask_is_causal_within_documents_only() -> None:
    mask = document_causal_mask(torch.tensor([[0, 1, 2, 0, 1]]))
    assert mask.shape == (1, 1, 5, 5)
    assert mask[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ]


def test_packed_documents_do_not_see_each_other_in_a_llama_with_sdpa(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, attn_implementation="sdpa",
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    cfg = DataConfig(path=str(TRAINER_DATA_DIR / "prompt_completion.jsonl"), seq_len=256)
    dataset = build_dataset(cfg, tok, cache_dir=tmp_path)
    row = dataset[0]
    positions = torch.tensor([row["position_ids"]])
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    assert len(starts) >= 3  # several documents and the padding
    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        second = slice(starts[1], starts[2])
        alone = model(input_ids=ids[:, second], use_cache=False).logits
        leaky = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(packed[:, second], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(leaky[:, second], alone, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=8, max_value=60),
    world_size=st.integers(min_value=1, max_value=4),
    micro_batch=st.integers(min_value=1, max_value=3),
    cut=st.integers(min_value=0, max_value=30),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_stopping_anywhere_and_resuming_replays_exactly_the_rest_of_the_epoch(
    n: int, world_size: int, micro_batch: int, cut: int, seed: int
) -> None:
    assume(n >= world_size * micro_batch)
    dataset = _numbered_dataset(n)

    def make(rank: int) -> ShardedLoader:
        return ShardedLoader(
            dataset, rank=rank, world_size=world_size, micro_batch_size=micro_batch, seed=seed
        )

    for rank in range(world_size):
        expected = _rows(make(rank))
        first = make(rank)
        iterator = iter(first)
        taken = [
            int(r[0]) for _, b in zip(range(cut), iterator, strict=False) for r in b["input_ids"]
        ]
        resumed = make(rank)
        resumed.load_state_dict(first.state_dict())
        assert taken + _rows(resumed) == expected
