"""Use-case profiles: a fine-tune's defaults from what it is for, each with its reason.

``spec.profile`` (and ``trainwright plan training --profile``) names one of
:data:`trainwright.vocabulary.USE_CASES` (one profile each, in that order); its values fill the fields a user left
unset (user fields win). Sources for the reasons:

- QLoRA (Dettmers et al. 2023, arXiv:2305.14314): adapters on all linear layers are
  needed to match full fine-tuning (§4); learning rate 2e-4 for 7B-13B chat models
  (appendix B.2); training on the responses only is as good or better than on the
  whole dialogue for chat (§5, "train on target").
- LoRA Learns Less and Forgets Less (Biderman et al. 2024, arXiv:2405.09673):
  continued pre-training on a new domain (code, maths) needs higher ranks than
  instruction tuning, and learning rates around 1e-4 to 5e-4 for LoRA (§4).
- Scaling Data-Constrained Language Models (Muennighoff et al. 2023,
  arXiv:2305.16264): repeated epochs over a corpus quickly return less; one pass over a
  large domain corpus.
- Stanford Alpaca and most instruction-tuning recipes: 3 epochs over a few thousand to
  tens of thousands of short examples.
- rsLoRA (Kalajdzievski 2023) and peft's default: alpha = 2 x rank keeps the update's
  scale as the rank changes.
- On the SDEs and Scaling Rules for Adaptive Gradient Algorithms (Malladi et al. 2022,
  arXiv:2205.10287): for Adam, the learning rate scales with the square root of the batch
  size (§3, the square-root scaling rule). Each profile's rate is QLoRA's at its batch of
  16 sequences (appendix B.2); :func:`scaled_learning_rate` moves it to the run's
  effective batch, within 1/4x..4x of the reference (beyond that the rule is untested).
- Epochs follow the dataset's size (:func:`epochs_for_dataset`): under 2M tokens (a few
  thousand short rows) one more pass than the profile's, at most 4 (Muennighoff et al.
  2023, §4: up to 4 epochs of repeated data train about as well as unique data); from
  100M tokens one pass (repeats return less, and a corpus that large is the domain).

This module is pure data: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = [
    "LARGE_DATASET_TOKENS",
    "MAX_EPOCHS",
    "PROFILES",
    "REFERENCE_BATCH_SEQUENCES",
    "SMALL_DATASET_TOKENS",
    "Choice",
    "Profile",
    "epochs_for_dataset",
    "get_profile",
    "resolved_defaults",
    "scaled_learning_rate",
]

# QLoRA's batch for its 7B-13B learning rate (appendix B.2): every profile's rate is
# quoted at this many sequences per optimizer step.
REFERENCE_BATCH_SEQUENCES = 16
# The square-root rule moves the rate at most this far either way.
_LR_SCALE_LIMITS = (0.25, 4.0)
SMALL_DATASET_TOKENS = 2_000_000
LARGE_DATASET_TOKENS = 100_000_000
MAX_EPOCHS = 4

_ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class Choice:
    """One default and why."""

    value: Any
    reason: str


@dataclass(frozen=True)
class Profile:
    """The defaults of one use case (the field names are the TrainingJob's)."""

    name: str
    description: str
    lora_rank: Choice
    lora_alpha: Choice
    target_modules: Choice
    learning_rate: Choice
    epochs: Choice
    seq_len: Choice
    train_on_prompt: Choice
    pack: Choice

    def defaults(self) -> dict[str, Choice]:
        """Field name -> choice, in a fixed order."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if isinstance(value, Choice)}

    def to_json(self, defaults: dict[str, Choice] | None = None) -> dict[str, Any]:
        """Name, description and each default with its reason (``defaults``: resolved ones)."""
        chosen = defaults if defaults is not None else self.defaults()
        return {
            "name": self.name,
            "description": self.description,
            "defaults": {
                name: {"value": choice.value, "reason": choice.reason}
                for name, choice in chosen.items()
            },
        }


_ALL_LINEAR_REASON = "adapters on every linear layer match full fine-tuning (QLoRA §4)"
_COMPLETIONS = "the loss on the answers only: the prompts are given, not learned (QLoRA §5)"
_PACK = "packing fills every sequence: no compute spent on padding"

PROFILES: dict[str, Profile] = {
    "chatbot": Profile(
        name="chatbot",
        description="assistant conversations (chat, sharegpt or alpaca rows)",
        lora_rank=Choice(16, "instruction and dialogue style need little new capacity"),
        lora_alpha=Choice(32.0, "alpha = 2 x rank, peft's and rsLoRA's scale"),
        target_modules=Choice(_ALL_LINEAR, _ALL_LINEAR_REASON),
        learning_rate=Choice(2e-4, "QLoRA's rate for 7B-13B chat models (appendix B.2)"),
        epochs=Choice(3, "a few passes over thousands of short dialogues, as Alpaca"),
        seq_len=Choice(2048, "most conversations fit; longer ones are cut at a turn"),
        train_on_prompt=Choice(False, _COMPLETIONS),
        pack=Choice(True, _PACK),
    ),
    "code": Profile(
        name="code",
        description="code generation or completion from instructions",
        lora_rank=Choice(32, "code is further from chat than prose: more capacity (Biderman §4)"),
        lora_alpha=Choice(64.0, "alpha = 2 x rank"),
        target_modules=Choice(_ALL_LINEAR, _ALL_LINEAR_REASON),
        learning_rate=Choice(1e-4, "a lower rate at the higher rank keeps training stable"),
        epochs=Choice(2, "code datasets are larger and repeat idioms; two passes"),
        seq_len=Choice(4096, "whole functions and files with their context"),
        train_on_prompt=Choice(False, _COMPLETIONS),
        pack=Choice(True, _PACK),
    ),
    "summarization": Profile(
        name="summarization",
        description="long input, short output (reports, articles, meetings)",
        lora_rank=Choice(16, "the skill is extraction, not new knowledge"),
        lora_alpha=Choice(32.0, "alpha = 2 x rank"),
        target_modules=Choice(_ALL_LINEAR, _ALL_LINEAR_REASON),
        learning_rate=Choice(1e-4, "few target tokens per row: a gentler rate"),
        epochs=Choice(2, "long rows, fewer of them"),
        seq_len=Choice(4096, "the source document must fit before its summary"),
        train_on_prompt=Choice(False, "the loss on the summary only, never on the document"),
        pack=Choice(True, _PACK),
    ),
    "qa": Profile(
        name="qa",
        description="short questions and answers (support, FAQs, extraction)",
        lora_rank=Choice(16, "short answers in a known style need little capacity"),
        lora_alpha=Choice(32.0, "alpha = 2 x rank"),
        target_modules=Choice(_ALL_LINEAR, _ALL_LINEAR_REASON),
        learning_rate=Choice(2e-4, "QLoRA's rate for 7B-13B models"),
        epochs=Choice(3, "small datasets of short rows, as Alpaca"),
        seq_len=Choice(1024, "question and answer are short; shorter sequences train faster"),
        train_on_prompt=Choice(False, _COMPLETIONS),
        pack=Choice(True, _PACK),
    ),
    "creative-writing": Profile(
        name="creative-writing",
        description="stories, poems, a voice or a style",
        lora_rank=Choice(64, "a style touches many weights: a higher rank"),
        lora_alpha=Choice(128.0, "alpha = 2 x rank"),
        target_modules=Choice(_ALL_LINEAR, _ALL_LINEAR_REASON),
        learning_rate=Choice(1e-4, "a lower rate at the higher rank"),
        epochs=Choice(2, "more passes memorise passages instead of the style"),
        seq_len=Choice(4096, "long passages keep their arc"),
        train_on_prompt=Choice(False, _COMPLETIONS),
        pack=Choice(True, _PACK),
    ),
    "domain-adaptation": Profile(
        name="domain-adaptation",
        description="continued pre-training on raw text of a domain (law, medicine, a codebase)",
        lora_rank=Choice(64, "new knowledge needs high ranks (Biderman et al. 2024, §4)"),
        lora_alpha=Choice(128.0, "alpha = 2 x rank"),
        target_modules=Choice(_ALL_LINEAR, _ALL_LINEAR_REASON),
        learning_rate=Choice(1e-4, "continued pre-training with LoRA (Biderman §4: 1e-4..5e-4)"),
        epochs=Choice(1, "one pass: repeated epochs return less (Muennighoff et al. 2023)"),
        seq_len=Choice(4096, "long documents keep their context"),
        train_on_prompt=Choice(True, "raw text has no prompt: every token is the domain"),
        pack=Choice(True, _PACK),
    ),
}


def get_profile(name: str) -> Profile:
    """The profile of a use case; ValueError naming the accepted ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"profile {name!r} is not one of {', '.join(PROFILES)}") from None


def scaled_learning_rate(profile: Profile, effective_batch_sequences: int) -> Choice:
    """The profile's rate moved to ``effective_batch_sequences`` by the square-root rule.

    ``lr = lr_ref * sqrt(B / B_ref)`` with ``B_ref`` = :data:`REFERENCE_BATCH_SEQUENCES`
    (Malladi et al. 2022, §3), the factor held within 1/4x..4x; rounded to 3 digits.
    """
    if effective_batch_sequences <= 0:
        raise ValueError(f"effective batch must be positive, got {effective_batch_sequences}")
    base = float(profile.learning_rate.value)
    low, high = _LR_SCALE_LIMITS
    factor = min(high, max(low, math.sqrt(effective_batch_sequences / REFERENCE_BATCH_SEQUENCES)))
    rate = float(f"{base * factor:.3g}")
    if effective_batch_sequences == REFERENCE_BATCH_SEQUENCES:
        return replace(profile.learning_rate, value=rate)
    capped = " (held at the 4x/0.25x limit)" if factor in _LR_SCALE_LIMITS else ""
    reason = (
        f"{base:g} at {REFERENCE_BATCH_SEQUENCES} sequences per step ({profile.learning_rate.reason})"
        f" x sqrt({effective_batch_sequences}/{REFERENCE_BATCH_SEQUENCES}) for this run's batch: "
        f"the square-root rule for Adam (Malladi et al. 2022){capped}"
    )
    return Choice(rate, reason)


def epochs_for_dataset(profile: Profile, dataset_tokens: int | None) -> Choice:
    """The profile's epochs for a dataset of ``dataset_tokens`` (None: the profile's own)."""
    base = int(profile.epochs.value)
    if dataset_tokens is None:
        return profile.epochs
    size = (
        f"{dataset_tokens / 1e6:.3g}M tokens"
        if dataset_tokens >= 1e5
        else f"{dataset_tokens:,} tokens"
    )
    if dataset_tokens < SMALL_DATASET_TOKENS:
        epochs = min(MAX_EPOCHS, base + 1)
        return Choice(
            epochs,
            f"a small dataset ({size} < {SMALL_DATASET_TOKENS / 1e6:g}M): one pass more than "
            f"the profile's {base}, at most {MAX_EPOCHS} (Muennighoff et al. 2023: up to 4 "
            "epochs of repeated data train about as well as new data)",
        )
    if dataset_tokens >= LARGE_DATASET_TOKENS:
        return Choice(
            1,
            f"a large dataset ({size} >= {LARGE_DATASET_TOKENS / 1e6:g}M): one pass; repeats "
            "return less (Muennighoff et al. 2023)",
        )
    return profile.epochs


def resolved_defaults(
    profile: Profile,
    *,
    dataset_tokens: int | None = None,
    effective_batch_sequences: int | None = None,
) -> dict[str, Choice]:
    """The profile's defaults with epochs for the dataset's size and the rate for the batch."""
    defaults = profile.defaults()
    defaults["epochs"] = epochs_for_dataset(profile, dataset_tokens)
    if effective_batch_sequences is not None:
        defaults["learning_rate"] = scaled_learning_rate(profile, effective_batch_sequences)
    return defaults
