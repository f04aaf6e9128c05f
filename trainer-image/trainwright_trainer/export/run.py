"""Run one export: resolve the source, merge, write each format, verify, write the manifest.

Everything is written under ``OUTPUT/.staging-<nonce>/`` and moved into place at
the end, ``manifest.json`` last; an output that already holds an export (a
manifest, or any format's directory) is refused before anything is written, so
nothing that existed changes. Layout::

    OUTPUT/manifest.json
    OUTPUT/safetensors/   model[-0000i-of-0000N].safetensors, config.json,
                          generation_config.json, tokenizer files, README.md
    OUTPUT/adapter/       adapter_config.json, adapter_model.safetensors
    OUTPUT/gguf/          model-<quantization>.gguf
    OUTPUT/ollama/        Modelfile, model-<quantization>.gguf (a hard link when
                          gguf is exported too)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from trainwright_trainer.errors import ConfigError
from trainwright_trainer.export.config import (
    GGUF_FORMATS,
    MANIFEST_NAME,
    TERMINATION_LOG_ENV,
    ExportConfig,
)

__all__ = ["LOGITS_TOLERANCE", "VERIFY_PROMPT", "run_export"]

log = logging.getLogger(__name__)

VERIFY_PROMPT = "The quick brown fox jumps over the lazy dog. Trainwright exports models."
# llama.cpp's greedy continuation of this (from the f16 GGUF) must be the merged model's.
GREEDY_PROMPT = "A language model predicts the"
GREEDY_TOKENS = 16
# max |logit difference| / max |logit| between the reloaded merged model and the
# adapter-applied model, both computed in fp32, by the dtype the weights are stored in
# (the only difference is the rounding of W + BA to that dtype: about 2^-8 for bf16).
LOGITS_TOLERANCE = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
)
_HASH_CHUNK = 8 * 1024 * 1024
TERMINATION_MESSAGE_BYTES = 4096


def _refuse_existing(output: Path, formats: tuple[str, ...]) -> None:
    taken = [output / MANIFEST_NAME, *(output / f for f in formats)]
    if "ollama" in formats:
        taken.append(output / "gguf")
    existing = [p.name for p in taken if p.exists()]
    if existing:
        raise ConfigError(
            f"--output: {output} already holds an export ({', '.join(existing)}); choose a new "
            "directory, nothing was changed"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_side_files(src_dirs: list[Path], dst: Path) -> None:
    for name in ("config.json", "generation_config.json", *TOKENIZER_FILES):
        for src in src_dirs:
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
                break


def _tokenizer_dir(source_dirs: list[Path]) -> Path:
    for directory in source_dirs:
        if (directory / "tokenizer_config.json").is_file() or (
            directory / "tokenizer.json"
        ).is_file():
            return directory
    raise ConfigError(
        f"--base: no tokenizer in {source_dirs[0]} or a base model; pass --base with the "
        "base model's directory (the trainer saves a full fine-tune without its tokenizer)"
    )


def _side_dirs(source: Any) -> list[Path]:
    """Where the tokenizer may be: the source (a full model, the trainer output), then the base."""
    dirs = [source.path, source.base_dir, source.named_base]
    return [d for d in dict.fromkeys(dirs) if d is not None and d.is_dir()]


def _ensure_generation_config(model_dir: Path) -> None:
    if (model_dir / "generation_config.json").is_file():
        return
    from transformers import GenerationConfig, PretrainedConfig

    config = PretrainedConfig.from_json_file(str(model_dir / "config.json"))
    GenerationConfig.from_model_config(config).save_pretrained(str(model_dir))


def _write_adapter(result: Any, out_dir: Path, base_name: str) -> None:
    from peft import LoraConfig
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    for module, parts in sorted(result.adapter_tensors.items()):
        prefix = f"base_model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = parts["lora_A"].contiguous()
        tensors[f"{prefix}.lora_B.weight"] = parts["lora_B"].contiguous()
        if "lora_magnitude_vector" in parts:
            tensors[f"{prefix}.lora_magnitude_vector"] = parts["lora_magnitude_vector"].contiguous()
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(
        r=result.adapter_rank,
        lora_alpha=result.adapter_alpha,
        lora_dropout=0.0,
        use_rslora=result.use_rslora,
        use_dora=result.use_dora,
        target_modules=sorted(result.adapter_tensors),
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_name,
    ).save_pretrained(str(out_dir))


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    ids = tokenizer(VERIFY_PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=ids).logits[0].float()
    return out


def _stored_dtype(model_dir: Path) -> str:
    from safetensors import safe_open

    from trainwright_trainer.export.merge import base_shards

    with safe_open(str(base_shards(model_dir)[0]), framework="pt") as handle:
        name = next(iter(handle.keys()))
        return (
            str(handle.get_slice(name).get_dtype())
            .lower()
            .replace("f32", "float32")
            .replace("bf16", "bfloat16")
            .replace("f16", "float16")
        )


def _verify_logits(
    source: Any, merged_dir: Path, adapter_dir: Path | None, tokenizer: Any
) -> dict[str, Any]:
    """The merged model reloaded vs the adapter-applied (or trained) model, both fp32."""
    from transformers import AutoModelForCausalLM

    def load(path: Path) -> Any:
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, local_files_only=True
        )
        return model.eval()

    reference = load(source.base_dir)
    if adapter_dir is not None:
        from peft import PeftModel

        reference = PeftModel.from_pretrained(reference, str(adapter_dir)).eval()
    elif source.dcp_dir is not None:
        from trainwright_trainer.export.sources import dcp_model_keys, read_dcp_tensors

        trained = read_dcp_tensors(source.dcp_dir, dcp_model_keys(source.dcp_dir))
        reference.load_state_dict({k: v.float() for k, v in trained.items()}, strict=False)
    expected = _logits(reference, tokenizer)
    del reference
    merged = load(merged_dir)
    actual = _logits(merged, tokenizer)
    greedy = _greedy_text(merged, tokenizer)
    del merged
    dtype = _stored_dtype(merged_dir)
    diff = float((actual - expected).abs().max())
    scale = float(expected.abs().max()) or 1.0
    tolerance = LOGITS_TOLERANCE.get(dtype, LOGITS_TOLERANCE["bfloat16"])
    same_argmax = bool(torch.equal(actual.argmax(-1), expected.argmax(-1)))
    return {
        "prompt": VERIFY_PROMPT,
        "stored_dtype": dtype,
        "max_abs_logit_diff": diff,
        "relative_diff": diff / scale,
        "tolerance_relative": tolerance,
        "same_greedy_tokens": same_argmax,
        "greedy_prompt": GREEDY_PROMPT,
        "greedy_text": greedy,
        "ok": diff / scale <= tolerance,
    }


def _greedy_text(model: Any, tokenizer: Any) -> str:
    """The merged model's greedy continuation of GREEDY_PROMPT (what llama.cpp must match)."""
    ids = tokenizer(GREEDY_PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def _llama_cpp_greedy(
    cfg: ExportConfig, gguf_path: Path, merged_dir: Path, hf_text: str | None
) -> dict[str, Any] | str:
    """llama.cpp's greedy continuation of the f16 GGUF against the merged model's."""
    from trainwright_trainer.export.gguf_export import write_gguf
    from trainwright_trainer.export.llama_cpp import greedy_continuation, tool

    if tool("llama-simple") is None or hf_text is None:
        return "not run: llama.cpp's llama-simple is not in this image"
    if not hf_text.strip():
        return "inconclusive: the merged model's greedy continuation decodes to no text"
    f16 = gguf_path
    if cfg.quantization != "f16":
        f16 = gguf_path.with_name(".greedy-f16.gguf")
        write_gguf(merged_dir, merged_dir, f16, quantization="f16", name="greedy check")
    try:
        text = greedy_continuation(f16, GREEDY_PROMPT, GREEDY_TOKENS)
    finally:
        if f16 != gguf_path:
            f16.unlink(missing_ok=True)
    same = text is not None and text.strip() == hf_text.strip()
    return {"prompt": GREEDY_PROMPT, "hugging_face": hf_text, "llama_cpp": text, "ok": same}


def _files(output: Path, directory: Path) -> list[dict[str, Any]]:
    return [
        {
            "path": path.relative_to(output).as_posix(),
            "size_bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
        for path in sorted(p for p in directory.rglob("*") if p.is_file())
    ]


def _lineage(cfg: ExportConfig, source: Any, merge: Any) -> dict[str, Any]:
    from trainwright_trainer.export.card import base_license, final_losses

    license_id, _ = base_license(source.named_base or source.base_dir)
    spec = source.adapters[0][0] if source.adapters else None
    method = "full fine-tune" if source.kind == "checkpoint" and spec is None else "none"
    if spec is not None:
        method = (
            spec.method
            if len(source.adapters) == 1
            else f"{cfg.combination} of {len(source.adapters)} adapters"
        )
    hyper: dict[str, Any] = spec.hyperparameters() if spec is not None else {}
    if len(source.adapters) > 1:
        hyper = {"weights": [w for _, w in source.adapters], "combination": cfg.combination}
    lineage = cfg.lineage
    named_log = Path(cfg.train_log) if cfg.train_log else None
    losses = final_losses(named_log if named_log and named_log.is_file() else source.train_log)
    return {
        "model_name": lineage.model_name,
        "version": lineage.version,
        "base_model": lineage.base_model or str(source.named_base or source.base_dir),
        "base_path": str(source.base_dir),
        "method": method,
        "method_tag": method.split(" ")[0],
        "hyperparameters": hyper,
        "dataset_uri": lineage.dataset_uri or source.meta.get("data_path"),
        "training_job": lineage.training_job,
        "namespace": lineage.namespace,
        "attempt": lineage.attempt,
        "plan": lineage.plan,
        "checkpoint_step": source.checkpoint_step or lineage.checkpoint_step,
        "license": license_id,
        "adapted_modules": merge.adapted_modules,
        **losses,
    }


def _move_into_place(staging: Path, output: Path, formats: list[str]) -> None:
    for name in formats:
        os.replace(staging / name, output / name)


def _termination_message(manifest: dict[str, Any], output: Path) -> None:
    """A short summary for the operator (the pod's terminationMessagePath), under 4 KiB."""
    target = os.environ.get(TERMINATION_LOG_ENV)
    if not target:
        return
    summary = {
        "output": str(output),
        "artifacts": [
            {k: a[k] for k in ("format", "path", "size_bytes", "sha256")}
            for a in manifest["artifacts"]
        ],
        "checkpointStep": manifest["lineage"].get("checkpoint_step"),
        "verified": manifest["verification"]["ok"],
    }
    text = json.dumps(summary, separators=(",", ":"))
    if len(text.encode()) <= TERMINATION_MESSAGE_BYTES:
        Path(target).write_text(text, encoding="utf-8")


def _main_file(files: list[dict[str, Any]], fmt: str) -> dict[str, Any]:
    """The file an artifact is known by: the GGUF, the Modelfile, the first weights shard."""
    preferred = {"gguf": ".gguf", "ollama": "Modelfile", "adapter": "adapter_model.safetensors"}
    wanted = preferred.get(fmt, ".safetensors")
    for entry in files:
        if entry["path"].endswith(wanted):
            return entry
    return files[0]


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Run the export; returns the manifest (also written to ``OUTPUT/manifest.json``)."""
    from trainwright_trainer.export.gguf_export import check_gguf_inputs, check_quantization
    from trainwright_trainer.export.merge import check_source_fits
    from trainwright_trainer.export.sources import resolve_source

    started = time.monotonic()
    output = Path(cfg.output)
    formats: list[str] = list(cfg.formats)
    _refuse_existing(output, cfg.formats)
    if any(f in GGUF_FORMATS for f in formats):
        check_quantization(cfg.quantization)
    source = resolve_source(
        cfg.source,
        [(s.path, s.weight) for s in cfg.sources],
        cfg.base,
        trainer_config=cfg.trainer_config,
    )
    # Refuse what cannot be exported before any work (and before OUTPUT exists).
    check_source_fits(source)
    tokenizer_dir = _tokenizer_dir(_side_dirs(source))
    if any(f in GGUF_FORMATS for f in formats):
        check_gguf_inputs(source.base_dir, tokenizer_dir)
    if "adapter" in formats and not source.adapters:
        raise ConfigError(
            f"--formats: adapter needs an adapter source; {source.path} is a whole model"
        )
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f".staging-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        manifest = _export(cfg, source, staging, output, formats)
        manifest["seconds"] = round(time.monotonic() - started, 3)
        _move_into_place(staging, output, formats)
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        (output / MANIFEST_NAME).write_text(text, encoding="utf-8")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _termination_message(manifest, output)
    return manifest


def _export(
    cfg: ExportConfig, source: Any, staging: Path, output: Path, formats: list[str]
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from trainwright_trainer.export.card import base_license, model_card
    from trainwright_trainer.export.gguf_export import check_gguf, write_gguf
    from trainwright_trainer.export.merge import merge_into
    from trainwright_trainer.export.ollama import chat_pieces, modelfile, stop_tokens

    merged_dir = staging / ("safetensors" if "safetensors" in formats else ".merged")
    merged_dir.mkdir()
    merge_started = time.monotonic()
    merge = merge_into(
        source,
        merged_dir,
        max_shard_bytes=cfg.max_shard_bytes,
        combination=cfg.combination,
        density=cfg.density,
    )
    merge_seconds = time.monotonic() - merge_started
    _copy_side_files([source.base_dir], merged_dir)
    tokenizer_dir = _tokenizer_dir(_side_dirs(source))
    _copy_side_files([tokenizer_dir], merged_dir)
    _ensure_generation_config(merged_dir)
    lineage = _lineage(cfg, source, merge)
    (merged_dir / "README.md").write_text(model_card(lineage), encoding="utf-8")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(merged_dir), local_files_only=True)
    except Exception as exc:  # tokenizers raises a bare Exception on bad files
        raise ConfigError(
            f"tokenizer: cannot load the tokenizer in {tokenizer_dir}: {str(exc).splitlines()[0]}"
        ) from None
    adapter_dir = staging / ("adapter" if "adapter" in formats else ".adapter")
    if source.adapters:
        _write_adapter(merge, adapter_dir, lineage["base_model"])
    verification: dict[str, Any] = {}
    if cfg.verify:
        verification["logits"] = _verify_logits(
            source, merged_dir, adapter_dir if source.adapters else None, tokenizer
        )
    gguf_name = f"model-{cfg.quantization}.gguf"
    name = lineage.get("model_name") or source.path.name
    if any(f in GGUF_FORMATS for f in formats):
        gguf_dir = staging / ("gguf" if "gguf" in formats else "ollama")
        gguf_dir.mkdir(exist_ok=True)
        gguf_path = write_gguf(
            merged_dir, merged_dir, gguf_dir / gguf_name, quantization=cfg.quantization, name=name
        )
        if cfg.verify:
            verification["gguf"] = check_gguf(
                gguf_path, merged_dir, merged_dir, quantization=cfg.quantization
            )
            hf_text = (verification.get("logits") or {}).get("greedy_text")
            verification["llama_cpp_greedy"] = _llama_cpp_greedy(
                cfg, gguf_path, merged_dir, hf_text
            )
        if "ollama" in formats:
            ollama_dir = staging / "ollama"
            ollama_dir.mkdir(exist_ok=True)
            if gguf_path.parent != ollama_dir:
                os.link(gguf_path, ollama_dir / gguf_name)
            pieces = chat_pieces(tokenizer)
            _, license_text = base_license(source.named_base or source.base_dir)
            (ollama_dir / "Modelfile").write_text(
                modelfile(
                    gguf_name,
                    pieces,
                    stop_tokens(tokenizer, pieces),
                    system=cfg.ollama.system_prompt,
                    license_text=license_text or lineage.get("license"),
                ),
                encoding="utf-8",
            )
    verification["ok"] = all(
        v.get("ok", True) for k, v in verification.items() if isinstance(v, dict)
    )
    verification.setdefault("llama_cpp_greedy", "not run: no GGUF was exported")
    artifacts = []
    for fmt in formats:
        # Paths relative to the staging directory are the paths relative to OUTPUT.
        files = _files(staging, staging / fmt)
        main = _main_file(files, fmt)
        artifacts.append(
            {
                "format": fmt,
                "files": files,
                "path": main["path"],
                "sha256": main["sha256"],
                "size_bytes": sum(f["size_bytes"] for f in files),
            }
        )
    return {
        "artifacts": artifacts,
        "source": {
            "kind": source.kind,
            "path": str(source.path),
            "checkpoint_step": source.checkpoint_step,
        },
        "base": {
            "path": str(source.base_dir),
            "name": lineage["base_model"],
            "license": lineage["license"],
        },
        "lineage": lineage,
        "verification": verification,
        "quantization": cfg.quantization if any(f in GGUF_FORMATS for f in formats) else None,
        "merge_seconds": round(merge_seconds, 3),
    }
