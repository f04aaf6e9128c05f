"""Reading dataset files: every file type, row numbers a person can find, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from trainer_fixtures import TRAINER_DATA_DIR
from trainwright_trainer.data.reader import file_type_of, read_rows
from trainwright_trainer.errors import DataError


@pytest.mark.parametrize("name", ["alpaca.jsonl", "alpaca.json", "alpaca.csv", "alpaca.parquet"])
def test_every_file_type_yields_the_same_alpaca_rows_numbered_from_one(name: str) -> None:
    rows = list(read_rows(TRAINER_DATA_DIR / name))
    assert [r.row for r in rows] == list(range(1, 21))
    assert rows[0].value == {
        "instruction": "What is the capital of France?",
        "input": "",
        "output": "The capital of France is Paris.",
    }
    assert rows[10].value["input"] == "The cat sat on the mat."


def test_chat_messages_stored_as_json_in_a_csv_cell_come_back_as_lists() -> None:
    rows = list(read_rows(TRAINER_DATA_DIR / "chat.csv"))
    assert rows[1].value["messages"][0] == {"role": "user", "content": "What is two plus two?"}


def test_a_broken_json_line_is_a_bad_row_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"\n{"text": "c"}\n', encoding="utf-8")
    rows = list(read_rows(path))
    assert [(r.row, r.error) for r in rows] == [
        (1, None),
        (3, "invalid JSON (Expecting ',' delimiter at column 13)"),
        (4, None),
    ]


def test_plain_text_is_split_into_paragraphs_numbered_by_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("First para\ncontinues.\n\n\nSecond para.\n", encoding="utf-8")
    rows = [(r.row, r.value) for r in read_rows(path)]
    assert rows == [(1, "First para\ncontinues."), (5, "Second para.")]


def test_json_lines_saved_as_json_are_read_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "mislabeled.json"
    path.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert [r.value["text"] for r in read_rows(path)] == ["a", "b"]


def test_a_json_object_wrapping_one_list_is_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.json"
    path.write_text('{"train": [{"text": "a"}, {"text": "b"}]}', encoding="utf-8")
    assert [r.row for r in read_rows(path)] == [1, 2]


def test_a_csv_row_with_extra_cells_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\nQ,A\nQ,A,extra\n", encoding="utf-8")
    rows = list(read_rows(path))
    assert rows[1].row == 2
    assert rows[1].error == "has more cells than the 2 headers"


def test_unknown_suffix_names_the_accepted_ones() -> None:
    with pytest.raises(
        DataError, match=r"from its suffix '\.tsv'; use one of \.csv, .*data\.file_type"
    ):
        file_type_of(Path("data.tsv"))
    assert file_type_of(Path("data.tsv"), "csv") == "csv"


def test_unreadable_files_raise_data_errors_not_tracebacks(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset file .*missing\.jsonl does not exist"):
        list(read_rows(tmp_path / "missing.jsonl"))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"is not UTF-8 text"):
        list(read_rows(latin))
    scalar = tmp_path / "scalar.json"
    scalar.write_text("42", encoding="utf-8")
    with pytest.raises(DataError, match=r"must hold a JSON list of rows, got int"):
        list(read_rows(scalar))
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet", encoding="utf-8")
    with pytest.raises(DataError, match=r"is not a valid Parquet file"):
        list(read_rows(fake))


def test_gzip_compressed_files_read_like_the_plain_ones(tmp_path: Path) -> None:
    for name in ("alpaca.jsonl", "alpaca.json", "alpaca.csv"):
        packed = tmp_path / f"{name}.gz"
        packed.write_bytes(gzip.compress((TRAINER_DATA_DIR / name).read_bytes()))
        assert file_type_of(packed) == name.rsplit(".", 1)[1]
        assert list(read_rows(packed)) == list(read_rows(TRAINER_DATA_DIR / name))


def test_a_truncated_gzip_file_is_a_data_error(tmp_path: Path) -> None:
    broken = tmp_path / "cut.jsonl.gz"
    broken.write_bytes(gzip.compress((TRAINER_DATA_DIR / "alpaca.jsonl").read_bytes())[:200])
    with pytest.raises(DataError, match=r"is not a complete gzip file"):
        list(read_rows(broken))
    with pytest.raises(DataError, match=r"from its suffix ''; use one of"):
        file_type_of(Path("archive.gz"))
