"""The dataset report behind ``trainwright dataset inspect``: read a file the trainer's way.

Rows go through the trainer's own :func:`~trainwright_trainer.data.tokenize.tokenize_file`
(reader, format detection, validation, rendering, tokenization, truncation), so a row
the report calls bad is a row the trainer skips, for the same reason, under the same
number. Without a tokenizer, :class:`EstimatingTokenizer` stands in: every check but
the model's own chat template runs unchanged, and token counts are estimated at
:data:`CHARS_PER_TOKEN` characters a token (``"estimated": true``).

The report is the contract in CONTRACTS.md ("Dataset inspection"), plus ``file``,
``file_type``, ``seq_len``, ``near_empty_rows`` and ``trainer_accepts`` (whether the
trainer would take the file under ``data.max_bad_row_fraction``). This module imports
no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from trainwright_trainer.config import DataConfig
from trainwright_trainer.data.reader import RawRow, file_type_of
from trainwright_trainer.data.tokenize import TokenizedRows, tokenize_file

__all__ = [
    "CHARS_PER_TOKEN",
    "NEAR_EMPTY_TOKENS",
    "EstimatingTokenizer",
    "inspect_dataset",
]

# OpenAI's rule of thumb for English text and BPE vocabularies ("one token is about
# 4 characters", help.openai.com "What are tokens and how to count them").
CHARS_PER_TOKEN = 4
# A row with fewer tokens than this to learn from (its answer, EOS included) is near-empty.
NEAR_EMPTY_TOKENS = 3
# Without --seq-len nothing is truncated: sequences longer than any row.
_NO_TRUNCATION = 1 << 40
_BAD_ROWS_IN_SUGGESTION = 5


class EstimatingTokenizer:
    """A stand-in tokenizer: ``ceil(characters / 4)`` tokens per piece of text, no special
    tokens, and a plain ``<|role|>`` chat template (so chat rows are checked structurally)."""

    is_fast = False
    name_or_path = "estimate"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token: str | None = None
    chat_template = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        del add_special_tokens
        return [0] * math.ceil(len(text) / CHARS_PER_TOKEN)

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        *,
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        **_: Any,
    ) -> str:
        del tokenize
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")


def inspect_dataset(
    path: Path,
    *,
    data_format: str = "auto",
    file_type: str = "auto",
    tokenizer: Any = None,
    seq_len: int | None = None,
    text_field: str = "text",
    max_bad_row_fraction: float = DataConfig.model_fields["max_bad_row_fraction"].default,
) -> dict[str, Any]:
    """The report for ``path``; raises DataError when the file cannot be read at all."""
    cfg = DataConfig(
        path=str(path),
        format=data_format,
        file_type=file_type,
        seq_len=seq_len or _NO_TRUNCATION,
        text_field=text_field,
        max_bad_row_fraction=max_bad_row_fraction,
    )
    estimated = tokenizer is None
    hashes: dict[int, str] = {}

    def remember(raw: RawRow) -> None:
        if raw.error is None:
            text = json.dumps(raw.value, sort_keys=True, ensure_ascii=False)
            hashes[raw.row] = hashlib.sha256(text.encode()).hexdigest()

    kind = file_type_of(path, file_type)
    result = tokenize_file(cfg, tokenizer or EstimatingTokenizer(), path, kind, on_row=remember)
    bad_numbers = {b.row for b in result.bad_rows}
    duplicates = _duplicates(hashes, bad_numbers)
    valid = [i for i, row in enumerate(result.length_rows) if row not in bad_numbers]
    lengths = np.asarray([result.lengths[i] for i in valid], dtype=np.int64)
    near_empty = [
        result.length_rows[i] for i in valid if result.trainable_counts[i] < NEAR_EMPTY_TOKENS
    ]
    valid_rows = result.rows_total - len(result.bad_rows)
    report: dict[str, Any] = {
        "file": str(path),
        "file_type": kind,
        "format": result.format,
        "rows": result.rows_total,
        "valid_rows": valid_rows,
        "bad_rows": [{"row": b.row, "reason": b.reason} for b in result.bad_rows],
        "tokens": _token_summary(lengths, estimated),
        "seq_len": seq_len,
        "truncated_fraction": (
            round(result.truncated_rows / valid_rows, 6) if seq_len and valid_rows else None
        ),
        "duplicates": duplicates,
        "near_empty_rows": len(near_empty),
        "trainer_accepts": _accepted(result, cfg),
    }
    report["suggestions"] = _suggestions(report, result, cfg, near_empty)
    return report


def _duplicates(hashes: dict[int, str], bad: set[int]) -> int:
    seen: set[str] = set()
    repeated = 0
    for row, digest in sorted(hashes.items()):
        if row in bad:
            continue
        repeated += digest in seen
        seen.add(digest)
    return repeated


def _token_summary(lengths: Any, estimated: bool) -> dict[str, Any]:
    if not len(lengths):
        return {"total": 0, "p50": 0, "p95": 0, "max": 0, "estimated": estimated}
    return {
        "total": int(lengths.sum()),
        "p50": round(float(np.percentile(lengths, 50))),
        "p95": round(float(np.percentile(lengths, 95))),
        "max": int(lengths.max()),
        "estimated": estimated,
    }


def _accepted(result: TokenizedRows, cfg: DataConfig) -> bool:
    # The same two checks prepare_dataset makes before it packs anything.
    if not result.rows_total or not result.documents:
        return False
    return len(result.bad_rows) / result.rows_total <= cfg.max_bad_row_fraction


def _suggestions(
    report: dict[str, Any], result: TokenizedRows, cfg: DataConfig, near_empty: list[int]
) -> list[str]:
    out: list[str] = []
    bad = report["bad_rows"]
    if bad:
        where = ", ".join(str(b["row"]) for b in bad[:_BAD_ROWS_IN_SUGGESTION])
        more = "" if len(bad) <= _BAD_ROWS_IN_SUGGESTION else f" and {len(bad) - 5} more"
        share = len(bad) / report["rows"]
        if share > cfg.max_bad_row_fraction:
            out.append(
                f"{len(bad)} of {report['rows']} rows ({share:.1%}) are bad, more than the "
                f"trainer accepts (data.max_bad_row_fraction={cfg.max_bad_row_fraction:g}); "
                f"fix or remove rows {where}{more}"
            )
        else:
            out.append(f"the trainer will skip rows {where}{more}; fix them to train on them")
    if report["truncated_fraction"]:
        p95 = report["tokens"]["p95"]
        out.append(
            f"{report['truncated_fraction']:.1%} of rows are longer than --seq-len "
            f"{report['seq_len']} and lose their end; a sequence length of {p95} (the 95th "
            "percentile) keeps 95% of rows whole"
        )
    if report["seq_len"] is None:
        out.append("pass --seq-len N to see how many rows that sequence length would truncate")
    if report["duplicates"]:
        out.append(
            f"{report['duplicates']} rows repeat an earlier row exactly; remove them so they "
            "do not count twice"
        )
    if near_empty:
        out.append(
            f"{len(near_empty)} rows have fewer than {NEAR_EMPTY_TOKENS} tokens to learn from "
            f"(first: row {near_empty[0]}); check their answers"
        )
    if report["tokens"]["estimated"]:
        chat = (
            " and the model's chat template to render conversations"
            if result.format
            in (
                "chat",
                "sharegpt",
            )
            else ""
        )
        out.append(
            f"token counts are estimated at {CHARS_PER_TOKEN} characters a token; pass "
            f"--tokenizer DIR (the model's tokenizer) for exact counts{chat}"
        )
    return out
