"""`trainwright dataset inspect`: the trainer's reader, before any GPU is spent.

The CLI must never disagree with the trainer about a row, so every test that names
bad rows compares them with the report `prepare_dataset` writes for the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer_fixtures import TRAINER_DATA_DIR, tiny_tokenizer, tiny_tokenizer_dir, write_jsonl
from trainwright.cli import main
from trainwright_trainer.config import DataConfig
from trainwright_trainer.data import prepare_dataset
from trainwright_trainer.data.dataset import DatasetStats
from trainwright_trainer.errors import DataError


def _inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["dataset", "inspect", *args, "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


def _trainer_report(path: Path, cache: Path, seq_len: int = 2048) -> dict[str, Any]:
    """The trainer's own bad-row report and stats for ``path`` (any share of bad rows)."""
    cfg = DataConfig(path=str(path), seq_len=seq_len, max_bad_row_fraction=1.0)
    try:
        prepared = prepare_dataset(cfg, tiny_tokenizer(), cache_dir=cache)
    except DataError:  # no usable rows: the report is still written
        (report,) = cache.glob("*.bad_rows.json")
        return {"bad": json.loads(report.read_text())["bad_rows"], "stats": None}
    stats = json.loads((prepared / "stats.json").read_text())
    return {
        "bad": json.loads((prepared / "bad_rows.json").read_text())["bad_rows"],
        "stats": DatasetStats.from_dict(stats),
    }


@pytest.mark.parametrize("name", ["bad_alpaca.jsonl", "bad_chat.jsonl"])
def test_the_report_names_the_same_bad_rows_as_the_trainer(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = TRAINER_DATA_DIR / name
    code, report = _inspect(capsys, str(path), "--tokenizer", str(tiny_tokenizer_dir()))
    trainer = _trainer_report(path, tmp_path)

    assert code == 1  # more bad rows than data.max_bad_row_fraction: the trainer refuses it
    assert report["bad_rows"] == trainer["bad"]
    assert report["valid_rows"] == report["rows"] - len(trainer["bad"])
    assert report["tokens"]["estimated"] is False
    assert report["tokens"]["max"] == trainer["stats"].token_length_max
    assert report["tokens"]["p50"] == round(trainer["stats"].token_length_p50)
    assert report["trainer_accepts"] is False
    assert any("fix or remove rows" in s for s in report["suggestions"])


def test_bad_alpaca_rows_are_named_with_their_line_and_reason_without_a_tokenizer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = _inspect(capsys, str(TRAINER_DATA_DIR / "bad_alpaca.jsonl"))

    assert code == 1
    assert (report["format"], report["rows"], report["valid_rows"]) == ("alpaca", 24, 20)
    assert report["bad_rows"] == [
        {"row": 21, "reason": "missing field 'output' of format alpaca"},
        {"row": 22, "reason": "field 'output' must be a string (got int)"},
        {"row": 23, "reason": "invalid JSON (Expecting ',' delimiter at column 41)"},
        {"row": 24, "reason": "field 'instruction' is empty"},
    ]
    assert report["tokens"]["estimated"] is True and report["truncated_fraction"] is None


def test_duplicates_near_empty_rows_and_truncation_are_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_answer = " ".join(["the data position is saved with the weights"] * 12)
    rows = [
        {"prompt": "Q: what is saved?\nA:", "completion": long_answer},
        {"prompt": "Q: and then?\nA:", "completion": " a"},
        {"prompt": "Q: why pack sequences?\nA:", "completion": " no padding is wasted"},
        {"prompt": "Q: why pack sequences?\nA:", "completion": " no padding is wasted"},
        {"prompt": "Q: why pack sequences?\nA:", "completion": " no padding is wasted"},
    ]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    code, report = _inspect(
        capsys, str(path), "--tokenizer", str(tiny_tokenizer_dir()), "--seq-len", "64"
    )
    trainer = _trainer_report(path, tmp_path / "cache", seq_len=64)

    assert code == 0 and report["trainer_accepts"] is True and report["bad_rows"] == []
    assert report["duplicates"] == 2
    assert report["near_empty_rows"] == 1  # " a" + EOS: two tokens to learn from
    assert report["truncated_fraction"] == pytest.approx(1 / 5, abs=1e-6)
    assert trainer["stats"].truncated_rows == 1
    assert report["tokens"]["total"] > 64 and report["tokens"]["max"] > 64
    assert any("2 rows repeat an earlier row" in s for s in report["suggestions"])


def test_a_missing_file_or_tokenizer_exits_2_with_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["dataset", "inspect", str(missing)]) == 2
    assert capsys.readouterr().err == f"trainwright: error: dataset file {missing} does not exist\n"
    data = TRAINER_DATA_DIR / "alpaca.jsonl"
    assert main(["dataset", "inspect", str(data), "--tokenizer", str(missing)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    unknown = tmp_path / "rows.xml"
    unknown.write_text("<rows/>")
    assert main(["dataset", "inspect", str(unknown)]) == 2
    assert "cannot tell the file type" in capsys.readouterr().err


def test_the_table_lists_the_bad_rows_and_the_advice(capsys: pytest.CaptureFixture[str]) -> None:
    main(["dataset", "inspect", str(TRAINER_DATA_DIR / "bad_chat.jsonl"), "-o", "table"])
    table = capsys.readouterr().out

    assert "messages has no assistant turn, so there is nothing to learn" in table
    assert "\n7    messages has no assistant turn" in table
    assert "pass --tokenizer DIR" in table
