"""Held-out evaluation and sample generations (the torch half; the rules are in stopping.py).

Eval loss is what the training loss is, on the held-out sequences: the summed
cross-entropy over label tokens divided by the label tokens, summed over all
ranks with one ``all_reduce``. Rank r takes held-out sequences r, r + world, ...;
every rank runs the same number of forward passes (a rank that runs out takes a
fully masked batch), because FSDP and ZeRO-3 gather parameters inside forward and
a rank that skipped one would hang the others.

Sample generations: greedy answers to a few prompts, appended to
``<checkpoint.dir>/samples.jsonl`` at step 0 (the base model, before any update),
at every evaluation and at the end, so a person can read the answers side by side.
Prompts are ``evaluation.sample_prompts`` or, when none are given, the prompt part
of the first document of the first held-out sequences (what precedes the first
token with loss; for plain text, the first half, at most 32 tokens), with the
held-out continuation as ``reference``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwright_trainer.data.dataset import PackedDataset
from trainwright_trainer.data.packing import IGNORE_INDEX

__all__ = [
    "SAMPLES_NAME",
    "SamplePrompt",
    "append_samples",
    "eval_batches",
    "generate_samples",
    "perplexity",
    "prompts_from_split",
]

SAMPLES_NAME = "samples.jsonl"
_TEXT_PROMPT_MAX_TOKENS = 32


def perplexity(eval_loss: float) -> float | None:
    """exp(loss), the perplexity of a mean token cross-entropy in nats; None if it overflows."""
    if not math.isfinite(eval_loss) or eval_loss > 700:
        return None
    return math.exp(eval_loss)


def eval_batches(
    dataset: PackedDataset,
    *,
    rank: int,
    world_size: int,
    micro_batch_size: int,
    max_sequences: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's held-out micro-batches; the same count on every rank."""
    count = len(dataset) if max_sequences is None else min(len(dataset), max_sequences)
    mine = np.arange(rank, count, world_size, dtype=np.int64)
    per_rank = -(-count // world_size)
    for start in range(0, per_rank, micro_batch_size):
        chunk = mine[start : start + micro_batch_size]
        arrays = dataset.take(chunk if len(chunk) else np.zeros(1, dtype=np.int64))
        if not len(chunk):
            arrays["labels"] = np.full_like(arrays["labels"], IGNORE_INDEX)
        yield {name: torch.from_numpy(a.astype(np.int64)) for name, a in arrays.items()}


@dataclass(frozen=True)
class SamplePrompt:
    """A prompt as token ids, with the held-out answer when it came from the eval split."""

    input_ids: tuple[int, ...]
    reference_ids: tuple[int, ...] = ()


def prompts_from_split(dataset: PackedDataset, count: int) -> list[SamplePrompt]:
    """The prompt and reference of the first document of the first ``count`` sequences."""
    prompts: list[SamplePrompt] = []
    for position in range(min(count, len(dataset))):
        row = dataset.take(np.asarray([position], dtype=np.int64))
        ids, labels, positions = (row[k][0] for k in ("input_ids", "labels", "position_ids"))
        starts = np.flatnonzero(positions[1:] == 0)
        end = int(starts[0]) + 1 if len(starts) else len(ids)
        trained = np.flatnonzero(labels[1:end] != IGNORE_INDEX)
        cut = int(trained[0]) + 1 if len(trained) else end
        if cut <= 1:  # plain text: every token carries loss, so prompt with its beginning
            cut = max(1, min(end // 2, _TEXT_PROMPT_MAX_TOKENS))
        prompts.append(
            SamplePrompt(tuple(int(i) for i in ids[:cut]), tuple(int(i) for i in ids[cut:end]))
        )
    return prompts


def generate_samples(
    model: Any,
    tokenizer: Any,
    prompts: list[SamplePrompt],
    *,
    device: torch.device,
    max_new_tokens: int,
    synced: bool,
) -> list[dict[str, str]]:
    """Greedy answers, one prompt at a time (no padding to get wrong); ``synced`` for
    sharded models, whose every rank must run the same number of forward passes."""
    samples: list[dict[str, str]] = []
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    for prompt in prompts:
        input_ids = torch.tensor([prompt.input_ids], dtype=torch.long, device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
            synced_gpus=synced,
        )
        answer = output[0, input_ids.shape[1] :].tolist()
        if eos is not None and eos in answer:
            answer = answer[: answer.index(eos)]
        samples.append(
            {
                "prompt": tokenizer.decode(list(prompt.input_ids), skip_special_tokens=True),
                "completion": tokenizer.decode(answer, skip_special_tokens=True),
                "reference": tokenizer.decode(list(prompt.reference_ids), skip_special_tokens=True),
            }
        )
    return samples


def append_samples(path: Path, *, step: int, label: str, samples: list[dict[str, str]]) -> None:
    """One JSON line per sample: step, label (base, eval, final), prompt, completion, reference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for index, sample in enumerate(samples):
            record = {"step": step, "label": label, "index": index, **sample}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
