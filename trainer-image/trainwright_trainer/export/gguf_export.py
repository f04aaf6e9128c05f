"""Write a merged Hugging Face model as GGUF with the ``gguf`` package, and check it back.

The layout follows llama.cpp's ``convert_hf_to_gguf.py`` for the architectures
listed in :data:`ARCHITECTURES`: tensor names from ``gguf.get_tensor_name_map``,
Q/K projections permuted to llama.cpp's rotary layout (``LlamaModel.permute``),
1-D tensors (norms, biases) kept in F32, and the tokenizer (tokens, types, merges,
special ids) and chat template in the metadata. Tensors are streamed one at a
time from the memory-mapped safetensors, so writing needs about one tensor of RAM.

Quantization: f32, f16, bf16, q8_0 and q4_0 are written here (``gguf.quants``).
K-quants (q4_k_m, q5_k_m, q6_k) are mixes llama.cpp's ``llama-quantize`` decides
tensor by tensor: they are made from an f16 GGUF by that program when the image
has it (:mod:`.llama_cpp`), and refused with the list of what is available when
it does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwright_trainer.errors import ConfigError
from trainwright_trainer.export.config import LLAMA_CPP_QUANTIZATIONS, WRITTEN_QUANTIZATIONS

__all__ = ["ARCHITECTURES", "check_gguf", "write_gguf"]

# Hugging Face architecture -> llama.cpp architecture (gguf.MODEL_ARCH name).
ARCHITECTURES = {
    "LlamaForCausalLM": "LLAMA",
    "MistralForCausalLM": "LLAMA",
    "Qwen2ForCausalLM": "QWEN2",
}
_ROTARY_PERMUTED = {"LLAMA"}
# The worst relative RMS error a K-quant tensor may show against the merged weight
# (4-bit blocks of 32 with 6-bit scales: about 0.1 on Gaussian weights).
K_QUANT_RELATIVE_RMS_LIMIT = 0.2
# llama.cpp needs whole 32-element blocks for q8_0/q4_0; other rows fall back to f16 as
# convert_hf_to_gguf.py does.
_BLOCK = 32


@dataclass(frozen=True)
class _TensorPlan:
    hf_name: str
    gguf_name: str
    qtype: Any  # gguf.GGMLQuantizationType


def _qtype(name: str) -> Any:
    from gguf import GGMLQuantizationType

    return {
        "f32": GGMLQuantizationType.F32,
        "f16": GGMLQuantizationType.F16,
        "bf16": GGMLQuantizationType.BF16,
        "q8_0": GGMLQuantizationType.Q8_0,
        "q4_0": GGMLQuantizationType.Q4_0,
    }[name]


def _file_type(name: str) -> int:
    from gguf import LlamaFileType

    return int(
        {
            "f32": LlamaFileType.ALL_F32,
            "f16": LlamaFileType.MOSTLY_F16,
            "bf16": LlamaFileType.MOSTLY_BF16,
            "q8_0": LlamaFileType.MOSTLY_Q8_0,
            "q4_0": LlamaFileType.MOSTLY_Q4_0,
        }[name]
    )


def check_quantization(quantization: str) -> None:
    """Refuse K-quants when llama.cpp's quantizer is not available, naming what is."""
    from trainwright_trainer.export.llama_cpp import tool

    if quantization in LLAMA_CPP_QUANTIZATIONS and tool("llama-quantize") is None:
        raise ConfigError(
            f"--quantization: {quantization} needs llama.cpp's llama-quantize, which is not "
            f"available here; available: {', '.join(WRITTEN_QUANTIZATIONS)}"
        )


def _arch(config: dict[str, Any]) -> str:
    for name in config.get("architectures") or []:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ConfigError(
        f"--formats: gguf is written for {', '.join(sorted(ARCHITECTURES))}; this model is "
        f"{', '.join(config.get('architectures') or ['unknown'])}; export safetensors instead"
    )


def permute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """HF's rotate-half Q/K rows -> llama.cpp's interleaved layout (convert_hf_to_gguf.py)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _gguf_array(tensor: torch.Tensor, qtype: Any) -> np.ndarray[Any, Any]:
    from gguf import GGMLQuantizationType, quants

    data = tensor.float().numpy()
    if qtype == GGMLQuantizationType.F32:
        return data
    if qtype == GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return np.asarray(quants.quantize(data, qtype))


def _tensor_type(shape: list[int], quantization: str) -> Any:
    from gguf import GGMLQuantizationType

    if len(shape) == 1:
        return GGMLQuantizationType.F32
    if quantization in ("q8_0", "q4_0") and shape[-1] % _BLOCK:
        return GGMLQuantizationType.F16
    return _qtype(quantization)


def _plan(model_dir: Path, arch: str, blocks: int, quantization: str) -> list[_TensorPlan]:
    import gguf
    from safetensors import safe_open

    from trainwright_trainer.export.merge import base_shards

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch), blocks)
    plans: list[_TensorPlan] = []
    for shard in base_shards(model_dir):
        with safe_open(str(shard), framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 - not a mapping
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                mapped = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if mapped is None:
                    raise ConfigError(
                        f"--formats: gguf: llama.cpp has no tensor for {hf_name}; "
                        "export safetensors instead"
                    )
                shape = list(handle.get_slice(hf_name).get_shape())
                plans.append(_TensorPlan(hf_name, mapped, _tensor_type(shape, quantization)))
    return plans


def _heads_for(hf_name: str, config: dict[str, Any], arch: str) -> int | None:
    if arch not in _ROTARY_PERMUTED:
        return None
    heads = int(config["num_attention_heads"])
    if hf_name.endswith("q_proj.weight"):
        return heads
    if hf_name.endswith("k_proj.weight"):
        return int(config.get("num_key_value_heads") or heads)
    return None


def load_for_gguf(
    model_dir: Path, plan: _TensorPlan, config: dict[str, Any], arch: str
) -> torch.Tensor:
    """The HF tensor as it goes into the GGUF (Q/K permuted for llama)."""
    from safetensors import safe_open

    from trainwright_trainer.export.merge import base_shards

    for shard in base_shards(model_dir):
        with safe_open(str(shard), framework="pt") as handle:
            if plan.hf_name in handle.keys():  # noqa: SIM118
                tensor = handle.get_tensor(plan.hf_name)
                heads = _heads_for(plan.hf_name, config, arch)
                return permute_rotary(tensor, heads) if heads else tensor
    raise KeyError(plan.hf_name)


def _vocabulary(
    tokenizer_dir: Path, n_vocab: int
) -> tuple[str, list[bytes], list[int], list[float]]:
    """(tokenizer model, tokens, token types, scores), padded to the embedding's rows."""
    import gguf

    tokenizer_json = tokenizer_dir / "tokenizer.json"
    if (tokenizer_dir / "tokenizer.model").is_file():
        sp = gguf.SentencePieceVocab(tokenizer_dir)
        entries = list(sp.all_tokens())
        model = "llama"
        tokens = [t for t, _, _ in entries]
        scores = [float(s) for _, s, _ in entries]
        types = [int(k) for _, _, k in entries]
    elif tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        spec = data.get("model") or {}
        decoder = (data.get("decoder") or {}).get("type")
        if spec.get("type") != "BPE" or decoder != "ByteLevel":
            raise ConfigError(
                f"tokenizer: {tokenizer_dir} holds a {spec.get('type')} tokenizer with a "
                f"{decoder} decoder; llama.cpp reads byte-level BPE (tokenizer.json) and "
                "SentencePiece (tokenizer.model) tokenizers; export safetensors instead"
            )
        by_id: dict[int, tuple[str, int]] = {
            i: (t, int(gguf.TokenType.NORMAL)) for t, i in spec["vocab"].items()
        }
        for added in data.get("added_tokens") or []:
            kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
            by_id[int(added["id"])] = (added["content"], int(kind))
        model = "gpt2"
        size = max(by_id) + 1
        tokens = [by_id.get(i, (f"[PAD{i}]", 0))[0].encode("utf-8") for i in range(size)]
        types = [by_id[i][1] if i in by_id else int(gguf.TokenType.UNUSED) for i in range(size)]
        scores = [0.0] * size
    else:
        raise ConfigError(
            f"tokenizer: {tokenizer_dir} has neither tokenizer.json nor tokenizer.model; "
            "llama.cpp needs one of them"
        )
    if len(tokens) > n_vocab:
        raise ConfigError(
            f"tokenizer: {len(tokens)} tokens but the model embeds only {n_vocab}; "
            "the tokenizer does not belong to this model"
        )
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
        scores.append(0.0)
    return model, tokens, types, scores


def _write_metadata(writer: Any, config: dict[str, Any], quantization: str, name: str) -> None:
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_dimension_count(int(config.get("head_dim") or hidden // heads))
    rope = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    writer.add_rope_freq_base(float(rope or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(_file_type(quantization))
    writer.add_quantization_version(2)


def check_gguf_inputs(model_dir: Path, tokenizer_dir: Path) -> None:
    """Raise the ConfigError write_gguf would, from config.json and the tokenizer alone."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    _arch(config)
    _vocabulary(tokenizer_dir, int(config["vocab_size"]))


def write_gguf(
    model_dir: Path, tokenizer_dir: Path, out_path: Path, *, quantization: str, name: str
) -> Path:
    """Write ``model_dir`` (merged safetensors + config.json) as one GGUF file."""
    check_quantization(quantization)
    if quantization in LLAMA_CPP_QUANTIZATIONS:
        from trainwright_trainer.export.llama_cpp import quantize

        f16 = out_path.with_name(f".{out_path.stem}.f16.gguf")
        _write_gguf(model_dir, tokenizer_dir, f16, quantization="f16", name=name)
        try:
            quantize(f16, out_path, quantization)
        finally:
            f16.unlink(missing_ok=True)
        return out_path
    return _write_gguf(model_dir, tokenizer_dir, out_path, quantization=quantization, name=name)


def _write_gguf(
    model_dir: Path, tokenizer_dir: Path, out_path: Path, *, quantization: str, name: str
) -> Path:
    import gguf

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = _arch(config)
    plans = _plan(model_dir, arch, int(config["num_hidden_layers"]), quantization)
    tok_model, tokens, types, scores = _vocabulary(tokenizer_dir, int(config["vocab_size"]))
    writer = gguf.GGUFWriter(str(out_path), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch)])
    _write_metadata(writer, config, quantization, name)
    writer.add_tokenizer_model(tok_model)
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if tok_model == "llama":
        writer.add_token_scores(scores)
    gguf.SpecialVocab(
        tokenizer_dir, load_merges=tok_model == "gpt2", n_vocab=len(tokens)
    ).add_to_gguf(writer, quiet=True)
    from gguf.quants import quant_shape_to_byte_shape

    floats = _float_numpy()
    for plan in plans:
        # Shapes and byte sizes first (the header precedes the data); data streams after.
        shape = tuple(load_shape(model_dir, plan.hf_name))
        if plan.qtype in floats:
            info_shape, dtype, raw = shape, np.dtype(floats[plan.qtype]), None
        else:
            info_shape = quant_shape_to_byte_shape(shape, plan.qtype)
            dtype, raw = np.dtype(np.uint8), plan.qtype
        writer.add_tensor_info(
            plan.gguf_name, info_shape, dtype, _nbytes(shape, plan.qtype), raw_dtype=raw
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for plan in plans:
        tensor = load_for_gguf(model_dir, plan, config, arch)
        writer.write_tensor_data(_gguf_array(tensor, plan.qtype))
    writer.close()
    return out_path


def _float_numpy() -> dict[Any, Any]:
    from gguf import GGMLQuantizationType

    return {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


def _nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    from gguf.quants import quant_shape_to_byte_shape

    return int(np.prod(quant_shape_to_byte_shape(shape, qtype)))


def load_shape(model_dir: Path, hf_name: str) -> list[int]:
    from safetensors import safe_open

    from trainwright_trainer.export.merge import base_shards

    for shard in base_shards(model_dir):
        with safe_open(str(shard), framework="pt") as handle:
            if hf_name in handle.keys():  # noqa: SIM118
                return list(handle.get_slice(hf_name).get_shape())
    raise KeyError(hf_name)


def check_gguf(
    gguf_path: Path, model_dir: Path, tokenizer_dir: Path, *, quantization: str
) -> dict[str, Any]:
    """Reload the GGUF: names, shapes, types, architecture, metadata, and every tensor's data.

    Each tensor's stored bytes must equal a fresh quantization of the merged
    weight (so the dequantized weights are the merged ones, up to the format's own
    rounding, which is reported as a relative RMS error per type).
    """
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = _arch(config)
    # Written here: every tensor's bytes must be our own quantization of the merged weight.
    # llama-quantize's K-quant mixes choose a type per tensor: checked by dequantizing.
    exact = quantization not in LLAMA_CPP_QUANTIZATIONS
    plans = {
        p.gguf_name: p
        for p in _plan(
            model_dir, arch, int(config["num_hidden_layers"]), quantization if exact else "f16"
        )
    }
    problems: list[str] = []
    found = {t.name for t in reader.tensors}
    if found != set(plans):
        problems.append(f"tensor names differ: {sorted(found ^ set(plans))[:4]}")
    errors: dict[str, list[float]] = {}
    for tensor in reader.tensors:
        plan = plans.get(tensor.name)
        if plan is None:
            continue
        merged = load_for_gguf(model_dir, plan, config, arch)
        shape = [int(x) for x in reversed(tensor.shape.tolist())]
        if shape != list(merged.shape):
            problems.append(f"{tensor.name}: shape {shape}, merged {list(merged.shape)}")
            continue
        if exact and tensor.tensor_type != plan.qtype:
            problems.append(
                f"{tensor.name}: type {tensor.tensor_type.name}, expected {plan.qtype.name}"
            )
        if exact and _gguf_array(merged, plan.qtype).tobytes() != np.asarray(tensor.data).tobytes():
            problems.append(f"{tensor.name}: data differs from the merged weight")
        try:
            restored = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        except NotImplementedError:
            problems.append(f"{tensor.name}: {tensor.tensor_type.name} cannot be dequantized here")
            continue
        reference = merged.float().numpy()
        rms = float(np.sqrt(np.mean((restored.reshape(reference.shape) - reference) ** 2)))
        scale = float(np.sqrt(np.mean(reference**2))) or 1.0
        errors.setdefault(tensor.tensor_type.name, []).append(rms / scale)
        if not exact and rms / scale > K_QUANT_RELATIVE_RMS_LIMIT:
            problems.append(
                f"{tensor.name}: relative RMS error {rms / scale:.3f} after dequantizing"
            )

    def field(key: str) -> Any:
        item = reader.get_field(key)
        return None if item is None else item.contents()

    arch_name = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch)]
    metadata = {
        "general.architecture": field("general.architecture"),
        f"{arch_name}.block_count": field(f"{arch_name}.block_count"),
        f"{arch_name}.embedding_length": field(f"{arch_name}.embedding_length"),
        "tokenizer.ggml.model": field("tokenizer.ggml.model"),
        "tokens": len(field("tokenizer.ggml.tokens") or []),
        "has_chat_template": field("tokenizer.chat_template") is not None,
    }
    if metadata["general.architecture"] != arch_name:
        problems.append(f"architecture {metadata['general.architecture']}, expected {arch_name}")
    if metadata[f"{arch_name}.block_count"] != int(config["num_hidden_layers"]):
        problems.append("block_count differs from config.json")
    if metadata["tokens"] != int(config["vocab_size"]):
        problems.append(f"{metadata['tokens']} tokens, the model embeds {config['vocab_size']}")
    template = _chat_template(tokenizer_dir)
    if template is not None and field("tokenizer.chat_template") != template:
        problems.append("chat template differs from the tokenizer's")
    return {
        "ok": not problems,
        "problems": problems,
        "tensors": len(reader.tensors),
        "metadata": metadata,
        "relative_rms_error_by_type": {k: max(v) for k, v in sorted(errors.items())},
    }


def _chat_template(tokenizer_dir: Path) -> str | None:
    jinja = tokenizer_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = tokenizer_dir / "tokenizer_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return value if isinstance(value, str) else None
    return None
