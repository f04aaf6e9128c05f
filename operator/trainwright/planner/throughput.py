"""Training speed: FLOPs per token, utilization defaults, and communication time.

- FLOPs per token: Kaplan et al. 2020 / Narayanan et al. 2021 (arXiv:2104.04473, Eq. 3):
  6·N for forward + backward, 8·N with full activation recomputation (one more forward);
  attention adds 6·L·s·d_attn per token (causal, forward 2·L·s·d_attn). LoRA trains no
  base weights, so the weight-gradient GEMMs vanish: about 4·N (Hu et al. 2021 §4.2).
- Utilization: model FLOPs utilization (MFU, Chowdhery et al. 2022, PaLM App. B) as
  published for well-tuned stacks: Megatron-LM on A100 up to 52-56% (Narayanan 2021,
  Korthikanti 2022 Table 4); Llama 2 on A100 ~40% and Llama 3.1 on H100 38-43% (Meta
  model cards, Llama 3 paper §3.3.4); torchtitan Llama 3 8B on H100 ~40%; MI300X ~30%
  (SemiAnalysis MI300X training benchmarks, Dec 2024); single-node PCIe cards (L4, L40S,
  A10G, RTX) have no inter-node traffic and low peaks, so they sustain a high share of
  them (torchtune's RTX 4090 table implies 55-65% counting recomputation). We keep the
  hardware rate that
  the step achieves (``base_hfu``) and scale it down for small GEMMs (few tokens per
  micro-batch, narrow hidden sizes), for QLoRA's NF4 dequantization (torchtune's table:
  QLoRA runs at ~0.78x LoRA's speed) and for DoRA's weight-norm pass.
- Communication: ring collectives move 2·(N-1)/N of the buffer per GPU for all-reduce
  and (N-1)/N for all-gather / reduce-scatter (Patarasuk & Yuan 2009); ZeRO-3/FSDP moves
  1.5x DDP's volume (ZeRO §7). Backward-overlapped collectives only cost what exceeds
  the compute they hide behind.
- Pipeline bubble: (p-1)/(m·v) of the ideal step (Narayanan et al. 2021 §2.2).
"""

from __future__ import annotations

from typing import NamedTuple

from trainwright.planner.memory import AdapterTargets, Framework, Recompute, lora_trainable_params
from trainwright.planner.specs import GpuSpec, ModelSpec
from trainwright.vocabulary import Method, Strategy

QLORA_DEQUANT_SLOWDOWN = 0.8
# Hugging Face Transformers + PEFT in eager mode run every norm, cast, RoPE and SiLU as
# its own memory-bound kernel, and PEFT adds fp32 casts and rank-r GEMMs per adapted
# layer. Measured on an H100 (benchmarks/measure_gpu_training.py, transformers 5.17,
# peft 0.21, torch 2.11): LoRA steps reach 0.45-0.66 and full fine-tuning 0.72-0.80 of
# the lean estimate; torch.compile removes most of it.
HF_EAGER_EFFICIENCY = {"adapters": 0.6, "full": 0.75}
# DoRA recomputes the weight norm of W + s·BA every step: PEFT documents it as
# markedly slower than LoRA (about 1.3x step time without its caching option).
DORA_NORM_SLOWDOWN = 0.75
PCIE_HOST_BYTES_PER_SECOND = 25e9
CPU_ADAM_PARAMS_PER_SECOND = 1.0e9


def base_hfu(gpu: GpuSpec) -> float:
    """The GPU's catalogued training efficiency (``GpuSpec.training_efficiency``)."""
    return gpu.training_efficiency


def flops_per_token(
    model: ModelSpec,
    *,
    method: Method,
    seq_len: int,
    recompute: Recompute,
    lora_rank: int = 16,
    lora_targets: AdapterTargets = "all",
) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) per trained token; hardware includes recomputation."""
    n = model.active_params
    attention_forward = 2 * model.num_layers * seq_len * model.num_heads * model.head_dim
    forward = 2 * n + attention_forward
    if method == "full":
        backward = 4 * n + 2 * attention_forward
    else:
        adapters = lora_trainable_params(model, lora_rank, lora_targets)
        forward += 2 * adapters
        backward = 2 * n + 2 * attention_forward + 4 * adapters
    model_flops = forward + backward
    extra = {"off": 0.0, "selective": attention_forward, "full": forward}[recompute]
    return model_flops, model_flops + extra


def gemm_efficiency(model: ModelSpec, tokens_per_microbatch: int, tensor_parallel: int) -> float:
    """Fraction of the large-GEMM rate reached by this model's matrix shapes.

    A GEMM fills the GPU in waves of 128x256 output tiles (CUTLASS/cuBLAS Hopper and
    Ampere kernels); with few tokens per micro-batch or narrow (or TP-split) layers the
    last wave runs partly empty, so utilization drops roughly as x / (x + x_half) with
    x_half about one tile edge: 128 tokens, 256 columns.
    """
    width = model.hidden_size / tensor_parallel
    return tokens_per_microbatch / (tokens_per_microbatch + 128) * width / (width + 256)


class StepTime(NamedTuple):
    compute_seconds: float
    exposed_comm_seconds: float
    step_seconds: float
    tokens_per_second: float
    mfu: float


def training_step(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    method: Method,
    precision: str,
    strategy: Strategy,
    data_parallel: int,
    tensor_parallel: int,
    pipeline_parallel: int,
    nodes: int,
    micro_batch: int,
    gradient_accumulation: int,
    seq_len: int,
    recompute: Recompute,
    lora_rank: int,
    lora_targets: AdapterTargets = "all",
    pipeline_interleave: int = 1,
    cpu_offload: bool = False,
    utilization: float | None = None,
    framework: Framework = "torchtune",
    compiled: bool = False,
) -> StepTime:
    """Seconds per optimizer step and the resulting tokens/s and MFU for the whole job."""
    tokens_mb = micro_batch * seq_len
    model_flops, hardware_flops = flops_per_token(
        model,
        method=method,
        seq_len=seq_len,
        recompute=recompute,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
    )
    hfu = utilization if utilization is not None else base_hfu(gpu)
    hfu *= gemm_efficiency(model, tokens_mb, tensor_parallel)
    if method == "qlora":
        hfu *= QLORA_DEQUANT_SLOWDOWN
    elif method == "dora":
        hfu *= DORA_NORM_SLOWDOWN
    if framework == "hf" and not compiled and utilization is None:
        hfu *= HF_EAGER_EFFICIENCY["full" if method == "full" else "adapters"]
    peak = gpu.peak_flops_per_second(precision)
    model_split = tensor_parallel * pipeline_parallel
    tokens_per_gpu_step = tokens_mb * gradient_accumulation * pipeline_parallel / model_split
    compute = tokens_per_gpu_step * hardware_flops / (peak * hfu)
    if pipeline_parallel > 1:
        bubble = (pipeline_parallel - 1) / (gradient_accumulation * pipeline_interleave)
        compute *= 1 + bubble
    exposed = exposed_comm_seconds(
        model,
        gpu,
        method,
        precision,
        strategy,
        data_parallel,
        tensor_parallel,
        pipeline_parallel,
        nodes,
        compute,
        tokens_mb * gradient_accumulation,
        lora_rank,
        gradient_accumulation,
        lora_targets,
    )
    if cpu_offload:
        shard = model.total_params / (model_split * data_parallel)
        exposed += 2 * shard * 2 / PCIE_HOST_BYTES_PER_SECOND
        if method == "full":
            exposed += shard / CPU_ADAM_PARAMS_PER_SECOND
    step = compute + exposed
    world = data_parallel * model_split
    tokens_step = tokens_mb * gradient_accumulation * data_parallel
    mfu = tokens_step * 6 * model.active_params / (step * world * peak)
    if method != "full":
        mfu = tokens_step * model_flops / (step * world * peak)
    return StepTime(compute, exposed, step, tokens_step / step, mfu)


def exposed_comm_seconds(
    model: ModelSpec,
    gpu: GpuSpec,
    method: Method,
    precision: str,
    strategy: Strategy,
    data_parallel: int,
    tensor_parallel: int,
    pipeline_parallel: int,
    nodes: int,
    compute_seconds: float,
    tokens_per_replica_step: int,
    lora_rank: int,
    gradient_accumulation: int = 1,
    lora_targets: AdapterTargets = "all",
) -> float:
    """Communication seconds a step cannot hide behind its compute (module docstring)."""
    model_split = tensor_parallel * pipeline_parallel
    value_bytes = 4 if precision == "fp32" else 2
    exposed = 0.0
    if data_parallel > 1:
        bandwidth = (
            gpu.inter_node_bytes_per_second if nodes > 1 else gpu.intra_node_bytes_per_second
        )
        ring = (data_parallel - 1) / data_parallel
        base = model.total_params / model_split * value_bytes
        if method == "full":
            grads = base
        else:
            grads = lora_trainable_params(model, lora_rank, lora_targets) / model_split * 4
        if strategy in ("fsdp", "zero3"):
            # Weights are gathered again for every micro-batch's forward and backward.
            volume = 2 * ring * base * gradient_accumulation + ring * grads
            hidden = 0.9 * compute_seconds
        else:
            volume = 2 * ring * grads
            hidden = 2 / 3 * compute_seconds
        exposed += max(volume / bandwidth - hidden, 0.0)
    if tensor_parallel > 1:
        # Megatron: 4 all-reduces of (tokens x hidden) per layer per step, not overlapped.
        ring = 2 * (tensor_parallel - 1) / tensor_parallel
        per_layer = 4 * tokens_per_replica_step * model.hidden_size * value_bytes * ring
        layers = model.num_layers / pipeline_parallel
        exposed += per_layer * layers / gpu.intra_node_bytes_per_second
    return exposed
