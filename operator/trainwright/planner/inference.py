"""Serving plans: memory, latency, throughput, replicas and cost.

- KV cache: 2 (K and V) x layers x kv_heads x head_dim x bytes per value per token
  (Llama 3.1 8B in bf16: 131,072 bytes; 70B: 327,680). With tensor parallelism each GPU
  holds kv_heads / t heads (replicated when t exceeds kv_heads).
- Memory budget (vLLM ``gpu_memory_utilization``, Kwon et al. 2023): KV blocks get
  memory x utilization - weights - activation peak - non-torch memory (CUDA context,
  CUDA graphs, NCCL); blocks hold 16 tokens.
- Decode is memory bound: a step streams the weights and the batch's KV cache once,
  at ~80% of datasheet bandwidth (gpt-fast measured ~1.7 of 2.0 TB/s on A100; STREAM-like
  ceilings of HBM); weight-only int8/int4 also pays dequantization on CUDA cores (2 and
  4 operations per weight). Large batches turn compute bound: 2·N·B FLOPs.
- Prefill is compute bound: (2·N·P + 2·L·P²·d_attn) FLOPs at 60% of dense peak for 16-bit
  and 50% for fp8 (TensorRT-LLM's published context-phase latencies imply 0.4-0.67); it
  also streams the weights once.
- Each layer costs ~40 µs of kernel launches and small-kernel tails in a decode step
  (replayed from CUDA graphs: gpt-fast and vLLM traces show ~8-10 kernels per layer at a
  few µs each) and ~80 µs in prefill, which engines run without CUDA graphs (vLLM
  captures only decode batch sizes), so every launch pays its CPU latency. Each
  tensor-parallel all-reduce (two per layer) costs ~10 µs of NVLink latency (NCCL
  small-message latency; 25 µs over PCIe) plus its bytes over the link.
- Replicas: requests arrive as a Poisson process; with c = replicas x batch slots and
  service time S = TTFT + output_tokens x ITL, the M/M/c (Erlang C) queue gives the 95th
  percentile wait, P(W > t) = C(c, λS) · exp(-(c/S - λ)·t) (Kleinrock 1975, §3.5).
  Prefill steals decode time, so ITL under load is ITL / (1 - λ_replica · prefill time).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from trainwright.planner.catalog import Price
from trainwright.planner.errors import InfeasibleError, PlannerError
from trainwright.planner.lookup import get_gpu, get_model, list_gpus, price_for
from trainwright.planner.specs import GpuSpec, ModelSpec
from trainwright.vocabulary import Cloud, InferencePrecision

MEMORY_BANDWIDTH_EFFICIENCY = 0.8
PREFILL_EFFICIENCY = {"bf16": 0.6, "fp16": 0.6, "fp8": 0.5, "int8": 0.6, "int4": 0.6}
DECODE_COMPUTE_EFFICIENCY = 0.6
DEQUANT_OPS_PER_WEIGHT = {"int8": 2.0, "int4": 4.0}
LAYER_OVERHEAD_SECONDS = 40e-6
PREFILL_LAYER_OVERHEAD_SECONDS = 80e-6
NVLINK_ALLREDUCE_LATENCY_SECONDS = 10e-6
PCIE_ALLREDUCE_LATENCY_SECONDS = 25e-6
NON_TORCH_BYTES = 1 * 2**30
KV_BLOCK_TOKENS = 16
MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS = 256
TAIL_PROBABILITY = 0.05
TENSOR_PARALLEL_CHOICES = (1, 2, 4, 8)


class InferenceRequest(BaseModel):
    """A model to serve and the load and latency it must meet."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, defer_build=True
    )

    model: str | ModelSpec
    gpu: str | None = None
    precision: InferencePrecision = "bf16"
    tensor_parallel: int | None = Field(default=None, gt=0)
    prompt_tokens: int = Field(default=512, gt=0)
    output_tokens: int = Field(default=256, gt=0)
    batch: int | None = Field(default=None, gt=0)
    rps: float | None = Field(default=None, gt=0)
    ttft_slo_ms: float | None = Field(default=None, gt=0)
    itl_slo_ms: float | None = Field(default=None, gt=0)
    cloud: Cloud = "aws"
    gpu_candidates: list[str] | None = None
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    quant_group_size: int = Field(default=128, gt=0, description="int4 weights per scale")
    prices: tuple[Price, ...] | None = None


class InferenceMemory(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    weights_bytes: int
    kv_cache_bytes_per_token: int
    per_gpu_bytes: int
    max_concurrent_sequences: int
    kv_cache_budget_bytes: int
    capacity_bytes: int


class InferenceLatency(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    ttft_seconds: float
    itl_seconds: float
    prefill_seconds: float
    queue_wait_p95_seconds: float


class InferenceThroughput(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    output_tokens_per_second: float
    requests_per_second: float
    decode_tokens_per_second_per_user: float


class InferenceCost(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    cloud: str
    usd_per_hour: float
    usd_per_million_tokens: float
    usd_per_gpu_hour: float | None = None
    price_as_of: str | None = None


class InferencePlan(BaseModel):
    """How to serve a model: GPU, tensor parallelism, replicas, latency and cost."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    model: str
    gpu: str
    precision: str
    tensor_parallel: int
    replicas: int
    batch: int
    prompt_tokens: int
    output_tokens: int
    memory: InferenceMemory
    fits: bool
    latency: InferenceLatency
    throughput: InferenceThroughput
    cost: InferenceCost
    recommendations: list[InferencePlan] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def to_contract(self) -> dict[str, Any]:
        """The JSON document of CONTRACTS.md (``trainwright plan inference -o json``)."""
        return self.model_dump(mode="json")


def weight_bytes(model: ModelSpec, precision: str, group_size: int = 128) -> float:
    """Serving weights: linear layers at the quantized width, embeddings and head in 16 bits.

    int4 adds a 16-bit scale and zero point per group (AWQ/GPTQ/gpt-fast); int8 and fp8
    use per-channel or per-tensor scales (negligible).
    """
    if precision in ("bf16", "fp16"):
        return model.total_params * 2.0
    per_weight = {"fp8": 1.0, "int8": 1.0, "int4": 0.5 + 4 / group_size}[precision]
    return model.linear_params * per_weight + (model.total_params - model.linear_params) * 2.0


def kv_cache_bytes_per_token(model: ModelSpec, precision: str) -> int:
    """2 x layers x kv_heads x head_dim x bytes (fp8 serving also stores an fp8 cache)."""
    value_bytes = 1 if precision == "fp8" else 2
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * value_bytes


def kv_cache_bytes_per_token_per_gpu(model: ModelSpec, precision: str, tp: int) -> float:
    heads_per_gpu = math.ceil(model.num_kv_heads / tp)
    return kv_cache_bytes_per_token(model, precision) * heads_per_gpu / model.num_kv_heads


def activation_peak_bytes(model: ModelSpec, tp: int) -> float:
    """vLLM's profiled peak: one forward of max_num_batched_tokens plus sampling logits."""
    h = model.hidden_size
    per_token = 4 * h + (2 * h * (1 + 2 * model.kv_fraction) + 6 * model.ffn_size) / tp
    return MAX_NUM_BATCHED_TOKENS * per_token + MAX_NUM_SEQS * model.vocab_size * 4 / tp


class _Engine(NamedTuple):
    """One replica's physics for a (model, GPU, precision, TP) choice."""

    model: ModelSpec
    gpu: GpuSpec
    precision: str
    tp: int
    weights_bytes: float
    kv_bytes_per_token_gpu: float
    kv_budget_bytes: float
    context_tokens: int
    prompt_tokens: int


def _allreduce_seconds(gpu: GpuSpec, tp: int, payload_bytes: float) -> float:
    if tp == 1:
        return 0.0
    latency = (
        NVLINK_ALLREDUCE_LATENCY_SECONDS if gpu.switched_peers else PCIE_ALLREDUCE_LATENCY_SECONDS
    )
    return latency + 2 * (tp - 1) / tp * payload_bytes / gpu.intra_node_bytes_per_second


def _dequant_seconds(engine: _Engine) -> float:
    ops = DEQUANT_OPS_PER_WEIGHT.get(engine.precision)
    if ops is None:
        return 0.0
    return engine.model.linear_params / engine.tp * ops / engine.gpu.fp32_flops_per_second


def _overhead_seconds(engine: _Engine, tokens: int, per_layer_seconds: float) -> float:
    model = engine.model
    allreduce = _allreduce_seconds(engine.gpu, engine.tp, tokens * model.hidden_size * 2)
    return model.num_layers * (per_layer_seconds + 2 * allreduce)


def prefill_seconds(engine: _Engine, prompt_tokens: int) -> float:
    """Time to process a prompt alone: compute at prefill efficiency plus one weight read."""
    model, gpu = engine.model, engine.gpu
    attention = 2 * model.num_layers * prompt_tokens**2 * model.num_heads * model.head_dim
    flops = (2 * model.active_params * prompt_tokens + attention) / engine.tp
    peak = gpu.peak_flops_per_second(engine.precision) * PREFILL_EFFICIENCY[engine.precision]
    stream = _weights_stream_seconds(engine, prompt_tokens)
    return (
        flops / peak
        + stream
        + _dequant_seconds(engine)
        + _overhead_seconds(engine, prompt_tokens, PREFILL_LAYER_OVERHEAD_SECONDS)
    )


def experts_touched_fraction(model: ModelSpec, tokens: int) -> float:
    """Share of a layer's experts that ``tokens`` tokens route to, with uniform routing.

    Each token picks k of E experts, so an expert stays idle with probability
    (1 - k/E)^tokens (Mixtral at batch 1 reads 2 of 8 experts, at batch 64 nearly all).
    """
    if model.num_experts == 1:
        return 1.0
    idle = (1 - model.experts_per_token / model.num_experts) ** tokens
    return max(1 - idle, model.experts_per_token / model.num_experts)


def _weights_stream_seconds(engine: _Engine, tokens: int) -> float:
    """Time to read the weights a step touches once.

    Idle experts are skipped, and so is the input embedding table: a step gathers only
    its tokens' rows (a tied LM head still reads the whole matrix).
    """
    model = engine.model
    expert_bytes = engine.weights_bytes * model.num_layers * model.num_experts
    expert_bytes *= model.expert_params / model.total_params if model.num_experts > 1 else 0.0
    idle_bytes = expert_bytes * (1 - experts_touched_fraction(model, tokens))
    if not model.tied_embeddings:
        idle_bytes += (
            model.embedding_params * 2 - min(tokens, model.vocab_size) * model.hidden_size * 2
        )
    bandwidth = engine.gpu.memory_bandwidth_bytes_per_second * MEMORY_BANDWIDTH_EFFICIENCY
    return (engine.weights_bytes - idle_bytes) / engine.tp / bandwidth


def decode_step_seconds(engine: _Engine, batch: int) -> float:
    """One decode step for ``batch`` sequences at the average context length."""
    model, gpu = engine.model, engine.gpu
    bandwidth = gpu.memory_bandwidth_bytes_per_second * MEMORY_BANDWIDTH_EFFICIENCY
    kv_read = batch * engine.context_tokens * engine.kv_bytes_per_token_gpu
    memory = _weights_stream_seconds(engine, batch) + kv_read / bandwidth + _dequant_seconds(engine)
    attention = 4 * batch * engine.context_tokens * model.num_heads * model.head_dim
    flops = (2 * model.active_params * batch + attention * model.num_layers) / engine.tp
    compute = flops / (gpu.peak_flops_per_second(engine.precision) * DECODE_COMPUTE_EFFICIENCY)
    return max(memory, compute) + _overhead_seconds(engine, batch, LAYER_OVERHEAD_SECONDS)


def _engine(request: InferenceRequest, model: ModelSpec, gpu: GpuSpec, tp: int) -> _Engine:
    weights = weight_bytes(model, request.precision, request.quant_group_size)
    kv_gpu = kv_cache_bytes_per_token_per_gpu(model, request.precision, tp)
    usable = gpu.memory_bytes * request.gpu_memory_utilization
    budget = usable - weights / tp - activation_peak_bytes(model, tp) - NON_TORCH_BYTES
    context = request.prompt_tokens + request.output_tokens // 2
    return _Engine(
        model, gpu, request.precision, tp, weights, kv_gpu, budget, context, request.prompt_tokens
    )


def max_concurrent_sequences(engine: _Engine, sequence_tokens: int) -> int:
    """Sequences whose whole KV cache (in 16-token blocks) fits the budget."""
    if engine.kv_budget_bytes <= 0:
        return 0
    blocks = math.ceil(sequence_tokens / KV_BLOCK_TOKENS)
    per_sequence = blocks * KV_BLOCK_TOKENS * engine.kv_bytes_per_token_gpu
    return int(engine.kv_budget_bytes // per_sequence)


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability an arrival waits in M/M/c (Erlang C), via the stable Erlang B recursion."""
    if offered_load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return servers * blocking / (servers - offered_load * (1 - blocking))


def _wait_p95(servers: int, arrival_rate: float, service_seconds: float) -> float:
    offered = arrival_rate * service_seconds
    if offered >= servers:
        return math.inf
    # Far below saturation the wait probability is negligible; skip the O(c) recursion.
    if servers > 64 and offered < 0.5 * servers:
        return 0.0
    waiting = erlang_c(servers, offered)
    if waiting <= TAIL_PROBABILITY:
        return 0.0
    return math.log(waiting / TAIL_PROBABILITY) / (servers / service_seconds - arrival_rate)


class _Sizing(NamedTuple):
    engine: _Engine
    batch: int
    replicas: int
    ttft_seconds: float
    itl_seconds: float
    prefill_seconds: float
    wait_seconds: float
    output_tokens_per_second: float
    requests_per_second: float
    max_concurrent: int
    usd_per_hour: float
    price: Price | None

    @property
    def usd_per_million_tokens(self) -> float:
        if self.output_tokens_per_second <= 0:
            return math.inf
        return self.usd_per_hour / (self.output_tokens_per_second * 3600) * 1e6


def _size(request: InferenceRequest, engine: _Engine, price: Price | None) -> _Sizing | None:
    """Choose batch slots and replicas for this engine, or ``None`` if nothing meets the SLOs."""
    sequence = request.prompt_tokens + request.output_tokens
    max_concurrent = max_concurrent_sequences(engine, sequence)
    if max_concurrent < 1:
        return None
    prefill = prefill_seconds(engine, request.prompt_tokens)
    ttft_slo = request.ttft_slo_ms / 1000 if request.ttft_slo_ms else math.inf
    itl_slo = request.itl_slo_ms / 1000 if request.itl_slo_ms else math.inf
    limit = min(max_concurrent, MAX_NUM_SEQS)
    batches = [request.batch] if request.batch else _powers_of_two(limit)
    if request.batch and request.batch > max_concurrent:
        return None
    best: _Sizing | None = None
    for batch in batches:
        sizing = _size_batch(request, engine, price, batch, prefill, max_concurrent)
        if sizing is None or sizing.ttft_seconds > ttft_slo or sizing.itl_seconds > itl_slo:
            continue
        if best is None or _sizing_key(request, sizing) < _sizing_key(request, best):
            best = sizing
    return best


def _sizing_key(request: InferenceRequest, sizing: _Sizing) -> tuple[float, float]:
    if request.rps is not None:
        return (sizing.replicas, sizing.ttft_seconds + sizing.itl_seconds)
    return (sizing.usd_per_million_tokens, sizing.itl_seconds)


def _powers_of_two(limit: int) -> list[int]:
    return [2**k for k in range(int(math.log2(limit)) + 1)]


def _size_batch(
    request: InferenceRequest,
    engine: _Engine,
    price: Price | None,
    batch: int,
    prefill: float,
    max_concurrent: int,
) -> _Sizing | None:
    step = decode_step_seconds(engine, batch)
    usd_per_replica = (price.usd_per_gpu_hour if price else 0.0) * engine.tp
    if request.rps is None:
        itl = step
        service = prefill + request.output_tokens * itl
        return _Sizing(
            engine,
            batch,
            1,
            prefill,
            itl,
            prefill,
            0.0,
            batch / itl,
            batch / service,
            max_concurrent,
            usd_per_replica,
            price,
        )
    ttft_slo = request.ttft_slo_ms / 1000 if request.ttft_slo_ms else math.inf
    service_floor = prefill + request.output_tokens * step
    replicas = max(1, math.ceil(request.rps * service_floor / batch))
    for _ in range(64):
        per_replica = request.rps / replicas
        prefill_share = per_replica * prefill
        if prefill_share < 0.9:
            itl = step / (1 - prefill_share)
            service = prefill + request.output_tokens * itl
            wait = _wait_p95(replicas * batch, request.rps, service)
            utilization = request.rps * service / (replicas * batch)
            ttft = prefill + wait + step
            if utilization <= 0.9 and ttft <= ttft_slo:
                return _Sizing(
                    engine,
                    batch,
                    replicas,
                    ttft,
                    itl,
                    prefill,
                    wait,
                    request.rps * request.output_tokens,
                    request.rps,
                    max_concurrent,
                    usd_per_replica * replicas,
                    price,
                )
        replicas = max(replicas + 1, math.ceil(replicas * 1.1))
    return None


def _tensor_parallel_choices(
    request: InferenceRequest, model: ModelSpec, gpu: GpuSpec
) -> list[int]:
    if request.tensor_parallel is not None:
        if model.num_heads % request.tensor_parallel:
            raise PlannerError(
                f"tensor_parallel {request.tensor_parallel} must divide the model's "
                f"{model.num_heads} attention heads"
            )
        return [request.tensor_parallel]
    return [
        tp
        for tp in TENSOR_PARALLEL_CHOICES
        if tp <= gpu.max_gpus_per_node and model.num_heads % tp == 0
    ]


def _candidates(
    request: InferenceRequest, model: ModelSpec, gpus: list[GpuSpec]
) -> tuple[list[_Sizing], float]:
    sizings: list[_Sizing] = []
    smallest_need = math.inf
    for gpu in gpus:
        price = price_for(gpu.key, request.cloud, request.prices)
        for tp in _tensor_parallel_choices(request, model, gpu):
            engine = _engine(request, model, gpu, tp)
            need = gpu.memory_bytes * request.gpu_memory_utilization - engine.kv_budget_bytes
            need += engine.kv_bytes_per_token_gpu * (request.prompt_tokens + request.output_tokens)
            smallest_need = min(smallest_need, need / request.gpu_memory_utilization)
            sizing = _size(request, engine, price)
            if sizing is not None:
                sizings.append(sizing)
                if request.tensor_parallel is None and request.rps is None and request.gpu:
                    break
    return sizings, smallest_need


def _rank(request: InferenceRequest, sizing: _Sizing) -> tuple[float, float]:
    if request.rps is not None:
        return (sizing.usd_per_hour, sizing.ttft_seconds)
    return (sizing.usd_per_million_tokens, sizing.engine.tp)


def plan_inference(request: InferenceRequest) -> InferencePlan:
    """Plan serving on ``request.gpu`` (smallest TP that meets the SLOs), or search all GPUs."""
    if request.gpu is None:
        return recommend_inference(request)
    return _plan(request, [get_gpu(request.gpu)])


def recommend_inference(request: InferenceRequest) -> InferencePlan:
    """The cheapest GPU, TP and replica count that serve the load within the SLOs."""
    if request.gpu_candidates:
        gpus = [get_gpu(name) for name in request.gpu_candidates]
    else:
        gpus = [g for g in list_gpus() if price_for(g.key, request.cloud, request.prices)]
    return _plan(request, gpus)


def _plan(request: InferenceRequest, gpus: list[GpuSpec]) -> InferencePlan:
    model = get_model(request.model)
    if request.precision == "fp8" and any(g.fp8_flops_per_second is None for g in gpus):
        gpus_fp8 = [g for g in gpus if g.fp8_flops_per_second is not None]
        if not gpus_fp8:
            raise PlannerError(
                f"precision fp8 needs a GPU with fp8 tensor cores; {gpus[0].key} has none "
                "(use bf16, int8 or int4)"
            )
        gpus = gpus_fp8
    sizings, smallest_need = _candidates(request, model, gpus)
    if not sizings:
        names = ", ".join(g.key for g in gpus)
        slo = " within the latency SLOs" if (request.ttft_slo_ms or request.itl_slo_ms) else ""
        raise InfeasibleError(
            f"{model.key} at {request.precision} cannot be served on {names} with up to "
            f"{max(TENSOR_PARALLEL_CHOICES)}-way tensor parallelism{slo}",
            int(smallest_need),
        )
    ranked = sorted(sizings, key=lambda s: _rank(request, s))
    return _to_plan(request, ranked[0], ranked[1:6])


def _to_plan(request: InferenceRequest, sizing: _Sizing, others: list[_Sizing]) -> InferencePlan:
    engine = sizing.engine
    kv_used = sizing.batch * (request.prompt_tokens + request.output_tokens)
    per_gpu = (
        engine.weights_bytes / engine.tp
        + activation_peak_bytes(engine.model, engine.tp)
        + NON_TORCH_BYTES
        + kv_used * engine.kv_bytes_per_token_gpu
    )
    warnings = []
    if sizing.price is not None and sizing.price.note:
        warnings.append(sizing.price.note)
    if sizing.price is None:
        warnings.append(
            f"no {request.cloud} price for {engine.gpu.key}; cost is 0 (pass --prices FILE)"
        )
    if request.precision == "fp8" and engine.gpu.fp8_flops_per_second is None:
        warnings.append(f"{engine.gpu.key} has no fp8 tensor cores; fp8 runs as weight-only")
    if request.prompt_tokens + request.output_tokens > engine.model.max_seq_len:
        warnings.append(
            f"prompt + output ({request.prompt_tokens + request.output_tokens} tokens) exceeds "
            f"{engine.model.key}'s context of {engine.model.max_seq_len} tokens"
        )
    if request.rps is None:
        warnings.append(
            f"no --rps given: sized one replica at batch {sizing.batch}; its capacity is "
            f"{sizing.requests_per_second:.2f} requests/s"
        )
    return InferencePlan(
        model=engine.model.key,
        gpu=engine.gpu.key,
        precision=request.precision,
        tensor_parallel=engine.tp,
        replicas=sizing.replicas,
        batch=sizing.batch,
        prompt_tokens=request.prompt_tokens,
        output_tokens=request.output_tokens,
        memory=InferenceMemory(
            weights_bytes=int(engine.weights_bytes),
            kv_cache_bytes_per_token=kv_cache_bytes_per_token(engine.model, request.precision),
            per_gpu_bytes=int(per_gpu),
            max_concurrent_sequences=sizing.max_concurrent,
            kv_cache_budget_bytes=int(max(engine.kv_budget_bytes, 0)),
            capacity_bytes=engine.gpu.memory_bytes,
        ),
        fits=True,
        latency=InferenceLatency(
            ttft_seconds=round(sizing.ttft_seconds, 5),
            itl_seconds=round(sizing.itl_seconds, 6),
            prefill_seconds=round(sizing.prefill_seconds, 5),
            queue_wait_p95_seconds=round(sizing.wait_seconds, 5),
        ),
        throughput=InferenceThroughput(
            output_tokens_per_second=round(sizing.output_tokens_per_second, 2),
            requests_per_second=round(sizing.requests_per_second, 4),
            decode_tokens_per_second_per_user=round(1 / sizing.itl_seconds, 2),
        ),
        cost=InferenceCost(
            cloud=request.cloud,
            usd_per_hour=round(sizing.usd_per_hour, 4),
            usd_per_million_tokens=round(sizing.usd_per_million_tokens, 4),
            usd_per_gpu_hour=sizing.price.usd_per_gpu_hour if sizing.price else None,
            price_as_of=sizing.price.as_of if sizing.price else None,
        ),
        recommendations=[_to_plan(request, other, []) for other in others],
        warnings=warnings,
    )
