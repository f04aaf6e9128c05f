"""Training plans: one explicit configuration, or the cheapest one that fits.

The search enumerates GPU types, GPU counts (powers of two), data-parallel
strategies and activation checkpointing; for each it takes the largest
micro-batch that fits (memory is linear in the micro-batch), estimates speed
and cost, and ranks by dollars per trained token. Pydantic plans are built only
for the handful of results returned, so a full search stays in milliseconds.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainwright.planner.calibration import (
    TRAINING_POOLS_OVER,
    Calibration,
    CalibrationSummary,
    bounded_memory_factor,
    shrunk_factor,
    size_class,
)
from trainwright.planner.catalog import Price
from trainwright.planner.errors import InfeasibleError, PlannerError
from trainwright.planner.lookup import get_gpu, get_model, list_gpus, price_for
from trainwright.planner.memory import (
    AdapterTargets,
    Framework,
    Recompute,
    TrainingMemory,
    target_modules,
    training_memory,
)
from trainwright.planner.specs import GpuSpec, ModelSpec
from trainwright.planner.throughput import StepTime, flops_per_token, training_step
from trainwright.vocabulary import (
    Cloud,
    Method,
    MethodChoice,
    Strategy,
    StrategyChoice,
    TrainingPrecision,
)
from trainwright.vocabulary import PlannerOptimizer as Optimizer

MAX_MICRO_BATCH = 64
MAX_TOKENS_PER_MICRO_BATCH = 32768
DEFAULT_MAX_GPUS = 512
RECOMMENDATIONS = 5


class TrainingRequest(BaseModel):
    """What to train and on what; unset fields are searched or defaulted."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, defer_build=True
    )

    model: str | ModelSpec
    method: MethodChoice = Field(
        default="lora",
        description="auto: 16-bit LoRA when it fits the GPUs searched, else QLoRA",
    )
    gpu: str | None = None
    num_gpus: int | None = Field(default=None, gt=0)
    nodes: int | None = Field(default=None, gt=0)
    gpus_per_node: int | None = Field(default=None, gt=0)
    strategy: StrategyChoice = "auto"
    precision: TrainingPrecision = "bf16"
    micro_batch: int | None = Field(default=None, gt=0)
    seq_len: int = Field(default=2048, gt=0)
    gradient_checkpointing: Literal["auto", "on", "off", "selective"] = "auto"
    optimizer: Optimizer = "adamw"
    lora_rank: int = Field(default=16, gt=0)
    loss_chunk_tokens: int | None = Field(
        default=None,
        gt=0,
        description=(
            "the head and loss fused in chunks of this many tokens (Trainwright's trainer, "
            "vocabulary.LOSS_CHUNK_TOKENS); unset: a loss over the whole logits"
        ),
    )
    lora_targets: AdapterTargets = Field(
        default="all",
        description=(
            "adapted linears: all, qkv (attention q, k, v), qv (query and value), or PEFT "
            "target_modules names such as (q_proj, v_proj)"
        ),
    )
    target_len: int | None = Field(
        default=None, gt=0, description="decoder tokens per sequence of an encoder-decoder"
    )
    dataset_tokens: int | None = Field(default=None, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    cloud: Cloud = "aws"
    tensor_parallel: int = Field(default=1, gt=0)
    pipeline_parallel: int = Field(default=1, gt=0)
    pipeline_interleave: int = Field(default=1, gt=0, description="virtual stages per GPU")
    sequence_parallel: bool | None = Field(default=None, description="default: on when TP > 1")
    global_batch_size: int | None = Field(default=None, gt=0, description="sequences per step")
    deadline_seconds: float | None = Field(default=None, gt=0)
    max_gpus: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    gpu_candidates: list[str] | None = None
    prices: tuple[Price, ...] | None = None
    framework: Framework = Field(
        default="hf",
        description="training stack: hf (Transformers + PEFT + accelerate/DeepSpeed, what "
        "Trainwright's trainer runs), torchtune, or megatron (lean kernels)",
    )
    flash_attention: bool = True
    compile: bool = Field(default=False, description="torch.compile (saves fewer activations)")
    cpu_offload: bool = False
    optimizer_in_backward: bool = False
    fp32_gradients: bool = Field(default=False, description="Megatron-style fp32 grads")
    utilization: float | None = Field(
        default=None, gt=0, le=1, description="override the hardware FLOPs utilization"
    )
    memory_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description=(
            "share of each GPU's memory a plan may fill; below 1 it leaves headroom, as after "
            "a run that ran out of memory where the estimate said it fit"
        ),
    )

    calibration: Calibration | None = Field(
        default=None, description="observed runs that correct plans of the same shape"
    )

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _module_names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return target_modules(str(name) for name in value)
        return value

    @model_validator(mode="after")
    def _check_topology(self) -> TrainingRequest:
        if (
            self.num_gpus is not None
            and self.nodes
            and self.gpus_per_node
            and self.nodes * self.gpus_per_node != self.num_gpus
        ):
            raise ValueError("num_gpus must equal nodes x gpus_per_node")
        return self


class TrainingMemoryPlan(BaseModel):
    """Per-GPU bytes, broken down; ``per_gpu_bytes`` is their sum."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    per_gpu_bytes: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    other_bytes: int
    overlap_bytes: int = Field(
        default=0,
        description="gradients created as activations are freed: not alive at the same time",
    )
    capacity_bytes: int


class TrainingThroughput(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    tokens_per_second: float
    mfu: float
    step_seconds: float


class TrainingCost(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    cloud: str
    usd_per_hour: float
    total_usd: float | None
    usd_per_gpu_hour: float | None = None
    price_as_of: str | None = None


class TrainingPlan(BaseModel):
    """A training configuration with its memory, speed, duration and cost."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    model: str
    method: str
    method_reason: str | None = Field(
        default=None, description="why method auto resolved to this method (else absent)"
    )
    gpu: str
    num_gpus: int
    nodes: int
    gpus_per_node: int
    strategy: str
    micro_batch: int
    gradient_accumulation: int
    seq_len: int
    epochs: float = Field(default=1.0, description="passes over the dataset the duration is for")
    gradient_checkpointing: str
    tensor_parallel: int
    pipeline_parallel: int
    memory: TrainingMemoryPlan
    fits: bool
    throughput: TrainingThroughput
    duration_seconds: float | None
    cost: TrainingCost
    recommendations: list[TrainingPlan] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    calibration: CalibrationSummary | None = None

    def to_contract(self) -> dict[str, Any]:
        """The JSON document of CONTRACTS.md (``trainwright plan training -o json``)."""
        return self.model_dump(mode="json")


class _Setup(NamedTuple):
    gpu: GpuSpec
    num_gpus: int
    gpus_per_node: int
    strategy: Strategy
    recompute: Recompute
    usable_bytes: int  # the GPU's memory times the request's memory_fraction


class _Candidate(NamedTuple):
    setup: _Setup
    micro_batch: int
    gradient_accumulation: int
    memory: TrainingMemory
    step: StepTime
    usd_per_hour: float | None
    price: Price | None
    duration_seconds: float | None
    speed_factor: float = 1.0  # calibration's throughput factor, as applied
    roofline_capped: bool = False

    @property
    def fits(self) -> bool:
        return self.memory.per_gpu_bytes <= self.setup.usable_bytes

    @property
    def usd_per_token(self) -> float:
        if self.usd_per_hour is None:
            return math.inf
        return self.usd_per_hour / 3600 / self.step.tokens_per_second

    @property
    def total_usd(self) -> float | None:
        if self.usd_per_hour is None or self.duration_seconds is None:
            return None
        return self.usd_per_hour * self.duration_seconds / 3600


class _ShapeFactor(NamedTuple):
    """Calibration of one (GPU, strategy) shape for this request's method and model class."""

    throughput: float
    memory: float
    observations: int
    shape: dict[str, str]


class _Context(NamedTuple):
    request: TrainingRequest
    model: ModelSpec
    total_tokens: float | None
    factors: dict[tuple[str, str], _ShapeFactor]
    method: Method  # the request's, with auto resolved before a context is made


class _RequestKey:
    """A request as a cache key: its field values (lists as tuples); raises TypeError when a
    value cannot be hashed (that request is then planned without the cache)."""

    __slots__ = ("_hash", "key", "request")

    def __init__(self, request: TrainingRequest) -> None:
        self.request = request
        self.key = tuple(
            tuple(value) if isinstance(value, list) else value
            for value in (getattr(request, name) for name in type(request).model_fields)
        )
        self._hash = hash(self.key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RequestKey) and self.key == other.key


PLAN_CACHE_SIZE = 512


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _plan_cached(key: _RequestKey) -> TrainingPlan:
    return _plan_training(key.request)


def plan_training(request: TrainingRequest) -> TrainingPlan:
    """Plan ``request``; with no GPU (or no GPU count) it searches like :func:`recommend_training`.

    An explicit GPU and count always return a plan, with ``fits`` false when it does not;
    then ``recommendations`` holds the counts of the same GPU that would fit.
    Method ``auto`` plans 16-bit LoRA and falls back to QLoRA when LoRA fits nothing.

    The planner is a pure function of the (frozen) request, so the last
    ``PLAN_CACHE_SIZE`` plans are kept: a burst of similar TrainingJobs (a sweep, a team's
    templates; the same request again after a re-plan) plans each shape once. The plans
    are frozen models shared between callers.
    """
    try:
        key = _RequestKey(request)
    except TypeError:
        return _plan_training(request)
    return _plan_cached(key)


def _plan_training(request: TrainingRequest) -> TrainingPlan:
    if request.method == "auto":
        return _plan_auto_method(request)
    if request.gpu is None or _world_size(request) is None:
        return recommend_training(request)
    context = _context(request)
    gpu = get_gpu(request.gpu)
    candidates = _evaluate_space(context, [gpu], [_world_size(request) or 1])
    fitting = [c for c in candidates if c.fits]
    if fitting:
        return _to_plan(context, min(fitting, key=_rank_key), sorted(fitting, key=_rank_key))
    best = min(candidates, key=_memory_key)
    larger = _candidate_counts(request, start=best.setup.num_gpus + 1)
    wider = [c for c in _evaluate_space(context, [gpu], larger) if c.fits]
    return _to_plan(context, best, sorted(wider, key=_rank_key))


def _plan_auto_method(request: TrainingRequest) -> TrainingPlan:
    """16-bit LoRA when a plan of it fits the GPUs the request can get, else QLoRA.

    QLoRA keeps the frozen base in 4 bits (Dettmers et al. 2023): about a quarter of
    LoRA's weight memory for some speed (dequantizing each layer), so it is the
    fallback, not the default. Raises QLoRA's :class:`InfeasibleError` when neither fits.
    """
    try:
        lora = plan_training(request.model_copy(update={"method": "lora"}))
    except InfeasibleError as exc:
        lora_failure = f"16-bit LoRA fits no plan ({exc.reason})"
    else:
        if lora.fits:
            reason = f"method auto: 16-bit LoRA fits {lora.num_gpus}x {lora.gpu}, so no 4-bit base"
            return lora.model_copy(update={"method_reason": reason})
        lora_failure = (
            f"16-bit LoRA needs {lora.memory.per_gpu_bytes / 2**30:.1f} GiB per GPU on "
            f"{lora.num_gpus}x {lora.gpu} of {lora.memory.capacity_bytes / 2**30:.1f} GiB"
        )
    qlora = plan_training(request.model_copy(update={"method": "qlora"}))
    reason = f"method auto: QLoRA (4-bit base) because {lora_failure}"
    return qlora.model_copy(update={"method_reason": reason})


def recommend_training(request: TrainingRequest) -> TrainingPlan:
    """The cheapest plan that fits (and meets the deadline and budget), alternatives ranked.

    Raises :class:`InfeasibleError` with the smallest per-GPU memory any
    configuration needs when nothing fits.
    """
    if request.method == "auto":
        return _plan_auto_method(request)
    context = _context(request)
    gpus = _candidate_gpus(request)
    world = _world_size(request)
    counts = [world] if world else _candidate_counts(request)
    candidates = _evaluate_space(context, gpus, counts)
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        smallest = min((c.memory.per_gpu_bytes for c in candidates), default=0)
        names = ", ".join(g.key for g in gpus)
        raise InfeasibleError(
            f"{context.model.key} {request.method} fine-tuning at seq_len {request.seq_len} "
            f"fits no configuration of {names} with up to {max(counts)} GPUs",
            smallest,
        )
    eligible = [c for c in fitting if _meets_limits(request, c)]
    if not eligible:
        raise InfeasibleError(
            _limits_reason(request, fitting), min(_memory_key(c) for c in fitting)
        )
    ranked = sorted(eligible, key=_rank_key)
    return _to_plan(context, ranked[0], ranked)


def _context(request: TrainingRequest) -> _Context:
    model = get_model(request.model)
    if request.deadline_seconds is not None and request.dataset_tokens is None:
        raise PlannerError("deadline_seconds needs dataset_tokens to estimate a duration")
    total = request.dataset_tokens * request.epochs if request.dataset_tokens else None
    if request.method == "auto":
        raise PlannerError("method auto is resolved to lora or qlora before planning")
    return _Context(request, model, total, {}, request.method)


def _shape_factor(context: _Context, gpu: GpuSpec, strategy: Strategy) -> _ShapeFactor:
    """Pooled, shrunk calibration for plans on ``gpu`` with ``strategy`` (planner.calibration)."""
    key = (gpu.key, strategy)
    if key in context.factors:
        return context.factors[key]
    request = context.request
    shape = {
        "gpu": gpu.key,
        "method": request.method,
        "strategy": strategy,
        "size_class": size_class(context.model.total_params),
    }
    speed: list[float] = []
    memory: list[float] = []
    for observed, planned in _observed_and_planned(context, shape):
        speed.append(observed.tokens_per_second / planned.throughput.tokens_per_second)
        if observed.peak_memory_bytes is not None:
            memory.append(observed.peak_memory_bytes / planned.memory.per_gpu_bytes)
    factor = _ShapeFactor(shrunk_factor(speed), bounded_memory_factor(memory), len(speed), shape)
    context.factors[key] = factor
    return factor


def _observed_and_planned(
    context: _Context, shape: dict[str, str]
) -> list[tuple[Any, TrainingPlan]]:
    """The observations of ``shape``, each with the plan the physics makes for its layout."""
    calibration = context.request.calibration
    if calibration is None:
        return []
    pairs = []
    for observed in calibration.training():
        try:
            model, gpu = get_model(observed.model), get_gpu(observed.gpu)
        except PlannerError:
            continue  # a model or GPU this catalog does not know: no physics to compare with
        if (gpu.key, observed.method, observed.strategy, size_class(model.total_params)) != (
            shape["gpu"],
            shape["method"],
            shape["strategy"],
            shape["size_class"],
        ):
            continue
        layout = context.request.model_copy(
            update={
                "model": model, "method": observed.method, "gpu": gpu.key,
                "num_gpus": observed.num_gpus, "nodes": None, "gpus_per_node": None,
                "strategy": observed.strategy, "micro_batch": observed.micro_batch,
                "seq_len": observed.seq_len, "precision": observed.precision,
                "global_batch_size": None, "dataset_tokens": None, "deadline_seconds": None,
                "max_cost_usd": None, "gpu_candidates": None, "calibration": None,
                "memory_fraction": 1.0,
            }
        )  # fmt: skip
        pairs.append((observed, plan_training(layout)))
    return pairs


def _roofline_factor(
    context: _Context, setup: _Setup, step: StepTime, recompute: Recompute
) -> float:
    """The largest speed-up that keeps hardware FLOPs at or under the GPUs' datasheet peak."""
    request = context.request
    _, hardware_flops = flops_per_token(
        context.model,
        method=context.method,
        seq_len=request.seq_len,
        recompute=recompute,
        lora_rank=request.lora_rank,
        lora_targets=request.lora_targets,
    )
    peak = setup.gpu.peak_flops_per_second(request.precision) * setup.num_gpus
    return peak / (hardware_flops * step.tokens_per_second)


def _calibrated_step(
    context: _Context, setup: _Setup, step: StepTime
) -> tuple[StepTime, float, bool]:
    """``step`` sped up by the shape's factor capped at the roofline, the factor, and if capped."""
    if context.request.calibration is None or not context.request.calibration.enabled:
        return step, 1.0, False
    factor = _shape_factor(context, setup.gpu, setup.strategy).throughput
    ceiling = _roofline_factor(context, setup, step, setup.recompute)
    capped = factor > ceiling
    factor = min(factor, ceiling)
    if factor == 1.0:
        return step, factor, capped
    return (
        StepTime(
            step.compute_seconds / factor,
            step.exposed_comm_seconds / factor,
            step.step_seconds / factor,
            step.tokens_per_second * factor,
            step.mfu * factor,
        ),
        factor,
        capped,
    )


def _world_size(request: TrainingRequest) -> int | None:
    if request.num_gpus is not None:
        return request.num_gpus
    if request.nodes is not None and request.gpus_per_node is not None:
        return request.nodes * request.gpus_per_node
    if request.nodes is not None:
        gpu = get_gpu(request.gpu) if request.gpu else None
        return request.nodes * (gpu.max_gpus_per_node if gpu else 8)
    return None


def _candidate_gpus(request: TrainingRequest) -> list[GpuSpec]:
    if request.gpu is not None:
        return [get_gpu(request.gpu)]
    if request.gpu_candidates:
        return [get_gpu(name) for name in request.gpu_candidates]
    return [g for g in list_gpus() if price_for(g.key, request.cloud, request.prices)]


def _candidate_counts(request: TrainingRequest, start: int = 1) -> list[int]:
    """GPU counts to try: the model-parallel size t·p times powers of two, from ``start``."""
    step = request.tensor_parallel * request.pipeline_parallel
    limit = max(request.max_gpus or DEFAULT_MAX_GPUS, step)
    counts: list[int] = []
    count = step
    while count <= limit:
        if count >= start:
            counts.append(count)
        count *= 2
    return counts


def _strategies(request: TrainingRequest, world: int) -> list[Strategy]:
    if request.strategy != "auto":
        return [request.strategy]
    data_parallel = world // (request.tensor_parallel * request.pipeline_parallel)
    if data_parallel == 1:
        return ["ddp"]
    if request.method == "full":
        return ["ddp", "zero1", "zero2", "fsdp"]
    return ["ddp", "fsdp"]


def _recomputes(request: TrainingRequest) -> list[Recompute]:
    choice = request.gradient_checkpointing
    if choice == "on":
        return ["full"]
    if choice == "off":
        return ["off"]
    if choice == "selective":
        return ["selective"]
    return ["off", "full"]


def _evaluate_space(context: _Context, gpus: list[GpuSpec], counts: list[int]) -> list[_Candidate]:
    request = context.request
    model_split = request.tensor_parallel * request.pipeline_parallel
    candidates: list[_Candidate] = []
    for gpu in gpus:
        price = price_for(gpu.key, request.cloud, request.prices)
        for world in counts:
            if world % model_split:
                raise PlannerError(
                    f"num_gpus {world} must be a multiple of tensor_parallel x "
                    f"pipeline_parallel = {model_split}"
                )
            per_node = request.gpus_per_node or min(world, gpu.max_gpus_per_node)
            for strategy in _strategies(request, world):
                for recompute in _recomputes(request):
                    usable = int(gpu.memory_bytes * request.memory_fraction)
                    setup = _Setup(gpu, world, per_node, strategy, recompute, usable)
                    candidates.append(_evaluate(context, setup, price))
    return candidates


def _memory(
    context: _Context, setup: _Setup, micro_batch: int, accumulation: int
) -> TrainingMemory:
    request = context.request
    model_split = request.tensor_parallel * request.pipeline_parallel
    sequence_parallel = request.sequence_parallel
    if sequence_parallel is None:
        sequence_parallel = request.tensor_parallel > 1
    memory = training_memory(
        context.model,
        method=context.method,
        precision=request.precision,
        strategy=setup.strategy,
        data_parallel=setup.num_gpus // model_split,
        tensor_parallel=request.tensor_parallel,
        pipeline_parallel=request.pipeline_parallel,
        micro_batch=micro_batch,
        seq_len=request.seq_len,
        recompute=setup.recompute,
        optimizer=request.optimizer,
        lora_rank=request.lora_rank,
        microbatches=accumulation,
        sequence_parallel=sequence_parallel,
        flash_attention=request.flash_attention,
        compiled=request.compile,
        pipeline_interleave=request.pipeline_interleave,
        cpu_offload=request.cpu_offload,
        optimizer_in_backward=request.optimizer_in_backward,
        fp32_gradients=request.fp32_gradients,
        framework=request.framework,
        lora_targets=request.lora_targets,
        target_len=request.target_len,
        loss_chunk_tokens=request.loss_chunk_tokens,
    )
    calibration = request.calibration
    if calibration is None or not calibration.enabled:
        return memory
    factor = _shape_factor(context, setup.gpu, setup.strategy).memory
    # The observed excess (or saving) is runtime memory the physics does not see.
    excess = round((factor - 1) * memory.per_gpu_bytes)
    return memory._replace(other_bytes=memory.other_bytes + excess)


def _accumulation(request: TrainingRequest, micro_batch: int, data_parallel: int) -> int:
    if request.global_batch_size is not None:
        return max(1, math.ceil(request.global_batch_size / (micro_batch * data_parallel)))
    if request.pipeline_parallel > 1:
        # Keep the pipeline bubble near 1/4 of a step when no batch size is given.
        return 4 * request.pipeline_parallel
    return 1


def _largest_micro_batch(context: _Context, setup: _Setup, data_parallel: int) -> int:
    """Memory is affine in the micro-batch: solve for the largest one that fits."""
    request = context.request
    cap = max(1, min(MAX_MICRO_BATCH, MAX_TOKENS_PER_MICRO_BATCH // request.seq_len))
    if request.global_batch_size is not None:
        cap = max(1, min(cap, math.ceil(request.global_batch_size / data_parallel)))
    one = _memory(context, setup, 1, _accumulation(request, 1, data_parallel)).per_gpu_bytes
    two = _memory(context, setup, 2, _accumulation(request, 2, data_parallel)).per_gpu_bytes
    slope = max(two - one, 1)
    room = setup.usable_bytes - one
    if room < 0:
        return 1
    largest = 1 + room // slope
    # Powers of two keep kernels and batch sizes regular.
    exponent = int(math.log2(min(largest, cap)))
    return max(1, 1 << exponent)


def _evaluate(context: _Context, setup: _Setup, price: Price | None) -> _Candidate:
    request = context.request
    model_split = request.tensor_parallel * request.pipeline_parallel
    data_parallel = setup.num_gpus // model_split
    micro_batch = request.micro_batch or _largest_micro_batch(context, setup, data_parallel)
    accumulation = _accumulation(request, micro_batch, data_parallel)
    memory = _memory(context, setup, micro_batch, accumulation)
    step = training_step(
        context.model,
        setup.gpu,
        method=context.method,
        precision=request.precision,
        strategy=setup.strategy,
        data_parallel=data_parallel,
        tensor_parallel=request.tensor_parallel,
        pipeline_parallel=request.pipeline_parallel,
        nodes=math.ceil(setup.num_gpus / setup.gpus_per_node),
        micro_batch=micro_batch,
        gradient_accumulation=accumulation,
        seq_len=request.seq_len,
        recompute=setup.recompute,
        lora_rank=request.lora_rank,
        lora_targets=request.lora_targets,
        pipeline_interleave=request.pipeline_interleave,
        cpu_offload=request.cpu_offload,
        utilization=request.utilization,
        framework=request.framework,
        compiled=request.compile,
    )
    step, speed, capped = _calibrated_step(context, setup, step)
    usd_per_hour = price.usd_per_gpu_hour * setup.num_gpus if price else None
    duration = None
    if context.total_tokens is not None:
        duration = context.total_tokens / step.tokens_per_second
    return _Candidate(
        setup, micro_batch, accumulation, memory, step, usd_per_hour, price, duration, speed, capped
    )


def _rank_key(candidate: _Candidate) -> tuple[float, int, float]:
    """Cheapest per token; within 2% of each other, fewer GPUs then faster wins."""
    cost_bucket = round(math.log(candidate.usd_per_token) / math.log(1.02), 0)
    if math.isinf(candidate.usd_per_token):
        cost_bucket = math.inf
    return (cost_bucket, candidate.setup.num_gpus, -candidate.step.tokens_per_second)


def _memory_key(candidate: _Candidate) -> int:
    return candidate.memory.per_gpu_bytes


def _meets_limits(request: TrainingRequest, candidate: _Candidate) -> bool:
    deadline = request.deadline_seconds
    duration = candidate.duration_seconds
    if deadline is not None and duration is not None and duration > deadline:
        return False
    total = candidate.total_usd
    return not (
        request.max_cost_usd is not None and total is not None and total > request.max_cost_usd
    )


def _limits_reason(request: TrainingRequest, fitting: list[_Candidate]) -> str:
    fastest = min(c.duration_seconds or math.inf for c in fitting)
    cheapest = min((c.total_usd for c in fitting if c.total_usd is not None), default=math.inf)
    parts = []
    if request.deadline_seconds is not None:
        parts.append(
            f"no plan finishes within the deadline of {request.deadline_seconds:.0f} s "
            f"(the fastest takes {fastest:.0f} s)"
        )
    if request.max_cost_usd is not None:
        parts.append(
            f"no plan costs at most ${request.max_cost_usd:.2f} (the cheapest costs ${cheapest:.2f})"
        )
    return " and ".join(parts) or "no plan meets the limits"


def _to_plan(
    context: _Context, best: _Candidate, ranked: list[_Candidate], top: bool = True
) -> TrainingPlan:
    request = context.request
    setup = best.setup
    memory = best.memory
    recommendations: list[TrainingPlan] = []
    if top:
        recommendations = [_to_plan(context, c, [], top=False) for c in _alternatives(best, ranked)]
    return TrainingPlan(
        model=context.model.key,
        method=request.method,
        gpu=setup.gpu.key,
        num_gpus=setup.num_gpus,
        nodes=math.ceil(setup.num_gpus / setup.gpus_per_node),
        gpus_per_node=setup.gpus_per_node,
        strategy=setup.strategy,
        micro_batch=best.micro_batch,
        gradient_accumulation=best.gradient_accumulation,
        seq_len=request.seq_len,
        epochs=request.epochs,
        gradient_checkpointing={"off": "off", "full": "on", "selective": "selective"}[
            setup.recompute
        ],
        tensor_parallel=request.tensor_parallel,
        pipeline_parallel=request.pipeline_parallel,
        memory=TrainingMemoryPlan(
            per_gpu_bytes=memory.per_gpu_bytes,
            weights_bytes=memory.weights_bytes,
            gradients_bytes=memory.gradients_bytes,
            optimizer_bytes=memory.optimizer_bytes,
            activations_bytes=memory.activations_bytes,
            logits_bytes=memory.logits_bytes,
            other_bytes=memory.other_bytes,
            overlap_bytes=memory.overlap_bytes,
            capacity_bytes=setup.gpu.memory_bytes,
        ),
        fits=best.fits,
        throughput=TrainingThroughput(
            tokens_per_second=round(best.step.tokens_per_second, 1),
            mfu=round(best.step.mfu, 4),
            step_seconds=round(best.step.step_seconds, 4),
        ),
        duration_seconds=None if best.duration_seconds is None else round(best.duration_seconds, 1),
        cost=TrainingCost(
            cloud=request.cloud,
            usd_per_hour=round(best.usd_per_hour or 0.0, 4),
            total_usd=None if best.total_usd is None else round(best.total_usd, 2),
            usd_per_gpu_hour=best.price.usd_per_gpu_hour if best.price else None,
            price_as_of=best.price.as_of if best.price else None,
        ),
        recommendations=recommendations,
        warnings=_warnings(context, best),
        calibration=_calibration_summary(context, best),
    )


def _calibration_summary(context: _Context, best: _Candidate) -> CalibrationSummary | None:
    calibration = context.request.calibration
    if calibration is None:
        return None
    factor = _shape_factor(context, best.setup.gpu, best.setup.strategy)
    throughput = best.speed_factor if calibration.enabled else factor.throughput
    return CalibrationSummary(
        applied=calibration.enabled and factor.observations > 0,
        observations=factor.observations,
        throughput_factor=round(throughput, 4),
        memory_factor=round(factor.memory, 4),
        shape=factor.shape,
        pooled_over=TRAINING_POOLS_OVER,
        roofline_capped=best.roofline_capped,
        source=calibration.source,
        available=len(calibration.training()),
    )


def _alternatives(best: _Candidate, ranked: list[_Candidate]) -> list[_Candidate]:
    """The best plan of each other GPU type first, then other counts and strategies."""
    seen = {(best.setup.gpu.key, best.setup.num_gpus, best.setup.strategy)}
    gpu_types = {best.setup.gpu.key}
    chosen: list[_Candidate] = []
    for diverse in (True, False):
        for candidate in ranked:
            setup = candidate.setup
            key = (setup.gpu.key, setup.num_gpus, setup.strategy)
            if key in seen or (diverse and setup.gpu.key in gpu_types):
                continue
            seen.add(key)
            gpu_types.add(setup.gpu.key)
            chosen.append(candidate)
            if len(chosen) == RECOMMENDATIONS:
                return chosen
    return chosen


def _warnings(context: _Context, candidate: _Candidate) -> list[str]:
    request = context.request
    memory = candidate.memory
    gpu = candidate.setup.gpu
    warnings: list[str] = []
    if not candidate.fits:
        warnings.append(
            f"needs {memory.per_gpu_bytes / 2**30:.1f} GiB per GPU but {gpu.key} has "
            f"{gpu.memory_bytes / 2**30:.1f} GiB: use more GPUs, fsdp, a smaller micro-batch, "
            "gradient checkpointing or qlora"
        )
        if request.memory_fraction < 1:
            warnings[-1] += (
                f" (plans here may fill only {request.memory_fraction:.0%} of it, "
                f"{candidate.setup.usable_bytes / 2**30:.1f} GiB)"
            )
    if candidate.price is None:
        warnings.append(f"no {request.cloud} price for {gpu.key}; cost is 0 (pass --prices FILE)")
    elif candidate.price.note:
        warnings.append(candidate.price.note)
    if request.optimizer in ("paged_adamw8bit", "paged_adamw"):
        warnings.append(
            "paged AdamW states live in CUDA unified memory and are not counted; "
            "they slow steps down when they page to host RAM"
        )
    layer_activations = memory.activations_bytes - memory.logits_bytes
    if memory.logits_bytes > max(layer_activations, 1):
        warnings.append(
            f"logits ({memory.logits_bytes / 2**30:.1f} GiB for a {context.model.vocab_size}-token "
            "vocabulary) dominate activations; a chunked or fused cross-entropy saves most of it"
        )
    if request.seq_len > context.model.max_seq_len:
        warnings.append(
            f"seq_len {request.seq_len} exceeds {context.model.key}'s context of "
            f"{context.model.max_seq_len} tokens"
        )
    if gpu.vendor == "amd":
        warnings.append("MI300X needs ROCm builds of PyTorch, bitsandbytes and flash-attention")
    if context.total_tokens is None:
        warnings.append("no dataset_tokens given: duration and total cost are unknown")
    if (
        candidate.setup.num_gpus > 1
        and candidate.step.exposed_comm_seconds > 0.25 * candidate.step.step_seconds
    ):
        warnings.append(
            f"communication is {candidate.step.exposed_comm_seconds / candidate.step.step_seconds:.0%} "
            f"of each step over {gpu.interconnect if candidate.setup.num_gpus <= candidate.setup.gpus_per_node else 'the network'}"
        )
    return warnings
