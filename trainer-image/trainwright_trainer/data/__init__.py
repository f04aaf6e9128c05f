"""The trainer's data pipeline: read, validate, render, tokenize, pack, cache and shard.

Typical use in the training loop (rank 0 prepares before any collective, the
others wait at a barrier and open the same directory)::

    path = prepare_dataset(cfg.data, tokenizer, cache_dir=cfg.data_cache_dir)  # rank 0
    dataset = load_prepared(path)                                              # every rank
    loader = ShardedLoader(dataset, rank=r, world_size=w, micro_batch_size=b, seed=s)

``ShardedLoader`` (and so torch) is imported lazily: the rest of the package works
without torch. See docs/trainer-data.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainwright_trainer.data.dataset import BadRow, DatasetStats, PackedDataset, load_prepared
from trainwright_trainer.data.formats import detect_format, render_row
from trainwright_trainer.data.packing import IGNORE_INDEX, best_fit_pack, pack_documents
from trainwright_trainer.data.reader import read_rows
from trainwright_trainer.data.tokenize import build_dataset, cache_key, prepare_dataset

if TYPE_CHECKING:
    from trainwright_trainer.data.loader import ShardedLoader, document_causal_mask

__all__ = [
    "IGNORE_INDEX",
    "BadRow",
    "DatasetStats",
    "PackedDataset",
    "ShardedLoader",
    "best_fit_pack",
    "build_dataset",
    "cache_key",
    "detect_format",
    "document_causal_mask",
    "load_prepared",
    "pack_documents",
    "prepare_dataset",
    "read_rows",
    "render_row",
]


def __getattr__(name: str) -> Any:
    if name in ("ShardedLoader", "document_causal_mask"):
        from trainwright_trainer.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
