"""Row formats: detect them, validate rows, and render rows to text with the spans that carry loss.

==================  ============================================  ===========================
format              fields of a row                               loss on
==================  ============================================  ===========================
text                ``text`` (or ``data.text_field``; .txt files)  every token
alpaca              ``instruction``, ``input`` (optional),         the response only
                    ``output``
prompt_completion   ``prompt``, ``completion``                    the completion only
chat                ``messages``: [{``role``, ``content``}]        assistant turns only
sharegpt            ``conversations``: [{``from``, ``value``}]     assistant (``gpt``) turns only
==================  ============================================  ===========================

``data.train_on_prompt`` puts the loss on every token instead. Conversation turns may be
spelled ``{role, content}`` or ``{from, value}`` under either list name, and ``content``
may be a list of OpenAI-style text parts.

Alpaca rows use the Stanford Alpaca prompt (``PROMPT_DICT`` in tatsu-lab/stanford_alpaca,
``train.py``). Chat and ShareGPT rows are rendered with the tokenizer's own chat template
(``tokenizer.apply_chat_template``). Assistant turns are found in one of two ways:

- if the template marks them with ``{% generation %}`` blocks, transformers returns the
  assistant token mask itself (``return_assistant_tokens_mask``);
- otherwise (most templates) the conversation is rendered up to each assistant turn, with
  and without it, and the characters in between are that turn (its end-of-turn token
  included, so the model learns to stop);
- a template that renders earlier turns differently once later ones exist (Qwen3 marks
  only the last turn's reasoning) is split by finding each turn's text, in order, in the
  full rendering; the loss covers an assistant turn's text and the EOS right after it. A
  row whose turns cannot all be found that way is reported as bad.

This module imports no torch.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainwright_trainer.errors import DataError

__all__ = [
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_WITH_INPUT",
    "FORMAT_FIELDS",
    "RenderedText",
    "RenderedTokens",
    "RowError",
    "detect_format",
    "render_row",
    "row_format",
]

ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

FORMAT_FIELDS: dict[str, str] = {
    "text": "text",
    "alpaca": "instruction, input, output",
    "prompt_completion": "prompt, completion",
    "chat": "messages",
    "sharegpt": "conversations",
}

CHAT_ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}

_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")
_DETECT_SAMPLE_ROWS = 200


class RowError(ValueError):
    """A row that does not fit its format; the message is the reason in the bad-row report."""


@dataclass(frozen=True, slots=True)
class RenderedText:
    """A row as text, with the character ranges whose tokens carry loss.

    ``add_special_tokens``: let the tokenizer add BOS and the like (not for chat
    templates, which write their own). ``add_eos``: append EOS, with loss.
    ``splittable``: a document longer than a sequence may be cut into several
    (plain text) rather than truncated (a prompt and its answer belong together).
    """

    text: str
    trainable_spans: tuple[tuple[int, int], ...]
    add_special_tokens: bool
    add_eos: bool
    splittable: bool = False


@dataclass(frozen=True, slots=True)
class RenderedTokens:
    """A row already tokenized (by the chat template), with a loss flag per token."""

    input_ids: tuple[int, ...]
    trainable: tuple[bool, ...]


def row_format(value: Any, text_field: str = "text") -> str | None:
    """The format one row looks like, from its fields; None when it fits none."""
    if isinstance(value, str):
        return "text"
    if not isinstance(value, dict):
        return None
    if "messages" in value:
        return "chat"
    if "conversations" in value:
        return "sharegpt"
    if "instruction" in value and "output" in value:
        return "alpaca"
    if "prompt" in value and "completion" in value:
        return "prompt_completion"
    if text_field in value:
        return "text"
    return None


def detect_format(values: Iterable[Any], *, text_field: str = "text", source: str = "") -> str:
    """The format most of the first rows have; a DataError naming the fields when none fits."""
    votes: Counter[str] = Counter()
    first_keys: list[str] | None = None
    for count, value in enumerate(values):
        if count >= _DETECT_SAMPLE_ROWS:
            break
        if first_keys is None:
            first_keys = sorted(value) if isinstance(value, dict) else [type(value).__name__]
        found = row_format(value, text_field)
        if found is not None:
            votes[found] += 1
    if not votes:
        expected = "; ".join(f"{name} ({fields})" for name, fields in FORMAT_FIELDS.items())
        seen = ", ".join(first_keys or ["no rows"])
        raise DataError(
            f"cannot detect the format of {source or 'the dataset'}: its first row has "
            f"[{seen}]; expected the fields of one of: {expected}; or set data.format"
        )
    return votes.most_common(1)[0][0]


def render_row(
    value: Any,
    fmt: str,
    tokenizer: Any,
    *,
    train_on_prompt: bool = False,
    add_eos: bool = True,
    text_field: str = "text",
) -> RenderedText | RenderedTokens:
    """Validate one row against ``fmt`` and render it; raises RowError with the reason."""
    if fmt == "text":
        text = value if isinstance(value, str) else _string_field(value, text_field, fmt)
        if not text.strip():
            raise RowError(f"field '{text_field}' is empty")
        return RenderedText(text, ((0, len(text)),), True, add_eos, splittable=True)
    if fmt == "alpaca":
        instruction = _string_field(value, "instruction", fmt)
        extra = _optional_string_field(value, "input")
        output = _string_field(value, "output", fmt)
        template = ALPACA_PROMPT_WITH_INPUT if extra.strip() else ALPACA_PROMPT
        prompt = template.format(instruction=instruction, input=extra)
        return _prompt_and_answer(prompt, output, train_on_prompt, add_eos)
    if fmt == "prompt_completion":
        prompt = _string_field(value, "prompt", fmt, allow_empty=True)
        completion = _string_field(value, "completion", fmt)
        return _prompt_and_answer(prompt, completion, train_on_prompt, add_eos)
    if fmt in ("chat", "sharegpt"):
        messages = _conversation(value, fmt)
        return render_chat(messages, tokenizer, train_on_prompt=train_on_prompt)
    raise DataError(f"data.format: {fmt!r} is not one of {', '.join(FORMAT_FIELDS)}")


def _prompt_and_answer(
    prompt: str, answer: str, train_on_prompt: bool, add_eos: bool
) -> RenderedText:
    text = prompt + answer
    start = 0 if train_on_prompt else len(prompt)
    return RenderedText(text, ((start, len(text)),), True, add_eos)


def render_chat(
    messages: list[dict[str, str]], tokenizer: Any, *, train_on_prompt: bool = False
) -> RenderedText | RenderedTokens:
    """Render a conversation with the tokenizer's chat template; loss on assistant turns."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        name = getattr(tokenizer, "name_or_path", "the tokenizer")
        raise DataError(
            f"tokenizer {name} has no chat template, which chat/sharegpt data needs; "
            "use a tokenizer with one or convert the data to prompt_completion"
        )
    full = _apply_template(tokenizer, messages, add_generation_prompt=False)
    if train_on_prompt:
        return RenderedText(full, ((0, len(full)),), False, False)
    if isinstance(template, str) and _GENERATION_BLOCK.search(template):
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = tuple(int(i) for i in out["input_ids"])
        mask = tuple(bool(m) for m in out["assistant_masks"])
        return RenderedTokens(ids, mask)
    spans = _spans_by_prefix(messages, tokenizer, full)
    if spans is None:
        spans = _spans_by_search(messages, full, getattr(tokenizer, "eos_token", None))
    if spans is None:
        raise RowError(
            "the chat template renders earlier turns differently once later turns are "
            "added, so assistant turns cannot be located; use a template with "
            "{% generation %} blocks or set data.train_on_prompt"
        )
    return RenderedText(full, tuple(spans), False, False)


def _spans_by_prefix(
    messages: list[dict[str, str]], tokenizer: Any, full: str
) -> list[tuple[int, int]] | None:
    """Each assistant turn is what rendering it adds after the generation prompt.

    None when the template is not prefix-consistent (it rewrites earlier turns).
    """
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _apply_template(tokenizer, messages[:index], add_generation_prompt=True)
        through = _apply_template(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through)):
            return None
        spans.append((len(before), len(through)))
    return spans


def _spans_by_search(
    messages: list[dict[str, str]], full: str, eos_token: str | None
) -> list[tuple[int, int]] | None:
    """Find each turn's text in order in the full rendering; the loss covers an assistant
    turn's text and the EOS token right after it (Qwen3-style templates, which mark only
    the last turn's reasoning, are not prefix-consistent but keep every turn's text).

    None when some turn's text is not in the rendering.
    """
    spans: list[tuple[int, int]] = []
    cursor = 0
    for message in messages:
        text = message["content"].strip()
        if not text:
            continue
        start = full.find(text, cursor)
        if start < 0:
            return None
        cursor = start + len(text)
        if message["role"] != "assistant":
            continue
        end = cursor
        if eos_token and full.startswith(eos_token, end):
            end += len(eos_token)
        spans.append((start, end))
    return spans


def _apply_template(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> str:
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # jinja2 raise_exception(): the template's own validation
        raise RowError(f"the chat template rejects this conversation: {exc}") from None
    return str(rendered)


def _conversation(value: Any, fmt: str) -> list[dict[str, str]]:
    # Datasets mix the two spellings of a turn ({role, content} and {from, value})
    # under either list name, and OpenAI-style content may be a list of text parts;
    # all of them mean the same conversation.
    field = "messages" if fmt == "chat" else "conversations"
    turns = _list_field(value, field, fmt)
    messages: list[dict[str, str]] = []
    for index, turn in enumerate(turns):
        where = f"{field}[{index}]"
        if not isinstance(turn, dict):
            raise RowError(f"{where} must be an object with role and content (or from and value)")
        role_key = "role" if "role" in turn else "from"
        content_key = "content" if "content" in turn else "value"
        speaker = turn.get(role_key)
        role = SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            accepted = ", ".join(CHAT_ROLES if role_key == "role" else SHAREGPT_ROLES)
            raise RowError(f"{where}.{role_key} {speaker!r} is not one of {accepted}")
        content = _content_text(turn.get(content_key), f"{where}.{content_key}")
        messages.append({"role": role, "content": content})
    return _check_conversation(messages, field)


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    kind = "a list with non-text parts" if isinstance(content, list) else type(content).__name__
    raise RowError(f"{where} must be a string or a list of text parts (got {kind})")


def _check_conversation(messages: list[dict[str, str]], field: str) -> list[dict[str, str]]:
    assistant = [m for m in messages if m["role"] == "assistant"]
    if not assistant:
        raise RowError(f"{field} has no assistant turn, so there is nothing to learn")
    if any(not m["content"].strip() for m in assistant):
        raise RowError(f"{field} has an empty assistant turn")
    if messages[0]["role"] == "assistant":
        raise RowError(f"{field} starts with an assistant turn; put a user or system turn first")
    return messages


def _list_field(value: Any, field: str, fmt: str) -> list[Any]:
    if not isinstance(value, dict):
        raise RowError(f"row is a {type(value).__name__}, expected an object with {field}")
    turns = value.get(field)
    if field not in value:
        raise RowError(f"missing field '{field}' of format {fmt}")
    if not isinstance(turns, list) or not turns:
        raise RowError(f"field '{field}' must be a non-empty list of turns")
    return turns


def _string_field(value: Any, field: str, fmt: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, dict):
        raise RowError(
            f"row is a {type(value).__name__}, expected an object with {FORMAT_FIELDS[fmt]}"
        )
    if field not in value or value[field] is None:
        raise RowError(f"missing field '{field}' of format {fmt}")
    text = value[field]
    if not isinstance(text, str):
        raise RowError(f"field '{field}' must be a string (got {type(text).__name__})")
    if not allow_empty and not text.strip():
        raise RowError(f"field '{field}' is empty")
    return text


def _optional_string_field(value: dict[str, Any], field: str) -> str:
    text = value.get(field)
    if text is None:
        return ""
    if not isinstance(text, str):
        raise RowError(f"field '{field}' must be a string (got {type(text).__name__})")
    return text
