"""What an export is asked to do: the exporter's config, shared with the operator.

This module imports only pydantic: the operator builds an :class:`ExportConfig`
for the export Job (as it builds the trainer's config), and must not import
torch. The command line (``python -m trainwright_trainer export``) and
``--config FILE`` both end up here, so the validation messages are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainwright.vocabulary import (
    ADAPTER_COMBINATIONS,
    DEFAULT_QUANTIZATION,
    EXPORT_FORMATS,
    GGUF_FORMATS,
    GGUF_QUANTIZATIONS,
    LLAMA_CPP_QUANTIZATIONS,
    WRITTEN_QUANTIZATIONS,
    AdapterCombination,
    ExportFormat,
    GgufQuantization,
)
from trainwright_trainer.errors import ConfigError

__all__ = [
    "COMBINATIONS",
    "DEFAULT_QUANTIZATION",
    "EXPORT_FORMATS",
    "GGUF_FORMATS",
    "LLAMA_CPP_QUANTIZATIONS",
    "MANIFEST_NAME",
    "QUANTIZATIONS",
    "TERMINATION_LOG_ENV",
    "WRITTEN_QUANTIZATIONS",
    "ExportConfig",
    "Lineage",
    "OllamaOptions",
    "WeightedSource",
    "load_export_config",
]

# The formats, GGUF types and combinations are the project's shared vocabulary.
QUANTIZATIONS = GGUF_QUANTIZATIONS
COMBINATIONS = ADAPTER_COMBINATIONS
MANIFEST_NAME = "manifest.json"
# Where the exporter writes its summary for the operator (a pod's terminationMessagePath).
TERMINATION_LOG_ENV = "TRAINWRIGHT_TERMINATION_LOG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class WeightedSource(_Section):
    """One adapter of several combined with peft's weighted methods."""

    path: str = Field(min_length=1, description="A PEFT adapter, trainer output or checkpoint.")
    weight: float = Field(default=1.0, description="Its weight in the combination.")


class OllamaOptions(_Section):
    model_name: str | None = Field(default=None, alias="modelName")
    system_prompt: str | None = Field(default=None, alias="systemPrompt")


class Lineage(_Section):
    """Where the model came from, as the operator knows it (goes to the model card)."""

    training_job: str | None = Field(default=None, alias="trainingJob")
    namespace: str | None = None
    attempt: int | None = None
    plan: dict[str, Any] | None = None
    checkpoint_step: int | None = Field(default=None, alias="checkpointStep")
    dataset_uri: str | None = Field(default=None, alias="datasetUri")
    base_model: str | None = Field(default=None, alias="baseModel")
    model_name: str | None = Field(default=None, alias="modelName")
    version: str | None = None


class ExportConfig(_Section):
    """The export to run; the field names are the ModelExport spec's (camelCase accepted)."""

    source: str | None = Field(default=None, description="Model, adapter, output or checkpoint.")
    sources: tuple[WeightedSource, ...] = Field(default=(), description="Adapters to combine.")
    combination: AdapterCombination = Field(
        default="linear", description="How several adapters mix."
    )
    density: float = Field(default=0.5, gt=0, le=1, description="ties/dare_ties: kept fraction.")
    base: str | None = Field(default=None, description="The base model directory.")
    trainer_config: str | None = Field(
        default=None,
        alias="trainerConfig",
        description="The trainer's config file (method, LoRA settings) for a checkpoint source.",
    )
    train_log: str | None = Field(
        default=None,
        alias="trainLog",
        description=(
            "The run's train_log.jsonl (in its checkpoint directory): the model card's final "
            "train and eval loss when the source is an output saved elsewhere."
        ),
    )
    formats: tuple[ExportFormat, ...] = Field(default=("safetensors",), min_length=1)
    quantization: GgufQuantization = Field(default=DEFAULT_QUANTIZATION)
    output: str = Field(min_length=1, description="Export directory; must hold no export yet.")
    ollama: OllamaOptions = Field(default_factory=OllamaOptions)
    lineage: Lineage = Field(default_factory=Lineage)
    max_shard_bytes: int = Field(default=2 * 1024**3, gt=0, alias="maxShardBytes")
    verify: bool = Field(default=True, description="Check logits and GGUF weights after writing.")

    @model_validator(mode="after")
    def _one_source(self) -> ExportConfig:
        if (self.source is None) == (not self.sources):
            raise ValueError("set exactly one of source or sources")
        if len(self.sources) == 1:
            raise ValueError("sources combines two or more adapters; use source for one")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats must not repeat a format")
        return self


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "config"


def parse_export_config(data: dict[str, Any], *, origin: str) -> ExportConfig:
    """Validate a dict into an :class:`ExportConfig`; one sentence naming the field if not."""
    try:
        return ExportConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{origin}: {_field_path(first['loc'])}: {first['msg']}") from None


def load_export_config(path: str | Path) -> ExportConfig:
    """Read ``--config FILE`` (YAML or JSON, the ModelExport spec's field names)."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {file} is not YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {file} must hold a mapping of the export's fields")
    return parse_export_config(data, origin=f"--config {file}")
