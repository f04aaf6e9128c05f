"""Load the causal LM and tokenizer, choose the precision, apply the PEFT method.

Models come from a local directory or the local Hugging Face cache only
(``local_files_only=True``): a trainer pod has no business downloading
weights mid-job, and tests build tiny models from a config. The PEFT methods
map onto ``peft.LoraConfig``:

==========  =============================================================
method      peft
==========  =============================================================
lora        ``LoraConfig(r, lora_alpha, ...)``; ``use_rslora`` scales
            alpha/sqrt(r) (Kalajdzievski 2023); ``init: pissa`` starts
            from the principal singular vectors (Meng et al. 2024)
dora        the same with ``use_dora=True`` (Liu et al. 2024)
qlora       4-bit NF4 base weights via bitsandbytes (Dettmers et al. 2023);
            CUDA only, refused on CPU with a ConfigError
==========  =============================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from trainwright_trainer.config import TrainerConfig
from trainwright_trainer.errors import ConfigError

__all__ = [
    "LayerCompiler",
    "ModelBundle",
    "build_model",
    "compile_decoder_layers",
    "count_parameters",
    "decoder_layers",
    "enable_gradient_checkpointing",
    "load_tokenizer",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype: ``auto`` is bf16 on GPUs that support it, else fp32.

    CPUs get fp32 for ``auto``: bf16 matmuls are emulated on most CPUs and slower.
    """
    if name != "auto":
        dtype = _DTYPES[name]
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                "model.dtype: bf16 is not supported by this GPU; use fp16, fp32 or auto"
            )
        return dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.float32


def load_tokenizer(cfg: TrainerConfig) -> Any:
    """The tokenizer from ``model.tokenizer_path`` (or ``model.path``), local files only."""
    from transformers import AutoTokenizer

    source = cfg.model.tokenizer_path or cfg.model.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"model.tokenizer_path: cannot load a tokenizer from {source!r} "
            f"(a local directory or a model in the Hugging Face cache): {_first_line(exc)}"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class ModelBundle:
    """The model to train and what the loop needs to know about it."""

    model: Any  # a transformers PreTrainedModel, possibly a peft.PeftModel
    param_dtype: torch.dtype
    compute_dtype: torch.dtype
    params: int
    trainable_params: int
    num_layers: int
    hidden_size: int
    #: The per-layer compiler with ``training.compile_layers`` (its ``failure`` once it fell back).
    compiler: LayerCompiler | None = None


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters), counting 4-bit packed weights by element."""
    total = trainable = 0
    for param in model.parameters():
        count = param.numel()
        if hasattr(param, "quant_state"):  # bitsandbytes packs two 4-bit values per byte
            count *= 2
        total += count
        if param.requires_grad:
            trainable += count
    return total, trainable


def _attn_implementation(cfg: TrainerConfig) -> str:
    if cfg.model.attn_implementation != "auto":
        return cfg.model.attn_implementation
    return "sdpa"


def _quantization_config(cfg: TrainerConfig, device: torch.device, dtype: torch.dtype) -> Any:
    if cfg.method != "qlora":
        return None
    if device.type != "cuda":
        raise ConfigError(
            "method: qlora needs a CUDA GPU (bitsandbytes 4-bit); this node has none, "
            "use method lora or dora on CPU"
        )
    if cfg.distributed.strategy in ("fsdp", "zero3"):
        raise ConfigError(
            f"distributed.strategy: qlora is supported with ddp, zero1 or zero2, "
            f"not {cfg.distributed.strategy}"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            "method: qlora needs the bitsandbytes package, which is not installed"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )


def _param_dtype(cfg: TrainerConfig, compute_dtype: torch.dtype) -> torch.dtype:
    # Full fine-tuning keeps fp32 master weights (FSDP/DeepSpeed/autocast cast
    # to the compute dtype); frozen LoRA bases are stored in the compute dtype.
    if cfg.method == "full":
        return torch.float32
    return compute_dtype


def build_model(cfg: TrainerConfig, device: torch.device) -> ModelBundle:
    """Load the model on ``device`` in the right dtype and apply the configured method."""
    from transformers import AutoModelForCausalLM

    compute_dtype = resolve_dtype(cfg.model.dtype, device)
    param_dtype = _param_dtype(cfg, compute_dtype)
    quantization = _quantization_config(cfg, device, compute_dtype)
    kwargs: dict[str, Any] = {
        "dtype": param_dtype,
        "attn_implementation": _attn_implementation(cfg),
        "local_files_only": True,
    }
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.model.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"model.path: cannot load a causal LM from {cfg.model.path!r} "
            f"(a local directory or a model in the Hugging Face cache): {_first_line(exc)}"
        ) from None
    if quantization is None:
        model.to(device)
    # from_pretrained returns eval mode, which would silently disable (LoRA) dropout.
    model.train()
    model.config.use_cache = False
    if cfg.training.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.method != "full":
        model = _apply_peft(cfg, model)
    compiler = None
    if cfg.training.compile_layers:
        compiler = compile_decoder_layers(model, cfg.training.compile_backend)
    params, trainable = count_parameters(model)
    text_config = getattr(model.config, "text_config", model.config)
    return ModelBundle(
        model=model,
        param_dtype=param_dtype,
        compute_dtype=compute_dtype,
        params=params,
        trainable_params=trainable,
        num_layers=int(text_config.num_hidden_layers),
        hidden_size=int(text_config.hidden_size),
        compiler=compiler,
    )


def _apply_peft(cfg: TrainerConfig, model: Any) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training

    lora = cfg.lora
    if lora is None:  # the config guarantees a lora section for peft methods
        raise ConfigError(f"lora: method {cfg.method} needs a lora section")
    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.training.gradient_checkpointing
        )
    target: Any = lora.target_modules
    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target if target == "all-linear" else list(target),
        use_rslora=lora.use_rslora,
        use_dora=cfg.method == "dora",
        init_lora_weights="pissa" if lora.init == "pissa" else True,
        task_type="CAUSAL_LM",
    )
    try:
        # autocast_adapter_dtype: peft's default keeps adapters in fp32 over a 16-bit base.
        peft_model = get_peft_model(
            model, peft_config, autocast_adapter_dtype=lora.adapter_dtype == "fp32"
        )
    except ValueError as exc:
        raise ConfigError(f"lora.target_modules: {_first_line(exc)}") from None
    return peft_model


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (non-reentrant: works with frozen inputs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder blocks: HF decoder-only models keep them in a ModuleList ``layers`` or ``h``."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h"):
            return list(module)
    return []


class LayerCompiler:
    """``torch.compile`` per decoder layer (torchtitan's granularity), eager once it fails.

    One compiled region per block keeps compile time to one block's (the blocks share the
    graph) and leaves the FSDP2/DDP hooks around each block untouched. Compiling fails
    either when it is asked for (an unknown backend) or at a layer's first call (a backend
    or tracing error); then every layer runs its eager forward from that call on, and the
    failure is logged once. Out-of-memory errors are not compile failures: they propagate
    to the OOM ladder.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.failure: str | None = None

    def wrap(self, layer: torch.nn.Module) -> None:
        eager = layer.forward
        try:
            compiled = torch.compile(eager, backend=self.backend)
        except Exception as exc:  # torch raises several types for a bad backend
            self._fall_back(exc)
            return

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.failure is None:
                try:
                    return compiled(*args, **kwargs)
                except torch.OutOfMemoryError:
                    raise
                except Exception as exc:  # dynamo and backends raise many types
                    self._fall_back(exc)
            return eager(*args, **kwargs)

        layer.forward = forward

    def _fall_back(self, exc: BaseException) -> None:
        if self.failure is None:
            # dynamo wraps a backend's error (BackendCompilerFailed): name the backend's own.
            cause = getattr(exc, "inner_exception", None) or exc
            self.failure = f"{type(cause).__name__}: {_first_line(cause)}"
            log.warning(
                "training.compile_layers: torch.compile (backend %s) failed, running the "
                "layers eagerly: %s",
                self.backend,
                self.failure,
            )


def compile_decoder_layers(model: torch.nn.Module, backend: str) -> LayerCompiler:
    """Compile each decoder layer's forward in place (names and state dict unchanged)."""
    compiler = LayerCompiler(backend)
    for layer in decoder_layers(model):
        compiler.wrap(layer)
    return compiler
