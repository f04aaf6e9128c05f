"""Find what a ``--source`` is and read its adapter or weights.

A source is one of:

* a PEFT adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``),
  such as the trainer's output for lora/qlora/dora; the base comes from ``--base``
  or the adapter config's local ``base_model_name_or_path``;
* a Hugging Face model directory (``config.json`` + safetensors), such as the
  trainer's output for a full fine-tune;
* a checkpoint root (``latest`` + ``step-NNNNNN/``) or one checkpoint directory:
  the newest complete checkpoint is found the way resume finds it
  (:func:`trainwright_trainer.checkpoint.find_resume_checkpoint`) and its DCP
  shards are read without a process group; the trainer's config file
  (``--trainer-config``, which the operator mounts from the TrainingJob's
  ConfigMap) names the method, LoRA settings, base model and dataset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainwright.vocabulary import TRAIN_LOG_NAME as TRAIN_LOG
from trainwright_trainer.errors import ConfigError

__all__ = ["AdapterSpec", "ModelSource", "resolve_source"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_ADAPTER_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_magnitude_vector)"
    r"(?:\.default)?(?:\.weight)?$"
)


@dataclass
class AdapterSpec:
    """One LoRA-family adapter: its hyperparameters and per-module tensors (fp32, CPU)."""

    rank: int
    alpha: float
    dropout: float
    use_rslora: bool
    use_dora: bool
    init: str  # "default" or "pissa"
    # module name (as in the base model, e.g. model.layers.0.self_attn.q_proj) ->
    # {"lora_A": [r, in], "lora_B": [out, r], "lora_magnitude_vector": [out]}
    modules: dict[str, dict[str, torch.Tensor]]
    origin: str

    @property
    def method(self) -> str:
        if self.use_dora:
            return "dora"
        if self.init == "pissa":
            return "lora (PiSSA init)"
        return "rslora" if self.use_rslora else "lora"

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "use_rslora": self.use_rslora,
            "use_dora": self.use_dora,
            "init": self.init,
            "target_modules": sorted({m.rsplit(".", 1)[-1] for m in self.modules}),
        }


@dataclass
class ModelSource:
    """What the exporter works from: a base directory plus adapters or replacement weights."""

    kind: str  # "model" | "adapter" | "checkpoint"
    path: Path
    base_dir: Path
    adapters: list[tuple[AdapterSpec, float]] = field(default_factory=list)
    # A full fine-tune checkpoint: reads named tensors on demand (DCP, no process group).
    dcp_dir: Path | None = None
    checkpoint_step: int | None = None
    train_log: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # --base given with a whole model (a full fine-tune's output, which the trainer saves
    # without a tokenizer): where its tokenizer, license and name come from.
    named_base: Path | None = None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _local_base(name: str | None) -> Path | None:
    if name and Path(name).is_dir():
        return Path(name)
    return None


def _check_base(base: Path | None, flag: str) -> Path:
    if base is None:
        raise ConfigError(
            f"{flag}: the adapter names no local base model; pass --base with the base "
            "model's directory (config.json and safetensors weights)"
        )
    if not _is_model_dir(base):
        raise ConfigError(
            f"{flag}: {base} is not a Hugging Face model directory "
            "(config.json and *.safetensors weights)"
        )
    return base


def _group_adapter_tensors(tensors: dict[str, torch.Tensor], origin: str) -> dict[str, Any]:
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _ADAPTER_KEY.match(key)
        if match is None:
            raise ConfigError(
                f"--source: {origin} holds {key!r}, which is not a LoRA/DoRA weight; only "
                "LoRA-family adapters on linear layers can be merged"
            )
        modules.setdefault(match["module"], {})[match["part"]] = tensor.detach().float().cpu()
    for module, parts in modules.items():
        if "lora_A" not in parts or "lora_B" not in parts:
            raise ConfigError(f"--source: {origin}: module {module} lacks lora_A or lora_B")
    return modules


def _load_adapter_dir(path: Path) -> tuple[AdapterSpec, str | None]:
    from safetensors.torch import load_file

    config = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ConfigError(
            f"--source: {path} is a {config.get('peft_type')} adapter; only LoRA, DoRA, "
            "rsLoRA and PiSSA adapters are exported"
        )
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"--source: {path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    init = config.get("init_lora_weights", True)
    spec = AdapterSpec(
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        dropout=float(config.get("lora_dropout") or 0.0),
        use_rslora=bool(config.get("use_rslora")),
        use_dora=bool(config.get("use_dora")),
        init="pissa" if isinstance(init, str) and init.startswith("pissa") else "default",
        modules=_group_adapter_tensors(load_file(str(weights)), str(weights)),
        origin=str(path),
    )
    return spec, config.get("base_model_name_or_path")


def _dcp_metadata(dcp_dir: Path) -> Any:
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    return FileSystemReader(str(dcp_dir)).read_metadata()


def read_dcp_tensors(dcp_dir: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """The named ``model.*`` tensors of a DCP checkpoint, read on one process (no_dist)."""
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    metadata = _dcp_metadata(dcp_dir).state_dict_metadata
    wanted: dict[str, torch.Tensor] = {}
    for key in keys:
        entry = metadata[f"model.{key}"]
        wanted[key] = torch.empty(entry.size, dtype=entry.properties.dtype)
    state = {"model": wanted}
    dcp_load(state, checkpoint_id=str(dcp_dir), no_dist=True)
    return state["model"]


def dcp_model_keys(dcp_dir: Path) -> list[str]:
    return [
        key.removeprefix("model.")
        for key in _dcp_metadata(dcp_dir).state_dict_metadata
        if key.startswith("model.")
    ]


def _checkpoint_dir(path: Path) -> tuple[int, Path] | None:
    from trainwright_trainer.checkpoint import (
        CheckpointError,
        find_resume_checkpoint,
        verify_checkpoint,
    )

    if (path / "manifest.json").is_file() and (path / "dcp").is_dir():
        try:
            manifest = verify_checkpoint(path)
        except CheckpointError as exc:
            raise ConfigError(f"--source: {exc}") from None
        return int(manifest["step"]), path
    return find_resume_checkpoint(path)


def trainer_meta(trainer_config: str | None) -> dict[str, Any]:
    """Method, LoRA settings, base model and dataset from the trainer's config file."""
    if trainer_config is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(trainer_config).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--trainer-config: cannot read {trainer_config}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--trainer-config: {trainer_config} is not a trainer config mapping")
    return {
        "method": data.get("method", "full"),
        "lora": data.get("lora") or {},
        "model_path": (data.get("model") or {}).get("path"),
        "data_path": (data.get("data") or {}).get("path"),
        # Where the run's train_log.jsonl is when its output went elsewhere (spec.output).
        "checkpoint_dir": (data.get("checkpoint") or {}).get("dir"),
    }


def _from_checkpoint(
    path: Path, step: int, ckpt: Path, base_flag: str | None, trainer: dict[str, Any]
) -> ModelSource:
    from trainwright_trainer.checkpoint import verify_checkpoint

    meta = dict(verify_checkpoint(ckpt).get("meta") or {}) | trainer
    if meta.get("strategy", "").startswith("zero"):
        raise ConfigError(
            f"--source: {ckpt} was written by DeepSpeed ({meta['strategy']}); export the "
            "trainer's output directory instead"
        )
    base = _check_base(
        Path(base_flag) if base_flag else _local_base(meta.get("model_path")),
        "--base",
    )
    dcp_dir = ckpt / "dcp"
    keys = dcp_model_keys(dcp_dir)
    source = ModelSource(
        kind="checkpoint", path=path, base_dir=base, checkpoint_step=step, meta=meta
    )
    train_log = ckpt.parent / TRAIN_LOG
    source.train_log = train_log if train_log.is_file() else None
    if not any(".lora_" in k for k in keys):
        source.dcp_dir = dcp_dir
        return source
    if "method" not in meta:
        raise ConfigError(
            f"--trainer-config: {ckpt} holds a LoRA adapter; pass the trainer config that "
            "wrote it (its lora section gives alpha and the PiSSA/rsLoRA settings)"
        )
    lora = meta.get("lora") or {}
    spec = AdapterSpec(
        rank=int(lora.get("rank", 16)),
        alpha=float(lora.get("alpha", 32.0)),
        dropout=float(lora.get("dropout", 0.0)),
        use_rslora=bool(lora.get("use_rslora")),
        use_dora=meta.get("method") == "dora",
        init=str(lora.get("init", "default")),
        modules=_group_adapter_tensors(read_dcp_tensors(dcp_dir, keys), str(dcp_dir)),
        origin=str(ckpt),
    )
    source.adapters = [(spec, 1.0)]
    return source


def _one(path: Path, base_flag: str | None, trainer: dict[str, Any]) -> ModelSource:
    if not path.exists():
        raise ConfigError(f"--source: {path} does not exist")
    if (path / ADAPTER_CONFIG).is_file():
        spec, named_base = _load_adapter_dir(path)
        base = _check_base(Path(base_flag) if base_flag else _local_base(named_base), "--base")
        source = ModelSource(kind="adapter", path=path, base_dir=base, adapters=[(spec, 1.0)])
        logged = trainer.get("checkpoint_dir")
        for candidate in (
            path / TRAIN_LOG,
            path.parent / TRAIN_LOG,
            *([Path(logged) / TRAIN_LOG] if logged else []),
        ):
            if candidate.is_file():
                source.train_log = candidate
                break
        return source
    if _is_model_dir(path):
        named = Path(base_flag) if base_flag else None
        if named is not None and not named.is_dir():
            raise ConfigError(f"--base: {named} is not a directory")
        return ModelSource(kind="model", path=path, base_dir=path, named_base=named)
    found = _checkpoint_dir(path) if path.is_dir() else None
    if found is not None:
        return _from_checkpoint(path, found[0], found[1], base_flag, trainer)
    raise ConfigError(
        f"--source: {path} is not a model: expected a PEFT adapter ({ADAPTER_CONFIG}), a "
        "Hugging Face model (config.json + *.safetensors) or a trainer checkpoint directory "
        "with a complete checkpoint"
    )


def resolve_source(
    source: str | None,
    sources: list[tuple[str, float]],
    base: str | None,
    *,
    trainer_config: str | None = None,
) -> ModelSource:
    """Resolve ``--source`` (or several weighted adapter sources) into a :class:`ModelSource`."""
    trainer = trainer_meta(trainer_config)
    if source is not None:
        return _one(Path(source), base, trainer)
    resolved = [(_one(Path(path), base, trainer), weight) for path, weight in sources]
    first = resolved[0][0]
    for item, _ in resolved:
        if not item.adapters:
            raise ConfigError(f"sources: {item.path} is not an adapter; only adapters combine")
        if item.base_dir.resolve() != first.base_dir.resolve():
            raise ConfigError(
                f"sources: {item.path} was trained on {item.base_dir}, not {first.base_dir}; "
                "adapters combine only on the same base"
            )
    first.adapters = [(item.adapters[0][0], weight) for item, weight in resolved]
    return first
