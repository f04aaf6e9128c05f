"""The prepared dataset: fixed-length rows of token ids, labels and positions, with its report.

A prepared dataset is a directory (see :mod:`trainwright_trainer.data.tokenize`) holding
three int32 ``.npy`` arrays of shape [sequences, seq_len] that are memory-mapped on
load, ``stats.json`` (:class:`DatasetStats`) and ``bad_rows.json`` (the rows that were
skipped and why). This module imports no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainwright_trainer.errors import DataError

__all__ = [
    "ARRAY_NAMES",
    "EVAL_SPLIT_STREAM",
    "BadRow",
    "DatasetStats",
    "PackedDataset",
    "holdout_split",
    "load_prepared",
]

ARRAY_NAMES = ("input_ids", "labels", "position_ids")
# Mixed into the seed of the held-out split, so it is not the first epoch's shuffle.
EVAL_SPLIT_STREAM = 0xE7A1


@dataclass(frozen=True, slots=True)
class BadRow:
    """A skipped row: where it is in the file (see reader.py for what ``row`` counts) and why."""

    row: int
    reason: str


@dataclass(frozen=True, slots=True)
class DatasetStats:
    """What preparation found: row counts, token lengths, truncation and packing efficiency.

    Token lengths are per document after rendering (prompt, answer and EOS), before
    truncation or splitting, so they tell whether ``seq_len`` fits the data.
    ``packing_efficiency`` is real tokens / (sequences × seq_len).
    """

    dataset: str
    format: str
    file_type: str
    rows_total: int
    rows_bad: int
    documents: int
    sequences: int
    seq_len: int
    tokens: int
    trainable_tokens: int
    token_length_min: int
    token_length_mean: float
    token_length_p50: float
    token_length_p95: float
    token_length_max: int
    truncated_rows: int
    split_documents: int
    packing_efficiency: float
    tokenize_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetStats:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class PackedDataset:
    """Training sequences: ``dataset[i]`` is a dict of ``input_ids``, ``labels`` (-100 where
    there is no loss) and ``position_ids`` (restarting at 0 per packed document), each a
    list of ``seq_len`` ints."""

    def __init__(
        self,
        input_ids: npt.NDArray[np.int32],
        labels: npt.NDArray[np.int32],
        position_ids: npt.NDArray[np.int32],
        *,
        stats: DatasetStats,
        report: list[BadRow],
        path: Path | None = None,
        index: npt.NDArray[np.int64] | None = None,
    ) -> None:
        shapes = {input_ids.shape, labels.shape, position_ids.shape}
        if len(shapes) != 1 or input_ids.ndim != 2:
            raise DataError(f"prepared dataset {path} has arrays of different shapes: {shapes}")
        self.input_ids = input_ids
        self.labels = labels
        self.position_ids = position_ids
        self.stats = stats
        self.report = report
        self.path = path
        # A subset (the training or held-out split) maps its positions through
        # `index` into the memory-mapped arrays instead of copying them.
        self.index = index

    def __len__(self) -> int:
        if self.index is not None:
            return len(self.index)
        return int(self.input_ids.shape[0])

    def _row(self, position: int) -> int:
        return int(self.index[position]) if self.index is not None else position

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sequence {index} out of range for {len(self)} sequences")
        row = self._row(index % len(self))
        return {
            "input_ids": self.input_ids[row].tolist(),
            "labels": self.labels[row].tolist(),
            "position_ids": self.position_ids[row].tolist(),
        }

    def subset(self, positions: npt.NDArray[np.int64]) -> PackedDataset:
        """The sequences at ``positions`` (of this dataset) as a dataset of their own."""
        rows = self.index[positions] if self.index is not None else positions
        return PackedDataset(
            self.input_ids,
            self.labels,
            self.position_ids,
            stats=self.stats,
            report=self.report,
            path=self.path,
            index=np.asarray(rows, dtype=np.int64),
        )

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def take(self, indices: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.int32]]:
        """The rows at ``indices`` as [len(indices), seq_len] arrays (one gather per array)."""
        if self.index is not None:
            indices = self.index[indices]
        return {
            "input_ids": np.asarray(self.input_ids[indices]),
            "labels": np.asarray(self.labels[indices]),
            "position_ids": np.asarray(self.position_ids[indices]),
        }


def holdout_split(
    num_sequences: int, fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(training, held-out) sequence positions: ``round(fraction x n)`` held out (at least one).

    Which ones is decided by ``seed`` alone (a permutation of ``[seed, EVAL_SPLIT_STREAM]``),
    so every rank, a resumed run and a test that re-evaluates a checkpoint pick the same
    split without talking to each other. Both lists come back sorted.
    """
    if not 0 < fraction < 1:
        raise DataError(f"data.eval_fraction must be between 0 and 1 (got {fraction})")
    held_out = max(1, round(fraction * num_sequences))
    if held_out >= num_sequences:
        raise DataError(
            f"data.eval_fraction={fraction:g} holds out {held_out} of {num_sequences} packed "
            "sequences and leaves none to train on; add data or lower data.eval_fraction"
        )
    order = np.random.default_rng([seed, EVAL_SPLIT_STREAM]).permutation(num_sequences)
    return np.sort(order[held_out:]).astype(np.int64), np.sort(order[:held_out]).astype(np.int64)


def load_prepared(path: str | Path) -> PackedDataset:
    """Open a directory written by ``prepare_dataset`` (arrays are memory-mapped)."""
    root = Path(path)
    try:
        stats = DatasetStats.from_dict(json.loads((root / "stats.json").read_text("utf-8")))
        report_data = json.loads((root / "bad_rows.json").read_text("utf-8"))
        arrays = [np.load(root / f"{name}.npy", mmap_mode="r") for name in ARRAY_NAMES]
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"prepared dataset {root} is missing or unreadable ({exc})") from None
    report = [BadRow(int(r["row"]), str(r["reason"])) for r in report_data["bad_rows"]]
    return PackedDataset(*arrays, stats=stats, report=report, path=root)
