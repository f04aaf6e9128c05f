"""Tokenize a dataset once, mask the labels, pack, and cache the result on disk.

:func:`prepare_dataset` does the whole job and returns the cache directory; it is
idempotent and meant to run on one rank before any collective (the others wait at a
barrier and then :func:`~trainwright_trainer.data.dataset.load_prepared` the same path).

The cache directory is ``<cache_dir>/<file stem>-<key>`` where the key hashes what the
result depends on: the file's content (SHA-256), the tokenizer (its vocabulary and merges,
special tokens and chat template), the format, ``seq_len``, ``pack``, ``train_on_prompt``,
``add_eos``, ``text_field`` and this pipeline's version. It is written to a temporary
directory (files fsynced) and renamed into place, so a reader sees a complete cache or
none; when two writers race, the first rename wins and the other's copy is dropped.

Labels: a token carries loss when its characters overlap a trainable span of the
rendered row (fast tokenizers report offsets); tokenizers without offsets are tokenized
span by span instead. Documents longer than ``seq_len`` are truncated, except plain text,
which is cut into ``seq_len`` pieces. A row whose trainable part is cut off entirely is
reported as bad.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainwright_trainer.config import DataConfig
from trainwright_trainer.data.dataset import (
    ARRAY_NAMES,
    BadRow,
    DatasetStats,
    PackedDataset,
    load_prepared,
)
from trainwright_trainer.data.formats import (
    RenderedText,
    RenderedTokens,
    RowError,
    detect_format,
    render_row,
)
from trainwright_trainer.data.packing import IGNORE_INDEX, pack_documents
from trainwright_trainer.data.reader import RawRow, file_type_of, read_rows
from trainwright_trainer.errors import DataError

__all__ = [
    "PIPELINE_VERSION",
    "TokenizedRows",
    "build_dataset",
    "cache_key",
    "prepare_dataset",
    "tokenize_file",
    "tokenize_rendered",
    "tokenizer_fingerprint",
]

log = logging.getLogger(__name__)

# Bump when the cached arrays would differ for the same inputs.
PIPELINE_VERSION = 1
_BATCH_ROWS = 1024
_REPORT_MAX_ROWS = 10_000
_LOG_BAD_ROWS = 5
# A staging directory this old belongs to a writer that was killed mid-publish.
_STALE_STAGING_SECONDS = 3600

Int32Array = npt.NDArray[np.int32]
Document = tuple[Int32Array, Int32Array]


def build_dataset(
    cfg: DataConfig, tokenizer: Any, *, cache_dir: str | Path | None = None
) -> PackedDataset:
    """Prepare (or reuse) the cache and open it; single-process convenience."""
    return load_prepared(prepare_dataset(cfg, tokenizer, cache_dir=cache_dir))


def prepare_dataset(
    cfg: DataConfig, tokenizer: Any, *, cache_dir: str | Path | None = None
) -> Path:
    """Tokenize, mask, pack and cache ``cfg.path``; return the cache directory.

    ``cache_dir`` defaults to ``cfg.cache_dir`` (the trainer passes
    ``TrainerConfig.data_cache_dir``). Raises DataError for a missing or unusable file,
    an undetectable format, or more bad rows than ``cfg.max_bad_row_fraction``.
    """
    source = Path(cfg.path)
    file_type = file_type_of(source, cfg.file_type)
    if not source.is_file():
        raise DataError(f"dataset file {source} does not exist")
    root_text = cache_dir if cache_dir is not None else cfg.cache_dir
    if root_text is None:
        raise DataError("data.cache_dir is not set and no cache directory was given")
    root = Path(root_text)
    key = cache_key(cfg, tokenizer, source, file_type)
    final = root / f"{_safe_stem(source)}-{key[:16]}"
    report_path = root / f"{final.name}.bad_rows.json"
    if (final / "stats.json").is_file():
        stats = DatasetStats.from_dict(json.loads((final / "stats.json").read_text("utf-8")))
        _check_bad_fraction(stats.rows_bad, stats.rows_total, cfg, source, report_path)
        log.info("reusing tokenized dataset %s (%d sequences)", final, stats.sequences)
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)  # before the work, so a bad path fails fast
    except OSError as exc:
        raise _unwritable(root, exc) from None
    _remove_stale_staging(root)
    started = time.perf_counter()
    result = tokenize_file(cfg, tokenizer, source, file_type)
    report = _report_json(source, result)
    try:
        _write_atomic_text(report_path, report)
    except OSError as exc:
        raise _unwritable(root, exc) from None
    _log_bad_rows(result, report_path)
    _check_bad_fraction(len(result.bad_rows), result.rows_total, cfg, source, report_path)
    if not result.documents:
        raise DataError(f"dataset file {source} has no usable rows")
    arrays = pack_documents(
        result.documents, cfg.seq_len, pad_token_id=_pad_id(tokenizer), pack=cfg.pack
    )
    stats = _stats(cfg, source, file_type, result, arrays, time.perf_counter() - started)
    try:
        _publish(final, arrays, stats, report)
    except OSError as exc:
        raise _unwritable(root, exc) from None
    log.info(
        "tokenized %s: %d rows (%d bad) -> %d sequences of %d tokens, packing efficiency %.3f",
        source,
        stats.rows_total,
        stats.rows_bad,
        stats.sequences,
        stats.seq_len,
        stats.packing_efficiency,
    )
    return final


def cache_key(cfg: DataConfig, tokenizer: Any, source: Path, file_type: str) -> str:
    """SHA-256 over everything the prepared arrays depend on."""
    digest = hashlib.sha256()
    settings = {
        "version": PIPELINE_VERSION,
        "file_type": file_type,
        "format": cfg.format,
        "seq_len": cfg.seq_len,
        "pack": cfg.pack,
        "train_on_prompt": cfg.train_on_prompt,
        "add_eos": cfg.add_eos,
        "text_field": cfg.text_field,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    with source.open("rb") as handle:
        digest.update(hashlib.file_digest(handle, "sha256").digest())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides token ids: vocabulary, merges, special tokens, chat template."""
    digest = hashlib.sha256()
    for part in (
        type(tokenizer).__name__,
        str(getattr(tokenizer, "chat_template", None)),
        str(getattr(tokenizer, "bos_token_id", None)),
        str(getattr(tokenizer, "eos_token_id", None)),
        str(getattr(tokenizer, "pad_token_id", None)),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()


@dataclass
class TokenizedRows:
    """What tokenizing a file found, row by row; the trainer and ``trainwright dataset
    inspect`` both read a file through :func:`tokenize_file`, so they agree on every row.

    ``lengths``, ``trainable_counts`` and ``length_rows`` run in parallel: each
    rendered row's token count before truncation, its tokens with loss, its row number.
    """

    format: str
    rows_total: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    trainable_counts: list[int] = field(default_factory=list)
    length_rows: list[int] = field(default_factory=list)
    truncated_rows: int = 0
    split_documents: int = 0


def tokenize_file(
    cfg: DataConfig,
    tokenizer: Any,
    source: Path,
    file_type: str,
    *,
    on_row: Callable[[RawRow], None] | None = None,
) -> TokenizedRows:
    """Read, validate, render and tokenize every row of ``source`` (``on_row`` sees each raw row)."""
    rows: Iterator[RawRow] = read_rows(source, file_type)
    if on_row is not None:
        rows = _observed(rows, on_row)
    head = list(itertools.islice(rows, 200))
    fmt: str = cfg.format
    if fmt == "auto":
        fmt = detect_format(
            (r.value for r in head if r.error is None),
            text_field=cfg.text_field,
            source=str(source),
        )
    result = TokenizedRows(format=fmt)
    for batch in _batches(itertools.chain(head, rows), _BATCH_ROWS):
        _tokenize_batch(batch, cfg, tokenizer, result)
    return result


def _observed(rows: Iterator[RawRow], on_row: Callable[[RawRow], None]) -> Iterator[RawRow]:
    for row in rows:
        on_row(row)
        yield row


def _batches(rows: Iterable[RawRow], size: int) -> Iterator[list[RawRow]]:
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _tokenize_batch(
    batch: list[RawRow], cfg: DataConfig, tokenizer: Any, out: TokenizedRows
) -> None:
    rendered: list[tuple[int, RenderedText | RenderedTokens]] = []
    for raw in batch:
        out.rows_total += 1
        if raw.error is not None:
            out.bad_rows.append(BadRow(raw.row, raw.error))
            continue
        try:
            rendered.append(
                (
                    raw.row,
                    render_row(
                        raw.value,
                        out.format,
                        tokenizer,
                        train_on_prompt=cfg.train_on_prompt,
                        add_eos=cfg.add_eos,
                        text_field=cfg.text_field,
                    ),
                )
            )
        except RowError as exc:
            out.bad_rows.append(BadRow(raw.row, str(exc)))
    tokenized = tokenize_rendered([r for _, r in rendered], tokenizer)
    for (row, item), (ids, trainable) in zip(rendered, tokenized, strict=True):
        splittable = isinstance(item, RenderedText) and item.splittable
        _add_document(out, row, ids, trainable, cfg.seq_len, splittable)


def _add_document(
    out: TokenizedRows,
    row: int,
    ids: Int32Array,
    trainable: npt.NDArray[np.bool_],
    seq_len: int,
    splittable: bool,
) -> None:
    out.lengths.append(len(ids))
    out.trainable_counts.append(int(trainable.sum()))
    out.length_rows.append(row)
    labels = np.where(trainable, ids, IGNORE_INDEX).astype(np.int32)
    if len(ids) <= seq_len:
        pieces = [(ids, labels)]
    elif splittable:
        pieces = [
            (ids[i : i + seq_len], labels[i : i + seq_len]) for i in range(0, len(ids), seq_len)
        ]
        out.split_documents += 1
    else:
        pieces = [(ids[:seq_len], labels[:seq_len])]
        out.truncated_rows += 1
    # The first label of a document is never a target (packing masks it), so a
    # document needs a trainable token after its first to teach anything.
    pieces = [p for p in pieces if len(p[0]) > 1 and bool((p[1][1:] != IGNORE_INDEX).any())]
    if not pieces:
        out.bad_rows.append(
            BadRow(
                row,
                f"no trainable tokens within data.seq_len={seq_len} "
                f"(the row has {len(ids)} tokens and its answer starts too late or is empty)",
            )
        )
        return
    out.documents.extend(pieces)


def tokenize_rendered(
    items: list[RenderedText | RenderedTokens], tokenizer: Any
) -> list[tuple[Int32Array, npt.NDArray[np.bool_]]]:
    """Token ids and per-token loss flags for rendered rows (EOS appended where asked)."""
    results: list[tuple[Int32Array, npt.NDArray[np.bool_]] | None] = [None] * len(items)
    eos = getattr(tokenizer, "eos_token_id", None)
    eos_id = int(eos) if eos is not None else None
    for flag in (True, False):
        indices = [
            i
            for i, item in enumerate(items)
            if isinstance(item, RenderedText) and item.add_special_tokens == flag
        ]
        if not indices:
            continue
        texts = [item for i in indices if isinstance(item := items[i], RenderedText)]
        encoded = _encode_texts(texts, tokenizer, add_special_tokens=flag)
        for i, (ids, trainable) in zip(indices, encoded, strict=True):
            item = items[i]
            wants_eos = isinstance(item, RenderedText) and item.add_eos
            if wants_eos and eos_id is not None and (not len(ids) or int(ids[-1]) != eos_id):
                ids = np.append(ids, np.int32(eos_id))
                trainable = np.append(trainable, True)
            results[i] = (ids, trainable)
    for i, item in enumerate(items):
        if isinstance(item, RenderedTokens):
            results[i] = (
                np.asarray(item.input_ids, dtype=np.int32),
                np.asarray(item.trainable, dtype=np.bool_),
            )
    done = [r for r in results if r is not None]
    if len(done) != len(items):  # every item is text or tokens; anything else is a bug here
        raise TypeError(f"cannot tokenize {len(items) - len(done)} rendered rows of unknown kind")
    return done


def _encode_texts(
    items: list[RenderedText], tokenizer: Any, *, add_special_tokens: bool
) -> list[tuple[Int32Array, npt.NDArray[np.bool_]]]:
    if not getattr(tokenizer, "is_fast", False):
        return [_encode_by_spans(item, tokenizer, add_special_tokens) for item in items]
    encoded = tokenizer(
        [item.text for item in items],
        add_special_tokens=add_special_tokens,
        return_offsets_mapping=True,
        return_attention_mask=False,
        verbose=False,
    )
    out: list[tuple[Int32Array, npt.NDArray[np.bool_]]] = []
    for item, ids, offsets in zip(
        items, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        ids_array = np.asarray(ids, dtype=np.int32)
        # fromiter over the flattened pairs is ~3x faster than asarray on a list of tuples.
        flat = itertools.chain.from_iterable(offsets)
        spans = np.fromiter(flat, dtype=np.int64, count=2 * len(ids)).reshape(-1, 2)
        starts, ends = spans[:, 0], spans[:, 1]
        trainable = np.zeros(len(ids_array), dtype=np.bool_)
        for span_start, span_end in item.trainable_spans:
            trainable |= (ends > starts) & (starts < span_end) & (ends > span_start)
        out.append((ids_array, trainable))
    return out


def _encode_by_spans(
    item: RenderedText, tokenizer: Any, add_special_tokens: bool
) -> tuple[Int32Array, npt.NDArray[np.bool_]]:
    # Without offsets, tokenize each stretch of text on its own; boundaries may
    # tokenize slightly differently from the whole text, which is the price.
    cuts = sorted({0, len(item.text), *(p for span in item.trainable_spans for p in span)})
    ids: list[int] = []
    trainable: list[bool] = []
    if add_special_tokens:
        ids.extend(tokenizer.encode("", add_special_tokens=True))  # BOS and the like
        trainable.extend([False] * len(ids))
    for start, end in itertools.pairwise(cuts):
        piece = tokenizer.encode(item.text[start:end], add_special_tokens=False)
        inside = any(s <= start and end <= e for s, e in item.trainable_spans)
        ids.extend(piece)
        trainable.extend([inside] * len(piece))
    return np.asarray(ids, dtype=np.int32), np.asarray(trainable, dtype=np.bool_)


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def _unwritable(root: Path, exc: OSError) -> DataError:
    return DataError(
        f"cannot write the tokenization cache under {root} ({exc.strerror or exc}); "
        "set data.cache_dir to a writable directory with free space"
    )


def _check_bad_fraction(
    bad: int, total: int, cfg: DataConfig, source: Path, report_path: Path
) -> None:
    if total == 0:
        raise DataError(f"dataset file {source} has no rows")
    fraction = bad / total
    if fraction > cfg.max_bad_row_fraction:
        raise DataError(
            f"{bad} of {total} rows ({fraction:.1%}) of {source} are bad, more than "
            f"data.max_bad_row_fraction={cfg.max_bad_row_fraction:g}; see {report_path}"
        )


def _log_bad_rows(result: TokenizedRows, report_path: Path) -> None:
    if not result.bad_rows:
        return
    for bad in result.bad_rows[:_LOG_BAD_ROWS]:
        log.warning("skipping row %d: %s", bad.row, bad.reason)
    log.warning(
        "%d of %d rows skipped; the full list is in %s",
        len(result.bad_rows),
        result.rows_total,
        report_path,
    )


def _report_json(source: Path, result: TokenizedRows) -> str:
    return json.dumps(
        {
            "dataset": str(source),
            "format": result.format,
            "rows_total": result.rows_total,
            "rows_bad": len(result.bad_rows),
            "bad_rows": [
                {"row": b.row, "reason": b.reason} for b in result.bad_rows[:_REPORT_MAX_ROWS]
            ],
        },
        indent=1,
    )


def _stats(
    cfg: DataConfig,
    source: Path,
    file_type: str,
    result: TokenizedRows,
    arrays: tuple[Int32Array, Int32Array, Int32Array],
    seconds: float,
) -> DatasetStats:
    input_ids, labels, _ = arrays
    lengths = np.asarray(result.lengths, dtype=np.int64)
    tokens = int(sum(len(ids) for ids, _ in result.documents))
    sequences = int(input_ids.shape[0])
    return DatasetStats(
        dataset=str(source),
        format=result.format,
        file_type=file_type,
        rows_total=result.rows_total,
        rows_bad=len(result.bad_rows),
        documents=len(result.documents),
        sequences=sequences,
        seq_len=cfg.seq_len,
        tokens=tokens,
        trainable_tokens=int((labels != IGNORE_INDEX).sum()),
        token_length_min=int(lengths.min()),
        token_length_mean=round(float(lengths.mean()), 3),
        token_length_p50=float(np.percentile(lengths, 50)),
        token_length_p95=float(np.percentile(lengths, 95)),
        token_length_max=int(lengths.max()),
        truncated_rows=result.truncated_rows,
        split_documents=result.split_documents,
        packing_efficiency=round(tokens / (sequences * cfg.seq_len), 6),
        tokenize_seconds=round(seconds, 3),
    )


def _publish(
    final: Path, arrays: tuple[Int32Array, Int32Array, Int32Array], stats: DatasetStats, report: str
) -> None:
    staging = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        for name, array in zip(ARRAY_NAMES, arrays, strict=True):
            with (staging / f"{name}.npy").open("wb") as handle:
                np.save(handle, array)
                handle.flush()
                os.fsync(handle.fileno())
        _write_synced(staging / "bad_rows.json", report)
        _write_synced(staging / "stats.json", json.dumps(stats.to_dict(), indent=1))
        _fsync_dir(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "stats.json").is_file():
                raise
            log.info("another process published %s first; using its copy", final)
        else:
            _fsync_dir(final.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(root: Path) -> None:
    cutoff = time.time() - _STALE_STAGING_SECONDS
    for child in root.glob(".*.tmp-*"):
        try:
            if child.stat().st_mtime < cutoff:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
                log.info("removed %s, left by an interrupted cache writer", child)
        except FileNotFoundError:
            continue  # another process removed it first


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    _write_synced(tmp, text)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_stem(source: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.stem)
    return stem[:64] or "dataset"
