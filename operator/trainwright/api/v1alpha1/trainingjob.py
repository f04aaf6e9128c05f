"""TrainingJob: fine-tune a model on a dataset with the GPUs the planner picks.

A user writes ``spec``; the operator plans (``status.plan``), creates a trainer
ConfigMap, a headless Service and one indexed Job per attempt, and reports
``status.progress``. The operator never writes ``spec``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from trainwright import __version__ as package_version
from trainwright import vocabulary
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
from trainwright.api.v1alpha1.security import ContainerSecurityOverrides, PodSecurityOverrides
from trainwright.api.v1alpha1.usage import CarbonSpec, PlanCarbon, UsageStatus
from trainwright.vocabulary import (
    ADAPTER_METHODS,
    Cloud,
    ExportFormat,
    GgufQuantization,
    Method,
    MethodChoice,
    Optimizer,
    StrategyChoice,
    TrainingPrecision,
    UseCase,
)

# The shared words (methods, strategies, precisions, optimizers, clouds) live in
# trainwright.vocabulary; these aliases keep the CRD's names for them.
Strategy = StrategyChoice
PlannedStrategy = vocabulary.Strategy
Precision = TrainingPrecision
GradientCheckpointing = Literal["auto", "on", "off"]
DatasetFormat = Literal["auto", "alpaca", "sharegpt", "chat", "prompt_completion", "text"]
TrainingPhase = Literal[
    "Pending", "Planned", "Queued", "Running", "Succeeded", "Failed", "Suspended"
]
# A Kubernetes object name of one DNS label (a LocalQueue, a WorkloadPriorityClass).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_MAX_LENGTH = 63

# A GPU catalog key (H100-SXM, A100-80GB-SXM, L4, ...) or "auto". The catalog lives
# in the planner and grows; the operator reports an unknown key as a condition.
GPU_TYPE_PATTERN = r"^(auto|[A-Za-z0-9][A-Za-z0-9._-]*)$"
# What `trainwright operator` runs when neither spec.image nor --trainer-image says:
# the name the project's image build and the Helm chart give the trainer image.
DEFAULT_TRAINER_IMAGE = f"trainwright/trainer:{package_version}"
# A ModelExport registry name (spec.modelName, spec.export.modelName).
MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"


class ModelRef(ApiModel):
    """Which model: a catalog key / Hugging Face id, or a config.json path; weights optional."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "has(self.name) != has(self.configPath)",
                        "model: set exactly one of name or configPath",
                    )
                ]
            }
        )
    )

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        description=(
            "Catalog key (llama-3.1-8b, qwen2.5-7b, ...) or a Hugging Face id the catalog "
            "knows as an alias (meta-llama/Llama-3.1-8B)."
        ),
    )
    config_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description="Path or URI of a Hugging Face config.json describing the architecture.",
    )
    uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description=(
            "Where the weights are (pvc://claim/path, s3://..., hf://org/name); "
            "default: the Hugging Face id of the catalog entry."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelRef:
        if (self.name is None) == (self.config_path is None):
            raise ValueError("set exactly one of name or configPath")
        return self


class DatasetSpec(ApiModel):
    """The training data."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "!(has(self.evalFraction) && has(self.evalUri))",
                        "dataset: set at most one of evalFraction or evalUri",
                    )
                ]
            }
        )
    )

    uri: str = Field(
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description="Where the data is: pvc://claim/path.jsonl (mounted read-only), s3://, hf://.",
    )
    format: DatasetFormat = Field(
        default="auto",
        description=(
            "Record layout: alpaca (instruction/input/output), sharegpt or chat (conversations), "
            "prompt_completion, text; auto detects it from the first rows."
        ),
    )
    tokens: int | None = Field(
        default=None,
        gt=0,
        description="Tokens in one epoch; sizes the run's duration and cost. Unknown: no ETA.",
    )
    eval_fraction: float | None = Field(
        default=None,
        gt=0,
        le=0.5,
        description=(
            "Share of the packed training sequences held out for evaluation, chosen by "
            "training.seed (the same split on every rank and after a restart)."
        ),
    )
    eval_uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description="A separate evaluation file (same format), instead of evalFraction.",
    )

    @model_validator(mode="after")
    def _one_eval_source(self) -> DatasetSpec:
        if self.eval_fraction is not None and self.eval_uri is not None:
            raise ValueError("set at most one of evalFraction or evalUri")
        return self


class TrainingSpec(ApiModel):
    """Hyperparameters. Unset ones are chosen by the planner (micro batch, checkpointing)."""

    epochs: int = Field(default=1, gt=0, le=1000, description="Passes over the dataset.")
    max_steps: int | None = Field(
        default=None, gt=0, description="Stop after this many optimizer steps (overrides epochs)."
    )
    seq_len: int = Field(
        default=2048, gt=0, le=1048576, description="Tokens per training sequence."
    )
    learning_rate: float = Field(
        default=2.0e-4, gt=0, le=1, description="Peak learning rate of the cosine schedule."
    )
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="AdamW weight decay.")
    global_batch_size: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Sequences per optimizer step across all GPUs; the planner derives gradient "
            "accumulation from it. Unset: micro batch x GPUs."
        ),
    )
    micro_batch_size: int | None = Field(
        default=None,
        gt=0,
        description="Sequences per GPU per forward pass; unset: the largest that fits.",
    )
    gradient_checkpointing: GradientCheckpointing = Field(
        default="auto", description="Recompute activations: auto (when needed), on or off."
    )
    precision: Precision = Field(default="bf16", description="Compute precision.")
    optimizer: Optimizer = Field(default="adamw", description="Optimizer.")
    seed: int = Field(default=0, ge=0, description="Random seed (data order, adapter init).")


class LoraSpec(ApiModel):
    """Adapter options for method lora, qlora or dora."""

    rank: int = Field(default=16, gt=0, le=4096, description="Adapter rank r.")
    alpha: float = Field(default=32.0, gt=0, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        max_length=LIST_MAX_ITEMS,
        description=(
            "Module names that get adapters (q_proj, v_proj, ...), or [all-linear] for every "
            "linear layer but the output head (the QLoRA paper's choice)."
        ),
        json_schema_extra=k8s(default=["all-linear"]),
    )


class EvaluationSpec(ApiModel):
    """Evaluation on the held-out data (dataset.evalFraction or dataset.evalUri)."""

    interval_steps: int | None = Field(
        default=None, gt=0, description="Evaluate every this many steps; unset: at checkpoints."
    )
    early_stopping_patience: int | None = Field(
        default=None,
        gt=0,
        le=1000,
        description=(
            "Stop after this many evaluations without an improvement of the eval loss; the "
            "best checkpoint becomes the output. Unset: train to the end."
        ),
    )
    early_stopping_min_delta: float = Field(
        default=0.0, ge=0, description="Eval-loss decrease that counts as an improvement."
    )
    overfitting_evaluations: int = Field(
        default=3,
        gt=0,
        le=100,
        description=(
            "Evaluations in a row with falling train loss and rising eval loss that set the "
            "Overfitting condition."
        ),
    )
    sample_prompts: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Prompts answered at each evaluation (samples.jsonl beside the checkpoints); "
            "unset: the first held-out examples."
        ),
    )


class ResourcesSpec(ApiModel):
    """GPUs: a fixed layout, or limits for the planner to search within."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "!has(self.gpusPerNode) || self.gpuType != 'auto'",
                        "resources.gpusPerNode needs a concrete resources.gpuType, not auto",
                    ),
                    rule(
                        "!has(self.gpus) || !has(self.maxGpus) || self.gpus <= self.maxGpus",
                        "resources.gpus must not exceed resources.maxGpus",
                    ),
                    rule(
                        "!has(self.gpus) || !has(self.nodes) || !has(self.gpusPerNode)"
                        " || self.gpus == self.nodes * self.gpusPerNode",
                        "resources.gpus must equal resources.nodes x resources.gpusPerNode",
                    ),
                ]
            }
        )
    )

    gpu_type: str = Field(
        default="auto",
        max_length=64,
        pattern=GPU_TYPE_PATTERN,
        description="GPU catalog key (H100-SXM, A100-80GB-SXM, L4, ...) or auto to let the planner choose.",
    )
    gpus: int | None = Field(default=None, gt=0, le=4096, description="Total GPUs; unset: planned.")
    nodes: int | None = Field(default=None, gt=0, le=512, description="Nodes; unset: planned.")
    gpus_per_node: int | None = Field(
        default=None, gt=0, le=16, description="GPUs per node; unset: as many as the node has."
    )
    max_gpus: int | None = Field(
        default=None, gt=0, le=4096, description="Upper bound for the planner's search."
    )

    @model_validator(mode="after")
    def _coherent(self) -> ResourcesSpec:
        if self.gpus_per_node is not None and self.gpu_type == "auto":
            raise ValueError("gpusPerNode needs a concrete gpuType, not auto")
        if self.gpus is not None and self.max_gpus is not None and self.gpus > self.max_gpus:
            raise ValueError("gpus must not exceed maxGpus")
        if (
            self.gpus is not None
            and self.nodes is not None
            and self.gpus_per_node is not None
            and self.gpus != self.nodes * self.gpus_per_node
        ):
            raise ValueError("gpus must equal nodes x gpusPerNode")
        return self


class BudgetSpec(ApiModel):
    """Limits the planner honours: it picks the cheapest plan within them."""

    max_cost_usd: float | None = Field(
        default=None, gt=0, description="Most the whole run may cost, in US dollars."
    )
    deadline_seconds: int | None = Field(
        default=None, gt=0, description="The run must finish within this many seconds."
    )


class CheckpointSpec(ApiModel):
    """Where checkpoints go; a restart resumes from the newest complete one."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "!(has(self.uri) && has(self.pvc))",
                        "checkpoint: set at most one of uri or pvc",
                    )
                ]
            }
        )
    )

    uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description="Object-store prefix (s3://bucket/path) for sharded checkpoints.",
    )
    pvc: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        description="PersistentVolumeClaim (ReadWriteMany for several nodes) mounted at /checkpoints.",
    )
    interval_steps: Annotated[
        int | Literal["auto"],
        WithJsonSchema(
            {
                "x-kubernetes-int-or-string": True,
                "description": (
                    "Save every this many steps, or auto: Young/Daly, sqrt(2 x save seconds "
                    "x MTBF) from the measured save and step time and the failures seen, "
                    "recomputed for each attempt (status.plan.checkpointInterval)."
                ),
                "default": 500,
            }
        ),
    ] = Field(default=500, description="Save every this many steps, or auto (Young/Daly).")
    keep: int = Field(default=2, gt=0, le=100, description="Complete checkpoints to keep.")

    @field_validator("interval_steps")
    @classmethod
    def _positive_or_auto(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive number of steps or auto")
        return value

    @model_validator(mode="after")
    def _one_place(self) -> CheckpointSpec:
        if self.uri is not None and self.pvc is not None:
            raise ValueError("set at most one of uri or pvc")
        return self


class OutputSpec(ApiModel):
    """Where the trained model (adapter or full weights) is written."""

    uri: str = Field(
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description="Destination: pvc://claim/path or an object-store prefix (s3://...).",
    )


class ExportRequest(ApiModel):
    """A ModelExport to create when the job succeeds (named ``<job>-export``, owned by the job)."""

    model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=MODEL_NAME_PATTERN,
        description="Registry name the export is versioned under; unset: the job's name.",
    )
    formats: list[ExportFormat] = Field(
        default_factory=lambda: list[ExportFormat](["safetensors"]),
        min_length=1,
        max_length=4,
        description="Files to produce: safetensors, adapter, gguf, ollama.",
        json_schema_extra=k8s(default=["safetensors"], **{"x-kubernetes-list-type": "set"}),
    )
    quantization: GgufQuantization | None = Field(
        default=None, description="GGUF quantization (gguf/ollama only)."
    )
    system_prompt: str | None = Field(
        default=None, max_length=16384, description="SYSTEM line of the Ollama Modelfile."
    )
    output: OutputSpec = Field(description="Where the exported files go.")


class Toleration(ApiModel):
    """A core/v1 toleration copied to the trainer pods."""

    key: str | None = Field(default=None, max_length=NAME_MAX_LENGTH, description="Taint key.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Effect to tolerate; unset: all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )


_LORA_RULE = rule(
    "!has(self.lora) || self.method in ['auto', 'lora', 'qlora', 'dora']",
    "lora is only allowed with method auto, lora, qlora or dora",
    field_path=".lora",
)
_METHOD_IMMUTABLE_RULE = rule(
    "self.method == oldSelf.method", "method is immutable", field_path=".method"
)
_PRIORITY_NEEDS_QUEUE_RULE = rule(
    "!has(self.priorityClass) || has(self.queue)",
    "priorityClass is only allowed with queue (it names a Kueue WorkloadPriorityClass)",
    field_path=".priorityClass",
)


class TrainingWorkload(ApiModel):
    """What to train and how: the part a CapacityPlan can size without running it."""

    model_config = ConfigDict(json_schema_extra=k8s(**{"x-kubernetes-validations": [_LORA_RULE]}))

    model: ModelRef = Field(description="The base model.")
    method: MethodChoice = Field(
        description=(
            "full fine-tuning, or lora / qlora (4-bit base) / dora adapters; auto: lora when "
            "16-bit LoRA fits the GPUs the plan can get, else qlora (status.plan.method)."
        ),
    )
    lora: LoraSpec | None = Field(
        default=None, description="Adapter options (only with method auto, lora, qlora or dora)."
    )
    dataset: DatasetSpec = Field(description="The training data.")
    training: TrainingSpec = Field(
        default_factory=TrainingSpec,
        description="Hyperparameters.",
        json_schema_extra=k8s(default={}),
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec,
        description="GPU type and count, or limits for the planner.",
        json_schema_extra=k8s(default={}),
    )
    strategy: Strategy = Field(
        default="auto", description="Parallelism: auto (planner), ddp, fsdp, zero1, zero2, zero3."
    )
    budget: BudgetSpec | None = Field(default=None, description="Cost and deadline limits.")
    cloud: Cloud = Field(default="aws", description="Price list used for cost estimates.")
    profile: UseCase | None = Field(
        default=None,
        description=(
            "Use case whose defaults fill the unset fields (LoRA rank, alpha and targets, "
            "learning rate, epochs, sequence length, loss on completions or all text, "
            "packing): chatbot, code, summarization, qa, creative-writing, "
            "domain-adaptation. Fields you set win. Reasons: docs/profiles.md."
        ),
    )

    @model_validator(mode="after")
    def _lora_only_with_adapters(self) -> TrainingWorkload:
        if self.lora is not None and self.method not in (*ADAPTER_METHODS, "auto"):
            raise ValueError(
                f"lora is only allowed with method auto, lora, qlora or dora, not {self.method}"
            )
        return self


class TrainingJobSpec(TrainingWorkload):
    """A TrainingJob's desired state."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    _LORA_RULE,
                    _METHOD_IMMUTABLE_RULE,
                    _PRIORITY_NEEDS_QUEUE_RULE,
                ]
            }
        )
    )

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description=(
            "Trainer container image (runs python -m trainwright_trainer); unset: the "
            "operator's --trainer-image (the Helm chart's trainer.image)."
        ),
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Pull policy for the trainer image."
    )
    checkpoint: CheckpointSpec | None = Field(
        default=None, description="Checkpoint location; unset: pod-local (lost on restart)."
    )
    output: OutputSpec | None = Field(default=None, description="Where the trained model goes.")
    export: ExportRequest | None = Field(
        default=None,
        description="Export the trained model when the job succeeds (a ModelExport <name>-export).",
    )
    carbon: CarbonSpec | None = Field(
        default=None,
        description="Grid region, intensity or PUE for status.usage's energy and CO2e.",
    )
    evaluation: EvaluationSpec | None = Field(
        default=None,
        description="Evaluation, early stopping and sample generations on the held-out data.",
    )
    suspend: bool = Field(
        default=False, description="Stop the trainer pods (a checkpoint is kept) until false."
    )
    max_restarts: int = Field(
        default=3, ge=0, le=100, description="Whole-gang restarts after retryable failures."
    )
    queue: str | None = Field(
        default=None,
        max_length=DNS_LABEL_MAX_LENGTH,
        pattern=DNS_LABEL_PATTERN,
        description=(
            "A Kueue LocalQueue in the job's namespace: Kueue admits the whole gang or none of "
            "it, under the queue's quota. Unset: the operator starts the gang only when all "
            "its pods fit on free GPUs of the planned type (docs/queues.md)."
        ),
    )
    priority_class: str | None = Field(
        default=None,
        max_length=DNS_LABEL_MAX_LENGTH,
        pattern=DNS_LABEL_PATTERN,
        description=(
            "A Kueue WorkloadPriorityClass (with queue only): orders the queue, and a higher "
            "priority may preempt a lower one, which resumes from its checkpoint later."
        ),
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description=(
            "Extra tolerations for the trainer pods (nvidia.com/gpu is always tolerated); "
            "the demo adds kwok.x-k8s.io/node=fake:NoSchedule."
        ),
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Extra node labels the trainer pods require (the GPU product is added).",
        json_schema_extra=k8s(maxProperties=LIST_MAX_ITEMS),
    )
    service_account_name: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="ServiceAccount of trainer pods."
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations added to the trainer pods (sidecar or test-harness settings).",
        json_schema_extra=k8s(maxProperties=LIST_MAX_ITEMS),
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels added to the trainer pods (the operator's own labels win).",
        json_schema_extra=k8s(maxProperties=LIST_MAX_ITEMS),
    )
    pod_security_context: PodSecurityOverrides | None = Field(
        default=None,
        description=(
            "Replaces fields of the trainer pods' securityContext (default: Pod Security "
            "restricted, UID 1000, GID 0)."
        ),
    )
    security_context: ContainerSecurityOverrides | None = Field(
        default=None,
        description=(
            "Replaces fields of the trainer container's securityContext (default: non-root, "
            "no privilege escalation, drop ALL, seccomp RuntimeDefault)."
        ),
    )

    @model_validator(mode="after")
    def _priority_only_with_a_queue(self) -> TrainingJobSpec:
        if self.priority_class is not None and self.queue is None:
            raise ValueError(
                "priorityClass is only allowed with queue (it names a Kueue WorkloadPriorityClass)"
            )
        return self


class PlanAlternative(ApiModel):
    """A ranked alternative the planner considered."""

    gpu_type: str = Field(max_length=64, description="GPU catalog key.")
    num_gpus: int = Field(gt=0, description="Total GPUs.")
    strategy: str = Field(max_length=32, description="Parallelism strategy.")
    estimated_duration_seconds: float | None = Field(
        default=None, ge=0, description="Estimated wall time in seconds."
    )
    estimated_cost_usd: float | None = Field(
        default=None, ge=0, description="Estimated cost in US dollars."
    )


class PlanCalibration(ApiModel):
    """Observed runs of this plan's shape (GPU, method, strategy, size class) and their pull."""

    applied: bool = Field(description="Whether the factors changed this plan.")
    observations: int = Field(ge=0, description="Observations of this plan's shape.")
    throughput_factor: float = Field(gt=0, description="Planned tokens/s were multiplied by it.")
    memory_factor: float = Field(gt=0, description="Planned memory per GPU was multiplied by it.")
    roofline_capped: bool = Field(
        default=False, description="The factor was lowered to stay under the GPU's peak."
    )
    source: str | None = Field(default=None, max_length=253, description="Where they were read.")


class CheckpointIntervalStatus(ApiModel):
    """The interval ``checkpoint.intervalSteps: auto`` chose for this attempt, and from what."""

    steps: int = Field(gt=0, description="The trainer saves every this many steps.")
    save_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Measured seconds of one checkpoint save; absent until measured.",
    )
    step_seconds: float | None = Field(
        default=None, ge=0, description="Measured seconds per optimizer step."
    )
    mtbf_seconds: float | None = Field(
        default=None, ge=0, description="The job's mean time between failures, seconds."
    )
    failures_observed: int | None = Field(
        default=None,
        ge=0,
        description="Node failures the operator observed in the cluster behind the MTBF.",
    )
    observed_gpu_hours: float | None = Field(
        default=None, ge=0, description="GPU-hours of GPU nodes observed behind the MTBF."
    )
    message: str = Field(max_length=1024, description="How the interval was chosen.")


class PlanStatus(ApiModel):
    """The layout the operator runs: what the planner chose, as numbers a person can check."""

    gpu_type: str = Field(max_length=64, description="GPU catalog key.")
    method: Method | None = Field(
        default=None,
        description="The method trained: spec.method, or what method auto resolved to.",
    )
    method_reason: str | None = Field(
        default=None, max_length=512, description="Why method auto chose it (absent otherwise)."
    )
    epochs: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Passes over the dataset the plan is for and the trainer runs: "
            "spec.training.epochs, or the profile's for the dataset's size."
        ),
    )
    gpu_product: str | None = Field(
        default=None,
        max_length=63,
        description="nvidia.com/gpu.product node label the pods select (e.g. NVIDIA-H100-80GB-HBM3).",
    )
    num_gpus: int = Field(gt=0, description="Total GPUs (nodes x gpusPerNode).")
    nodes: int = Field(gt=0, description="Nodes, one trainer pod each.")
    gpus_per_node: int = Field(gt=0, description="GPUs each pod requests.")
    strategy: PlannedStrategy = Field(description="Parallelism strategy.")
    micro_batch_size: int = Field(gt=0, description="Sequences per GPU per forward pass.")
    gradient_accumulation_steps: int = Field(gt=0, description="Micro batches per optimizer step.")
    gradient_checkpointing: bool = Field(
        default=False, description="Whether activations are recomputed."
    )
    memory_per_gpu_bytes: int = Field(ge=0, description="Estimated peak memory per GPU, bytes.")
    memory_capacity_bytes: int | None = Field(
        default=None, ge=0, description="Memory of one GPU, bytes."
    )
    tokens_per_second: float = Field(ge=0, description="Estimated training throughput, tokens/s.")
    estimated_duration_seconds: float | None = Field(
        default=None, ge=0, description="Estimated wall time in seconds (needs dataset.tokens)."
    )
    estimated_cost_usd: float | None = Field(
        default=None, ge=0, description="Estimated cost of the run in US dollars."
    )
    usd_per_hour: float | None = Field(
        default=None, ge=0, description="Price of all the plan's GPUs per hour, US dollars."
    )
    estimated_finish_time: dt.datetime | None = Field(
        default=None, description="When the run should finish if it started now (RFC 3339)."
    )
    recommendations: list[PlanAlternative] = Field(
        default_factory=list,
        max_length=10,
        description="Next-best plans, best first.",
    )
    warnings: list[str] = Field(
        default_factory=list, max_length=LIST_MAX_ITEMS, description="Planner warnings."
    )
    calibration: PlanCalibration | None = Field(
        default=None,
        description="What the cluster's calibration store did to this plan (absent when off).",
    )
    carbon: PlanCarbon | None = Field(
        default=None, description="The whole run's energy and emissions, as planned."
    )
    checkpoint_interval: CheckpointIntervalStatus | None = Field(
        default=None,
        description="checkpoint.intervalSteps: auto: the interval this attempt uses and why.",
    )

    @field_validator("estimated_finish_time")
    @classmethod
    def _whole_seconds(cls, value: dt.datetime | None) -> dt.datetime | None:
        # The ETA printer column shows the timestamp as written; microseconds are noise.
        return value.replace(microsecond=0) if value is not None else None


class ProgressStatus(ApiModel):
    """What the trainer last reported."""

    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, ge=0, description="Epochs done (fractional).")
    loss: float | None = Field(default=None, description="Latest training loss.")
    tokens_per_second: float | None = Field(
        default=None, ge=0, description="Measured throughput, tokens/s."
    )
    eta_seconds: float | None = Field(default=None, ge=0, description="Seconds left at this rate.")
    checkpoint_save_seconds: float | None = Field(
        default=None, ge=0, description="Seconds the last checkpoint took to save."
    )
    step_seconds: float | None = Field(
        default=None, ge=0, description="Seconds the last optimizer step took."
    )
    last_checkpoint_step: int | None = Field(
        default=None, ge=0, description="Step of the newest complete checkpoint."
    )
    eval_loss: float | None = Field(
        default=None, description="Loss on the held-out data at the latest evaluation."
    )
    eval_perplexity: float | None = Field(
        default=None, ge=0, description="exp(evalLoss): perplexity on the held-out data."
    )
    eval_step: int | None = Field(default=None, ge=0, description="Step of that evaluation.")
    best_step: int | None = Field(
        default=None, ge=0, description="Step of the best checkpoint by eval loss (best.json)."
    )
    best_eval_loss: float | None = Field(default=None, description="Its eval loss.")
    overfitting: bool | None = Field(
        default=None, description="Train loss falling while eval loss rises (see conditions)."
    )
    early_stopped: bool | None = Field(
        default=None, description="The run stopped early: the eval loss stopped improving."
    )
    peak_memory_bytes: int | None = Field(
        default=None, ge=0, description="Rank 0's peak GPU memory (torch), bytes; none on CPU."
    )
    gpu_utilization: float | None = Field(
        default=None, ge=0, le=1, description="Rank 0's GPU utilisation (NVML, 0..1)."
    )
    mfu: float | None = Field(
        default=None, ge=0, description="Model FLOPs utilisation of the last step (GPUs only)."
    )
    gpu_energy_joules: float | None = Field(
        default=None,
        ge=0,
        description="Energy all ranks' GPUs drew in this attempt (NVML; none unless all measure).",
    )
    updated_time: dt.datetime | None = Field(default=None, description="When this was reported.")


class ThroughputSample(ApiModel):
    """One reading of the trainer's tokens/s, kept for ThroughputBelowPlan and calibration."""

    time: dt.datetime = Field(description="When the operator read it.")
    tokens_per_second: float = Field(ge=0, description="Trained tokens per second, all ranks.")


class ChildrenStatus(ApiModel):
    """Names of the objects the operator created for this job."""

    config_map: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="ConfigMap."
    )
    service: str | None = Field(
        default=None, max_length=63, description="Headless Service (plans of two or more nodes)."
    )
    job: str | None = Field(default=None, max_length=63, description="Current attempt's Job.")


DatasetCheckState = Literal["Checking", "Passed", "Failed", "Skipped"]


class DatasetBadRow(ApiModel):
    """A row the trainer would skip, as ``trainwright dataset inspect`` names it."""

    row: int = Field(ge=1, description="1-based row or line number in the file.")
    reason: str = Field(max_length=512, description="Why the trainer cannot use it.")


class DatasetCheckStatus(ApiModel):
    """What the dataset check pod found before any GPU was requested (docs/trainer-data.md)."""

    state: DatasetCheckState = Field(
        description="Checking (its pod runs), Passed, Failed (the job ends DataError) or Skipped."
    )
    message: str | None = Field(
        default=None, max_length=1024, description="The finding, or why it was skipped."
    )
    inputs_digest: str | None = Field(
        default=None,
        max_length=64,
        description="Digest of what the check read (dataset, format, seqLen, model); a new "
        "value runs it again.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the check ran for."
    )
    check_job: str | None = Field(default=None, max_length=63, description="The check's Job.")
    format: str | None = Field(default=None, max_length=32, description="Row format detected.")
    rows: int | None = Field(default=None, ge=0, description="Rows in the file.")
    valid_rows: int | None = Field(default=None, ge=0, description="Rows the trainer can use.")
    bad_rows: int | None = Field(default=None, ge=0, description="Rows the trainer would skip.")
    first_bad_rows: list[DatasetBadRow] = Field(
        default_factory=list, max_length=10, description="The first bad rows and why."
    )
    tokens: int | None = Field(
        default=None, ge=0, description="Tokens in one epoch (valid rows); the plan uses it."
    )
    tokens_p95: int | None = Field(default=None, ge=0, description="95th percentile per row.")
    tokens_estimated: bool | None = Field(
        default=None, description="Estimated at 4 characters a token (no local tokenizer)."
    )
    truncated_fraction: float | None = Field(
        default=None, ge=0, le=1, description="Share of valid rows longer than seqLen."
    )
    duplicates: int | None = Field(default=None, ge=0, description="Rows repeating a row.")
    near_empty_rows: int | None = Field(
        default=None, ge=0, description="Rows with almost nothing to learn from."
    )
    suggestions: list[Annotated[str, StringConstraints(max_length=512)]] = Field(
        default_factory=list, max_length=10, description="What to fix, in sentences."
    )
    check_seconds: float | None = Field(
        default=None, ge=0, description="How long the check pod read the file."
    )
    checked_at: dt.datetime | None = Field(default=None, description="When the check finished.")


class NodeFailureRecord(ApiModel):
    """One infrastructure failure that restarted the gang (a node lost, a pod evicted)."""

    node: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="The node, when one is to blame."
    )
    reason: str = Field(
        max_length=64,
        description=(
            "NodeNotReady, NodeUnreachable, NodeDeleted, or the pod's own reason "
            "(Evicted, NodeLost, DeletionByTaintManager, EvictionByEvictionAPI, PodDeleted...)."
        ),
    )
    pod: str | None = Field(default=None, max_length=NAME_MAX_LENGTH, description="The pod.")
    attempt: int = Field(ge=0, description="The attempt it ended.")
    time: dt.datetime = Field(description="When the operator saw it.")


class AvoidedNode(ApiModel):
    """A node later attempts keep off (required node anti-affinity on its hostname)."""

    node: str = Field(max_length=NAME_MAX_LENGTH, description="Node name (kubernetes.io/hostname).")
    reason: str = Field(max_length=1024, description="Why, in a sentence.")


class TrainingJobStatus(ApiModel):
    """What the operator observed and decided."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    phase: TrainingPhase = Field(
        default="Pending",
        description="Pending, Planned, Queued, Running, Succeeded, Failed or Suspended.",
    )
    conditions: list[Condition] = conditions_field()
    plan: PlanStatus | None = Field(default=None, description="The chosen plan.")
    progress: ProgressStatus | None = Field(default=None, description="Training progress.")
    usage: UsageStatus | None = Field(
        default=None, description="GPU-hours, cost, energy and CO2e so far, all attempts."
    )
    throughput: list[ThroughputSample] = Field(
        default_factory=list,
        max_length=64,
        description="Recent tokens/s readings, oldest first (the ThroughputBelowPlan window).",
    )
    restarts: int = Field(default=0, ge=0, description="Whole-gang restarts so far.")
    infrastructure_restarts: int = Field(
        default=0,
        ge=0,
        description=(
            "Whole-gang restarts after a node failure or a pod evicted or deleted by someone "
            "else; they do not count against spec.maxRestarts."
        ),
    )
    node_failures: list[NodeFailureRecord] = Field(
        default_factory=list,
        max_length=20,
        description="The latest infrastructure failures of this job, oldest first.",
    )
    avoided_nodes: list[AvoidedNode] = Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description="Nodes that failed this job twice; later attempts avoid them.",
    )
    attempt: int = Field(default=0, ge=0, description="Attempt number of the current Job.")
    last_exit_code: int | None = Field(
        default=None, description="Exit code of the last failed trainer container."
    )
    start_time: dt.datetime | None = Field(default=None, description="When training started.")
    completion_time: dt.datetime | None = Field(
        default=None, description="When training succeeded or failed."
    )
    children: ChildrenStatus | None = Field(default=None, description="Created objects.")
    dataset: DatasetCheckStatus | None = Field(
        default=None, description="The dataset check's findings (before planning)."
    )
    spec_digest: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "Digest of the spec the plan and trainer pods were made from (all of it but "
            "suspend and maxRestarts). An edit while no trainer pod runs (Planned, Suspended, "
            "Failed) re-plans and starts a new attempt from the last checkpoint."
        ),
    )
    message: str | None = Field(
        default=None, max_length=4096, description="The latest event, in a sentence."
    )


# "Immutable while running": a spec rule cannot read status, but a transition rule on
# the root sees both (the API server evaluates it on every update of the object).
# The checkpoint location is frozen too: a run resumes from where it saved.
_FROZEN_WHILE_RUNNING = (
    "model",
    "lora",
    "dataset",
    "training",
    "resources",
    "strategy",
    "checkpoint",
    "evaluation",
)
_IMMUTABLE_WHILE_RUNNING_RULE = rule(
    "!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase != 'Running' || ("
    + " && ".join(
        f"has(self.spec.{f}) == has(oldSelf.spec.{f})"
        f" && (!has(self.spec.{f}) || self.spec.{f} == oldSelf.spec.{f})"
        for f in _FROZEN_WHILE_RUNNING
    )
    + ")",
    "spec."
    + ", spec.".join(_FROZEN_WHILE_RUNNING[:-1])
    + f" and spec.{_FROZEN_WHILE_RUNNING[-1]} are immutable while the job is Running "
    "(suspend it first)",
)


def spec_digest(spec: TrainingJobSpec) -> str:
    """A short digest of what the plan and the trainer pods are made from.

    ``suspend`` and ``maxRestarts`` are left out: they change how the operator drives
    the run, not what runs; so is ``export``, which acts after the run, and ``carbon``,
    which only moves the usage accounting (read from the spec on each progress read; the
    plan's whole-run estimate keeps the grid it was planned with).

    Fields left at their defaults are left out too, so that a field a newer operator adds
    (with a default that keeps today's behaviour) does not change the digest of jobs
    created before it, which would re-plan them after an upgrade.
    """
    inputs = spec.model_dump(
        mode="json",
        by_alias=True,
        exclude_defaults=True,
        exclude={"suspend", "max_restarts", "export", "carbon"},
    )
    encoded = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


class TrainingJob(CustomResource):
    """A fine-tuning run (trainwright.io/v1alpha1, kind TrainingJob, short name tj)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra=k8s(**{"x-kubernetes-validations": [_IMMUTABLE_WHILE_RUNNING_RULE]}),
    )

    api_version: Literal["trainwright.io/v1alpha1"] = Field(
        default="trainwright.io/v1alpha1", description="trainwright.io/v1alpha1."
    )
    kind: Literal["TrainingJob"] = Field(default="TrainingJob", description="TrainingJob.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: TrainingJobSpec = Field(description="Desired state, written by the user.")
    status: TrainingJobStatus = Field(
        default_factory=TrainingJobStatus, description="Observed state, written by the operator."
    )
