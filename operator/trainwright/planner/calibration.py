"""Calibration: observed runs correct later plans of the same shape, shrunk toward the physics.

The file format is CONTRACTS.md's "Calibration" section: a list of training
observations (tokens/s and peak GPU memory of a run) and inference observations
(output tokens/s at a batch). The caller reads the file (I/O stays out of the
planner) and hands the parsed mapping to :func:`parse_calibration`.

How an observation moves a plan:

- Each observation is planned as the physics would plan it, and its ratio
  r = observed / planned is taken (tokens/s; peak memory for training runs that
  reported it).
- Observations are pooled by **shape**: training by GPU type, method, strategy
  and model size class; serving by GPU type, precision and model size class.
  Within a shape they pool over the model, the GPU count, micro-batch, sequence
  length and batch: what the ratio captures is the software stack on that
  hardware (kernels, framework overheads, input pipeline), and the physics
  already scales with those knobs. A shape never borrows from another GPU,
  method or strategy, whose stacks differ.
- The factor is the geometric mean of the ratios shrunk toward 1 (the physics)
  as if the physics were worth ``PRIOR_OBSERVATIONS`` observations:
  f = exp(n / (n + k) · mean(log r)). With k = 1 one observation moves a plan
  half of the way (in log space), four move it 80% of the way.
- Throughput never passes the roofline: a training factor is capped so the
  hardware FLOPs utilization stays at most 1 of the datasheet peak, a serving
  factor so a replica stays under its bandwidth/compute roofline at 100%.
- Memory factors (training only) stay within ``MEMORY_FACTOR_BOUNDS``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainwright.planner.errors import PlannerError
from trainwright.vocabulary import InferencePrecision, Method, Strategy, TrainingPrecision

PRIOR_OBSERVATIONS = 1.0
MEMORY_FACTOR_BOUNDS = (0.5, 2.0)
# Parameter-count classes whose stacks behave alike (kernel shapes, sharding needs).
SIZE_CLASSES: tuple[tuple[float, str], ...] = (
    (3e9, "<3B"),
    (15e9, "3-15B"),
    (80e9, "15-80B"),
    (math.inf, ">80B"),
)
TRAINING_POOLS_OVER = ("model within its size class", "num_gpus", "micro_batch", "seq_len")
INFERENCE_POOLS_OVER = (
    "model within its size class",
    "tensor_parallel",
    "batch",
    "prompt and output tokens",
)


class CalibrationError(PlannerError):
    """A calibration file that does not follow the contract (names the file and field)."""


class _Observation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    model: str = Field(min_length=1)
    gpu: str = Field(min_length=1)


class TrainingObservation(_Observation):
    """One fine-tuning run: its layout and what it reached."""

    kind: Literal["training"]
    precision: TrainingPrecision
    method: Method
    num_gpus: int = Field(gt=0)
    strategy: Strategy
    micro_batch: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    tokens_per_second: float = Field(gt=0)
    peak_memory_bytes: int | None = Field(default=None, gt=0)


class InferenceObservation(_Observation):
    """One serving measurement: output tokens/s at a batch."""

    kind: Literal["inference"]
    precision: InferencePrecision
    tensor_parallel: int = Field(gt=0)
    batch: int = Field(gt=0)
    prompt_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    output_tokens_per_second: float = Field(gt=0)
    ttft_seconds: float | None = Field(default=None, gt=0)
    itl_seconds: float | None = Field(default=None, gt=0)


Observation = Annotated[TrainingObservation | InferenceObservation, Field(discriminator="kind")]


class Calibration(BaseModel):
    """A parsed calibration file; ``enabled`` false computes the factors but applies none."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    observations: tuple[Observation, ...] = ()
    source: str = "calibration"
    enabled: bool = True

    def training(self) -> list[TrainingObservation]:
        return [o for o in self.observations if isinstance(o, TrainingObservation)]

    def inference(self) -> list[InferenceObservation]:
        return [o for o in self.observations if isinstance(o, InferenceObservation)]


class CalibrationSummary(BaseModel):
    """What calibration did to a plan (the plan's ``calibration`` object)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    applied: bool = Field(description="whether the factors changed this plan")
    observations: int = Field(description="observations of this plan's shape")
    throughput_factor: float
    memory_factor: float
    shape: dict[str, str] = Field(description="what an observation must share to count")
    pooled_over: tuple[str, ...] = Field(description="what observations of a shape may differ in")
    roofline_capped: bool = Field(
        default=False, description="the factor was lowered to stay under the GPU's roofline"
    )
    source: str = ""
    available: int = Field(default=0, description="observations in the file, of every shape")


def parse_calibration(data: object, *, source: str, enabled: bool = True) -> Calibration:
    """Validate a calibration mapping; errors name ``source`` and the first bad field."""
    if not isinstance(data, Mapping):
        raise CalibrationError(
            f"{source}: a calibration file is an object with an 'observations' list"
        )
    try:
        return Calibration.model_validate({**data, "source": source, "enabled": enabled})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _field_path(error.get("loc", ()))
        raise CalibrationError(f"{source}: {where}: {error['msg']}") from None


def _field_path(location: Iterable[Any]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("training", "inference"):
            continue  # the discriminator's branch name, not a field
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "observations"


def size_class(params: float) -> str:
    return next(name for bound, name in SIZE_CLASSES if params < bound)


def shrunk_factor(ratios: Sequence[float], prior: float = PRIOR_OBSERVATIONS) -> float:
    """Geometric mean of ``ratios`` shrunk toward 1 by ``prior`` pseudo-observations."""
    if not ratios:
        return 1.0
    mean_log = sum(math.log(r) for r in ratios) / len(ratios)
    return math.exp(len(ratios) / (len(ratios) + prior) * mean_log)


def bounded_memory_factor(ratios: Sequence[float]) -> float:
    low, high = MEMORY_FACTOR_BOUNDS
    return min(max(shrunk_factor(ratios), low), high)
