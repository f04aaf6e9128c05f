"""The trainer's configuration: one pydantic model, shared with the operator.

The operator renders a :class:`TrainerConfig` into the job's ConfigMap
(``cfg.model_dump(mode="json")`` gives snake_case keys); the trainer reads it
back with :func:`load_config`. Keys are snake_case; the camelCase spelling the
TrainingJob manifest uses (``seqLen``, ``learningRate``) is accepted too.

This module imports no torch so the operator can use it.

Validation happens before any work and fails with one sentence that names the
field, e.g. ``training.learning_rate: must be greater than 0 (got -0.1)`` or
``unknown key 'training.lr'; accepted keys: epochs, max_steps, ...``.
:func:`load_config` also checks that the dataset file exists (a
:class:`~trainwright_trainer.errors.DataError`, exit 65); the model itself does
not, because the operator renders configs for files it cannot see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from trainwright.vocabulary import (
    ADAPTER_METHODS,
    LOSS_CHUNK_TOKENS,
    METHODS,
    STRATEGIES,
    Method,
    Optimizer,
    Strategy,
)
from trainwright_trainer.errors import ConfigError, DataError

__all__ = [
    "DATA_FORMATS",
    "FILE_TYPES",
    "METHODS",
    "PEFT_METHODS",
    "STRATEGIES",
    "CheckpointConfig",
    "DataConfig",
    "DistributedConfig",
    "EvalConfig",
    "FaultConfig",
    "GuardConfig",
    "LoraConfig",
    "MetricsConfig",
    "ModelConfig",
    "OutputConfig",
    "TrainerConfig",
    "TrainingConfig",
    "config_error_from_validation",
    "load_config",
    "parse_config",
]

DataFormat = Literal["auto", "text", "alpaca", "sharegpt", "chat", "prompt_completion"]
FileType = Literal["auto", "jsonl", "json", "csv", "parquet", "txt"]
# Methods, strategies and optimizers are the project's shared vocabulary (the operator
# writes this config from a TrainingJob that uses the same words).
PEFT_METHODS: tuple[str, ...] = ADAPTER_METHODS
DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)
FILE_TYPES: tuple[str, ...] = get_args(FileType)


class _Section(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )


class ModelConfig(_Section):
    path: str = Field(
        min_length=1,
        description="Local model directory, or a Hugging Face id resolved from the local cache only.",
    )
    tokenizer_path: str | None = Field(
        default=None, description="Tokenizer directory or id; defaults to `path`."
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Parameter/compute precision; auto picks bf16 where supported."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        default="auto",
        description="Attention kernel; flash_attention_2 keeps packed documents apart natively.",
    )


class LoraConfig(_Section):
    rank: int = Field(default=16, gt=0, description="LoRA rank r.")
    alpha: float = Field(default=32.0, gt=0, description="LoRA scaling numerator (alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: tuple[str, ...] | Literal["all-linear"] = Field(
        default="all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer but the head.",
    )
    use_rslora: bool = Field(default=False, description="Rank-stabilised scaling alpha/sqrt(r).")
    init: Literal["default", "pissa"] = Field(
        default="default", description="Adapter initialisation: peft's default, or PiSSA."
    )
    adapter_dtype: Literal["fp32", "compute"] = Field(
        default="fp32",
        description=(
            "fp32: peft keeps the adapters (and casts their inputs) in fp32 over a bf16/fp16 "
            "base; compute: adapters stored and run in the compute dtype, no casts."
        ),
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _names_or_all_linear(cls, value: Any) -> Any:
        # peft reads a bare string as a regex; accept only the one keyword so a
        # single module name is not silently matched against nothing.
        if value == "all-linear":
            return value
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"must be a list of module names or 'all-linear' (got {value!r})")


class DataConfig(_Section):
    path: str = Field(
        min_length=1, description="Dataset file: .jsonl, .json, .csv, .parquet, .txt."
    )
    format: DataFormat = Field(default="auto", description="Row format; auto detects it.")
    file_type: FileType = Field(default="auto", description="File type; auto uses the suffix.")
    seq_len: int = Field(default=2048, gt=0, description="Tokens per training sequence.")
    pack: bool = Field(default=True, description="Best-fit pack documents into sequences.")
    train_on_prompt: bool = Field(
        default=False, description="Also compute the loss on prompts/user turns."
    )
    add_eos: bool = Field(default=True, description="Append EOS to text/alpaca/completion rows.")
    text_field: str = Field(default="text", min_length=1, description="Column of plain text rows.")
    cache_dir: str | None = Field(
        default=None,
        description="Tokenization cache directory; defaults to <checkpoint.dir>/data-cache.",
    )
    max_bad_row_fraction: float = Field(
        default=0.01, ge=0, le=1, description="Fail when more than this fraction of rows is bad."
    )
    shuffle: bool = Field(default=True, description="Shuffle sequences each epoch (seeded).")
    eval_fraction: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="Share of the packed sequences held out for evaluation (chosen by the seed).",
    )
    eval_path: str | None = Field(
        default=None,
        min_length=1,
        description="A separate evaluation file, prepared like `path`; excludes eval_fraction.",
    )

    @model_validator(mode="after")
    def _one_eval_source(self) -> DataConfig:
        if self.eval_fraction > 0 and self.eval_path is not None:
            raise ValueError("set at most one of data.eval_fraction and data.eval_path")
        return self

    @property
    def has_eval(self) -> bool:
        """Whether a held-out split or an evaluation file is configured."""
        return self.eval_fraction > 0 or self.eval_path is not None


class TrainingConfig(_Section):
    epochs: int = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="Optimizer steps; caps epochs.")
    micro_batch_size: int = Field(default=1, gt=0, description="Sequences per rank per forward.")
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    learning_rate: float = Field(default=2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0, description="Clip norm; 0 disables clipping.")
    seed: int = Field(default=42, ge=0)
    gradient_checkpointing: bool = False
    loss_chunk_tokens: int = Field(
        default=LOSS_CHUNK_TOKENS,
        ge=0,
        description=(
            "Tokens per chunk of the fused output-head + cross-entropy, so the full logits "
            "tensor never exists; 0 computes the plain loss from whole logits."
        ),
    )
    optimizer: Optimizer = "adamw"
    compile_layers: bool = Field(
        default=False,
        description="torch.compile each decoder layer; eager again (logged once) if compiling fails.",
    )
    compile_backend: str = Field(
        default="inductor", min_length=1, description="torch.compile backend for compile_layers."
    )


class DistributedConfig(_Section):
    strategy: Strategy = "ddp"
    backend: Literal["auto", "nccl", "gloo"] = Field(
        default="auto", description="auto: nccl with GPUs, gloo on CPU."
    )
    timeout_seconds: int = Field(default=1800, gt=0, description="Collective timeout.")


class CheckpointConfig(_Section):
    dir: str = Field(default="checkpoints", min_length=1)
    interval_steps: int = Field(default=500, gt=0)
    keep_last: int = Field(default=3, gt=0)
    async_save: bool = True


class GuardConfig(_Section):
    skip_nonfinite: bool = Field(default=True, description="Skip steps with non-finite grads.")
    spike_window: int = Field(default=50, ge=2, description="Steps in the running median.")
    spike_factor: float = Field(default=3.0, gt=1, description="Loss / median that is a spike.")
    spike_patience: int = Field(default=3, gt=0, description="Spikes in a row before rollback.")
    rollback_lr_factor: float = Field(default=0.5, gt=0, le=1, description="LR multiplier.")
    max_rollbacks: int = Field(default=3, ge=0)
    oom_ladder: bool = True


class MetricsConfig(_Section):
    port: int = Field(default=9464, ge=0, le=65535, description="Prometheus port; 0 is off.")
    progress_file: str | None = Field(
        default=None, description="Progress JSON; defaults to <checkpoint.dir>/progress.json."
    )
    log_interval_steps: int = Field(default=10, gt=0)


class OutputConfig(_Section):
    dir: str = Field(default="output", min_length=1, description="Final model or adapter.")
    save_merged: bool = Field(default=False, description="Also save LoRA merged into the base.")


class EvalConfig(_Section):
    """Evaluation on the held-out data (``data.eval_fraction`` or ``data.eval_path``)."""

    interval_steps: int | None = Field(
        default=None,
        gt=0,
        description="Evaluate every this many steps; unset: checkpoint interval.",
    )
    max_sequences: int | None = Field(
        default=None, gt=0, description="Evaluate on at most this many held-out sequences."
    )
    early_stopping_patience: int | None = Field(
        default=None,
        gt=0,
        description="Stop after this many evaluations without improvement; unset: never.",
    )
    early_stopping_min_delta: float = Field(
        default=0.0, ge=0, description="Eval-loss decrease that counts as an improvement."
    )
    overfitting_evaluations: int = Field(
        default=3,
        gt=0,
        description="Evaluations in a row of falling train loss and rising eval loss = overfitting.",
    )
    sample_prompts: tuple[str, ...] = Field(
        default=(), description="Prompts answered at each evaluation; unset: from the eval split."
    )
    samples: int = Field(
        default=3, ge=0, le=64, description="Eval-split prompts to answer when none are given."
    )
    sample_max_new_tokens: int = Field(default=64, gt=0, le=4096)


class FaultConfig(_Section):
    """Fault injection for the trainer's own tests; never set in production.

    Step numbers are optimizer steps as the training loop counts them.
    """

    nan_grad_at_steps: tuple[int, ...] = ()
    spike_at_steps: tuple[int, ...] = ()
    spike_loss_factor: float = Field(default=100.0, gt=1)
    oom_at_steps: tuple[int, ...] = ()
    sigterm_at_step: int | None = Field(default=None, gt=0)
    crash_at_step: int | None = Field(default=None, gt=0)
    crash_during_save_at_step: int | None = Field(default=None, gt=0)
    fault_rank: int | None = Field(default=None, ge=0, description="Only this rank; None: all.")
    step_sleep_seconds: float = Field(default=0.0, ge=0)


class TrainerConfig(_Section):
    """Everything one training run needs; see docs/trainer-data.md for the YAML."""

    model: ModelConfig
    method: Method = "lora"
    lora: LoraConfig | None = None
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    distributed: DistributedConfig = DistributedConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    guards: GuardConfig = GuardConfig()
    metrics: MetricsConfig = MetricsConfig()
    output: OutputConfig = OutputConfig()
    evaluation: EvalConfig = EvalConfig()
    faults: FaultConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_lora_for_peft_methods(cls, data: Any) -> Any:
        # A peft method with no `lora` section gets the defaults, so the loop
        # can rely on `cfg.lora` being set exactly when method is not 'full'.
        peft = isinstance(data, dict) and data.get("method", "lora") in PEFT_METHODS
        if peft and data.get("lora") is None:
            return {**data, "lora": {}}
        return data

    @model_validator(mode="after")
    def _check_method_options(self) -> TrainerConfig:
        if self.method == "full" and self.lora is not None:
            raise ValueError(
                "lora options are set but method is 'full'; "
                "remove `lora` or use method lora|qlora|dora"
            )
        if self.method == "full" and self.output.save_merged:
            raise ValueError(
                "output.save_merged applies to adapters but method is 'full'; "
                "remove it or use method lora|qlora|dora"
            )
        return self

    @property
    def global_batch_size_per_rank(self) -> int:
        """Sequences per optimizer step on one rank (micro batch × accumulation)."""
        return self.training.micro_batch_size * self.training.gradient_accumulation_steps

    @property
    def data_cache_dir(self) -> Path:
        """Where tokenized data is cached: ``data.cache_dir`` or ``<checkpoint.dir>/data-cache``."""
        if self.data.cache_dir is not None:
            return Path(self.data.cache_dir)
        return Path(self.checkpoint.dir) / "data-cache"

    @property
    def progress_path(self) -> Path:
        """The progress file: ``metrics.progress_file`` or ``<checkpoint.dir>/progress.json``."""
        if self.metrics.progress_file is not None:
            return Path(self.metrics.progress_file)
        return Path(self.checkpoint.dir) / "progress.json"

    def to_yaml(self) -> str:
        """The config as YAML with snake_case keys, as the operator puts it in a ConfigMap."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _field_path(loc: tuple[int | str, ...]) -> str:
    # Pydantic puts the validator's name into the location of union members
    # (e.g. ('lora', 'target_modules', 'tuple[str, ...]')); keep only fields.
    parts = [str(p) for p in loc if isinstance(p, int) or not any(c in p for c in "[]'\" ,")]
    return ".".join(parts)


def _accepted_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None or not isinstance(part, str):
            return []
        field = current.model_fields.get(part) or next(
            (f for n, f in current.model_fields.items() if to_camel(n) == part), None
        )
        if field is None:
            return []
        current = _section_type(field.annotation)
    return list(current.model_fields) if current is not None else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    where = _field_path(loc)
    kind = error["type"]
    ctx = error.get("ctx", {})
    got = error.get("input")
    if kind == "extra_forbidden":
        accepted = ", ".join(_accepted_keys(model, loc))
        return f"unknown key '{where}'; accepted keys there: {accepted}"
    if kind == "missing":
        return f"missing required field '{where}'"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{where}: {got!r} is not one of {expected}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }
        bound = next(iter(ctx.values()), "")
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "greater than 0", not "greater than 0.0"
        return f"{where}: must be {words[kind]} {bound} (got {got!r})"
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return f"{where}: {message}" if where else message
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"{where}: {message} (got {got!r})" if where else message


def config_error_from_validation(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> ConfigError:
    """One sentence for the first problem pydantic found (and how many more there are)."""
    target = model if model is not None else TrainerConfig
    errors = exc.errors(include_url=False)
    # Several union members fail for one bad field; report the field once.
    seen: list[str] = []
    for error in errors:
        text = _describe(error, target)
        if text not in seen:
            seen.append(text)
    fields = {_field_path(tuple(e["loc"])) for e in errors}
    message = seen[0]
    if len(fields) > 1:
        message += f" (and {len(fields) - 1} more problem{'s' if len(fields) > 2 else ''})"
    return ConfigError(message)


def parse_config(data: Any) -> TrainerConfig:
    """Validate a mapping into a :class:`TrainerConfig`, raising :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"the trainer config must be a mapping of sections, got {type(data).__name__}"
        )
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, TrainerConfig) from None


def load_config(path: str | Path, *, check_paths: bool = True) -> TrainerConfig:
    """Read a YAML or JSON trainer config and validate it before any work.

    Raises :class:`ConfigError` (exit 64) for an unreadable or invalid file and,
    with ``check_paths``, :class:`DataError` (exit 65) when the dataset file does
    not exist.
    """
    config_path = Path(path)
    if not config_path.is_file():
        raise ConfigError(f"config file {config_path} does not exist")
    text = config_path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if config_path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"config file {config_path} is not valid YAML/JSON: {first_line}"
        ) from None
    cfg = parse_config(data)
    if check_paths:
        given = {"path": cfg.data.path, "eval_path": cfg.data.eval_path}
        for field, dataset in ((f, Path(t)) for f, t in given.items() if t is not None):
            where = "" if field == "path" else f"data.{field}: "
            if not dataset.exists():
                raise DataError(f"{where}dataset file {dataset} does not exist")
            if dataset.is_dir():
                raise DataError(f"{where}dataset path {dataset} is a directory; give one data file")
    return cfg
