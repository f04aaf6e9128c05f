"""Read a dataset file into numbered raw rows: JSON lines, JSON, CSV, Parquet or plain text.

Every row keeps the number a person would use to find it in the file, so the
bad-row report can say where to look:

============  ================================================================
file type     ``row`` is
============  ================================================================
jsonl         the line number (1-based; blank lines are skipped, not renumbered)
json          the element's position in the top-level list (1-based)
csv           the data row number (1-based; the header is row 0)
parquet       the row's position in the file (1-based)
txt           the line number where the paragraph starts; paragraphs are
              separated by blank lines and each one is a document (a ``str``)
============  ================================================================

Text formats may be gzip-compressed (``train.jsonl.gz``); they are read decompressed.

A row that cannot be parsed (a broken JSON line) comes back with ``error`` set
instead of failing the whole file; a file that cannot be read at all raises
:class:`~trainwright_trainer.errors.DataError`.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainwright_trainer.errors import DataError

__all__ = ["SUFFIX_TO_FILE_TYPE", "RawRow", "file_type_of", "read_rows"]

SUFFIX_TO_FILE_TYPE: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
}

# CSV cells can hold long documents; the stdlib default (128 KiB) is too small.
_CSV_FIELD_LIMIT_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row as read from the file: its number there, its value, or why it could not be read."""

    row: int
    value: Any
    error: str | None = None


def file_type_of(path: Path, file_type: str = "auto") -> str:
    """The file type to read ``path`` as: ``file_type`` unless it is 'auto', else from the suffix.

    A ``.gz`` suffix is looked through (``train.jsonl.gz`` is jsonl, read decompressed).
    """
    if file_type != "auto":
        return file_type
    suffix = _data_suffix(path)
    found = SUFFIX_TO_FILE_TYPE.get(suffix)
    if found is None:
        accepted = ", ".join(sorted(SUFFIX_TO_FILE_TYPE))
        raise DataError(
            f"cannot tell the file type of {path} from its suffix '{suffix}'; "
            f"use one of {accepted} (optionally .gz) or set data.file_type"
        )
    return found


def _data_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _open_text(path: Path, *, newline: str | None = None) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline=newline)
    return path.open(encoding="utf-8", newline=newline)


def read_rows(path: Path, file_type: str = "auto") -> Iterator[RawRow]:
    """Yield the rows of ``path`` in file order."""
    kind = file_type_of(path, file_type)
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    readers = {
        "jsonl": _read_jsonl,
        "json": _read_json,
        "csv": _read_csv,
        "parquet": _read_parquet,
        "txt": _read_txt,
    }
    try:
        yield from readers[kind](path)
    except UnicodeDecodeError as exc:
        raise DataError(f"dataset file {path} is not UTF-8 text ({exc.reason})") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"dataset file {path} is not a complete gzip file ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read dataset file {path}: {exc.strerror or exc}") from None


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield RawRow(line_number, json.loads(line.strip()))
            except json.JSONDecodeError as exc:
                yield RawRow(line_number, None, f"invalid JSON ({exc.msg} at column {exc.colno})")


def _read_json(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            # A JSON-lines file named .json: read it as such rather than refuse it.
            yield from _read_jsonl(path)
            return
        raise DataError(
            f"dataset file {path} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"train": [...]} or {"data": [...]}
    if not isinstance(data, list):
        raise DataError(
            f"dataset file {path} must hold a JSON list of rows, got {type(data).__name__}"
        )
    for index, value in enumerate(data, start=1):
        yield RawRow(index, value)


def _read_csv(path: Path) -> Iterator[RawRow]:
    csv.field_size_limit(_CSV_FIELD_LIMIT_BYTES)
    with _open_text(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise DataError(f"dataset file {path} has no CSV header row")
        try:
            for index, record in enumerate(reader, start=1):
                if None in record:
                    headers = len(reader.fieldnames)
                    yield RawRow(index, None, f"has more cells than the {headers} headers")
                    continue
                yield RawRow(index, {k: _parse_json_cell(v) for k, v in record.items()})
        except csv.Error as exc:
            # A structural fault (a NUL byte, an unclosed quote) ends the file here.
            raise DataError(
                f"dataset file {path} is not valid CSV at line {reader.line_num} ({exc})"
            ) from None


def _parse_json_cell(value: str | None) -> Any:
    # Chat rows in CSV keep their messages as a JSON string in one cell.
    if value is None:
        return None
    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    index = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                index += 1
                yield RawRow(index, record)
    except pa.ArrowException as exc:
        where = f" after row {index}" if index else ""
        raise DataError(f"dataset file {path} is not a valid Parquet file{where} ({exc})") from None


def _read_txt(path: Path) -> Iterator[RawRow]:
    paragraph: list[str] = []
    start = 0
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                if not paragraph:
                    start = line_number
                paragraph.append(line.rstrip("\n"))
            elif paragraph:
                yield RawRow(start, "\n".join(paragraph))
                paragraph = []
    if paragraph:
        yield RawRow(start, "\n".join(paragraph))
