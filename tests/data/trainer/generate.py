"""Regenerate the small trainer datasets in this folder: ``python tests/data/trainer/generate.py``.

Every format (alpaca, chat, sharegpt, prompt_completion, text) in every file type the
reader supports, plus files with known bad rows. Deterministic: the same files each run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent

QA: list[tuple[str, str, str]] = [
    ("What is the capital of France?", "", "The capital of France is Paris."),
    ("What is two plus two?", "", "Two plus two is four."),
    ("How many legs does a spider have?", "", "A spider has eight legs."),
    ("Name a planet in the solar system.", "", "Mars is a planet in the solar system."),
    ("Why is the sky blue?", "", "Sunlight scatters off the air, and blue light scatters most."),
    ("List three colors of the rainbow.", "", "Red, orange and yellow."),
    ("Give me a synonym for happy.", "", "Joyful is a synonym for happy."),
    ("Explain photosynthesis briefly.", "", "Plants turn light and water into sugar."),
    ("Who wrote Romeo and Juliet?", "", "William Shakespeare wrote Romeo and Juliet."),
    ("Convert ten kilometers to miles.", "", "Ten kilometers is about six point two miles."),
    ("Summarize the paragraph in one sentence.", "The cat sat on the mat.", "A cat sat."),
    ("Translate the sentence into French.", "The weather is sunny.", "Il fait beau."),
    ("Write a haiku about autumn leaves.", "", "Golden leaves drifting, the year breathes slowly."),
    ("Recommend a book for a long journey.", "", "A long novel keeps the journey short."),
    ("Is a tomato a fruit or a vegetable?", "", "Botanically a tomato is a fruit."),
    ("What day comes after Monday?", "", "Tuesday comes after Monday."),
    ("How long should the bread bake?", "", "Bake the bread for forty minutes."),
    ("What does a checkpoint save?", "", "The weights, the optimizer state and the data position."),
    ("What is gradient accumulation?", "", "Adding up gradients from several micro batches."),
    ("Why pack sequences?", "", "So no compute is wasted on padding."),
]


def alpaca_rows() -> list[dict[str, Any]]:
    return [{"instruction": q, "input": i, "output": a} for q, i, a in QA]


def chat_rows() -> list[dict[str, Any]]:
    rows = []
    for n, (q, i, a) in enumerate(QA):
        user = f"{q}\n{i}" if i else q
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": a}]
        if n % 3 == 0:
            messages.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        if n % 4 == 0:
            messages += [
                {"role": "user", "content": "Thank you, that was very helpful."},
                {"role": "assistant", "content": "You are welcome."},
            ]
        rows.append({"messages": messages})
    return rows


def sharegpt_rows() -> list[dict[str, Any]]:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [
        {
            "conversations": [
                {"from": names[m["role"]], "value": m["content"]} for m in r["messages"]
            ]
        }
        for r in chat_rows()
    ]


def prompt_completion_rows() -> list[dict[str, Any]]:
    return [{"prompt": f"Question: {q}\nAnswer:", "completion": f" {a}"} for q, _, a in QA]


def text_rows() -> list[dict[str, Any]]:
    corpus = (HERE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    return [{"text": " ".join(corpus[i : i + 3])} for i in range(0, len(corpus), 3)]


def bad_alpaca_lines() -> list[str]:
    good = [json.dumps(r) for r in alpaca_rows()]
    bad = [
        '{"instruction": "Say hi.", "input": ""}',  # line 21: no output
        '{"instruction": "Say hi.", "output": 42}',  # line 22: output not a string
        '{"instruction": "Say hi", "output": "hi"',  # line 23: broken JSON
        '{"instruction": "", "output": "hi"}',  # line 24: empty instruction
    ]
    return good + bad


def bad_chat_rows() -> list[dict[str, Any]]:
    rows = chat_rows()[:6]
    rows += [
        {"messages": [{"role": "user", "content": "Hello?"}]},  # row 7: no assistant turn
        {
            "messages": [
                {"role": "narrator", "content": "Once."},
                {"role": "assistant", "content": "x"},
            ]
        },
        {"messages": "not a list"},  # row 9
    ]
    return rows


def write_jsonl(name: str, rows: list[dict[str, Any]]) -> None:
    (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_csv(name: str, rows: list[dict[str, Any]]) -> None:
    with (HERE / name).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )


def main() -> None:
    write_jsonl("alpaca.jsonl", alpaca_rows())
    (HERE / "alpaca.json").write_text(json.dumps(alpaca_rows(), indent=1), encoding="utf-8")
    write_csv("alpaca.csv", alpaca_rows())
    pq.write_table(pa.Table.from_pylist(alpaca_rows()), HERE / "alpaca.parquet")
    write_jsonl("chat.jsonl", chat_rows())
    write_csv("chat.csv", chat_rows())
    pq.write_table(pa.Table.from_pylist(chat_rows()), HERE / "chat.parquet")
    write_jsonl("sharegpt.jsonl", sharegpt_rows())
    write_jsonl("prompt_completion.jsonl", prompt_completion_rows())
    write_csv("prompt_completion.csv", prompt_completion_rows())
    write_jsonl("text.jsonl", text_rows())
    (HERE / "text.txt").write_text(
        "\n\n".join(r["text"] for r in text_rows()) + "\n", encoding="utf-8"
    )
    (HERE / "bad_alpaca.jsonl").write_text("\n".join(bad_alpaca_lines()) + "\n", encoding="utf-8")
    write_jsonl("bad_chat.jsonl", bad_chat_rows())


if __name__ == "__main__":
    main()
