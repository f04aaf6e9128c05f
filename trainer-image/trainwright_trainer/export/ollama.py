"""An Ollama ``Modelfile`` for the GGUF: FROM, TEMPLATE, PARAMETER stop, SYSTEM, LICENSE.

Ollama templates are Go templates over ``.Messages``, not Jinja. Rather than
translate Jinja syntax (which can hold arbitrary logic), the tokenizer's own chat
template is rendered with marker strings for each role, and the text around the
markers becomes each role's prefix and suffix in a Go ``range .Messages`` loop.
:func:`render_turns` renders a conversation from those pieces; a test holds it
equal to ``apply_chat_template`` for multi-turn conversations. The BOS token is
left out: llama.cpp adds it itself (``tokenizer.ggml.add_bos_token``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainwright_trainer.errors import ConfigError

__all__ = ["ChatPieces", "chat_pieces", "modelfile", "render_turns", "stop_tokens"]

_MARK = "\x1eTW{}\x1e"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatPieces:
    """Prefix and suffix of each role's turn, and the prompt that opens the reply."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str
    bos: str


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation: bool) -> str:
    text: str = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation
    )
    return text


def _around(text: str, mark: str) -> tuple[str, str]:
    if text.count(mark) != 1:
        raise ValueError(f"the chat template does not render {mark!r} once")
    before, _, after = text.partition(mark)
    return before, after


def chat_pieces(tokenizer: Any) -> ChatPieces:
    """Role prefixes and suffixes found by rendering the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "--formats: ollama needs a chat template in the tokenizer (tokenizer_config.json "
            "chat_template); this tokenizer has none"
        )
    bos = str(tokenizer.bos_token or "")
    u, a, s = (_MARK.format(i) for i in range(3))
    try:
        user_pre, user_suf = _around(
            _render(tokenizer, [{"role": "user", "content": u}], generation=False), u
        )
        _, with_gen = _around(
            _render(tokenizer, [{"role": "user", "content": u}], generation=True), u
        )
        _, after_user = _around(
            _render(
                tokenizer,
                [{"role": "user", "content": u}, {"role": "assistant", "content": a}],
                generation=False,
            ),
            u,
        )
        between, assistant_suf = _around(after_user, a)
        prefix = {"user": user_pre.removeprefix(bos)}
        suffix = {"user": user_suf, "assistant": assistant_suf}
        prefix["assistant"] = between.removeprefix(user_suf)
        generation = with_gen.removeprefix(user_suf)
        try:
            rendered = _render(
                tokenizer,
                [{"role": "system", "content": s}, {"role": "user", "content": u}],
                generation=False,
            )
            sys_pre, rest = _around(rendered, s)
            between_sys, _ = _around(rest, u)
            prefix["system"] = sys_pre.removeprefix(bos)
            suffix["system"] = between_sys.removesuffix(prefix["user"])
        except Exception:  # templates that reject a system turn raise anything
            prefix["system"], suffix["system"] = "", ""
    except ValueError as exc:
        raise ConfigError(
            f"--formats: ollama: the tokenizer's chat template cannot be translated ({exc}); "
            "export gguf and write the Modelfile's TEMPLATE by hand"
        ) from None
    return ChatPieces(prefix=prefix, suffix=suffix, generation_prompt=generation, bos=bos)


def render_turns(pieces: ChatPieces, messages: list[dict[str, str]], *, generation: bool) -> str:
    """What the Go template renders for ``messages`` (BOS included, as the model sees it)."""
    text = pieces.bos
    for message in messages:
        role = message["role"]
        text += pieces.prefix[role] + message["content"] + pieces.suffix[role]
    return text + (pieces.generation_prompt if generation else "")


def _go_string(text: str, *, trim: bool = False) -> str:
    # Every piece is a Go string literal inside an action: literal text could hold "{{",
    # and "{{-" trims the newline that separates the template's lines.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return ("{{- " if trim else "{{ ") + '"' + escaped + '" }}'


def go_template(pieces: ChatPieces) -> str:
    """The Ollama TEMPLATE: one branch per role over .Messages, then the reply prompt."""
    lines = ["{{- range .Messages }}"]
    for i, role in enumerate(ROLES):
        keyword = "if" if i == 0 else "else if"
        lines.append(
            f'{{{{- {keyword} eq .Role "{role}" }}}}'
            f"{_go_string(pieces.prefix[role])}{{{{ .Content }}}}{_go_string(pieces.suffix[role])}"
        )
    lines.append("{{- end }}")
    lines.append("{{- end }}")
    lines.append(_go_string(pieces.generation_prompt, trim=True))
    return "\n".join(lines)


def stop_tokens(tokenizer: Any, pieces: ChatPieces) -> list[str]:
    """End-of-turn strings: EOS and every special token that closes a turn."""
    specials = [str(t) for t in getattr(tokenizer, "all_special_tokens", [])]
    closing = pieces.suffix["assistant"] + pieces.suffix["user"]
    stops = [t for t in specials if t and t in closing and t != pieces.bos]
    eos = tokenizer.eos_token
    if eos and eos not in stops:
        stops.append(str(eos))
    return stops


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(
    gguf_relative: str,
    pieces: ChatPieces,
    stops: list[str],
    *,
    system: str | None,
    license_text: str | None,
) -> str:
    """The Modelfile text; FROM names the GGUF relative to the Modelfile."""
    lines = [f"FROM ./{gguf_relative}", f"TEMPLATE {_quoted(go_template(pieces))}"]
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    if license_text:
        lines.append(f"LICENSE {_quoted(license_text)}")
    return "\n".join(lines) + "\n"
