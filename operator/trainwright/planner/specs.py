"""What the planner knows about a model and a GPU: frozen pydantic records.

Parameter counts are derived from the architecture, not typed in, so a
``config.json`` and a catalog entry are counted the same way.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MlpKind = Literal["gated", "plain"]


class ModelSpec(BaseModel):
    """A transformer, described the way a Hugging Face ``config.json`` does.

    Decoder-only by default. An encoder-decoder (T5, mT5) sets ``encoder_layers``: its
    encoder blocks hold self-attention and the MLP, its ``num_layers`` decoder blocks add
    cross-attention (same widths) and a third norm, and each stack ends in its own final
    norm (Raffel et al. 2020, arXiv:1910.10683, §2.1; ``T5Block`` in Transformers). T5's
    relative position buckets (32 x heads in each stack's first block) are left out:
    under 1e-6 of the parameters.

    Parameter counts are cached on first use (the planner's search asks for them
    thousands of times): build a new spec instead of ``model_copy(update=...)``.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    key: str = Field(description="catalog key, e.g. llama-3.1-8b")
    display_name: str
    family: str = Field(
        description="llama, mistral, mixtral, qwen2, gemma2, phi3, gpt2, megatron, bloom, t5"
    )
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn_size: int = Field(gt=0, description="intermediate size of one expert's MLP")
    vocab_size: int = Field(gt=0)
    tied_embeddings: bool = False
    mlp: MlpKind = "gated"
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    qkv_bias: bool = False
    dropout: bool = Field(default=False, description="trains with dropout (Megatron GPT configs)")
    learned_positions: bool = Field(
        default=False, description="GPT-2/Megatron learned position embeddings (max_seq_len x h)"
    )
    encoder_layers: int = Field(default=0, ge=0, description="encoder blocks (0: decoder-only)")
    fused_qkv: bool = Field(
        default=False, description="one query_key_value projection (BLOOM, GPT-2 c_attn)"
    )
    embedding_norm: bool = Field(
        default=False, description="LayerNorm after the word embeddings (BLOOM)"
    )
    max_seq_len: int = Field(default=4096, gt=0)
    aliases: tuple[str, ...] = ()
    source: str = ""

    @property
    def kv_fraction(self) -> float:
        """Share of K/V width relative to Q (1 for multi-head, 1/8 for Llama 3 GQA)."""
        return self.num_kv_heads / self.num_heads

    @property
    def attention_params_per_layer(self) -> int:
        q_width = self.num_heads * self.head_dim
        kv_width = self.num_kv_heads * self.head_dim
        weights = self.hidden_size * (q_width + 2 * kv_width) + q_width * self.hidden_size
        bias = (q_width + 2 * kv_width) if self.qkv_bias else 0
        return weights + bias

    @property
    def expert_params(self) -> int:
        """One expert's MLP: 3·h·f gated (SwiGLU/GeGLU), 2·h·f plain (GELU)."""
        matrices = 3 if self.mlp == "gated" else 2
        return matrices * self.hidden_size * self.ffn_size

    @property
    def is_encoder_decoder(self) -> bool:
        return self.encoder_layers > 0

    @cached_property
    def encoder_layer_params(self) -> int:
        """One block without cross-attention (every block of a decoder-only model)."""
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        norms = 2 * self.hidden_size
        if self.mlp == "plain":
            # GPT-style blocks: LayerNorm biases, MLP biases and the attention output bias.
            norms += 2 * self.hidden_size + self.ffn_size + 2 * self.hidden_size
        return (
            self.attention_params_per_layer + self.num_experts * self.expert_params + router + norms
        )

    @cached_property
    def layer_params(self) -> int:
        """One decoder block: an encoder-decoder's adds cross-attention and its norm."""
        cross = self.attention_params_per_layer + self.hidden_size
        return self.encoder_layer_params + (cross if self.is_encoder_decoder else 0)

    @property
    def total_layers(self) -> int:
        """Blocks in both stacks (what ZeRO-3 and FSDP gather one at a time)."""
        return self.num_layers + self.encoder_layers

    @property
    def embedding_params(self) -> int:
        positions = self.max_seq_len * self.hidden_size if self.learned_positions else 0
        return self.vocab_size * self.hidden_size + positions

    @property
    def head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @cached_property
    def total_params(self) -> int:
        norm = self.hidden_size * (2 if self.mlp == "plain" else 1)
        final_norms = norm * (2 if self.is_encoder_decoder else 1)
        embedding_norm = 2 * self.hidden_size if self.embedding_norm else 0
        return (
            self.num_layers * self.layer_params
            + self.encoder_layers * self.encoder_layer_params
            + self.embedding_params
            + embedding_norm
            + self.head_params
            + final_norms
        )

    @cached_property
    def active_params(self) -> int:
        """Parameters one token touches (Mixtral 8x7B: ~12.9B of ~46.7B)."""
        inactive = (self.num_experts - self.experts_per_token) * self.expert_params
        return self.total_params - self.total_layers * inactive

    @cached_property
    def linear_params(self) -> int:
        """Weights inside transformer blocks' linear layers (what QLoRA quantizes)."""
        per_layer = self.attention_params_per_layer + self.num_experts * self.expert_params
        cross = self.attention_params_per_layer if self.is_encoder_decoder else 0
        return self.total_layers * per_layer + self.num_layers * cross

    @property
    def largest_param_tensor(self) -> int:
        return max(self.embedding_params, self.ffn_size * self.hidden_size)


class GpuSpec(BaseModel):
    """One accelerator, from its datasheet (dense tensor-core figures, no sparsity)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    key: str
    display_name: str
    memory_bytes: int = Field(gt=0)
    memory_bandwidth_bytes_per_second: float = Field(gt=0)
    bf16_flops_per_second: float = Field(gt=0)
    fp16_flops_per_second: float = Field(gt=0)
    fp32_flops_per_second: float = Field(gt=0, description="non-tensor FP32 (CUDA-core) rate")
    fp8_flops_per_second: float | None = None
    int8_ops_per_second: float | None = None
    interconnect: str
    intra_node_bytes_per_second: float = Field(
        gt=0, description="per-GPU one-way bandwidth to peers in the node (NVLink or PCIe)"
    )
    inter_node_bytes_per_second: float = Field(
        gt=0, description="per-GPU one-way network bandwidth between nodes"
    )
    max_gpus_per_node: int = Field(default=8, gt=0)
    vendor: Literal["nvidia", "amd", "cpu"] = "nvidia"
    architecture: Literal["ampere", "ada", "hopper", "blackwell", "cdna3", "x86-64"] = Field(
        description="GPU generation (what kernels and precisions it runs)"
    )
    form_factor: Literal["sxm", "pcie", "oam", "host"] = Field(
        description=(
            "board: SXM/OAM modules on a switched fabric, PCIe cards, or the host's own "
            "CPU cores (the trainer's CPU device)"
        )
    )
    switched_peers: bool = Field(
        description=(
            "every GPU of a node reaches every other over NVLink/NVSwitch or Infinity Fabric; "
            "false for PCIe cards, including those bridged in pairs"
        )
    )
    training_efficiency: float = Field(
        gt=0,
        le=1,
        description=(
            "share of dense peak a tuned training stack sustains on large GEMMs (hardware "
            "FLOPs utilization; trainwright.planner.throughput cites the sources)"
        ),
    )
    tdp_watts: float | None = Field(
        default=None,
        gt=0,
        description=(
            "board power limit (TDP/TBP) from the datasheet, watts: the ceiling of the "
            "energy estimate where power is not measured (trainwright.planner.carbon)"
        ),
    )
    aliases: tuple[str, ...] = ()
    product_labels: tuple[str, ...] = Field(
        default=(), description="values of the product node label (product_label_key)"
    )
    product_label_key: str = Field(
        default="nvidia.com/gpu.product",
        description="the node label naming the device (GPU feature discovery's for GPUs)",
    )
    resource_name: str = Field(
        default="nvidia.com/gpu",
        description="the extended resource a node advertises and a pod requests, one per device",
    )
    source: str = ""

    def peak_flops_per_second(self, precision: str) -> float:
        """Dense tensor throughput for a compute precision; falls back to 16-bit.

        Weight-only int8/int4 (gpt-fast, AWQ, GPTQ) dequantizes into 16-bit matmuls,
        so it computes at the 16-bit rate.
        """
        if precision == "fp8" and self.fp8_flops_per_second:
            return self.fp8_flops_per_second
        if precision == "fp32" and self.vendor == "cpu":
            return self.fp32_flops_per_second  # no TF32 on a CPU: fp32 runs at the FMA rate
        if precision == "fp32":
            # TF32 tensor cores run at half the 16-bit rate on A100/H100 (datasheets).
            return self.bf16_flops_per_second / 2
        if precision == "fp16":
            return self.fp16_flops_per_second
        return self.bf16_flops_per_second
