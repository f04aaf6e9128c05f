"""Row formats: detection, validation messages, and which tokens carry loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer_fixtures import CHAT_TEMPLATE, tiny_tokenizer
from trainwright_trainer.data.formats import (
    ALPACA_PROMPT,
    RenderedText,
    RenderedTokens,
    RowError,
    detect_format,
    render_row,
    row_format,
)
from trainwright_trainer.data.tokenize import tokenize_rendered
from trainwright_trainer.errors import DataError

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
    {"role": "user", "content": "Thank you."},
    {"role": "assistant", "content": "You are welcome."},
]


def _loss_text(rendered: RenderedText | RenderedTokens, tokenizer: Any) -> str:
    [(ids, trainable)] = tokenize_rendered([rendered], tokenizer)
    return str(tokenizer.decode(ids[trainable]))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("a plain paragraph", "text"),
        ({"text": "hello"}, "text"),
        ({"instruction": "Add.", "input": "1 2", "output": "3"}, "alpaca"),
        ({"prompt": "Q:", "completion": " A"}, "prompt_completion"),
        ({"messages": []}, "chat"),
        ({"conversations": []}, "sharegpt"),
        ({"question": "?"}, None),
        ([1, 2], None),
    ],
)
def test_each_format_is_recognised_from_its_fields(row: Any, expected: str | None) -> None:
    assert row_format(row) == expected


def test_detection_follows_the_majority_of_rows() -> None:
    rows = [{"prompt": "a", "completion": "b"}] * 3 + [{"text": "stray"}]
    assert detect_format(rows) == "prompt_completion"


def test_undetectable_data_names_the_fields_it_saw_and_the_formats_it_knows() -> None:
    with pytest.raises(DataError) as err:
        detect_format([{"question": "?", "answer": "!"}], source="qa.jsonl")
    message = str(err.value)
    assert message.startswith("cannot detect the format of qa.jsonl: its first row has [answer,")
    assert "alpaca (instruction, input, output)" in message
    assert message.endswith("or set data.format")


def test_alpaca_loss_is_only_on_the_response_and_eos() -> None:
    tok = tiny_tokenizer()
    rendered = render_row({"instruction": "Say hi.", "output": "Hello there."}, "alpaca", tok)
    assert isinstance(rendered, RenderedText)
    assert rendered.text == ALPACA_PROMPT.format(instruction="Say hi.") + "Hello there."
    assert _loss_text(rendered, tok) == "Hello there.</s>"


def test_train_on_prompt_puts_loss_on_the_whole_alpaca_row() -> None:
    tok = tiny_tokenizer()
    rendered = render_row(
        {"instruction": "Say hi.", "output": "Hello."}, "alpaca", tok, train_on_prompt=True
    )
    assert _loss_text(rendered, tok) == ALPACA_PROMPT.format(instruction="Say hi.") + "Hello.</s>"


def test_alpaca_with_input_uses_the_input_prompt() -> None:
    tok = tiny_tokenizer()
    rendered = render_row({"instruction": "Sum.", "input": "1 2", "output": "3"}, "alpaca", tok)
    assert isinstance(rendered, RenderedText)
    assert "### Input:\n1 2\n\n### Response:\n3" in rendered.text


def test_prompt_completion_loss_is_only_on_the_completion() -> None:
    tok = tiny_tokenizer()
    rendered = render_row(
        {"prompt": "Question: What is two plus two?\nAnswer:", "completion": " Four."},
        "prompt_completion",
        tok,
    )
    assert _loss_text(rendered, tok) == " Four.</s>"


def test_chat_loss_covers_exactly_the_assistant_turns_and_their_end_tokens() -> None:
    tok = tiny_tokenizer()
    rendered = render_row({"messages": CONVERSATION}, "chat", tok)
    assert isinstance(rendered, RenderedText)
    assert rendered.text.startswith("<s><|im_start|>system\n")
    assert _loss_text(rendered, tok) == (
        "Two plus two is four.<|im_end|>\nYou are welcome.<|im_end|>\n"
    )


def test_sharegpt_renders_the_same_as_the_equivalent_chat() -> None:
    tok = tiny_tokenizer()
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = {
        "conversations": [{"from": names[m["role"]], "value": m["content"]} for m in CONVERSATION]
    }
    assert render_row(sharegpt, "sharegpt", tok) == render_row(
        {"messages": CONVERSATION}, "chat", tok
    )


def test_turn_spellings_and_text_parts_mean_the_same_conversation() -> None:
    tok = tiny_tokenizer()
    mixed = {
        "messages": [
            {"from": "system", "value": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": "What is two plus two?"}]},
            {"from": "gpt", "value": "Two plus two is four."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Thank"}, {"type": "text", "text": " you."}],
            },
            {"role": "assistant", "content": "You are welcome."},
        ]
    }
    assert render_row(mixed, "chat", tok) == render_row({"messages": CONVERSATION}, "chat", tok)


def test_a_template_with_generation_blocks_uses_transformers_assistant_mask() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE.replace(
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}",
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}",
    )
    rendered = render_row({"messages": CONVERSATION}, "chat", tok)
    assert isinstance(rendered, RenderedTokens)
    assert _loss_text(rendered, tok) == "Two plus two is four.<|im_end|>You are welcome.<|im_end|>"


def test_a_template_that_marks_only_the_last_turn_is_split_by_finding_each_turn() -> None:
    tok = tiny_tokenizer()
    tok.eos_token = "<|im_end|>"  # as in Qwen's instruct tokenizers
    # Like Qwen3: only the final assistant turn gets an (empty) reasoning block, so
    # rendering a turn alone differs from how it appears in the whole conversation.
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}"
        "{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rendered = render_row({"messages": CONVERSATION}, "chat", tok)
    assert isinstance(rendered, RenderedText)
    assert "</think>\n\nYou are welcome." in rendered.text
    assert _loss_text(rendered, tok) == "Two plus two is four.<|im_end|>You are welcome.<|im_end|>"


def test_a_template_that_drops_earlier_turns_makes_the_row_bad_not_silently_wrong() -> None:
    tok = tiny_tokenizer()
    # Shows only the last assistant turn, as templates that drop old reasoning do.
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(RowError, match="renders earlier turns differently"):
        render_row({"messages": CONVERSATION}, "chat", tok)


def test_chat_data_without_a_chat_template_fails_the_run_with_advice() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(DataError, match=r"has no chat template, which chat/sharegpt data needs"):
        render_row({"messages": CONVERSATION}, "chat", tok)


@pytest.mark.parametrize(
    ("row", "fmt", "reason"),
    [
        ({"instruction": "x"}, "alpaca", "missing field 'output' of format alpaca"),
        ({"instruction": "x", "output": 3}, "alpaca", "field 'output' must be a string (got int)"),
        ({"instruction": " ", "output": "y"}, "alpaca", "field 'instruction' is empty"),
        (
            {"instruction": "x", "input": 5, "output": "y"},
            "alpaca",
            "field 'input' must be a string",
        ),
        (["x"], "prompt_completion", "row is a list, expected an object with prompt, completion"),
        ({"text": ""}, "text", "field 'text' is empty"),
        ({"messages": []}, "chat", "field 'messages' must be a non-empty list of turns"),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            "chat",
            "messages has no assistant turn, so there is nothing to learn",
        ),
        (
            {"messages": [{"role": "narrator", "content": "hi"}]},
            "chat",
            "messages[0].role 'narrator' is not one of system, user, assistant, tool",
        ),
        (
            {"messages": [{"role": "assistant", "content": None}]},
            "chat",
            "messages[0].content must be a string or a list of text parts (got NoneType)",
        ),
        (
            {"messages": [{"role": "assistant", "content": "Hi."}]},
            "chat",
            "messages starts with an assistant turn; put a user or system turn first",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]}]},
            "chat",
            "messages[0].content must be a string or a list of text parts (got a list with",
        ),
        (
            {"conversations": [{"from": "narrator", "value": "Once."}]},
            "sharegpt",
            "conversations[0].from 'narrator' is not one of",
        ),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": " "}]},
            "sharegpt",
            "conversations has an empty assistant turn",
        ),
    ],
)
def test_bad_rows_get_a_reason_naming_the_field(row: Any, fmt: str, reason: str) -> None:
    with pytest.raises(RowError) as err:
        render_row(row, fmt, tiny_tokenizer())
    assert str(err.value).startswith(reason)


def test_tokenizers_without_offsets_get_the_same_alpaca_labels_span_by_span() -> None:
    tok = tiny_tokenizer()

    class SlowTokenizer:
        is_fast = False
        eos_token_id = tok.eos_token_id
        encode = staticmethod(tok.encode)

    rendered = render_row({"instruction": "Say hi.", "output": "Hello there."}, "alpaca", tok)
    [(fast_ids, fast_mask)] = tokenize_rendered([rendered], tok)
    [(slow_ids, slow_mask)] = tokenize_rendered([rendered], SlowTokenizer())
    assert tok.decode(slow_ids[slow_mask]) == "Hello there.</s>"
    assert int(slow_mask.sum()) == int(fast_mask.sum())
    assert np.array_equal(slow_ids[slow_mask], fast_ids[fast_mask])


_WORDS = ["the", "model", "loss", "step", "data", "Paris", "four", "?", "\n", ".", "42"]


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12),
    # A completion of only whitespace is a bad row (its own test); keep one real word.
    completion=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12).filter(
        lambda words: "".join(words).strip() != ""
    ),
)
def test_the_loss_falls_exactly_on_the_completion_when_it_starts_a_new_word(
    prompt: list[str], completion: list[str]
) -> None:
    tok = tiny_tokenizer()
    row = {"prompt": " ".join(prompt) + ":", "completion": " " + " ".join(completion)}
    rendered = render_row(row, "prompt_completion", tok)
    assert _loss_text(rendered, tok) == row["completion"] + "</s>"
