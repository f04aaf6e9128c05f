"""``trainwright dataset inspect``: check a dataset file before any GPU is spent.

The report comes from the trainer's own reader (``trainwright_trainer.data.inspect``):
the CLI and the trainer never disagree about a row. Keys are the contract in
CONTRACTS.md ("Dataset inspection").
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trainwright.cli._common import (
    CliError,
    UsageError,
    add_output_flag,
    emit,
    format_table,
    positive_int,
)

_EPILOG = """\
examples:
  trainwright dataset inspect train.jsonl
  trainwright dataset inspect chat.parquet --tokenizer ./llama-3.1-8b --seq-len 4096 -o json

exit codes: 0 the trainer would accept the file, 1 it would refuse it (too many bad rows,
or none usable), 2 the file or a flag cannot be used.
"""
_BAD_ROWS_SHOWN = 20


class DatasetRefused(CliError):
    """The trainer would refuse this file: exit 1 after the report."""

    exit_code = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from trainwright_trainer.config import DATA_FORMATS

    parser = subparsers.add_parser("dataset", help="check a training dataset")
    commands = parser.add_subparsers(dest="dataset_command", metavar="COMMAND", required=True)
    inspect = commands.add_parser(
        "inspect",
        help="report rows, bad rows, token lengths, truncation and duplicates",
        description="Read a dataset file the way the trainer does and report what it finds.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("file", metavar="FILE", help=".jsonl, .json, .csv, .parquet or .txt")
    inspect.add_argument(
        "--format", choices=DATA_FORMATS, default="auto", help="row format (default: detect)"
    )
    inspect.add_argument(
        "--tokenizer", metavar="DIR", help="tokenizer directory for exact token counts"
    )
    inspect.add_argument(
        "--seq-len", type=positive_int("--seq-len"), help="report rows this length truncates"
    )
    add_output_flag(inspect)
    inspect.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    report = inspect_file(path, data_format=args.format, tokenizer=tokenizer, seq_len=args.seq_len)
    emit(report, args.output, _table)
    if not report["trainer_accepts"]:
        raise DatasetRefused(f"the trainer would refuse {path}; see the bad rows above")
    return 0


def inspect_file(
    path: Path,
    *,
    data_format: str = "auto",
    tokenizer: Any = None,
    seq_len: int | None = None,
    named: str = "dataset file",
) -> dict[str, Any]:
    """The trainer's report on ``path``; a missing or unreadable file is a :class:`UsageError`
    naming it as ``named`` (``trainwright init`` says ``--dataset``)."""
    from trainwright_trainer.data.inspect import inspect_dataset
    from trainwright_trainer.errors import DataError

    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"{named} {path} {what}")
    try:
        return inspect_dataset(path, data_format=data_format, tokenizer=tokenizer, seq_len=seq_len)
    except DataError as exc:
        raise UsageError(f"{named} {path}: {exc.message}") from None


def _load_tokenizer(directory: str) -> Any:
    if not Path(directory).is_dir():
        raise UsageError(f"--tokenizer {directory}: no such directory")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UsageError(
            "--tokenizer needs the transformers package (pip install 'trainwright[trainer]')"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--tokenizer {directory}: cannot load a tokenizer ({first})") from None


def _table(report: dict[str, Any]) -> str:
    tokens = report["tokens"]
    truncated = report["truncated_fraction"]
    rows = [
        ("file", report["file"]),
        ("format", report["format"]),
        ("rows", report["rows"]),
        ("valid rows", report["valid_rows"]),
        ("bad rows", len(report["bad_rows"])),
        ("tokens" + (" (estimated)" if tokens["estimated"] else ""), tokens["total"]),
        ("tokens per row p50 / p95 / max", f"{tokens['p50']} / {tokens['p95']} / {tokens['max']}"),
        ("truncated at --seq-len", "-" if truncated is None else f"{truncated:.1%}"),
        ("duplicates", report["duplicates"]),
        ("near-empty rows", report["near_empty_rows"]),
        ("trainer accepts it", "yes" if report["trainer_accepts"] else "no"),
    ]
    text = format_table(["", ""], rows).split("\n", 1)[1]
    bad = report["bad_rows"]
    if bad:
        text += "\n" + format_table(
            ["row", "reason"], [(b["row"], b["reason"]) for b in bad[:_BAD_ROWS_SHOWN]]
        )
        if len(bad) > _BAD_ROWS_SHOWN:
            text += f"... and {len(bad) - _BAD_ROWS_SHOWN} more (-o json lists them all)\n"
    if report["suggestions"]:
        text += "\n" + "".join(f"- {s}\n" for s in report["suggestions"])
    return text
