"""``spec.profile`` applied: the workload with its use case's defaults where the user set nothing.

The operator never writes ``spec``: the planner request and the trainer config are made
from :func:`with_profile`'s copy. A field counts as set when the manifest names it
(pydantic's ``model_fields_set``), so a user's value wins even when it equals the
schema default.

Two defaults depend on the run: epochs on ``spec.dataset.tokens`` (filled here) and the
learning rate on the plan's effective batch (:func:`learning_rate`, which the trainer
config uses once the plan is known); the rules are in ``trainwright.planner.profiles``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from trainwright.api.v1alpha1.trainingjob import LoraSpec, TrainingWorkload
from trainwright.planner.profiles import Profile, get_profile, resolved_defaults
from trainwright.vocabulary import ADAPTER_METHODS

__all__ = ["effective_batch_sequences", "learning_rate", "profile_of", "with_profile"]

W = TypeVar("W", bound=TrainingWorkload)

_TRAINING_FIELDS = ("learning_rate", "epochs", "seq_len")
_LORA_FIELDS = {"rank": "lora_rank", "alpha": "lora_alpha", "target_modules": "target_modules"}


def profile_of(workload: TrainingWorkload) -> Profile | None:
    """The workload's profile, or None."""
    return get_profile(workload.profile) if workload.profile is not None else None


def with_profile(workload: W) -> W:
    """A copy of ``workload`` with the profile's defaults in the fields left unset."""
    profile = profile_of(workload)
    if profile is None:
        return workload
    defaults = resolved_defaults(profile, dataset_tokens=workload.dataset.tokens)
    training = workload.training
    given = training.model_fields_set if "training" in workload.model_fields_set else set()
    updates: dict[str, Any] = {
        name: defaults[name].value for name in _TRAINING_FIELDS if name not in given
    }
    changes: dict[str, Any] = {"training": training.model_copy(update=updates)}
    if workload.method in (*ADAPTER_METHODS, "auto"):
        lora = workload.lora or LoraSpec()
        lora_given = lora.model_fields_set if workload.lora is not None else set()
        lora_updates = {
            field: _lora_value(defaults[name].value, field)
            for field, name in _LORA_FIELDS.items()
            if field not in lora_given
        }
        changes["lora"] = lora.model_copy(update=lora_updates)
    return workload.model_copy(update=changes)


def effective_batch_sequences(
    num_gpus: int, micro_batch_size: int, gradient_accumulation_steps: int
) -> int:
    """Sequences per optimizer step: every GPU is a data-parallel rank in the trainer."""
    return num_gpus * micro_batch_size * gradient_accumulation_steps


def learning_rate(workload: TrainingWorkload, effective_batch: int) -> float:
    """The rate to train with: the user's, else the profile's scaled to ``effective_batch``
    sequences per step (square-root rule), else the schema's default."""
    training = workload.training
    given = training.model_fields_set if "training" in workload.model_fields_set else set()
    profile = profile_of(workload)
    if "learning_rate" in given or profile is None:
        return training.learning_rate
    defaults = resolved_defaults(profile, effective_batch_sequences=effective_batch)
    return float(defaults["learning_rate"].value)


def _lora_value(value: Any, field: str) -> Any:
    # The CRD spells "every linear layer" as the list [all-linear].
    if field == "target_modules" and isinstance(value, str):
        return [value]
    return value
