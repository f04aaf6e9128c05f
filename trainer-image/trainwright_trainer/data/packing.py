"""Sequence packing: best-fit decreasing bin packing of documents into fixed-length rows.

Best-fit decreasing (Johnson, "Near-optimal bin packing algorithms", MIT 1973; used for
LLM packing by Ding et al., "Fewer Truncations Improve Language Modeling", ICML 2024):
documents are taken longest first and each goes into the open row with the least room
that still fits it. Finding that row is a search over room sizes 0..seq_len kept in a
Fenwick tree of counts, so packing n documents costs O(n log seq_len).

Documents never attend to each other: ``position_ids`` restart at 0 at every document,
which flash-attention's varlen kernels and transformers' packed-sequence masks
(``find_packed_sequence_indices``, sdpa and eager, when no ``attention_mask`` is passed)
turn into a block-diagonal causal mask. The first token of every document has label
-100, so no document is trained to predict the next one's first token. Padding at the
end of a row has labels -100 and its own positions from 0, like one more document.

This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["IGNORE_INDEX", "PackedArrays", "best_fit_pack", "pack_documents"]

IGNORE_INDEX = -100

Int32Array = npt.NDArray[np.int32]
PackedArrays = tuple[Int32Array, Int32Array, Int32Array]


class _Fenwick:
    """Counts per room size 1..size with prefix sums and 'k-th occupied size' search."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tree = [0] * (size + 1)
        self.total = 0
        self.top_bit = 1 << (size.bit_length() - 1) if size > 0 else 0

    def add(self, index: int, delta: int) -> None:
        self.total += delta
        while index <= self.size:
            self.tree[index] += delta
            index += index & -index

    def prefix(self, index: int) -> int:
        total = 0
        while index > 0:
            total += self.tree[index]
            index -= index & -index
        return total

    def kth(self, k: int) -> int:
        """The smallest index whose prefix sum reaches k (1-based k <= total)."""
        position = 0
        step = self.top_bit
        while step:
            nxt = position + step
            if nxt <= self.size and self.tree[nxt] < k:
                position = nxt
                k -= self.tree[nxt]
            step >>= 1
        return position + 1


def best_fit_pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group document indices into rows of at most ``capacity`` tokens, best-fit decreasing.

    Deterministic: ties are broken by document index.
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rooms = _Fenwick(capacity)
    rows_with_room: list[list[int]] = [[] for _ in range(capacity + 1)]
    rows: list[list[int]] = []
    for doc in order:
        length = lengths[doc]
        if length <= 0 or length > capacity:
            raise ValueError(f"document {doc} has {length} tokens; expected 1..{capacity}")
        wanted = rooms.prefix(length - 1) + 1
        if wanted <= rooms.total:
            room = rooms.kth(wanted)
            row = rows_with_room[room].pop()
            rooms.add(room, -1)
        else:
            room = capacity
            row = len(rows)
            rows.append([])
        rows[row].append(doc)
        left = room - length
        if left > 0:
            rows_with_room[left].append(row)
            rooms.add(left, 1)
    return rows


def pack_documents(
    documents: Sequence[tuple[Int32Array, Int32Array]],
    seq_len: int,
    *,
    pad_token_id: int,
    pack: bool = True,
) -> PackedArrays:
    """Lay documents (token ids, labels; each at most ``seq_len``) out as [rows, seq_len] arrays.

    Returns ``(input_ids, labels, position_ids)`` as int32. With ``pack=False`` every
    document gets a row of its own.
    """
    lengths = [len(ids) for ids, _ in documents]
    rows = best_fit_pack(lengths, seq_len) if pack else [[i] for i in range(len(documents))]
    input_ids = np.full((len(rows), seq_len), pad_token_id, dtype=np.int32)
    labels = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=np.int32)
    position_ids = np.zeros((len(rows), seq_len), dtype=np.int32)
    ramp = np.arange(seq_len, dtype=np.int32)
    for r, row in enumerate(rows):
        offset = 0
        for doc in row:
            ids, doc_labels = documents[doc]
            end = offset + len(ids)
            input_ids[r, offset:end] = ids
            labels[r, offset:end] = doc_labels
            labels[r, offset] = IGNORE_INDEX
            position_ids[r, offset:end] = ramp[: len(ids)]
            offset = end
        position_ids[r, offset:] = ramp[: seq_len - offset]
    return input_ids, labels, position_ids
