"""Training memory per GPU, term by term.

Sources, by term:

- Model states: Rajbhandari et al. 2020, ZeRO (arXiv:1910.02054) §3: mixed-precision
  AdamW keeps 2 (fp16/bf16 weights) + 2 (gradients) + 12 (fp32 master, m, v) bytes per
  parameter; ZeRO-1/2/3 shard optimizer / +gradients / +weights over the N data-parallel
  ranks. Megatron-LM accumulates gradients in fp32 (18 bytes per parameter).
- 8-bit optimizers: Dettmers et al. 2022 (arXiv:2110.02861): 2 bytes per parameter for
  both Adam moments; paged variants (8-bit, or 32-bit ``PagedAdamW``) live in CUDA
  unified memory, which the driver pages
  to host RAM under pressure, so they do not count against the device budget.
- QLoRA: Dettmers et al. 2023 (arXiv:2305.14314) §3: NF4 is 4 bits per weight plus
  block constants; double quantization brings them to 8-bit absmax per 64 weights plus one
  fp32 per 256 blocks (0.127 bits per parameter). Embeddings, the LM head and norms stay
  in 16 bits (bitsandbytes / PEFT / torchtune quantize only the blocks' linear layers).
- Activations: Korthikanti et al. 2022 (arXiv:2205.05198) §4: per layer, per token,
  s·b·h·(34 + 5·a·s/h) bytes for GPT with dropout, generalized here term by term to
  grouped-query attention, gated MLPs and no dropout. FlashAttention (Dao 2022) never
  materializes the a·s² scores. Tensor parallelism divides the in-TP terms by t;
  sequence parallelism divides the rest; selective recompute drops the attention core;
  full recompute keeps each layer's input (2·s·b·h) plus one layer being recomputed.
  Pipeline stage 1 holds p micro-batches of L/p layers, times 1 + (p-1)/(p·m) when
  interleaved with m virtual stages (Korthikanti §4.2.3).
- Logits: tokens x vocabulary, which dominates with 128k-256k vocabularies. Eager
  cross-entropy keeps the 16-bit logits and the fp32 log-softmax it saves for backward
  (2 + 4 = 6 bytes per logit); a compiled, chunked loss (torchtune
  ``CEWithChunkedOutputLoss`` under torch.compile, 8 chunks) saves only the 16-bit logits
  and one chunk's fp32 working copy (2 + 4/8 = 2.5 bytes). Trainwright's trainer fuses
  the head with the loss (``loss_chunk_tokens``; Liger Kernel's fused linear
  cross-entropy, arXiv:2410.10989 §3.3): only one chunk of logits exists, 16-bit out of
  the matmul, its fp32 copy turned into the gradient in place, and that gradient in
  16 bits (2 + 4 + 2 bytes per value), plus the hidden-state gradient it keeps for
  backward (2 bytes per token and hidden unit) and, when the head trains, the head's
  gradient computed during the forward (fp32 under AMP).
- Implementations differ (``framework``): ``torchtune`` and ``megatron`` follow the
  lean accounting above; ``hf`` (Transformers + PEFT + accelerate, which Trainwright's
  trainer runs) saves fp32 norm inputs and fp32 adapter inputs, keeps fp32 weights under
  AMP, and its eager loss peaks at 16-bit logits + fp32 upcast + fp32 log-softmax
  (10 bytes per logit allocated, 9.6 measured on an H100) and reserves one more fp32
  copy for the backward's gradient (reserved minus allocated measured 1 fp32 copy).
- Gradients and activations are not all alive at once: with no gradient accumulation
  and no persistent gradient buckets (one GPU, or FSDP/ZeRO-3), backward frees
  activations as it creates gradients, so the peak counts only the larger of the two
  (``overlap_bytes``; PyTorch ``zero_grad(set_to_none=True)``, the default since 2.0).
- fp32 training (no autocast, the Hugging Face PEFT example scripts): every saved tensor
  is 4 bytes and nothing is cast; PEFT's ``lora_dropout`` gives each adapted layer its own
  fp32 copy of the input plus a 1-byte mask (:func:`hf_fp32_bytes_per_token_layer`).
- Encoder-decoders (T5): the encoder's blocks see the source tokens, the decoder's the
  target tokens, and every decoder block's cross-attention keeps K and V of all source
  tokens (Vaswani et al. 2017 §3.2.3; ``T5LayerCrossAttention``).
- ZeRO-3 with parameter offload (DeepSpeed ZeRO-Infinity, Rajbhandari et al. 2021,
  arXiv:2104.07857): parameters live on the host and are fetched module by module. The
  coordinator prefetches while fewer than ``stage3_max_live_parameters`` (default 1e9) are
  gathered and adds whole tensors, so the device peaks at that budget plus the largest
  tensor (a 250k-token embedding or head): measured on DeepSpeed's own
  ``PartitionedParameterCoordinator`` (``benchmarks/measure_zero3_live_params.py``) at
  1.08e9, 2.02e9 and 1.99e9 parameters for T0_3B, mt0-xxl and bloomz-7b1. Any
  DeepSpeed stage 3 run also allocates its contiguous gradient bucket up front:
  ``reduce_bucket_size`` (default 5e8) elements in the parameters' dtype.
- Optimizer step: ``torch.optim.AdamW``'s multi-tensor (foreach) path, its default on
  CUDA since PyTorch 2.0, computes ``_foreach_sqrt(exp_avg_sqs)`` for every parameter at
  once (``torch/optim/adam.py``, ``_multi_tensor_adam``): a temporary the size of v while
  weights, gradients and both moments are alive (``adamw_foreach``). The fused kernel
  (``fused=True``, Trainwright's trainer) and 8-bit optimizers step without it.
- Runtime: CUDA context and kernels (~0.5 GiB, outside PyTorch's reserved pool), NCCL
  buffers when distributed, and caching-allocator fragmentation (~5% of what is
  allocated and freed every step: activations and gradients).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

from trainwright.planner.errors import PlannerError
from trainwright.planner.specs import ModelSpec
from trainwright.vocabulary import Method, Strategy
from trainwright.vocabulary import PlannerOptimizer as Optimizer

Recompute = Literal["off", "selective", "full"]
Framework = Literal["hf", "torchtune", "megatron"]
LoraTargets = Literal["all", "qkv", "qv"]
# Adapted linears: one of the presets above, or module names as PEFT takes them
# (``target_modules``: q_proj, v_proj, ...), read by :func:`adapter_roles`.
AdapterTargets = LoraTargets | tuple[str, ...]

ATTENTION_ROLES = ("q", "k", "v", "o")
MLP_ROLES = ("gate", "up", "down")
_PRESET_ROLES: dict[str, frozenset[str]] = {
    "all": frozenset(ATTENTION_ROLES + MLP_ROLES),
    "all-linear": frozenset(ATTENTION_ROLES + MLP_ROLES),
    "qkv": frozenset(("q", "k", "v")),
    "qv": frozenset(("q", "v")),
}
# Module names of the Llama/Mistral/Qwen (HF), GPT-2/BLOOM/Falcon/T5 and Mixtral
# implementations, by the role of the linear they name.
MODULE_ROLES: dict[str, tuple[str, ...]] = {
    "q_proj": ("q",), "q": ("q",), "query": ("q",), "wq": ("q",),
    "k_proj": ("k",), "k": ("k",), "key": ("k",), "wk": ("k",),
    "v_proj": ("v",), "v": ("v",), "value": ("v",), "wv": ("v",),
    "o_proj": ("o",), "o": ("o",), "out_proj": ("o",), "wo": ("o",), "dense": ("o",),
    "qkv_proj": ("q", "k", "v"), "query_key_value": ("q", "k", "v"), "c_attn": ("q", "k", "v"),
    "gate_proj": ("gate",), "w1": ("gate",), "wi_0": ("gate",),
    "up_proj": ("up",), "w3": ("up",), "wi_1": ("up",), "wi": ("up",), "fc1": ("up",),
    "c_fc": ("up",), "dense_h_to_4h": ("up",), "gate_up_proj": ("gate", "up"),
    "down_proj": ("down",), "w2": ("down",), "fc2": ("down",), "dense_4h_to_h": ("down",),
}  # fmt: skip


def adapter_roles(targets: AdapterTargets) -> frozenset[str]:
    """The roles (q, k, v, o, gate, up, down) of the linears that get adapters.

    ``targets`` is a preset (``all``, ``qkv``, ``qv``) or PEFT ``target_modules`` names
    (``[all-linear]`` or ``[q_proj, v_proj]``, matched on the last dotted component).
    """
    if isinstance(targets, str):
        return _PRESET_ROLES[targets]
    roles: set[str] = set()
    for name in targets:
        if name in _PRESET_ROLES:
            roles |= _PRESET_ROLES[name]
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in MODULE_ROLES:
            raise PlannerError(
                f"lora target module {name!r} is not a transformer block linear the planner "
                f"knows; use all-linear or names among {', '.join(sorted(MODULE_ROLES))}"
            )
        roles.update(MODULE_ROLES[leaf])
    return frozenset(roles)


def target_modules(names: Iterable[str]) -> AdapterTargets:
    """A request's ``lora_targets`` from PEFT module names (checked, order kept)."""
    names = tuple(names)
    adapter_roles(names)
    return names


GIB = 2**30
CUDA_CONTEXT_BYTES = 512 * 2**20
NCCL_BUFFER_BYTES = 256 * 2**20
FRAGMENTATION_FRACTION = 0.05
NF4_DOUBLE_QUANT_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
# Logits bytes per (token, vocabulary entry) at the loss's peak, per implementation.
LOGITS_BYTES_PER_VALUE = {
    # 16-bit logits, their fp32 upcast, the fp32 log-softmax the loss saves, and in backward
    # its fp32 gradient while the forward's blocks stay cached (reserved, not allocated).
    "hf": 2 + 4 + 4 + 4,
    "torchtune": 2 + 4 + 4 / 8,  # chunked: 16-bit logits, fp32 log-softmax, one chunk upcast
    "megatron": 2 + 4,  # vocabulary-parallel CE: 16-bit logits and fp32 softmax
}
COMPILED_CHUNKED_LOGITS_BYTES_PER_VALUE = 2 + 4 / 8
# The trainer's fused head + loss, per value of one chunk: 16-bit logits, the fp32 copy
# the softmax gradient is made in, that gradient cast back to 16 bits.
FUSED_CHUNK_BYTES_PER_VALUE = 2 + 4 + 2
# fp32 without autocast: fp32 logits, the fp32 log-softmax the loss saves, its fp32 gradient.
FP32_LOGITS_BYTES_PER_VALUE = 4 + 4 + 4
# DeepSpeed ZeRO defaults (deepspeed/runtime/zero/config.py): ``stage3_max_live_parameters``,
# and ``reduce_bucket_size``, the elements of the contiguous gradient bucket stage 3 allocates
# on the device up front (``__ipg_bucket_flat_buffer`` with ``contiguous_gradients``, default
# on), in the parameters' dtype.
ZERO3_MAX_LIVE_PARAMETERS = 1_000_000_000
ZERO3_REDUCE_BUCKET_ELEMENTS = 500_000_000
# Data-parallel shards of ZeRO stage: which model states are divided by N.
SHARDED = {
    "ddp": (False, False, False),
    "zero1": (False, False, True),
    "zero2": (False, True, True),
    "zero3": (True, True, True),
    "fsdp": (True, True, True),
}


class TrainingMemory(NamedTuple):
    """Bytes per GPU; ``per_gpu_bytes`` is their sum."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    cuda_context_bytes: int
    other_bytes: int
    overlap_bytes: int = 0

    @property
    def layer_activations_bytes(self) -> int:
        return self.activations_bytes - self.logits_bytes

    @property
    def per_gpu_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.gradients_bytes
            + self.optimizer_bytes
            + self.activations_bytes
            + self.other_bytes
            - self.overlap_bytes
        )


def attention_adapters(model: ModelSpec, targets: AdapterTargets) -> list[tuple[int, int]]:
    """(d_in, d_out) of each adapted projection in one attention block.

    ``all``: q, k, v and the output projection; ``qkv``: q, k, v; ``qv``: query and value
    (PEFT's default for T5 and Llama). A fused query_key_value projection (BLOOM) is one
    adapted linear whenever any of q, k, v is targeted (PEFT's default for BLOOM).
    """
    roles = adapter_roles(targets)
    h = model.hidden_size
    q = model.num_heads * model.head_dim
    kv = model.num_kv_heads * model.head_dim
    widths = {"q": q, "k": kv, "v": kv}
    if model.fused_qkv:
        projections = [(h, q + 2 * kv)] if roles & set(widths) else []
    else:
        projections = [(h, widths[role]) for role in ("q", "k", "v") if role in roles]
    if "o" in roles:
        projections.append((q, h))
    return projections


def mlp_adapters(model: ModelSpec, targets: AdapterTargets) -> list[tuple[int, int]]:
    """(d_in, d_out) of each adapted MLP projection in one block, for every expert.

    A plain (GELU) MLP has an up and a down projection; ``gate`` targets its up one too.
    """
    roles = adapter_roles(targets)
    h, f = model.hidden_size, model.ffn_size
    if model.mlp == "gated":
        shapes = {"gate": (h, f), "up": (h, f), "down": (f, h)}
        one = [shapes[role] for role in MLP_ROLES if role in roles]
    else:
        one = ([(h, f)] if roles & {"gate", "up"} else []) + ([(f, h)] if "down" in roles else [])
    return one * model.num_experts


def lora_trainable_params(model: ModelSpec, rank: int, targets: AdapterTargets = "all") -> int:
    """Adapters r·(d_in + d_out) on the targeted linears of every block (Hu et al. 2021).

    Encoder-decoders adapt the decoder's cross-attention like its self-attention.
    """
    attention = sum(i + o for i, o in attention_adapters(model, targets))
    mlp = sum(i + o for i, o in mlp_adapters(model, targets))
    cross = model.num_layers * attention if model.is_encoder_decoder else 0
    return rank * (model.total_layers * (attention + mlp) + cross)


def weight_bytes_per_param(method: Method, precision: str) -> float:
    """Bytes of the (frozen or trained) base weights per parameter."""
    if method == "qlora":
        return NF4_DOUBLE_QUANT_BYTES_PER_PARAM
    return 4.0 if precision == "fp32" else 2.0


def base_weight_bytes(model: ModelSpec, method: Method, precision: str) -> float:
    """All base weights; QLoRA quantizes only the blocks' linear layers."""
    if method == "qlora":
        sixteen_bit = model.total_params - model.linear_params
        return model.linear_params * NF4_DOUBLE_QUANT_BYTES_PER_PARAM + sixteen_bit * 2
    return model.total_params * weight_bytes_per_param(method, precision)


def optimizer_bytes_per_param(optimizer: Optimizer, precision: str, full: bool) -> float:
    """Optimizer state per trained parameter, including an fp32 master copy when mixed.

    AdamW: m and v in fp32 (8) + master (4) under 16-bit mixed precision (ZeRO §3).
    SGD with momentum: 4 + master. 8-bit AdamW: two 1-byte moments plus block
    constants, updating the 16-bit weights directly (bitsandbytes).
    LoRA adapters are trained in fp32, so they need no master copy.
    """
    master = 4.0 if (precision != "fp32" and full) else 0.0
    if optimizer in ("adamw8bit", "paged_adamw8bit"):
        return 2.0 + 2 * 4 / 2048
    if optimizer == "sgd":
        return 4.0 + master
    return 8.0 + master


def activation_bytes_per_token_layer(
    model: ModelSpec,
    *,
    tensor_parallel: int,
    sequence_parallel: bool,
    flash_attention: bool,
    compiled: bool,
    seq_len: int,
    bytes_per_value: int = 2,
    framework: Framework = "torchtune",
    adapters: bool = False,
    precision: str = "bf16",
    targets: AdapterTargets = "all",
) -> float:
    """Bytes one token keeps alive in one layer (Korthikanti et al. 2022, Eq. 1-3).

    GPT with dropout and eager attention gives h·(34 + 5·a·s/h)·(bytes/2): the 10h
    outside TP regions, 24h inside, 5·a·s for scores. Gated MLPs keep gate, up,
    activation and product (4·f values); torch.compile's min-cut partitioner
    recomputes pointwise results instead of saving them (norm outputs, GELU, SiLU·up).
    Hugging Face eager code saves more (see :func:`hf_eager_bytes_per_token_layer`).
    """
    if framework == "hf" and not compiled and precision == "fp32":
        return hf_fp32_bytes_per_token_layer(
            model,
            flash_attention=flash_attention,
            seq_len=seq_len,
            adapters=adapters,
            targets=targets,
        )
    if framework == "hf" and not compiled:
        return hf_eager_bytes_per_token_layer(
            model, tensor_parallel, flash_attention, seq_len, adapters
        )
    h = model.hidden_size
    g = model.kv_fraction
    f = model.ffn_size * model.experts_per_token
    half = bytes_per_value / 2
    mask = h * half if model.dropout else 0.0
    if compiled:
        outside = 2 * h * 2 * half + 2 * mask
        mlp = (4 * f if model.mlp == "gated" else 2 * f) * half
    else:
        outside = (4 * h + 2 * h + 2 * h) * half + 2 * mask
        mlp = (8 * f if model.mlp == "gated" else 4 * f) * half
    inside = (2 * h * (1 + 2 * g) + 2 * h) * half + mlp
    scores = 0.0
    if not flash_attention:
        per_head = 5 if model.dropout else 2
        scores = per_head * model.num_heads * seq_len * half
    t = tensor_parallel
    return (outside / t if sequence_parallel else outside) + inside / t + scores / t


def hf_eager_bytes_per_token_layer(
    model: ModelSpec, tensor_parallel: int, flash_attention: bool, seq_len: int, adapters: bool
) -> float:
    """What Hugging Face Transformers (eager, SDPA) with PEFT or AMP saves per token and layer.

    Read off ``LlamaDecoderLayer`` and PEFT's ``lora.Linear``: RMSNorm upcasts to fp32 and
    saves the fp32 input (4h), plus the fp32 normalized value when its weight trains (under
    AMP the residual stream itself is fp32); SDPA keeps q, k, v and its output. PEFT keeps
    fp32 adapters and casts each adapted layer's input to fp32 (4 bytes per input value,
    once per adapter: q, k and v each make a copy); full fine-tuning under autocast saves
    each projection's bf16 cast instead. The gated MLP keeps gate, SiLU and up outputs, and
    the product as the down projection's input. Eager attention adds the fp32 softmax and
    its 16-bit cast (6·a·s). Checked on an H100 (benchmarks/measure_gpu_training.py):
    Llama 3.1 8B with LoRA measured 74h bytes per token and layer; this gives 72h.
    """
    h = model.hidden_size
    g = model.kv_fraction
    f = model.ffn_size * model.experts_per_token
    gated = model.mlp == "gated"
    attention = (2 + 4 * g) * h + 2 * h  # q, k, v and the output that SDPA saves
    mlp = (3 if gated else 1) * 2 * f
    if adapters:
        norms = 2 * 4 * h
        inputs = 3 * 4 * h + 4 * h + (2 if gated else 1) * 4 * h + 4 * f
    else:
        norms = 2 * 8 * h
        inputs = 3 * 2 * h + 2 * h + (2 if gated else 1) * 2 * h + 2 * f
    scores = 0.0 if flash_attention else 6 * model.num_heads * seq_len
    return norms + (attention + inputs + mlp + scores) / tensor_parallel


def hf_fp32_bytes_per_token_layer(
    model: ModelSpec,
    *,
    flash_attention: bool,
    seq_len: int,
    adapters: bool,
    targets: AdapterTargets,
) -> float:
    """What Transformers saves per token and block when training in fp32 (no autocast).

    Read off ``T5Block`` / ``BloomBlock`` / ``LlamaDecoderLayer`` the way
    :func:`hf_eager_bytes_per_token_layer` is: each norm saves its 4h input; attention keeps
    q, k and v; eager attention keeps the fp32 probabilities (4·a·s) and, with attention
    dropout, a 1-byte mask and the dropped copy (5·a·s); residual dropout keeps 1-byte
    masks. The gated MLP keeps the activation's input, its output and the up projection
    (12f, plus a 1-byte mask with dropout), the GELU MLP its input (4f). Frozen linears
    save nothing; each adapted linear keeps PEFT's dropped-out fp32 input and its mask
    (5 bytes per input value). Full fine-tuning saves every linear's input instead.
    """
    h = model.hidden_size
    q = model.num_heads * model.head_dim
    kv = model.num_kv_heads * model.head_dim
    f = model.ffn_size * model.experts_per_token
    gated = model.mlp == "gated"
    norms = 2 * 4 * h
    attention = 4 * (q + 2 * kv)
    scores = 0.0
    if not flash_attention:
        scores = (4 + (5 if model.dropout else 0)) * model.num_heads * seq_len
    masks = 2 * h if model.dropout else 0
    mlp = (12 * f if gated else 4 * f) + (f if model.dropout and gated else 0)
    if adapters:
        # A token passes through experts_per_token of the experts' adapted MLPs.
        mlp_inputs = sum(d_in for d_in, _ in mlp_adapters(model, targets)) / model.num_experts
        attention_inputs = sum(d_in for d_in, _ in attention_adapters(model, targets))
        inputs = 5 * (attention_inputs + mlp_inputs * model.experts_per_token)
    else:
        inputs = 4 * h + 4 * q + 4 * h + 4 * f
    return norms + attention + scores + masks + mlp + inputs


def cross_attention_bytes(
    model: ModelSpec,
    *,
    source_tokens: int,
    target_tokens: int,
    source_len: int,
    flash_attention: bool,
    adapters: bool,
    targets: AdapterTargets,
    bytes_per_value: int,
) -> float:
    """What one decoder block's cross-attention saves, in bytes (``T5LayerCrossAttention``).

    Per target token: the norm's input, q, the probabilities over the source (with dropout
    mask and copy), a residual dropout mask. Per source token: K and V of the encoder
    output, and PEFT's dropped-out input copy for each adapted K/V projection.
    """
    h = model.hidden_size
    q = model.num_heads * model.head_dim
    kv = model.num_kv_heads * model.head_dim
    scale = bytes_per_value / 4
    per_target = 4 * h + 4 * q + (h if model.dropout else 0)
    if not flash_attention:
        per_target += (4 + (5 if model.dropout else 0)) * model.num_heads * source_len
    per_source = 4 * 2 * kv
    if adapters:
        roles = adapter_roles(targets)
        per_target += 5 * h + (5 * q if "o" in roles else 0)
        per_source += 5 * h * (2 if "k" in roles else 1)
    else:
        per_target += 4 * h + 4 * q
    return scale * (per_target * target_tokens + per_source * source_tokens)


def layer_activation_bytes(
    model: ModelSpec,
    *,
    tokens: int,
    seq_len: int,
    recompute: Recompute,
    tensor_parallel: int,
    sequence_parallel: bool,
    flash_attention: bool,
    compiled: bool,
    pipeline_parallel: int,
    microbatches: int,
    pipeline_interleave: int,
    framework: Framework = "torchtune",
    adapters: bool = False,
    precision: str = "bf16",
    targets: AdapterTargets = "all",
    num_layers: int | None = None,
) -> float:
    """Activations of the transformer layers on the busiest pipeline stage, in bytes.

    ``num_layers`` overrides the block count (one stack of an encoder-decoder).
    """

    def per_token(flash: bool) -> float:
        return activation_bytes_per_token_layer(
            model,
            tensor_parallel=tensor_parallel,
            sequence_parallel=sequence_parallel,
            flash_attention=flash,
            compiled=compiled,
            seq_len=seq_len,
            framework=framework,
            adapters=adapters,
            precision=precision,
            targets=targets,
        )

    full = per_token(flash_attention)
    if recompute == "off":
        per_layer = full
    elif recompute == "selective":
        per_layer = per_token(True)
    else:
        # The layer input: 16-bit, or fp32 where AMP keeps the residual stream in fp32.
        input_bytes = 4 if (framework == "hf" and (not adapters or precision == "fp32")) else 2
        per_layer = input_bytes * model.hidden_size / (tensor_parallel if sequence_parallel else 1)
    p = pipeline_parallel
    layers_per_stage = (num_layers or model.num_layers) / p
    in_flight = min(p, microbatches)
    stored = per_layer * tokens * layers_per_stage * in_flight
    if p > 1 and pipeline_interleave > 1:
        stored *= 1 + (p - 1) / (p * pipeline_interleave)
    if recompute == "full":
        stored += full * tokens
    return stored


def logits_bytes(
    model: ModelSpec,
    tokens: int,
    tensor_parallel: int,
    compiled: bool,
    framework: Framework = "torchtune",
    precision: str = "bf16",
    *,
    loss_chunk_tokens: int | None = None,
    head_trains: bool = False,
) -> float:
    """Vocabulary-parallel logits and what the loss saves (see the module docstring).

    ``loss_chunk_tokens``: the head and the loss are fused and run that many tokens at a
    time (Trainwright's trainer); ``head_trains`` adds the head's gradient it computes in
    the forward.
    """
    if loss_chunk_tokens:
        wide = 4 if precision == "fp32" else 2
        chunk = min(tokens, loss_chunk_tokens) * model.vocab_size * FUSED_CHUNK_BYTES_PER_VALUE
        hidden_gradient = tokens * model.hidden_size * wide
        head_gradient = model.vocab_size * model.hidden_size * 4 if head_trains else 0
        return (chunk + head_gradient) / tensor_parallel + hidden_gradient
    per_value = (
        COMPILED_CHUNKED_LOGITS_BYTES_PER_VALUE if compiled else LOGITS_BYTES_PER_VALUE[framework]
    )
    if framework == "hf" and precision == "fp32" and not compiled:
        per_value = FP32_LOGITS_BYTES_PER_VALUE
    return tokens * model.vocab_size * per_value / tensor_parallel


def training_memory(
    model: ModelSpec,
    *,
    method: Method,
    precision: str,
    strategy: Strategy,
    data_parallel: int,
    tensor_parallel: int,
    pipeline_parallel: int,
    micro_batch: int,
    seq_len: int,
    recompute: Recompute,
    optimizer: Optimizer,
    lora_rank: int,
    microbatches: int = 1,
    sequence_parallel: bool = False,
    flash_attention: bool = True,
    compiled: bool = False,
    pipeline_interleave: int = 1,
    cpu_offload: bool = False,
    optimizer_in_backward: bool = False,
    fp32_gradients: bool = False,
    framework: Framework = "hf",
    lora_targets: AdapterTargets = "all",
    target_len: int | None = None,
    loss_chunk_tokens: int | None = None,
) -> TrainingMemory:
    """Peak memory of one GPU for one training configuration (see the module docstring).

    ``target_len`` is an encoder-decoder's decoder tokens per sequence (default
    ``seq_len``, which the encoder sees); decoder-only models ignore it.
    ``loss_chunk_tokens``: the head and loss are fused in chunks of that many tokens
    (Trainwright's trainer); None is a loss over the whole logits.
    """
    model_split = tensor_parallel * pipeline_parallel
    shard_w, shard_g, shard_o = SHARDED[strategy]
    n = data_parallel
    full = method == "full"
    base_bytes = base_weight_bytes(model, method, precision) / model_split
    # Hugging Face Trainer without ZeRO/FSDP trains fp32 weights under autocast (AMP):
    # fp32 weights + the 16-bit copies autocast caches for backward, fp32 gradients, and
    # the fp32 weights double as the optimizer's master copy.
    amp = framework == "hf" and full and strategy == "ddp" and precision != "fp32"
    if amp:
        base_bytes = model.total_params * (4 + 2) / model_split
    trained = model.total_params if full else lora_trainable_params(model, lora_rank, lora_targets)
    if method == "dora":
        trained += model.total_layers * (model.hidden_size * 4 + model.ffn_size * 3)
    trained_per_gpu = trained / model_split
    grad_bpp = 4.0 if (fp32_gradients or precision == "fp32" or not full or amp) else 2.0
    adapter_bpp = 0.0 if full else 4.0
    # torchtune builds the whole model, adapters included, in its training dtype
    # (training.set_default_dtype), so adapters, their gradients and AdamW's moments
    # (torch.optim keeps state in the parameter's dtype) are 16-bit: 2 + 2 + 4 bytes.
    sixteen_bit_adapters = framework == "torchtune" and not full and precision != "fp32"
    if sixteen_bit_adapters:
        grad_bpp = adapter_bpp = 2.0
    gradients = trained_per_gpu * grad_bpp
    if optimizer_in_backward:
        gradients = model.largest_param_tensor / tensor_parallel * grad_bpp
    master = full and not amp
    optimizer_state = trained_per_gpu * optimizer_bytes_per_param(optimizer, precision, master)
    if sixteen_bit_adapters and optimizer in ("adamw", "adamw_foreach", "sgd"):
        optimizer_state /= 2
    if optimizer in ("paged_adamw8bit", "paged_adamw"):
        optimizer_state = 0.0
    weights = base_bytes + trained_per_gpu * adapter_bpp
    if shard_w and n > 1:
        weights /= n
    if shard_g and n > 1 and not optimizer_in_backward:
        gradients /= n
    if shard_o and n > 1:
        optimizer_state /= n
    working = 0.0
    if (shard_w and n > 1) or cpu_offload:
        # FSDP / ZeRO-3 gather one layer and prefetch the next; its gradient is unsharded
        # until the reduce-scatter.
        layer_bytes = base_bytes / model.total_layers
        working = 2 * layer_bytes + (layer_bytes * grad_bpp / 2 if full else 0.0)
    if cpu_offload and strategy == "zero3":
        # DeepSpeed prefetches while fewer than stage3_max_live_parameters are gathered,
        # a whole tensor at a time: the budget plus the largest tensor at the peak.
        live = min(model.total_params, ZERO3_MAX_LIVE_PARAMETERS + model.largest_param_tensor)
        working = live * base_bytes / model.total_params
    if cpu_offload:
        if shard_w:
            weights, gradients = 0.0, 0.0
        optimizer_state = 0.0
    weights += working
    tokens = micro_batch * seq_len
    decoder_len = (target_len or seq_len) if model.is_encoder_decoder else seq_len
    decoder_tokens = micro_batch * decoder_len

    def stack(stack_tokens: int, stack_len: int, stack_layers: int) -> float:
        return layer_activation_bytes(
            model,
            tokens=stack_tokens,
            seq_len=stack_len,
            recompute=recompute,
            tensor_parallel=tensor_parallel,
            sequence_parallel=sequence_parallel,
            flash_attention=flash_attention,
            compiled=compiled,
            pipeline_parallel=pipeline_parallel,
            microbatches=microbatches,
            pipeline_interleave=pipeline_interleave,
            framework=framework,
            adapters=not full,
            precision=precision,
            targets=lora_targets,
            num_layers=stack_layers,
        )

    layers = stack(decoder_tokens, decoder_len, model.num_layers)
    if model.is_encoder_decoder:
        layers += stack(tokens, seq_len, model.encoder_layers)
        if recompute != "full":
            cross = cross_attention_bytes(
                model,
                source_tokens=tokens,
                target_tokens=decoder_tokens,
                source_len=seq_len,
                flash_attention=flash_attention or recompute == "selective",
                adapters=not full,
                targets=lora_targets,
                bytes_per_value=4 if precision == "fp32" else 2,
            )
            layers += model.num_layers * cross / tensor_parallel
    logits = 0.0
    if pipeline_parallel == 1:
        logits = logits_bytes(
            model,
            decoder_tokens,
            tensor_parallel,
            compiled,
            framework,
            precision,
            loss_chunk_tokens=loss_chunk_tokens,
            head_trains=full,
        )
    activations = layers + logits
    transient = 0.0
    if method in ("qlora", "dora"):
        # QLoRA dequantizes each NF4 weight to 16 bits just before its matmul; DoRA
        # materializes W + s·BA to take its column norms (Liu et al. 2024, Eq. 5).
        transient = model.ffn_size * model.hidden_size * 2 / tensor_parallel
    distributed = n * model_split > 1
    foreach_step = not (optimizer_in_backward or cpu_offload or strategy.startswith("zero"))
    # Trainwright's trainer (framework hf) steps fused AdamW, except under FSDP, whose
    # DTensor parameters take the foreach path (trainwright_trainer/distributed.py).
    foreach = optimizer == "adamw_foreach" or (
        optimizer == "adamw" and framework == "hf" and strategy == "fsdp"
    )
    if foreach and foreach_step:
        # torch.optim.AdamW's multi-tensor step (its default on CUDA) computes
        # sqrt(v) for all parameters at once: one temporary the size of v.
        v_bytes = 2.0 if sixteen_bit_adapters else 4.0
        transient += trained_per_gpu * v_bytes / (n if shard_o and n > 1 else 1)
    if strategy == "zero3":
        transient += ZERO3_REDUCE_BUCKET_ELEMENTS * (4 if precision == "fp32" else 2)
    other = (
        CUDA_CONTEXT_BYTES
        + (NCCL_BUFFER_BYTES if distributed else 0)
        + transient
        + FRAGMENTATION_FRACTION * (activations + gradients)
    )
    overlap = 0.0
    transient_gradients = microbatches == 1 and (n == 1 or strategy in ("fsdp", "zero3"))
    if transient_gradients and not optimizer_in_backward:
        overlap = min(gradients, activations)
    return TrainingMemory(
        overlap_bytes=int(overlap),
        weights_bytes=int(weights),
        gradients_bytes=int(gradients),
        optimizer_bytes=int(optimizer_state),
        activations_bytes=int(activations),
        logits_bytes=int(logits),
        cuda_context_bytes=CUDA_CONTEXT_BYTES,
        other_bytes=int(other),
    )
