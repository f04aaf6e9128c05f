"""prepare_dataset: tokenized once, cached atomically by content, with a bad-row report and stats."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from trainer_fixtures import TRAINER_DATA_DIR, tiny_tokenizer, write_jsonl
from trainwright_trainer.config import DataConfig
from trainwright_trainer.data import IGNORE_INDEX, build_dataset, load_prepared, prepare_dataset
from trainwright_trainer.data import tokenize as tokenize_module
from trainwright_trainer.errors import DataError
from trainwright_trainer.exitcodes import ExitCode

SEQ_LEN = 256


def _cfg(name: str | Path, **overrides: object) -> DataConfig:
    path = name if isinstance(name, Path) else TRAINER_DATA_DIR / name
    return DataConfig.model_validate({"path": str(path), "seq_len": SEQ_LEN, **overrides})


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("alpaca.jsonl", "alpaca"),
        ("chat.jsonl", "chat"),
        ("sharegpt.jsonl", "sharegpt"),
        ("prompt_completion.jsonl", "prompt_completion"),
        ("text.txt", "text"),
    ],
)
def test_each_shipped_format_is_detected_and_fully_used(
    name: str, fmt: str, tmp_path: Path
) -> None:
    dataset = build_dataset(_cfg(name), tiny_tokenizer(), cache_dir=tmp_path)
    stats = dataset.stats
    assert stats.format == fmt
    assert (stats.rows_bad, stats.documents) == (0, stats.rows_total)
    assert stats.rows_total in (20, 24)
    assert stats.sequences == len(dataset)
    assert dataset.seq_len == SEQ_LEN
    assert 0.8 < stats.packing_efficiency <= 1.0
    assert stats.token_length_min <= stats.token_length_p50 <= stats.token_length_p95
    assert stats.token_length_p95 <= stats.token_length_max <= SEQ_LEN
    assert stats.trainable_tokens == int((np.asarray(dataset.labels) != IGNORE_INDEX).sum())


@pytest.mark.parametrize("name", ["alpaca.json", "alpaca.csv", "alpaca.parquet"])
def test_every_file_type_tokenizes_to_the_same_arrays_as_jsonl(name: str, tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    reference = build_dataset(_cfg("alpaca.jsonl"), tok, cache_dir=tmp_path)
    other = build_dataset(_cfg(name), tok, cache_dir=tmp_path)
    for array in ("input_ids", "labels", "position_ids"):
        assert np.array_equal(getattr(reference, array), getattr(other, array))


def test_only_responses_are_trained_on_in_alpaca_data(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    dataset = build_dataset(_cfg("alpaca.jsonl", pack=False), tok, cache_dir=tmp_path)
    first = dataset[0]
    trained = [
        i for i, label in zip(first["input_ids"], first["labels"], strict=True) if label >= 0
    ]
    assert tok.decode(trained) == "The capital of France is Paris.</s>"
    # 20 rows, roughly a fifth of each row's tokens are the response.
    assert dataset.stats.trainable_tokens < dataset.stats.tokens * 0.25


def test_second_prepare_reuses_the_cache_without_tokenizing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = tiny_tokenizer()
    first = prepare_dataset(_cfg("alpaca.jsonl"), tok, cache_dir=tmp_path)

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenized again although the cache was complete")

    monkeypatch.setattr(tokenize_module, "tokenize_file", must_not_run)
    assert prepare_dataset(_cfg("alpaca.jsonl"), tok, cache_dir=tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, f"{first.name}.bad_rows.json"]
    assert sorted(p.name for p in first.iterdir()) == [
        "bad_rows.json",
        "input_ids.npy",
        "labels.npy",
        "position_ids.npy",
        "stats.json",
    ]


def test_cache_key_changes_with_content_settings_and_tokenizer(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    data = shutil.copy(TRAINER_DATA_DIR / "alpaca.jsonl", tmp_path / "a.jsonl")
    base = prepare_dataset(_cfg(Path(data)), tok, cache_dir=tmp_path / "c")
    other_len = prepare_dataset(_cfg(Path(data), seq_len=512), tok, cache_dir=tmp_path / "c")
    other_prompt = prepare_dataset(
        _cfg(Path(data), train_on_prompt=True), tok, cache_dir=tmp_path / "c"
    )
    tok.chat_template = "{{ messages }}"
    other_tok = prepare_dataset(_cfg(Path(data)), tok, cache_dir=tmp_path / "c")
    Path(data).write_text(Path(data).read_text() + '{"instruction": "x", "output": "y"}\n')
    other_content = prepare_dataset(_cfg(Path(data)), tiny_tokenizer(), cache_dir=tmp_path / "c")
    paths = {base, other_len, other_prompt, other_tok, other_content}
    assert len(paths) == 5
    assert load_prepared(other_content).stats.rows_total == 21


def test_no_staging_directory_is_left_behind_and_a_half_written_cache_is_not_used(
    tmp_path: Path,
) -> None:
    tok = tiny_tokenizer()
    final = prepare_dataset(_cfg("prompt_completion.jsonl"), tok, cache_dir=tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # A directory without stats.json (an interrupted writer elsewhere) is not a cache hit.
    (final / "stats.json").unlink()
    shutil.rmtree(final)
    final.mkdir()
    (final / "input_ids.npy").write_bytes(b"partial")
    with pytest.raises(DataError, match=r"is missing or unreadable"):
        load_prepared(final)
    shutil.rmtree(final)
    assert prepare_dataset(_cfg("prompt_completion.jsonl"), tok, cache_dir=tmp_path) == final
    assert load_prepared(final).stats.rows_total == 20


def test_too_many_bad_rows_fail_with_exit_65_and_a_report_of_each(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg("bad_alpaca.jsonl"), tiny_tokenizer(), cache_dir=tmp_path)
    assert err.value.exit_code == ExitCode.DATA_ERROR
    message = str(err.value)
    assert message.startswith("4 of 24 rows (16.7%) of ")
    assert "are bad, more than data.max_bad_row_fraction=0.01; see " in message
    report_path = Path(message.rsplit("see ", 1)[1])
    report = json.loads(report_path.read_text())
    assert report["rows_bad"] == 4
    assert report["bad_rows"] == [
        {"row": 21, "reason": "missing field 'output' of format alpaca"},
        {"row": 22, "reason": "field 'output' must be a string (got int)"},
        {"row": 23, "reason": "invalid JSON (Expecting ',' delimiter at column 41)"},
        {"row": 24, "reason": "field 'instruction' is empty"},
    ]


def test_bad_rows_under_the_limit_are_skipped_logged_and_kept_in_the_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trainwright_trainer.data")
    cfg = _cfg("bad_chat.jsonl", max_bad_row_fraction=0.5)
    dataset = build_dataset(cfg, tiny_tokenizer(), cache_dir=tmp_path)
    assert (dataset.stats.rows_total, dataset.stats.rows_bad, dataset.stats.documents) == (9, 3, 6)
    assert [b.row for b in dataset.report] == [7, 8, 9]
    assert "skipping row 7: messages has no assistant turn" in caplog.text
    assert "3 of 9 rows skipped" in caplog.text


def test_a_stricter_limit_on_a_cached_dataset_still_fails(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    prepare_dataset(_cfg("bad_chat.jsonl", max_bad_row_fraction=0.5), tok, cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"^3 of 9 rows \(33\.3%\)"):
        prepare_dataset(_cfg("bad_chat.jsonl", max_bad_row_fraction=0.1), tok, cache_dir=tmp_path)


def test_long_answers_are_truncated_and_counted_long_text_is_split(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    long_answer = "The loss went down steadily during the first epoch. " * 30
    rows = [{"prompt": "Tell me about the run.", "completion": long_answer}] * 2
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    truncated = build_dataset(_cfg(data), tok, cache_dir=tmp_path)
    assert truncated.stats.truncated_rows == 2
    assert truncated.stats.documents == 2
    assert truncated.stats.token_length_max > SEQ_LEN
    text = write_jsonl(tmp_path / "long_text.jsonl", [{"text": long_answer}])
    split = build_dataset(_cfg(text), tok, cache_dir=tmp_path)
    pieces = -(-split.stats.token_length_max // SEQ_LEN)
    assert (split.stats.split_documents, split.stats.documents) == (1, pieces)
    assert split.stats.tokens == split.stats.token_length_max


def test_a_prompt_that_fills_the_whole_sequence_is_a_bad_row(tmp_path: Path) -> None:
    rows = [{"prompt": "word " * 400, "completion": " answer"}] + [
        {"prompt": "Q", "completion": " A"}
    ] * 3
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    dataset = build_dataset(
        _cfg(data, max_bad_row_fraction=0.3), tiny_tokenizer(), cache_dir=tmp_path
    )
    assert [b.row for b in dataset.report] == [1]
    assert dataset.report[0].reason.startswith("no trainable tokens within data.seq_len=256")


def test_empty_or_missing_datasets_fail_before_any_work(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"^cannot detect the format of .*: its first row has \[no rows\]"
    ):
        prepare_dataset(_cfg(empty), tiny_tokenizer(), cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"has no rows$"):
        prepare_dataset(_cfg(empty, format="text"), tiny_tokenizer(), cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"^dataset file .*nothing\.jsonl does not exist$"):
        prepare_dataset(_cfg(tmp_path / "nothing.jsonl"), tiny_tokenizer(), cache_dir=tmp_path)


def test_an_explicit_format_that_does_not_fit_reports_every_row(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^20 of 20 rows \(100\.0%\)"):
        prepare_dataset(_cfg("chat.jsonl", format="alpaca"), tiny_tokenizer(), cache_dir=tmp_path)


def test_a_writer_that_loses_the_publish_race_keeps_the_winners_copy(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    final = prepare_dataset(_cfg("prompt_completion.jsonl"), tok, cache_dir=tmp_path)
    winner = load_prepared(final)
    stats = winner.stats
    zeros = np.zeros((1, SEQ_LEN), dtype=np.int32)
    tokenize_module._publish(final, (zeros, zeros, zeros), stats, '{"bad_rows": []}')
    assert np.array_equal(load_prepared(final).input_ids, winner.input_ids)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_unusable_cache_directory_fails_before_tokenizing(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg("alpaca.jsonl"), tiny_tokenizer(), cache_dir=blocker / "cache")
    assert str(err.value).startswith(f"cannot write the tokenization cache under {blocker}/cache")
    assert str(err.value).endswith("set data.cache_dir to a writable directory with free space")


def test_staging_left_by_a_killed_writer_is_removed_once_stale(tmp_path: Path) -> None:
    stale = tmp_path / ".alpaca-0123456789abcdef.tmp-999-deadbeef"
    stale.mkdir()
    (stale / "input_ids.npy").write_bytes(b"half")
    fresh = tmp_path / ".alpaca-0123456789abcdef.tmp-998-cafebabe"
    fresh.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    prepare_dataset(_cfg("alpaca.jsonl"), tiny_tokenizer(), cache_dir=tmp_path)
    assert not stale.exists()
    assert fresh.exists()  # may be a writer still at work
