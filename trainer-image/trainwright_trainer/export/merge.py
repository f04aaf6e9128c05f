"""Merge adapters into the 16-bit base, one base tensor at a time, with peft's own layers.

Memory: the base's safetensors are memory-mapped and read one tensor at a time;
each adapted weight is merged by a throw-away ``peft`` LoRA layer around that one
``nn.Linear`` (peft does the LoRA, rsLoRA and DoRA arithmetic and the NaN check of
``safe_merge``); merged tensors are buffered up to one output shard. Peak memory
is about one output shard plus the adapters, not the whole model.

QLoRA adapters merge the same way: the base is read from its 16-bit files, never
from a 4-bit copy. PiSSA adapters are trained against a residual base
(W - U_r S_r V_r^T); they are first converted to plain LoRA on the original base,
as peft's ``path_initial_model_for_weight_conversion`` does (Meng et al. 2024,
sec. 3): rank 2r, A' = [A; A0], B' = [B, -B0], with A0, B0 recomputed from the
base's SVD (the rank-r truncation is unique, so the recomputation is exact).
Several adapters are combined per module with ``LoraModel.add_weighted_adapter``
(linear, ties, dare_ties, svd).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainwright_trainer.errors import ConfigError
from trainwright_trainer.export.sources import (
    AdapterSpec,
    ModelSource,
    dcp_model_keys,
    read_dcp_tensors,
)

__all__ = ["MergeResult", "ShardWriter", "base_shards", "check_source_fits", "merge_into"]

SAFETENSORS_INDEX = "model.safetensors.index.json"
COMBINED = "combined"
_SEED = 0  # dare_ties drops entries at random: the same export gives the same files


def base_shards(base_dir: Path) -> list[Path]:
    """The base's safetensors files, in the index's order when there is one."""
    index = base_dir / SAFETENSORS_INDEX
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [base_dir / name for name in dict.fromkeys(weight_map.values())]
    return sorted(base_dir.glob("*.safetensors"))


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors' name: F32, F16, BF16, ...
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * _DTYPE_BYTES[self.dtype]


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                "I8": 1, "U8": 1, "BOOL": 1}  # fmt: skip
_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


class ShardWriter:
    """Streams tensors into ``model-0000i-of-0000N.safetensors`` shards of at most ``max_bytes``.

    Every merged tensor has its base tensor's name, dtype and shape, so each shard's
    safetensors header (names, dtypes, shapes, offsets) is written before its data
    and each tensor goes to disk as soon as it is merged: the writer holds one
    tensor, not a shard. The format: an 8-byte little-endian header length, the
    JSON header (padded to 8 bytes), then the tensors' bytes in header order
    (huggingface/safetensors, "Format").
    """

    def __init__(self, out_dir: Path, infos: list[TensorInfo], *, max_bytes: int) -> None:
        self.out_dir = out_dir
        self.shards: list[list[TensorInfo]] = [[]]
        size = 0
        for info in infos:
            if self.shards[-1] and size + info.nbytes > max_bytes:
                self.shards.append([])
                size = 0
            self.shards[-1].append(info)
            size += info.nbytes
        self.total_bytes = sum(info.nbytes for info in infos)
        self.files = [self.out_dir / self._name(i) for i in range(len(self.shards))]
        self._order = [(i, info) for i, shard in enumerate(self.shards) for info in shard]
        self._next = 0
        self._handle: Any = None

    def _name(self, index: int) -> str:
        count = len(self.shards)
        if count == 1:
            return "model.safetensors"
        return f"model-{index + 1:05d}-of-{count:05d}.safetensors"

    def _open(self, index: int) -> None:
        if self._handle is not None:
            self._handle.close()
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for info in self.shards[index]:
            header[info.name] = {
                "dtype": info.dtype,
                "shape": list(info.shape),
                "data_offsets": [offset, offset + info.nbytes],
            }
            offset += info.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        self._handle = self.files[index].open("wb")
        self._handle.write(struct.pack("<Q", len(encoded)) + encoded)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        index, info = self._order[self._next]
        if name != info.name or tuple(tensor.shape) != info.shape:
            raise ValueError(f"expected {info.name} {info.shape}, got {name} {tuple(tensor.shape)}")
        if index != (self._order[self._next - 1][0] if self._next else -1):
            self._open(index)
        data = tensor.to(_TORCH_DTYPES[info.dtype]).contiguous().reshape(-1)
        self._handle.write(data.view(torch.uint8).numpy().tobytes())
        self._next += 1

    def finish(self) -> list[Path]:
        if self._handle is not None:
            self._handle.close()
        if self._next != len(self._order):
            raise ValueError(f"{len(self._order) - self._next} tensors were never written")
        if len(self.shards) > 1:
            weight_map = {
                info.name: self.files[i].name
                for i, shard in enumerate(self.shards)
                for info in shard
            }
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return self.files


@dataclass
class MergeResult:
    """The merged files and the adapter that was applied (converted/combined), per module."""

    files: list[Path]
    adapted_modules: int
    adapter_rank: int | None = None
    adapter_alpha: float | None = None
    use_rslora: bool = False
    use_dora: bool = False
    # module -> {"lora_A", "lora_B"[, "lora_magnitude_vector"]}: what a PEFT adapter file holds.
    adapter_tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def _pissa_to_lora(spec: AdapterSpec, module: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    parts = spec.modules[module]
    r = spec.rank
    scaling = spec.alpha / (math.sqrt(r) if spec.use_rslora else r)
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    root = torch.sqrt(s[:r] / scaling)
    a0 = torch.diag(root) @ vh[:r]
    b0 = u[:, :r] @ torch.diag(root)
    return {
        "lora_A": torch.cat([parts["lora_A"], a0], dim=0),
        "lora_B": torch.cat([parts["lora_B"], -b0], dim=1),
    }


def _effective(spec: AdapterSpec) -> tuple[int, float]:
    """Rank and alpha of the adapter as merged (PiSSA doubles the rank, same scaling)."""
    if spec.init != "pissa":
        return spec.rank, spec.alpha
    return 2 * spec.rank, spec.alpha * (math.sqrt(2) if spec.use_rslora else 2)


def _lora_config(spec: AdapterSpec) -> Any:
    from peft import LoraConfig

    rank, alpha = _effective(spec)
    options: dict[str, Any] = {"lora_alpha": alpha}  # peft annotates int; floats are used as is
    return LoraConfig(
        r=rank,
        **options,
        lora_dropout=0.0,
        use_rslora=spec.use_rslora,
        use_dora=spec.use_dora,
        target_modules=["target"],
    )


def merge_module(
    weight: torch.Tensor,
    adapters: list[tuple[AdapterSpec, float]],
    module: str,
    *,
    combination: str = "linear",
    density: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[int, float]]:
    """``weight`` (out x in) with the adapters merged by peft.

    Also returns the adapter that was applied (its tensors, rank and alpha): the
    PiSSA conversion or the weighted combination, which the ``adapter`` format saves.
    """
    from peft.tuners.lora import LoraModel

    container = torch.nn.Module()
    container.target = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    container.target.weight.data = weight.float().clone()
    names = [f"a{i}" for i in range(len(adapters))]
    model = LoraModel(container, {names[0]: _lora_config(adapters[0][0])}, names[0])
    for name, (spec, _) in zip(names[1:], adapters[1:], strict=True):
        model.peft_config[name] = _lora_config(spec)
        model.inject_adapter(container, name)
    layer: Any = container.target
    for name, (spec, _) in zip(names, adapters, strict=True):
        parts = (
            _pissa_to_lora(spec, module, weight) if spec.init == "pissa" else spec.modules[module]
        )
        with torch.no_grad():
            layer.lora_A[name].weight.copy_(parts["lora_A"])
            layer.lora_B[name].weight.copy_(parts["lora_B"])
            if spec.use_dora:
                layer.lora_magnitude_vector[name].weight.copy_(parts["lora_magnitude_vector"])
    merged_name = names[0]
    if len(adapters) > 1:
        torch.manual_seed(_SEED)
        weighted: Any = model.add_weighted_adapter
        extra = {"density": density} if combination in ("ties", "dare_ties") else {}
        weighted(names, [w for _, w in adapters], COMBINED, combination_type=combination, **extra)
        merged_name = COMBINED
    applied = {
        "lora_A": layer.lora_A[merged_name].weight.detach().clone(),
        "lora_B": layer.lora_B[merged_name].weight.detach().clone(),
    }
    if merged_name in getattr(layer, "lora_magnitude_vector", {}):
        applied["lora_magnitude_vector"] = (
            layer.lora_magnitude_vector[merged_name].weight.detach().clone()
        )
    config: Any = model.peft_config[merged_name]
    layer.merge(safe_merge=True, adapter_names=[merged_name])
    return (
        layer.get_base_layer().weight.detach(),
        applied,
        (int(config.r), float(config.lora_alpha)),
    )


def _check_adapters_fit(source: ModelSource, shapes: dict[str, list[int]]) -> None:
    for spec, _ in source.adapters:
        for module, parts in spec.modules.items():
            shape = shapes.get(f"{module}.weight")
            expected = [parts["lora_B"].shape[0], parts["lora_A"].shape[1]]
            if shape is None or shape != expected:
                found = "no such weight" if shape is None else f"shape {shape}"
                raise ConfigError(
                    f"--base: the adapter {spec.origin} does not fit {source.base_dir}: "
                    f"{module}.weight should be {expected}, the base has {found}; pass the "
                    "base model the adapter was trained on"
                )
    if len(source.adapters) > 1 and any(s.use_dora for s, _ in source.adapters):
        raise ConfigError("sources: DoRA adapters cannot be combined; export them one at a time")


def _base_tensors(
    shards: list[Path], dcp_dir: Path | None
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """(name, base tensor, trained tensor from the DCP checkpoint or None), shard by shard.

    A full fine-tune's checkpoint is read one base shard's worth of tensors at a time.
    """
    from safetensors import safe_open

    in_checkpoint = set(dcp_model_keys(dcp_dir)) if dcp_dir is not None else set()
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            names = list(handle.keys())
            wanted = [n for n in names if n in in_checkpoint]
            trained = read_dcp_tensors(dcp_dir, wanted) if dcp_dir and wanted else {}
            for name in names:
                yield name, handle.get_tensor(name), trained.pop(name, None)


def base_infos(shards: list[Path]) -> list[TensorInfo]:
    """Name, dtype and shape of every base tensor, in file order (headers only)."""
    from safetensors import safe_open

    infos: list[TensorInfo] = []
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118
                part = handle.get_slice(name)
                infos.append(TensorInfo(name, str(part.get_dtype()), tuple(part.get_shape())))
    return infos


def check_source_fits(source: ModelSource) -> tuple[list[Path], list[TensorInfo]]:
    """The base's shards and tensors, once every adapter was found to fit them (headers only)."""
    shards = base_shards(source.base_dir)
    if not shards:
        raise ConfigError(f"--base: {source.base_dir} holds no *.safetensors weights")
    infos = base_infos(shards)
    _check_adapters_fit(source, {info.name: list(info.shape) for info in infos})
    return shards, infos


def merge_into(
    source: ModelSource,
    out_dir: Path,
    *,
    max_shard_bytes: int,
    combination: str = "linear",
    density: float = 0.5,
) -> MergeResult:
    """Write the source's merged weights as sharded safetensors into ``out_dir``."""
    shards, infos = check_source_fits(source)
    modules = {m for spec, _ in source.adapters for m in spec.modules}
    writer = ShardWriter(out_dir, infos, max_bytes=max_shard_bytes)
    applied: dict[str, dict[str, torch.Tensor]] = {}
    rank_alpha: tuple[int, float] | None = None
    replaced = 0
    for name, tensor, trained in _base_tensors(shards, source.dcp_dir):
        module = name.removesuffix(".weight")
        if trained is not None:
            tensor, replaced = trained.to(tensor.dtype), replaced + 1
        elif name.endswith(".weight") and module in modules:
            merged, applied[module], rank_alpha = merge_module(
                tensor,
                [(s, w) for s, w in source.adapters if module in s.modules],
                module,
                combination=combination,
                density=density,
            )
            tensor = merged.to(tensor.dtype)
        writer.add(name, tensor)
    files = writer.finish()
    result = MergeResult(files=files, adapted_modules=len(applied) or replaced)
    if source.adapters:
        spec = source.adapters[0][0]
        result.adapter_rank, result.adapter_alpha = rank_alpha or _effective(spec)
        result.use_rslora, result.use_dora = spec.use_rslora, spec.use_dora
        result.adapter_tensors = applied
    return result
