"""ModelExport: turn a trained model or adapter into files a server loads.

Formats: ``safetensors`` (merged Hugging Face weights), ``adapter`` (the PEFT
adapter alone), ``gguf`` (llama.cpp, quantized with ``spec.quantization``) and
``ollama`` (a GGUF plus a Modelfile). Exports naming the same ``spec.modelName``
get increasing versions (``status.version``), or the one ``spec.version`` sets.
The vocabularies are the project's (:mod:`trainwright.vocabulary`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from trainwright.api.v1alpha1.common import (
    LIST_MAX_ITEMS,
    NAME_MAX_LENGTH,
    URI_MAX_LENGTH,
    ApiModel,
    Condition,
    CustomResource,
    conditions_field,
    k8s,
    rule,
)
from trainwright.api.v1alpha1.trainingjob import (
    MODEL_NAME_PATTERN,
    ModelRef,
    OutputSpec,
    Toleration,
)
from trainwright.vocabulary import (
    DEFAULT_QUANTIZATION,
    GGUF_FORMATS,
    AdapterCombination,
    ExportFormat,
    GgufQuantization,
)

ExportPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
SEMVER_PATTERN = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"


class ExportSource(ApiModel):
    """Exactly one source: a finished TrainingJob in this namespace, or a model/adapter URI."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "has(self.trainingJob) != has(self.uri)",
                        "source: set exactly one of trainingJob or uri",
                    )
                ]
            }
        )
    )

    training_job: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        description="Name of a TrainingJob in this namespace; its spec.output is exported.",
    )
    uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description="A model or adapter directory (pvc://claim/path, s3://...).",
    )
    weight: float | None = Field(
        default=None, description="Weight of this adapter when several are combined."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ExportSource:
        if (self.training_job is None) == (self.uri is None):
            raise ValueError("set exactly one of trainingJob or uri")
        return self


class OllamaSpec(ApiModel):
    """Options for the ollama format."""

    model_name: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=r"^[a-z0-9][a-z0-9._:/-]*$",
        description="Name in `ollama create NAME` (e.g. llama8b-support:latest).",
    )
    system_prompt: str | None = Field(
        default=None, max_length=16384, description="SYSTEM line of the Modelfile."
    )


class ModelExportSpec(ApiModel):
    """What to export and where."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "!has(self.quantization) || self.formats.exists(f, f in ['gguf', 'ollama'])",
                        "quantization needs format gguf or ollama",
                        field_path=".quantization",
                    ),
                    rule(
                        "!has(self.ollama) || 'ollama' in self.formats",
                        "ollama options need format ollama",
                        field_path=".ollama",
                    ),
                ]
            }
        )
    )

    source: ExportSource = Field(description="The trained model or adapter.")
    additional_sources: list[ExportSource] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "More adapters on the same base, combined with source by spec.combination "
            "(each with a weight)."
        ),
    )
    combination: AdapterCombination = Field(
        default="linear",
        description="How several adapters combine (peft add_weighted_adapter): linear, ties, "
        "dare_ties, svd.",
    )
    model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=MODEL_NAME_PATTERN,
        description="Registry name; exports of one name get increasing versions. Unset: the "
        "source TrainingJob's name, else this object's name.",
    )
    version: str | None = Field(
        default=None,
        max_length=64,
        pattern=SEMVER_PATTERN,
        description="Semantic version (MAJOR.MINOR.PATCH); unset: the next minor of modelName. "
        "A version another export of the same name holds is refused.",
    )
    base_model: ModelRef | None = Field(
        default=None,
        description=(
            "Base model an adapter is merged into; unset: the TrainingJob's model "
            "(required for an adapter given by uri)."
        ),
    )
    formats: list[ExportFormat] = Field(
        default_factory=lambda: list[ExportFormat](["safetensors"]),
        min_length=1,
        max_length=4,
        description="Files to produce: safetensors, adapter, gguf, ollama.",
        json_schema_extra=k8s(default=["safetensors"], **{"x-kubernetes-list-type": "set"}),
    )
    quantization: GgufQuantization | None = Field(
        default=None,
        description=f"GGUF quantization (gguf/ollama only); unset: {DEFAULT_QUANTIZATION}. "
        "K-quants need llama.cpp's quantizer in the image.",
    )
    merge_adapter: bool = Field(
        default=True, description="Merge an adapter into the base weights before converting."
    )
    ollama: OllamaSpec | None = Field(default=None, description="Options for format ollama.")
    output: OutputSpec = Field(description="Where the exported files go.")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description=(
            "Image that runs the export; unset: the operator's --trainer-image (the trainer "
            "image, which has gguf)."
        ),
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description="Tolerations for the export pod (it needs no GPU: CPU nodes will do).",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the export pod requires (e.g. where the volumes are).",
        json_schema_extra=k8s(maxProperties=LIST_MAX_ITEMS),
    )

    @model_validator(mode="after")
    def _coherent(self) -> ModelExportSpec:
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats must not repeat a format")
        if self.quantization is not None and not any(f in GGUF_FORMATS for f in self.formats):
            raise ValueError("quantization needs format gguf or ollama")
        if self.ollama is not None and "ollama" not in self.formats:
            raise ValueError("ollama options need format ollama")
        return self


class LineageStatus(ApiModel):
    """Where the exported model came from."""

    training_job: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="TrainingJob."
    )
    attempt: int | None = Field(
        default=None, ge=0, description="Its attempt that trained the model."
    )
    gpu_type: str | None = Field(default=None, max_length=64, description="Plan: GPU type.")
    num_gpus: int | None = Field(default=None, ge=0, description="Plan: total GPUs.")
    strategy: str | None = Field(default=None, max_length=32, description="Plan: strategy.")
    checkpoint_step: int | None = Field(
        default=None, ge=0, description="Optimizer step of the exported weights."
    )
    dataset_uri: str | None = Field(
        default=None, max_length=URI_MAX_LENGTH, description="The training data."
    )
    base_model: str | None = Field(
        default=None, max_length=URI_MAX_LENGTH, description="The base model."
    )
    source_uri: str | None = Field(
        default=None, max_length=URI_MAX_LENGTH, description="What was exported."
    )


class Artifact(ApiModel):
    """One exported file set."""

    format: ExportFormat = Field(description="Which format.")
    uri: str = Field(max_length=URI_MAX_LENGTH, description="Where it was written.")
    size_bytes: int | None = Field(default=None, ge=0, description="Total size, bytes.")
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the main file."
    )
    path: str | None = Field(
        default=None, max_length=URI_MAX_LENGTH, description="The main file, under uri."
    )


class ModelExportStatus(ApiModel):
    """What the export produced."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    phase: ExportPhase = Field(
        default="Pending", description="Pending, Running, Succeeded or Failed."
    )
    conditions: list[Condition] = conditions_field()
    job: str | None = Field(default=None, max_length=63, description="The export Job's name.")
    artifacts: list[Artifact] = Field(
        default_factory=list, max_length=4, description="Files produced, one per format."
    )
    version: str | None = Field(
        default=None, max_length=64, description="This export's version of spec.modelName."
    )
    model_name: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="The registry name versioned."
    )
    lineage: LineageStatus | None = Field(default=None, description="Where the model came from.")
    size_bytes: int | None = Field(default=None, ge=0, description="All artifacts, bytes.")
    verified: bool | None = Field(
        default=None, description="Logits and GGUF checks passed (manifest.json has details)."
    )
    start_time: dt.datetime | None = Field(default=None, description="When the export started.")
    completion_time: dt.datetime | None = Field(default=None, description="When it finished.")
    message: str | None = Field(
        default=None, max_length=4096, description="The latest outcome, in a sentence."
    )


class ModelExport(CustomResource):
    """A model export (trainwright.io/v1alpha1, kind ModelExport, short name mexport)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["trainwright.io/v1alpha1"] = Field(
        default="trainwright.io/v1alpha1", description="trainwright.io/v1alpha1."
    )
    kind: Literal["ModelExport"] = Field(default="ModelExport", description="ModelExport.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelExportSpec = Field(description="What to export, written by the user.")
    status: ModelExportStatus = Field(
        default_factory=ModelExportStatus, description="What happened, written by the operator."
    )
