"""Shared fixtures for the trainer's tests: a tiny tokenizer trained offline and tiny data.

Nothing here touches the network. The tokenizer is a byte-level BPE trained with
``tokenizers`` on ``tests/data/trainer/corpus.txt`` and saved as a Hugging Face
``PreTrainedTokenizerFast`` directory with a ChatML chat template, so it loads
with ``AutoTokenizer.from_pretrained(dir)`` like a real model's tokenizer.

Use the plain functions (they cache per process, so a test session trains the
tokenizer once)::

    from trainer_fixtures import tiny_tokenizer, tiny_tokenizer_dir

    def test_something():
        tok = tiny_tokenizer()
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

TRAINER_DATA_DIR = Path(__file__).parent / "data" / "trainer"
CORPUS_PATH = TRAINER_DATA_DIR / "corpus.txt"

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
TINY_VOCAB_SIZE = 512

# ChatML, as Qwen and many fine-tunes use. It has no `{% generation %}` markers,
# like most real templates, so the data pipeline must find assistant turns itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_tokenizer(out_dir: Path, *, vocab_size: int = TINY_VOCAB_SIZE) -> Path:
    """Train a byte-level BPE on the shipped corpus and save it as a HF tokenizer dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *CHAT_TOKENS]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(CORPUS_PATH)], trainer)
    # Like Llama: a BOS in front of every encoded text; EOS is the caller's choice.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, tokenizer.token_to_id(BOS_TOKEN))],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(CHAT_TOKENS),
        model_max_length=4096,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out_dir))
    return out_dir


@functools.cache
def tiny_tokenizer_dir() -> Path:
    """A directory holding the tiny tokenizer, built once per process and removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="trainwright-tiny-tokenizer-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_tokenizer(root / "tokenizer")


def tiny_tokenizer() -> Any:
    """The tiny tokenizer loaded the way the trainer loads one (``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir()))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSON lines (one object a line) and return the path."""
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
