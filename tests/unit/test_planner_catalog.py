"""Catalog facts a plan rests on: parameter counts, KV bytes, labels, aliases, config.json."""

from __future__ import annotations

import pytest

from trainwright.planner import (
    PlannerError,
    UnknownGpuError,
    UnknownModelError,
    get_gpu,
    get_model,
    gpu_key_for_product_label,
    kv_cache_bytes_per_token,
    list_gpus,
    list_models,
    model_from_hf_config,
    price_for,
    prices_from_mapping,
)

LLAMA_31_8B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize(
    ("key", "billions"),
    [
        ("llama-2-7b", 6.74),
        ("llama-2-70b", 68.98),
        ("llama-3.1-8b", 8.03),
        ("llama-3.1-70b", 70.55),
        ("llama-3.1-405b", 405.85),
        ("llama-3.2-1b", 1.24),
        ("qwen2.5-7b", 7.62),
        ("qwen2.5-72b", 72.71),
        ("gemma-2-9b", 9.24),
        ("phi-3-mini", 3.82),
        ("mistral-7b", 7.25),
        ("bloomz-7b1", 7.07),
        ("t0-3b", 2.85),
        ("mt0-xxl", 12.92),
    ],
)
def test_parameter_counts_match_the_model_cards(key: str, billions: float) -> None:
    assert get_model(key).total_params / 1e9 == pytest.approx(billions, abs=0.01)


def test_mixtral_counts_total_and_active_parameters_separately() -> None:
    mixtral = get_model("mixtral-8x7b")
    assert mixtral.total_params / 1e9 == pytest.approx(46.70, abs=0.01)
    assert mixtral.active_params / 1e9 == pytest.approx(12.88, abs=0.01)


@pytest.mark.parametrize(
    ("key", "kv_bytes"),
    [("llama-3.1-8b", 131_072), ("llama-3.1-70b", 327_680), ("llama-3.1-405b", 516_096)],
)
def test_kv_cache_bytes_per_token_are_exact_for_llama_31(key: str, kv_bytes: int) -> None:
    assert kv_cache_bytes_per_token(get_model(key), "bf16") == kv_bytes


def test_the_catalog_covers_the_models_and_gpus_the_issue_names() -> None:
    models = {m.key for m in list_models()}
    for key in (
        "llama-2-13b",
        "llama-3.2-3b",
        "llama-3.3-70b",
        "qwen2.5-0.5b",
        "qwen2.5-14b",
        "qwen2.5-32b",
        "gemma-2-2b",
        "gemma-2-27b",
        "megatron-22b",
        "gpt3-175b",
        "turing-530b",
        "megatron-1t",
    ):
        assert key in models
    gpus = {g.key for g in list_gpus()}
    assert {
        "L4",
        "A10G",
        "L40S",
        "A100-40GB-SXM",
        "A100-80GB-SXM",
        "H100-SXM",
        "H100-PCIe",
        "H200",
        "B200",
        "MI300X",
    } <= gpus
    assert all(m.source for m in list_models()) and all(g.source for g in list_gpus())


def test_hugging_face_ids_resolve_case_insensitively() -> None:
    assert get_model("meta-llama/Llama-3.1-8B").key == "llama-3.1-8b"
    assert get_model("QWEN/qwen2.5-7b-instruct").key == "qwen2.5-7b"
    assert get_gpu("h100").key == "H100-SXM"


def test_unknown_names_suggest_the_closest_catalog_keys() -> None:
    with pytest.raises(UnknownModelError, match="did you mean") as model_error:
        get_model("llama-3.1-7b")
    assert "llama-3.1-8b" in model_error.value.suggestions
    with pytest.raises(UnknownGpuError) as gpu_error:
        get_gpu("H100SXM")
    assert gpu_error.value.suggestions[0] == "H100-SXM"


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100-SXM"),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB-SXM"),
        ("NVIDIA-A100-SXM4-40GB", "A100-40GB-SXM"),
        ("NVIDIA-A100-80GB-PCIe", "A100-80GB-PCIe"),
        ("NVIDIA-H100-PCIe", "H100-PCIe"),
        ("NVIDIA-H100-NVL", "H100-PCIe"),
        ("NVIDIA-H200", "H200"),
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-A10G", "A10G"),
        ("NVIDIA-L40S", "L40S"),
        ("NVIDIA-B200", "B200"),
        ("AMD-Instinct-MI300X", "MI300X"),
        ("Tesla-T4", None),
    ],
)
def test_gpu_feature_discovery_labels_map_to_catalog_keys(label: str, key: str | None) -> None:
    assert gpu_key_for_product_label(label) == key


def test_a_config_json_counts_like_the_catalog_entry() -> None:
    spec = model_from_hf_config(LLAMA_31_8B_CONFIG, name="my-llama")
    assert spec.key == "my-llama"
    assert spec.total_params == get_model("llama-3.1-8b").total_params
    assert kv_cache_bytes_per_token(spec, "bf16") == 131_072


def test_a_gpt2_config_json_is_understood() -> None:
    gpt2 = model_from_hf_config(
        {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}
    )
    assert gpt2.total_params / 1e6 == pytest.approx(124.4, abs=0.5)


def test_a_config_json_missing_a_field_names_it() -> None:
    config = {k: v for k, v in LLAMA_31_8B_CONFIG.items() if k != "intermediate_size"}
    with pytest.raises(PlannerError, match="'intermediate_size'"):
        model_from_hf_config(config)


def test_an_unsupported_architecture_names_the_accepted_families() -> None:
    with pytest.raises(PlannerError, match=r"model_type.*llama"):
        model_from_hf_config({**LLAMA_31_8B_CONFIG, "model_type": "mamba"})


def test_price_overrides_replace_catalog_prices_for_that_gpu_and_cloud() -> None:
    overrides = prices_from_mapping({"aws": {"H100-SXM": 6.88, "l4": {"usd_per_gpu_hour": 0.7}}})
    assert price_for("H100-SXM", "aws", overrides).usd_per_gpu_hour == 6.88  # type: ignore[union-attr]
    assert price_for("L4", "aws", overrides).usd_per_gpu_hour == 0.7  # type: ignore[union-attr]
    assert price_for("H100-SXM", "aws").usd_per_gpu_hour == 12.29  # type: ignore[union-attr]
    assert price_for("H100-SXM", "aws").as_of == "2023-07..2025-06"  # type: ignore[union-attr]


def test_bad_price_files_are_rejected_with_the_field() -> None:
    with pytest.raises(PlannerError, match="cloud 'oracle'"):
        prices_from_mapping({"oracle": {"H100-SXM": 2.0}})
    with pytest.raises(PlannerError, match=r"aws\.H100-SXM must be a positive number"):
        prices_from_mapping({"aws": {"H100-SXM": -1}})


def test_bloomz_7b1_counts_exactly_its_published_7_069_016_064_parameters() -> None:
    # BLOOM: fused QKV with biases, GELU MLP with biases, LayerNorms with biases, an
    # embedding LayerNorm, ALiBi (no position table) and a tied LM head.
    assert get_model("bigscience/bloomz-7b1").total_params == 7_069_016_064


def test_an_encoder_decoder_counts_both_stacks_and_the_decoders_cross_attention() -> None:
    t0 = get_model("bigscience/T0_3B")
    attention = 4 * 2048 * (32 * 64)
    mlp = 3 * 2048 * 5120
    assert t0.encoder_layer_params == attention + mlp + 2 * 2048
    assert t0.layer_params == t0.encoder_layer_params + attention + 2048
    assert t0.total_layers == 48
    # Untied: the shared input embedding and the LM head are separate 32128 x 2048 tables.
    assert t0.total_params - 24 * (t0.layer_params + t0.encoder_layer_params) == (
        2 * 32128 * 2048 + 2 * 2048
    )


def test_t5_and_bloom_config_jsons_count_like_the_catalog_entries() -> None:
    mt0 = {
        "model_type": "mt5",
        "d_model": 4096,
        "d_ff": 10240,
        "d_kv": 64,
        "num_heads": 64,
        "num_layers": 24,
        "vocab_size": 250112,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
    }
    bloom = {"model_type": "bloom", "hidden_size": 4096, "n_layer": 30, "n_head": 32}
    bloom["vocab_size"] = 250880
    assert model_from_hf_config(mt0).total_params == get_model("mt0-xxl").total_params
    assert model_from_hf_config(bloom).total_params == 7_069_016_064
