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


# --- Tiny model (the trainer loop's tests) -----------------------------------------

TINY_MODEL_HIDDEN = 64
TINY_MODEL_LAYERS = 2
TINY_MODEL_HEADS = 4


def build_tiny_model(out_dir: Path, *, vocab_size: int | None = None, seed: int = 0) -> Path:
    """Save a randomly initialised Llama (hidden 64, 2 layers, 4 heads) with the tiny tokenizer.

    The directory looks like a real model's (config.json, safetensors weights and the
    tokenizer files), so the trainer loads it with ``model.path`` alone.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=TINY_MODEL_HIDDEN,
        intermediate_size=4 * TINY_MODEL_HIDDEN,
        num_hidden_layers=TINY_MODEL_LAYERS,
        num_attention_heads=TINY_MODEL_HEADS,
        num_key_value_heads=TINY_MODEL_HEADS,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


@functools.cache
def tiny_model_dir() -> Path:
    """A directory holding the tiny model and its tokenizer, built once per process."""
    root = Path(tempfile.mkdtemp(prefix="trainwright-tiny-model-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_model(root / "model")


def tiny_train_config(
    tmp_path: Path,
    *,
    method: str = "full",
    strategy: str = "ddp",
    max_steps: int = 20,
    seq_len: int = 64,
    micro_batch_size: int = 2,
    accumulation: int = 1,
    learning_rate: float = 3e-3,
    interval_steps: int = 5,
    faults: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A trainer config (as a dict) for the tiny model on the shipped plain-text corpus."""
    config: dict[str, Any] = {
        "model": {"path": str(tiny_model_dir())},
        "method": method,
        "data": {
            "path": str(TRAINER_DATA_DIR / "text.txt"),
            "seq_len": seq_len,
            "cache_dir": str(tmp_path / "data-cache"),
        },
        "training": {
            "epochs": 100,
            "max_steps": max_steps,
            "micro_batch_size": micro_batch_size,
            "gradient_accumulation_steps": accumulation,
            "learning_rate": learning_rate,
            "lr_scheduler": "constant",
            "seed": 7,
            "max_grad_norm": 1.0,
        },
        "distributed": {"strategy": strategy, "backend": "gloo", "timeout_seconds": 120},
        "checkpoint": {
            "dir": str(tmp_path / "ckpt"),
            "interval_steps": interval_steps,
            "keep_last": 2,
            "async_save": False,
        },
        "metrics": {"port": 0, "log_interval_steps": 5},
        "output": {"dir": str(tmp_path / "out")},
    }
    if method != "full":
        config["lora"] = {"rank": 8, "alpha": 16, "dropout": 0.0}
    if faults:
        config["faults"] = faults
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config
