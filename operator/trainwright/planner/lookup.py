"""Finding catalog entries by key, alias or node label, and reading user-given data.

Everything here is pure: a ``config.json`` or a price file arrives as an
already-parsed mapping (reading files is the CLI's job).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from trainwright.planner.catalog import CLOUDS, GPUS, MODELS, PRICES, Price
from trainwright.planner.errors import PlannerError, UnknownGpuError, UnknownModelError
from trainwright.planner.specs import GpuSpec, ModelSpec


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


@lru_cache(maxsize=1)
def _model_index() -> dict[str, ModelSpec]:
    index: dict[str, ModelSpec] = {}
    for model in MODELS:
        for name in (model.key, model.display_name, *model.aliases):
            index.setdefault(_norm(name), model)
    return index


@lru_cache(maxsize=1)
def _gpu_index() -> dict[str, GpuSpec]:
    index: dict[str, GpuSpec] = {}
    for gpu in GPUS:
        for name in (gpu.key, gpu.display_name, *gpu.aliases, *gpu.product_labels):
            index.setdefault(_norm(name), gpu)
    return index


def _suggest(name: str, candidates: list[str]) -> list[str]:
    return difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)


def list_models() -> list[ModelSpec]:
    """Every catalog model, in catalog order."""
    return list(MODELS)


def list_gpus() -> list[GpuSpec]:
    """Every catalog GPU, in catalog order."""
    return list(GPUS)


def get_model(name: str | ModelSpec) -> ModelSpec:
    """A catalog model by key or Hugging Face alias (case-insensitive)."""
    if isinstance(name, ModelSpec):
        return name
    found = _model_index().get(_norm(name))
    if found is None:
        keys = [m.key for m in MODELS]
        guess = _suggest(_norm(name).split("/")[-1], keys)
        raise UnknownModelError(name, guess)
    return found


def get_gpu(name: str | GpuSpec) -> GpuSpec:
    """A catalog GPU by key, alias or ``nvidia.com/gpu.product`` label (case-insensitive)."""
    if isinstance(name, GpuSpec):
        return name
    found = _gpu_index().get(_norm(name))
    if found is None:
        raise UnknownGpuError(name, _suggest(name, [g.key for g in GPUS]))
    return found


@lru_cache(maxsize=1)
def device_node_keys() -> tuple[tuple[str, str], ...]:
    """The (product label, extended resource) pairs by which nodes offer catalog devices.

    GPUs: GPU feature discovery's ``nvidia.com/gpu.product`` and the device plugin's
    ``nvidia.com/gpu``; the trainer's CPU device: ``trainwright.io/device.product`` and
    ``trainwright.io/cpu-rank``.
    """
    pairs = dict.fromkeys((gpu.product_label_key, gpu.resource_name) for gpu in GPUS)
    return tuple(pairs)


def gpu_key_for_product_label(label: str) -> str | None:
    """The catalog key for a GPU feature discovery label, e.g. NVIDIA-H100-80GB-HBM3 -> H100-SXM.

    Labels the catalog does not list exactly are matched on their distinctive
    tokens (H100 + PCIe, A100 + 40GB, ...); ``None`` when nothing matches.
    """
    exact = _gpu_index().get(_norm(label))
    if exact is not None:
        return exact.key
    text = _norm(label)
    rules: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
        (("b200",), (), "B200"),
        (("h200",), ("gh200",), "H200"),
        (("h100", "pcie"), (), "H100-PCIe"),
        (("h100", "nvl"), (), "H100-PCIe"),
        (("h100",), ("pcie", "nvl", "gh200"), "H100-SXM"),
        (("a100", "pcie"), ("40gb",), "A100-80GB-PCIe"),
        (("a100", "40gb"), (), "A100-40GB-SXM"),
        (("a100",), (), "A100-80GB-SXM"),
        (("l40s",), (), "L40S"),
        (("l40",), (), "L40S"),
        (("a10g",), (), "A10G"),
        (("l4",), (), "L4"),
        (("mi300x",), (), "MI300X"),
        (("4090",), (), "RTX-4090"),
        (("a6000",), (), "RTX-A6000"),
    )
    tokens = text.split("-")
    for needed, excluded, key in rules:
        if all(n in text for n in needed) and not any(e in text for e in excluded):
            if key == "L4" and "l4" not in tokens:
                continue
            return key
    return None


def _positive_int(config: Mapping[str, Any], field: str, default: int | None = None) -> int:
    value = config.get(field, default)
    if value is None:
        raise PlannerError(f"config.json is missing the field {field!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PlannerError(f"config.json field {field!r} must be a positive integer, got {value!r}")
    return value


_FAMILIES = {
    "llama": "llama",
    "mistral": "mistral",
    "mixtral": "mixtral",
    "qwen2": "qwen2",
    "qwen2_moe": "qwen2",
    "qwen3": "qwen2",
    "gemma": "gemma2",
    "gemma2": "gemma2",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "bloom": "bloom",
    "t5": "t5",
    "mt5": "t5",
}


def model_from_hf_config(config: Mapping[str, Any], name: str = "custom") -> ModelSpec:
    """A :class:`ModelSpec` from a parsed Hugging Face ``config.json``.

    Supports the Llama, Mistral, Mixtral, Qwen2, Gemma/Gemma 2, Phi-3, GPT-2, BLOOM
    and T5/mT5 families; a missing or non-positive field raises :class:`PlannerError`
    naming that field.
    """
    model_type = config.get("model_type")
    if model_type not in _FAMILIES:
        accepted = ", ".join(sorted(_FAMILIES))
        raise PlannerError(
            f"config.json field 'model_type' must be one of {accepted}, got {model_type!r}"
        )
    if model_type == "gpt2":
        return _gpt2_from_config(config, name)
    if model_type == "bloom":
        return _bloom_from_config(config, name)
    if model_type in ("t5", "mt5"):
        return _t5_from_config(config, name)
    hidden = _positive_int(config, "hidden_size")
    heads = _positive_int(config, "num_attention_heads")
    experts = _positive_int(config, "num_local_experts", 1)
    return ModelSpec(
        key=name,
        display_name=name,
        family=_FAMILIES[str(model_type)],
        hidden_size=hidden,
        num_layers=_positive_int(config, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=_positive_int(config, "num_key_value_heads", heads),
        head_dim=_positive_int(config, "head_dim", hidden // heads),
        ffn_size=_positive_int(config, "intermediate_size"),
        vocab_size=_positive_int(config, "vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", model_type.startswith("gemma"))),
        num_experts=experts,
        experts_per_token=_positive_int(config, "num_experts_per_tok", 1 if experts == 1 else 2),
        qkv_bias=model_type.startswith("qwen2") or bool(config.get("attention_bias", False)),
        max_seq_len=_positive_int(config, "max_position_embeddings", 4096),
        source="user-supplied config.json",
    )


def _gpt2_from_config(config: Mapping[str, Any], name: str) -> ModelSpec:
    hidden = _positive_int(config, "n_embd")
    heads = _positive_int(config, "n_head")
    inner = config.get("n_inner") or 4 * hidden
    return ModelSpec(
        key=name,
        display_name=name,
        family="gpt2",
        hidden_size=hidden,
        num_layers=_positive_int(config, "n_layer"),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        ffn_size=_positive_int({"n_inner": inner}, "n_inner"),
        vocab_size=_positive_int(config, "vocab_size"),
        tied_embeddings=True,
        mlp="plain",
        qkv_bias=True,
        dropout=float(config.get("resid_pdrop", 0.0) or 0.0) > 0,
        learned_positions=True,
        max_seq_len=_positive_int(config, "n_positions", 1024),
        source="user-supplied config.json",
    )


def _bloom_from_config(config: Mapping[str, Any], name: str) -> ModelSpec:
    """BLOOM: fused query_key_value and GELU MLP with biases, ALiBi, tied head."""
    hidden = _positive_int(config, "hidden_size", config.get("n_embed"))
    heads = _positive_int(config, "n_head")
    return ModelSpec(
        key=name,
        display_name=name,
        family="bloom",
        hidden_size=hidden,
        num_layers=_positive_int(config, "n_layer"),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        ffn_size=4 * hidden,
        vocab_size=_positive_int(config, "vocab_size"),
        tied_embeddings=True,
        mlp="plain",
        qkv_bias=True,
        fused_qkv=True,
        embedding_norm=True,
        dropout=float(config.get("hidden_dropout", 0.0) or 0.0) > 0,
        max_seq_len=_positive_int(config, "seq_length", 2048),
        source="user-supplied config.json",
    )


def _t5_from_config(config: Mapping[str, Any], name: str) -> ModelSpec:
    """T5 / mT5 encoder-decoders. ``gated-gelu`` (v1.1, mT5) has three MLP matrices; the
    original ReLU T5 two (counted with GPT-style biases T5 lacks: under 0.1% more)."""
    layers = _positive_int(config, "num_layers")
    gated = str(config.get("feed_forward_proj", "relu")).startswith("gated")
    return ModelSpec(
        key=name,
        display_name=name,
        family="t5",
        hidden_size=_positive_int(config, "d_model"),
        num_layers=_positive_int(config, "num_decoder_layers", layers),
        encoder_layers=layers,
        num_heads=_positive_int(config, "num_heads"),
        num_kv_heads=_positive_int(config, "num_heads"),
        head_dim=_positive_int(config, "d_kv"),
        ffn_size=_positive_int(config, "d_ff"),
        vocab_size=_positive_int(config, "vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", True)),
        mlp="gated" if gated else "plain",
        dropout=float(config.get("dropout_rate", 0.1) or 0.0) > 0,
        max_seq_len=512,
        source="user-supplied config.json",
    )


def prices_from_mapping(mapping: Mapping[str, Any], as_of: str = "user") -> tuple[Price, ...]:
    """Price overrides from a parsed file: ``{cloud: {gpu: usd_per_gpu_hour}}``.

    A value may also be a mapping with ``usd_per_gpu_hour`` and optional
    ``as_of`` and ``source``. Unknown clouds or GPUs, and non-positive prices,
    raise :class:`PlannerError`.
    """
    prices: list[Price] = []
    for cloud, table in mapping.items():
        if cloud not in CLOUDS:
            raise PlannerError(f"prices: cloud {cloud!r} must be one of {', '.join(CLOUDS)}")
        if not isinstance(table, Mapping):
            raise PlannerError(f"prices: {cloud!r} must map GPU names to USD per GPU-hour")
        for gpu_name, entry in table.items():
            gpu = get_gpu(str(gpu_name))
            raw = entry.get("usd_per_gpu_hour") if isinstance(entry, Mapping) else entry
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0:
                raise PlannerError(
                    f"prices: {cloud}.{gpu_name} must be a positive number of USD per GPU-hour"
                )
            meta = entry if isinstance(entry, Mapping) else {}
            prices.append(
                Price(
                    gpu=gpu.key,
                    cloud=str(cloud),
                    usd_per_gpu_hour=float(raw),
                    as_of=str(meta.get("as_of", as_of)),
                    source=str(meta.get("source", "user price file")),
                )
            )
    return tuple(prices)


def price_for(gpu: str, cloud: str, overrides: tuple[Price, ...] | None = None) -> Price | None:
    """The override for (gpu, cloud) if given, else the catalog price, else ``None``."""
    for price in (*(overrides or ()), *PRICES):
        if price.gpu == gpu and price.cloud == cloud:
            return price
    return None
