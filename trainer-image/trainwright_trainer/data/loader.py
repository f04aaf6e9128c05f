"""Deterministic per-rank batches with a resumable position.

Each epoch draws one permutation of all sequences from ``(seed, epoch)`` (the same on
every rank, no communication) and deals it out round-robin: rank r gets the permuted
sequences r, r + world_size, r + 2·world_size, ... (as ``DistributedSampler`` does), so
together the ranks have consumed exactly the first ``position × world_size`` entries of
the permutation. That makes the position portable:

- ``state_dict()`` is ``{"epoch", "position", "world_size", "seed", "num_sequences"}``
  with ``position`` counted in sequences this rank has taken in this epoch (not
  batches), so halving the micro-batch on an OOM keeps the place;
- ``load_state_dict()`` on a different world size continues from the same global
  point (rounded down, so at most ``world_size - 1`` sequences are seen twice).

``position`` counts a batch as taken when it is yielded: a checkpoint written after
the step that used it resumes with the next batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from trainwright_trainer.data.dataset import PackedDataset
from trainwright_trainer.errors import DataError

__all__ = ["ShardedLoader", "document_causal_mask"]


class ShardedLoader:
    """Micro-batches of ``input_ids``, ``labels`` and ``position_ids`` (int64, [B, seq_len]).

    Use::

        for epoch in range(start_epoch, epochs):
            loader.set_epoch(epoch)      # keeps a restored position in that same epoch
            for batch in loader: ...
    """

    def __init__(
        self,
        dataset: PackedDataset,
        *,
        rank: int,
        world_size: int,
        micro_batch_size: int,
        seed: int,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of size {world_size}")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be positive, got {micro_batch_size}")
        if drop_last and len(dataset) < world_size * micro_batch_size:
            raise DataError(
                f"the dataset has {len(dataset)} sequences, fewer than one micro-batch for "
                f"each of {world_size} ranks ({micro_batch_size} each); add data or lower "
                "training.micro_batch_size"
            )
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0

    @property
    def sequences_per_rank(self) -> int:
        """Sequences each rank takes in one epoch."""
        n = len(self.dataset)
        if self.drop_last:
            per_rank = n // self.world_size
            return per_rank - per_rank % self.micro_batch_size
        return -(-n // self.world_size)

    def __len__(self) -> int:
        """Micro-batches per epoch per rank at the current micro-batch size."""
        return -(-self.sequences_per_rank // self.micro_batch_size)

    def batches_remaining(self) -> int:
        """Micro-batches left in the current epoch from the current position."""
        left = max(self.sequences_per_rank - self.position, 0)
        return -(-left // self.micro_batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning, unless it is the epoch already in progress."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def set_micro_batch_size(self, micro_batch_size: int) -> None:
        """Change the batch size mid-epoch (the OOM ladder); the position is kept."""
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be positive, got {micro_batch_size}")
        self.micro_batch_size = micro_batch_size

    def rank_indices(self, epoch: int | None = None) -> npt.NDArray[np.int64]:
        """This rank's sequence indices for an epoch, in order."""
        n = len(self.dataset)
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        if not self.drop_last and n % self.world_size:
            # Wrap around so every rank takes the same number of steps.
            order = np.concatenate([order, order[: self.world_size - n % self.world_size]])
        mine = order[self.rank :: self.world_size]
        return mine[: self.sequences_per_rank]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        indices = self.rank_indices()
        while self.position < len(indices):
            # Read the batch size each time: the OOM ladder may change it mid-epoch.
            chunk = indices[self.position : self.position + self.micro_batch_size]
            self.position += len(chunk)
            arrays = self.dataset.take(chunk)
            yield {name: torch.from_numpy(a.astype(np.int64)) for name, a in arrays.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "world_size": self.world_size,
            "seed": self.seed,
            "num_sequences": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` left off; the dataset must be the one it was saved with."""
        saved_sequences = int(state.get("num_sequences", len(self.dataset)))
        if saved_sequences != len(self.dataset):
            raise DataError(
                f"the dataset has {len(self.dataset)} sequences but the checkpoint was taken "
                f"with {saved_sequences}; the data or data settings changed since then"
            )
        if int(state.get("seed", self.seed)) != self.seed:
            raise DataError(
                f"training.seed is {self.seed} but the checkpoint was taken with "
                f"{state['seed']}; resume with the same seed"
            )
        saved_world = int(state.get("world_size", self.world_size))
        consumed_globally = int(state["position"]) * saved_world
        self.epoch = int(state["epoch"])
        self.position = min(consumed_globally // self.world_size, self.sequences_per_rank)


def document_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """A [B, 1, S, S] boolean mask (True = may attend) that is causal within each document.

    Documents start where ``position_ids`` is 0. For attention kernels that do not read
    packed positions themselves; transformers' sdpa/eager/flash paths already do when
    ``attention_mask`` is None.
    """
    document = (position_ids == 0).cumsum(dim=-1)
    same_document = document.unsqueeze(-1) == document.unsqueeze(-2)
    length = position_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    return (same_document & causal).unsqueeze(1)
