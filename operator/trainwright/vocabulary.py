"""The words the API, the CLI, the planner and the trainer share, written once.

Every layer imports its choices from here: the CRD enums (``trainwright.api``), the
CLI's ``choices=`` (``trainwright.cli``), the planner's request models
(``trainwright.planner``) and the trainer's config (``trainwright_trainer.config``,
which runs in the trainer image where the project is installed without its
operator dependencies). So this module imports only the standard library
(``.importlinter`` contract ``vocabulary-is-a-leaf``).
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["full", "lora", "qlora", "dora"]
METHODS: tuple[str, ...] = get_args(Method)
# Methods that train adapters on a frozen base (their LoRA settings apply).
ADAPTER_METHODS: tuple[str, ...] = ("lora", "qlora", "dora")
# What a user may ask for: a method, or ``auto`` for the planner to pick 16-bit LoRA
# when it fits the GPUs the plan can get, else QLoRA (an adapter method either way).
MethodChoice = Literal["auto", "full", "lora", "qlora", "dora"]
METHOD_CHOICES: tuple[str, ...] = get_args(MethodChoice)

Strategy = Literal["ddp", "fsdp", "zero1", "zero2", "zero3"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# What a user may ask for: a strategy, or ``auto`` for the planner to choose.
StrategyChoice = Literal["auto", "ddp", "fsdp", "zero1", "zero2", "zero3"]
STRATEGY_CHOICES: tuple[str, ...] = get_args(StrategyChoice)

# Use cases a TrainingJob's spec.profile names (defaults in trainwright.planner.profiles).
UseCase = Literal["chatbot", "code", "summarization", "qa", "creative-writing", "domain-adaptation"]
USE_CASES: tuple[str, ...] = get_args(UseCase)

# Tokens per chunk of the trainer's fused output head + cross-entropy
# (trainwright_trainer.loss; the config's training.loss_chunk_tokens default): the
# planner sizes a TrainingJob's logits memory with it.
LOSS_CHUNK_TOKENS = 1024

# The trainer's per-step and per-evaluation log in its checkpoint directory
# (trainwright_trainer.train); the exporter reads a run's final losses from it for the
# model card, and the ModelExport controller points the exporter at it.
TRAIN_LOG_NAME = "train_log.jsonl"

# Optimizers the trainer runs.
Optimizer = Literal["adamw", "adamw8bit", "paged_adamw8bit", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
# The planner also sizes two variants for what-if questions: AdamW's foreach
# implementation (one more parameter-sized buffer) and paged 32-bit AdamW.
PlannerOptimizer = Literal[
    "adamw", "adamw_foreach", "adamw8bit", "paged_adamw8bit", "paged_adamw", "sgd"
]
PLANNER_OPTIMIZERS: tuple[str, ...] = get_args(PlannerOptimizer)

Cloud = Literal["aws", "gcp", "azure", "lambda", "runpod"]
CLOUDS: tuple[str, ...] = get_args(Cloud)

# Training computes in 16 or 32 bits; serving also runs fp8 and weight-only int8/int4.
TrainingPrecision = Literal["bf16", "fp16", "fp32"]
TRAINING_PRECISIONS: tuple[str, ...] = get_args(TrainingPrecision)
InferencePrecision = Literal["bf16", "fp16", "fp8", "int8", "int4"]
INFERENCE_PRECISIONS: tuple[str, ...] = get_args(InferencePrecision)
# The KV cache can be stored narrower than the weights (vLLM ``--kv-cache-dtype``);
# ``auto`` stores it at the weights' activation width (fp8 serving: fp8).
KvCachePrecision = Literal["auto", "bf16", "fp16", "fp8", "int8"]
KV_CACHE_PRECISIONS: tuple[str, ...] = get_args(KvCachePrecision)

# What a ModelExport writes (``python -m trainwright_trainer export --formats``).
ExportFormat = Literal["safetensors", "adapter", "gguf", "ollama"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
# Formats that hold a GGUF (and so take a quantization).
GGUF_FORMATS: tuple[str, ...] = ("gguf", "ollama")
# GGUF types (llama.cpp's names, ``llama-quantize --help``). The first five the ``gguf``
# package writes itself; the K-quants need llama.cpp's quantizer.
GgufQuantization = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q6_k", "q5_k_m", "q4_k_m"]
GGUF_QUANTIZATIONS: tuple[str, ...] = get_args(GgufQuantization)
WRITTEN_QUANTIZATIONS: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0")
LLAMA_CPP_QUANTIZATIONS: tuple[str, ...] = ("q6_k", "q5_k_m", "q4_k_m")
DEFAULT_QUANTIZATION: GgufQuantization = "q8_0"
# How several adapters combine (peft ``LoraModel.add_weighted_adapter``).
AdapterCombination = Literal["linear", "ties", "dare_ties", "svd"]
ADAPTER_COMBINATIONS: tuple[str, ...] = get_args(AdapterCombination)

__all__ = [
    "ADAPTER_COMBINATIONS",
    "ADAPTER_METHODS",
    "CLOUDS",
    "DEFAULT_QUANTIZATION",
    "EXPORT_FORMATS",
    "GGUF_FORMATS",
    "GGUF_QUANTIZATIONS",
    "INFERENCE_PRECISIONS",
    "KV_CACHE_PRECISIONS",
    "LLAMA_CPP_QUANTIZATIONS",
    "METHODS",
    "METHOD_CHOICES",
    "OPTIMIZERS",
    "PLANNER_OPTIMIZERS",
    "STRATEGIES",
    "STRATEGY_CHOICES",
    "TRAINING_PRECISIONS",
    "WRITTEN_QUANTIZATIONS",
    "AdapterCombination",
    "Cloud",
    "ExportFormat",
    "GgufQuantization",
    "InferencePrecision",
    "KvCachePrecision",
    "Method",
    "MethodChoice",
    "Optimizer",
    "PlannerOptimizer",
    "Strategy",
    "StrategyChoice",
    "TrainingPrecision",
]
