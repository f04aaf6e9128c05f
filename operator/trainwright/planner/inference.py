"""Serving plans: memory, step times at real batch sizes, latency quantiles, replicas, cost.

- KV cache: 2 (K and V) x layers x kv_heads x head_dim x bytes per value per token
  (Llama 3.1 8B in bf16: 131,072 bytes; 70B: 327,680). With tensor parallelism each GPU
  holds kv_heads / t heads (replicated when t exceeds kv_heads). fp8 serving stores an
  fp8 cache; ``kv_cache_precision`` picks another width (vLLM ``--kv-cache-dtype``).
- Memory budget (vLLM ``gpu_memory_utilization``, Kwon et al. 2023): KV blocks get
  memory x utilization - weights - activation peak - non-torch memory (CUDA context,
  CUDA graphs, NCCL); blocks hold 16 tokens.
- A decode step of B sequences runs its GEMMs and then its attention, each at the slower
  of its memory and compute roofline (Williams et al. 2009): the GEMMs read the weights
  the batch touches once (a mixture-of-experts layer reads only the experts its B tokens
  route to) against 2·N_active·B FLOPs; attention reads every sequence's KV cache at its
  current length against 4·B·context·d_attn FLOPs per layer. Bandwidth runs at ~80% of the
  datasheet (gpt-fast measured ~1.7 of 2.0 TB/s on A100), decode GEMMs at a share of the
  dense peak of the weights' compute precision (fp8 doubles it; weight-only int8/int4
  compute in 16 bits after dequantizing on CUDA cores, 2 and 4 operations per weight).
  Each step also pays ~40 µs per layer of kernel launches and small-kernel tails (CUDA
  graphs: gpt-fast and vLLM traces show ~8-10 kernels per layer at a few µs), a few µs
  per sequence for sampling and scheduling, and with tensor parallelism two all-reduces
  per layer of B x hidden values (~10 µs NCCL latency on NVLink, 25 µs over PCIe, plus
  the bytes over the link).
- Prefill is compute bound: (2·N·P + 2·L·P²·d_attn) FLOPs at 60% of dense peak for 16-bit
  and 50% for fp8 (TensorRT-LLM's published context-phase latencies imply 0.4-0.67); alone
  it also streams the weights once and runs ~80 µs per layer without CUDA graphs.
- Continuous batching with chunked prefill (vLLM's and SGLang's default; Agrawal et al.
  2024, Sarathi-Serve): prompts are cut into chunks of up to max_num_batched_tokens - B
  tokens that ride along decode steps. At steady state with B sequences each generating
  O tokens, B prompts enter every O steps, so the mean inter-token latency is the decode
  step plus B/O of a prompt's prefill compute, and the steps that carry a chunk (the
  ITL's upper quantiles) last a chunk's compute longer. One replica sustains
  B·O / (O·step + B·prefill) output tokens per second; static batching (TensorRT-LLM's
  early benchmarks) spends the same work in another order.
- Serving a request rate: the largest batch whose ITL meets its SLO and whose KV cache
  fits sets a replica's capacity; replicas are added until the fleet runs under 90% busy
  and the TTFT quantiles meet the SLO. TTFT is the prompt's chunked prefill plus the
  wait for a free slot, an M/M/c queue over the replicas' slots (``planner.queueing``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from trainwright.planner.calibration import (
    INFERENCE_POOLS_OVER,
    Calibration,
    CalibrationSummary,
    shrunk_factor,
    size_class,
)
from trainwright.planner.catalog import Price
from trainwright.planner.errors import InfeasibleError, PlannerError
from trainwright.planner.lookup import get_gpu, get_model, list_gpus, price_for
from trainwright.planner.queueing import prefill_wait_seconds, wait_quantile_seconds
from trainwright.planner.specs import GpuSpec, ModelSpec
from trainwright.vocabulary import Cloud, InferencePrecision, KvCachePrecision

MEMORY_BANDWIDTH_EFFICIENCY = 0.8
PREFILL_EFFICIENCY = {"bf16": 0.6, "fp16": 0.6, "fp8": 0.5, "int8": 0.6, "int4": 0.6}
# Share of dense peak that decode GEMMs reach once the batch makes them compute bound:
# short and wide (M = B rows) GEMMs with fused epilogues run below prefill's large ones.
DECODE_COMPUTE_EFFICIENCY = {"bf16": 0.5, "fp16": 0.5, "fp8": 0.5, "int8": 0.5, "int4": 0.5}
# Decode attention is bound by its KV reads; its FLOPs (4·context·d per token) run on
# tensor cores at a low share of peak (FlashDecoding / FlashInfer split-K kernels).
ATTENTION_COMPUTE_EFFICIENCY = 0.3
DEQUANT_OPS_PER_WEIGHT = {"int8": 2.0, "int4": 4.0}
LAYER_OVERHEAD_SECONDS = 40e-6
PREFILL_LAYER_OVERHEAD_SECONDS = 80e-6
# Sampling, detokenization and scheduling per running sequence and step (vLLM's V1
# engine profiles show a few µs each once the CPU work overlaps the GPU).
SEQUENCE_OVERHEAD_SECONDS = 8e-6
NVLINK_ALLREDUCE_LATENCY_SECONDS = 10e-6
PCIE_ALLREDUCE_LATENCY_SECONDS = 25e-6
NON_TORCH_BYTES = 1 * 2**30
KV_BLOCK_TOKENS = 16
MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS = 256
MAX_UTILIZATION = 0.9
TAIL_QUANTILE = 0.95
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
    kv_cache_precision: KvCachePrecision = Field(
        default="auto", description="KV cache width; auto: fp8 for fp8 serving, else 16-bit"
    )
    max_num_seqs: int = Field(
        default=MAX_NUM_SEQS, gt=0, description="sequences a replica runs at once (vLLM's cap)"
    )
    gpu_candidates: list[str] | None = None
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    quant_group_size: int = Field(default=128, gt=0, description="int4 weights per scale")
    prices: tuple[Price, ...] | None = None
    calibration: Calibration | None = Field(
        default=None, description="observed serving that corrects plans of the same shape"
    )


class InferenceMemory(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    weights_bytes: int
    kv_cache_bytes_per_token: int
    per_gpu_bytes: int
    max_concurrent_sequences: int
    kv_cache_budget_bytes: int
    capacity_bytes: int


class InferenceLatency(BaseModel):
    """``ttft_seconds`` is the 95th percentile (what an SLO is held to), ``itl_seconds`` the mean."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    ttft_seconds: float
    itl_seconds: float
    prefill_seconds: float
    queue_wait_p95_seconds: float
    ttft_p50_seconds: float
    ttft_p95_seconds: float
    itl_p50_seconds: float
    itl_p95_seconds: float


class InferenceThroughput(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    output_tokens_per_second: float
    requests_per_second: float
    decode_tokens_per_second_per_user: float
    replica_capacity_output_tokens_per_second: float = Field(
        description="what one replica sustains at the planned batch within the ITL SLO"
    )
    replica_capacity_requests_per_second: float
    headroom: float = Field(
        description="share of the fleet's sustainable request rate the planned load leaves free"
    )


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
    calibration: CalibrationSummary | None = None

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


def kv_value_bytes(precision: str, kv_cache_precision: str = "auto") -> int:
    """Bytes per cached K or V value: fp8 serving stores fp8 unless told otherwise."""
    if kv_cache_precision == "auto":
        return 1 if precision == "fp8" else 2
    return 1 if kv_cache_precision in ("fp8", "int8") else 2


def kv_cache_bytes_per_token(
    model: ModelSpec, precision: str, kv_cache_precision: str = "auto"
) -> int:
    """2 x layers x kv_heads x head_dim x bytes per value."""
    value_bytes = kv_value_bytes(precision, kv_cache_precision)
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * value_bytes


def kv_cache_bytes_per_token_per_gpu(
    model: ModelSpec, precision: str, tp: int, kv_cache_precision: str = "auto"
) -> float:
    heads_per_gpu = math.ceil(model.num_kv_heads / tp)
    full = kv_cache_bytes_per_token(model, precision, kv_cache_precision)
    return full * heads_per_gpu / model.num_kv_heads


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
    speed: float = 1.0  # calibration: observed over planned throughput on this shape

    @property
    def bandwidth(self) -> float:
        return self.gpu.memory_bandwidth_bytes_per_second * MEMORY_BANDWIDTH_EFFICIENCY


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


def _prefill_flops(model: ModelSpec, tokens: int, context: int = 0) -> float:
    """Forward FLOPs of ``tokens`` prompt tokens after ``context`` cached ones (causal)."""
    width = model.num_heads * model.head_dim
    attention = 2 * model.num_layers * tokens * (tokens + 2 * context) * width
    return 2 * model.active_params * tokens + attention


def _prefill_compute_seconds(engine: _Engine, tokens: int, context: int = 0) -> float:
    peak = engine.gpu.peak_flops_per_second(engine.precision) * PREFILL_EFFICIENCY[engine.precision]
    return _prefill_flops(engine.model, tokens, context) / engine.tp / peak


def prefill_seconds(engine: _Engine, prompt_tokens: int) -> float:
    """Time to process a prompt alone: compute at prefill efficiency plus one weight read."""
    return (
        _prefill_compute_seconds(engine, prompt_tokens)
        + _weights_stream_seconds(engine, prompt_tokens)
        + _dequant_seconds(engine)
        + _overhead_seconds(engine, prompt_tokens, PREFILL_LAYER_OVERHEAD_SECONDS)
    ) / engine.speed


def prompt_chunk_seconds(engine: _Engine, prompt_tokens: int) -> float:
    """What a whole prompt adds to the steps it rides along (compute and all-reduces).

    Chunked prefill shares the decode step's weight reads and launches, so a prompt costs
    its FLOPs and its tensor-parallel traffic, not another pass over the weights.
    """
    payload = prompt_tokens * engine.model.hidden_size * 2
    traffic = 2 * engine.model.num_layers * _allreduce_seconds(engine.gpu, engine.tp, payload)
    return (_prefill_compute_seconds(engine, prompt_tokens) + traffic) / engine.speed


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
    return (engine.weights_bytes - idle_bytes) / engine.tp / engine.bandwidth


class StepTime(NamedTuple):
    """One decode step, split the way a profiler would show it (seconds)."""

    gemm_seconds: float
    attention_seconds: float
    overhead_seconds: float

    @property
    def seconds(self) -> float:
        return self.gemm_seconds + self.attention_seconds + self.overhead_seconds


def decode_step(engine: _Engine, batch: float, context_tokens: float) -> StepTime:
    """One decode step for ``batch`` sequences at a mean context of ``context_tokens``."""
    model, gpu = engine.model, engine.gpu
    sequences = max(1, math.ceil(batch))
    linear_flops = 2 * model.active_params * batch / engine.tp
    gemm_peak = gpu.peak_flops_per_second(engine.precision)
    gemm_compute = linear_flops / (gemm_peak * DECODE_COMPUTE_EFFICIENCY[engine.precision])
    gemm_memory = _weights_stream_seconds(engine, sequences) + _dequant_seconds(engine)
    kv_bytes = batch * context_tokens * engine.kv_bytes_per_token_gpu
    width = model.num_heads * model.head_dim
    attention_flops = 4 * batch * context_tokens * width * model.num_layers / engine.tp
    attention_compute = attention_flops / (
        gpu.peak_flops_per_second("bf16") * ATTENTION_COMPUTE_EFFICIENCY
    )
    overhead = (
        _overhead_seconds(engine, sequences, LAYER_OVERHEAD_SECONDS)
        + batch * SEQUENCE_OVERHEAD_SECONDS
    )
    return StepTime(
        max(gemm_memory, gemm_compute) / engine.speed,
        max(kv_bytes / engine.bandwidth, attention_compute) / engine.speed,
        overhead / engine.speed,
    )


def decode_step_seconds(engine: _Engine, batch: float, context_tokens: float) -> float:
    return decode_step(engine, batch, context_tokens).seconds


def _engine(
    request: InferenceRequest, model: ModelSpec, gpu: GpuSpec, tp: int, speed: float = 1.0
) -> _Engine:
    weights = weight_bytes(model, request.precision, request.quant_group_size)
    kv_gpu = kv_cache_bytes_per_token_per_gpu(
        model, request.precision, tp, request.kv_cache_precision
    )
    usable = gpu.memory_bytes * request.gpu_memory_utilization
    budget = usable - weights / tp - activation_peak_bytes(model, tp) - NON_TORCH_BYTES
    return _Engine(model, gpu, request.precision, tp, weights, kv_gpu, budget, speed)


def max_concurrent_sequences(engine: _Engine, sequence_tokens: int) -> int:
    """Sequences whose whole KV cache (in 16-token blocks) fits the budget."""
    if engine.kv_budget_bytes <= 0:
        return 0
    blocks = math.ceil(sequence_tokens / KV_BLOCK_TOKENS)
    per_sequence = blocks * KV_BLOCK_TOKENS * engine.kv_bytes_per_token_gpu
    return int(engine.kv_budget_bytes // per_sequence)


class Batching(NamedTuple):
    """A replica running ``batch`` sequences at a time under chunked prefill."""

    batch: float
    step_seconds: float
    itl_seconds: float
    itl_p50_seconds: float
    itl_p95_seconds: float
    ttft_seconds: float
    service_seconds: float
    ttft_p95_extra_seconds: float = 0.0

    @property
    def requests_per_second(self) -> float:
        return self.batch / self.service_seconds


def continuous_batching(
    engine: _Engine, batch: float, prompt_tokens: int, output_tokens: int, arrival_rate: float
) -> Batching:
    """Step, ITL (mean, p50, p95) and TTFT of a replica with ``batch`` sequences in flight.

    ``arrival_rate`` is the replica's share of requests per second. Prefill compute takes
    that rate x a prompt's compute of every second, so the decode steps stretch by
    1 / (1 - share); the steps that carry a prompt chunk last a chunk's compute longer,
    and they are the ITL tail once more than 5% (50% for the median) of steps carry one.
    """
    step = decode_step_seconds(engine, batch, prompt_tokens + output_tokens / 2)
    share = arrival_rate * prompt_chunk_seconds(engine, prompt_tokens)
    if share >= 1:
        return Batching(batch, step, math.inf, math.inf, math.inf, math.inf, math.inf)
    return _batching(engine, batch, prompt_tokens, output_tokens, step, step / (1 - share), share)


def saturated_batching(
    engine: _Engine, batch: int, prompt_tokens: int, output_tokens: int
) -> Batching:
    """A replica kept full: ``batch`` new prompts enter every ``output_tokens`` steps.

    Each sequence's O steps then also carry the B prompts that replace the finished
    ones, so the mean ITL is the decode step plus B/O of a prompt's prefill compute.
    """
    step = decode_step_seconds(engine, batch, prompt_tokens + output_tokens / 2)
    prompt = prompt_chunk_seconds(engine, prompt_tokens)
    itl = step + batch * prompt / output_tokens
    # Prompts enter at batch / (O·ITL) per second, so prefill is busy that x T of the time.
    share = min(batch * prompt / (output_tokens * itl), 0.99)
    return _batching(engine, batch, prompt_tokens, output_tokens, step, itl, share)


def _batching(
    engine: _Engine,
    batch: float,
    prompt_tokens: int,
    output_tokens: int,
    step: float,
    itl: float,
    prefill_share: float,
) -> Batching:
    context = prompt_tokens + output_tokens / 2
    chunk_tokens = max(MAX_NUM_BATCHED_TOKENS - math.ceil(batch), 1)
    chunks = math.ceil(prompt_tokens / chunk_tokens)
    per_chunk = prompt_chunk_seconds(engine, min(prompt_tokens, chunk_tokens))
    ttft = prefill_seconds(engine, prompt_tokens)
    if batch > 1:
        # The prompt's chunks ride along steps that also decode the other sequences,
        # after the prompts that arrived before it.
        ttft += chunks * decode_step_seconds(engine, batch - 1, context)
    # At most the other batch - 1 sequences' prompts can be ahead of this one.
    prompt = prompt_chunk_seconds(engine, prompt_tokens)
    ahead = max(math.ceil(batch) - 1, 0) * prompt
    queued = min(prefill_wait_seconds(prefill_share, prompt, 0.5), ahead)
    queued_p95 = min(prefill_wait_seconds(prefill_share, prompt, TAIL_QUANTILE), ahead)
    ttft += queued
    service = ttft + output_tokens * itl
    # Share of steps that carry a chunk: prompts per step x chunks per prompt.
    chunk_steps = min(batch / service * chunks * itl, 1.0)
    itl_p50 = step + (per_chunk if chunk_steps > 0.5 else 0.0)
    itl_p95 = step + (per_chunk if chunk_steps > 1 - TAIL_QUANTILE else 0.0)
    return Batching(
        batch,
        step,
        itl,
        min(itl_p50, max(itl, itl_p50)),
        max(itl_p95, itl),
        ttft,
        service,
        queued_p95 - queued,
    )


class _Sizing(NamedTuple):
    engine: _Engine
    batch: int
    replicas: int
    load: Batching
    capacity: Batching
    wait_p50_seconds: float
    wait_p95_seconds: float
    requests_per_second: float
    max_concurrent: int
    usd_per_hour: float
    price: Price | None
    output_tokens: int

    @property
    def output_tokens_per_second(self) -> float:
        return self.requests_per_second * self.output_tokens

    @property
    def ttft_p50_seconds(self) -> float:
        return self.load.ttft_seconds + self.wait_p50_seconds

    @property
    def ttft_p95_seconds(self) -> float:
        return self.load.ttft_seconds + self.load.ttft_p95_extra_seconds + self.wait_p95_seconds

    @property
    def headroom(self) -> float:
        capacity = self.replicas * self.capacity.requests_per_second
        return max(0.0, 1 - self.requests_per_second / capacity)

    @property
    def usd_per_million_tokens(self) -> float:
        if self.output_tokens_per_second <= 0:
            return math.inf
        return self.usd_per_hour / (self.output_tokens_per_second * 3600) * 1e6


def _slo_seconds(milliseconds: float | None) -> float:
    return milliseconds / 1000 if milliseconds else math.inf


def _size(request: InferenceRequest, engine: _Engine, price: Price | None) -> _Sizing | None:
    """The sizing with the fewest replicas (or the cheapest tokens) that meets the SLOs."""
    sequence = request.prompt_tokens + request.output_tokens
    max_concurrent = max_concurrent_sequences(engine, sequence)
    if max_concurrent < 1 or (request.batch and request.batch > max_concurrent):
        return None
    limit = min(max_concurrent, request.max_num_seqs)
    batches = [request.batch] if request.batch else _batch_choices(limit)
    best: _Sizing | None = None
    for batch in batches:
        capacity = saturated_batching(engine, batch, request.prompt_tokens, request.output_tokens)
        if capacity.itl_p95_seconds > _slo_seconds(request.itl_slo_ms):
            continue
        sizing = _size_batch(request, engine, price, capacity, max_concurrent)
        if sizing is None or sizing.ttft_p95_seconds > _slo_seconds(request.ttft_slo_ms):
            continue
        if best is None or _sizing_key(request, sizing) < _sizing_key(request, best):
            best = sizing
    return best


def _sizing_key(request: InferenceRequest, sizing: _Sizing) -> tuple[float, float]:
    if request.rps is not None:
        return (sizing.replicas, sizing.ttft_p95_seconds + sizing.load.itl_seconds)
    return (sizing.usd_per_million_tokens, -sizing.output_tokens_per_second)


def _batch_choices(limit: int) -> list[int]:
    """Powers of two up to ``limit``, and ``limit`` itself (what the KV cache allows)."""
    powers = [2**k for k in range(int(math.log2(limit)) + 1)]
    return powers if powers[-1] == limit else [*powers, limit]


def _size_batch(
    request: InferenceRequest,
    engine: _Engine,
    price: Price | None,
    capacity: Batching,
    max_concurrent: int,
) -> _Sizing | None:
    usd_per_replica = (price.usd_per_gpu_hour if price else 0.0) * engine.tp
    batch = int(capacity.batch)
    if request.rps is None:
        return _Sizing(
            engine,
            batch,
            1,
            capacity,
            capacity,
            0.0,
            0.0,
            capacity.requests_per_second,
            max_concurrent,
            usd_per_replica,
            price,
            request.output_tokens,
        )
    ttft_slo = _slo_seconds(request.ttft_slo_ms)
    itl_slo = _slo_seconds(request.itl_slo_ms)
    per_replica = capacity.requests_per_second * MAX_UTILIZATION
    replicas = max(1, math.ceil(request.rps / per_replica))
    for _ in range(64):
        load = _loaded(engine, request, batch, request.rps / replicas)
        wait_p95 = wait_quantile_seconds(
            replicas * batch, request.rps, load.service_seconds, TAIL_QUANTILE
        )
        ttft_p95 = load.ttft_seconds + load.ttft_p95_extra_seconds + wait_p95
        if ttft_p95 <= ttft_slo and load.itl_p95_seconds <= itl_slo:
            wait_p50 = wait_quantile_seconds(
                replicas * batch, request.rps, load.service_seconds, 0.5
            )
            return _Sizing(
                engine,
                batch,
                replicas,
                load,
                capacity,
                wait_p50,
                wait_p95,
                request.rps,
                max_concurrent,
                usd_per_replica * replicas,
                price,
                request.output_tokens,
            )
        replicas = max(replicas + 1, math.ceil(replicas * 1.1))
    return None


def _loaded(engine: _Engine, request: InferenceRequest, batch: int, rate: float) -> Batching:
    """A replica at ``rate`` requests/s: the sequences in flight are rate x service time."""
    prompt, output = request.prompt_tokens, request.output_tokens
    state = continuous_batching(engine, 1, prompt, output, rate)
    for _ in range(8):
        in_flight = min(max(rate * state.service_seconds, 1.0), batch)
        state = continuous_batching(engine, in_flight, prompt, output, rate)
        if not math.isfinite(state.service_seconds):
            break
    return state


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
        speed = _shape_speed(request, model, gpu)
        for tp in _tensor_parallel_choices(request, model, gpu):
            engine = _engine(request, model, gpu, tp, speed.applied)
            need = gpu.memory_bytes * request.gpu_memory_utilization - engine.kv_budget_bytes
            need += engine.kv_bytes_per_token_gpu * (request.prompt_tokens + request.output_tokens)
            smallest_need = min(smallest_need, need / request.gpu_memory_utilization)
            sizing = _size(request, engine, price)
            if sizing is not None:
                sizings.append(sizing)
                if request.tensor_parallel is None and request.rps is None and request.gpu:
                    break
    return sizings, smallest_need


# The fastest part of a step, the weight and KV reads, runs at this share of the datasheet
# bandwidth; a calibration factor beyond its inverse would claim more than the roofline.
MAX_SPEED_FACTOR = 1 / MEMORY_BANDWIDTH_EFFICIENCY


class _ShapeSpeed(NamedTuple):
    factor: float  # pooled and shrunk, before the roofline cap
    applied: float  # what the engine runs at (1 when calibration is off)
    observations: int
    shape: dict[str, str]

    @property
    def capped(self) -> bool:
        return self.factor > MAX_SPEED_FACTOR


def _shape_speed(request: InferenceRequest, model: ModelSpec, gpu: GpuSpec) -> _ShapeSpeed:
    """Serving calibration for ``gpu``: observations of the same GPU, precision, size class."""
    shape = {
        "gpu": gpu.key,
        "precision": request.precision,
        "size_class": size_class(model.total_params),
    }
    calibration = request.calibration
    if calibration is None:
        return _ShapeSpeed(1.0, 1.0, 0, shape)
    ratios = []
    for observed in calibration.inference():
        try:
            observed_model, observed_gpu = get_model(observed.model), get_gpu(observed.gpu)
        except PlannerError:
            continue  # not in the catalog: no physics to compare with
        if (observed_gpu.key, observed.precision, size_class(observed_model.total_params)) != (
            gpu.key,
            request.precision,
            shape["size_class"],
        ):
            continue
        layout = InferenceRequest(
            model=observed_model,
            gpu=observed_gpu.key,
            precision=request.precision,
            tensor_parallel=observed.tensor_parallel,
            batch=observed.batch,
            prompt_tokens=observed.prompt_tokens,
            output_tokens=observed.output_tokens,
            gpu_memory_utilization=request.gpu_memory_utilization,
            max_num_seqs=max(request.max_num_seqs, observed.batch),
        )
        try:
            planned = plan_inference(layout).throughput.output_tokens_per_second
        except PlannerError:
            continue  # the physics says it cannot run: the observation says otherwise
        ratios.append(observed.output_tokens_per_second / planned)
    factor = shrunk_factor(ratios)
    applied = min(factor, MAX_SPEED_FACTOR) if calibration.enabled else 1.0
    return _ShapeSpeed(factor, applied, len(ratios), shape)


def _calibration_summary(request: InferenceRequest, engine: _Engine) -> CalibrationSummary | None:
    calibration = request.calibration
    if calibration is None:
        return None
    speed = _shape_speed(request, engine.model, engine.gpu)
    return CalibrationSummary(
        applied=calibration.enabled and speed.observations > 0,
        observations=speed.observations,
        throughput_factor=round(min(speed.factor, MAX_SPEED_FACTOR), 4),
        memory_factor=1.0,
        shape=speed.shape,
        pooled_over=INFERENCE_POOLS_OVER,
        roofline_capped=speed.capped,
        source=calibration.source,
        available=len(calibration.inference()),
    )


def _rank(request: InferenceRequest, sizing: _Sizing) -> tuple[float, float]:
    if request.rps is not None:
        return (sizing.usd_per_hour, sizing.ttft_p95_seconds)
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
    engine, load = sizing.engine, sizing.load
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
            kv_cache_bytes_per_token=kv_cache_bytes_per_token(
                engine.model, request.precision, request.kv_cache_precision
            ),
            per_gpu_bytes=int(per_gpu),
            max_concurrent_sequences=sizing.max_concurrent,
            kv_cache_budget_bytes=int(max(engine.kv_budget_bytes, 0)),
            capacity_bytes=engine.gpu.memory_bytes,
        ),
        fits=True,
        latency=InferenceLatency(
            ttft_seconds=round(sizing.ttft_p95_seconds, 5),
            itl_seconds=round(load.itl_seconds, 6),
            prefill_seconds=round(prefill_seconds(engine, request.prompt_tokens), 5),
            queue_wait_p95_seconds=round(sizing.wait_p95_seconds, 5),
            ttft_p50_seconds=round(sizing.ttft_p50_seconds, 5),
            ttft_p95_seconds=round(sizing.ttft_p95_seconds, 5),
            itl_p50_seconds=round(load.itl_p50_seconds, 6),
            itl_p95_seconds=round(load.itl_p95_seconds, 6),
        ),
        throughput=InferenceThroughput(
            output_tokens_per_second=round(sizing.output_tokens_per_second, 2),
            requests_per_second=round(sizing.requests_per_second, 4),
            decode_tokens_per_second_per_user=round(1 / load.step_seconds, 2),
            replica_capacity_output_tokens_per_second=round(
                sizing.capacity.requests_per_second * request.output_tokens, 2
            ),
            replica_capacity_requests_per_second=round(sizing.capacity.requests_per_second, 4),
            headroom=round(sizing.headroom, 4),
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
        calibration=_calibration_summary(request, engine),
    )
