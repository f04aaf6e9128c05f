"""``python -m trainwright_trainer dataset-check``: the dataset report, inside the cluster.

The operator runs this in a small CPU pod before it plans a TrainingJob and requests any
GPU (``trainwright.operator.dataset_check``). The report is
:func:`~trainwright_trainer.data.inspect.inspect_dataset`'s, the one behind
``trainwright dataset inspect``, so the CLI, this check and the trainer agree on every
row. It goes back to the operator as the container's termination message, which the
kubelet cuts at :data:`TERMINATION_MESSAGE_BYTES`: :func:`compact_report` keeps the
counts whole and only the first bad rows and suggestions that fit.

The check exits 0 whenever it wrote a report, a refused or unreadable dataset included
(``trainer_accepts``, ``error``): the operator decides. Any other exit is the check's
own failure, which the operator reports and does not hold against the dataset.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from trainwright_trainer.errors import DataError

__all__ = [
    "REPORT_VERSION",
    "TERMINATION_MESSAGE_BYTES",
    "check_dataset",
    "compact_report",
    "write_report",
]

# The kubelet keeps at most 4096 bytes of a container's termination message
# (k8s.io/api core/v1 Container.terminationMessagePath).
TERMINATION_MESSAGE_BYTES = 4096
REPORT_VERSION = 1
FIRST_BAD_ROWS = 10
_REASON_CHARS = 200
_SUGGESTION_CHARS = 400
ESTIMATE = "estimate"

logger = logging.getLogger(__name__)


def check_dataset(
    data: Path,
    *,
    data_format: str = "auto",
    seq_len: int | None = None,
    tokenizer_dir: str | None = None,
) -> dict[str, Any]:
    """The full report for ``data`` (every bad row), or ``{"error": ...}`` when the file
    cannot be read at all; ``tokenizer`` names what counted the tokens."""
    from trainwright_trainer.data.inspect import inspect_dataset

    started = time.monotonic()
    tokenizer, source = _tokenizer(tokenizer_dir)
    try:
        report = inspect_dataset(
            data, data_format=data_format, tokenizer=tokenizer, seq_len=seq_len
        )
    except DataError as exc:
        report = {"file": str(data), "error": exc.message}
    report["tokenizer"] = source
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _tokenizer(directory: str | None) -> tuple[Any, str]:
    """The model's tokenizer from local files, else None (the report then estimates)."""
    if not directory:
        return None, ESTIMATE
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory, local_files_only=True), directory
    except (ImportError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.info("no tokenizer at %s (%s); token counts are estimated", directory, first)
        return None, ESTIMATE


def compact_report(
    report: dict[str, Any], *, limit_bytes: int = TERMINATION_MESSAGE_BYTES
) -> dict[str, Any]:
    """``report`` cut to fit ``limit_bytes`` of JSON: counts stay, the lists shrink.

    ``bad_row_count`` keeps how many bad rows there were once ``bad_rows`` holds only
    the first ones; reasons and suggestions are cut to a few hundred characters.
    """
    bad = [
        {"row": b["row"], "reason": str(b["reason"])[:_REASON_CHARS]}
        for b in report.get("bad_rows") or []
    ]
    suggestions = [str(s)[:_SUGGESTION_CHARS] for s in report.get("suggestions") or []]
    base = {k: v for k, v in report.items() if k not in ("bad_rows", "suggestions")}
    base["version"] = REPORT_VERSION
    if "error" in base:
        base["error"] = str(base["error"])[:1000]
    else:
        base["bad_row_count"] = len(bad)
    keep_bad = min(len(bad), FIRST_BAD_ROWS)
    keep_suggestions = len(suggestions)
    while True:
        compact = base | {
            "bad_rows": bad[:keep_bad],
            "suggestions": suggestions[:keep_suggestions],
        }
        if len(_encode(compact)) <= limit_bytes:
            return compact
        if keep_suggestions:
            keep_suggestions -= 1
        elif keep_bad:
            keep_bad -= 1
        else:
            compact["file"] = str(compact.get("file", ""))[-200:]
            return compact


def _encode(report: dict[str, Any]) -> bytes:
    return json.dumps(report, separators=(",", ":"), ensure_ascii=False).encode()


def write_report(report: dict[str, Any], path: str | None) -> str:
    """The compact report as one JSON line, written to ``path`` (the termination log)."""
    text = _encode(compact_report(report)).decode()
    if path:
        Path(path).write_text(text, encoding="utf-8")
    return text
