"""Process groups and the three ways to spread a model over ranks: DDP, FSDP2, DeepSpeed.

Every strategy is driven through one small interface, :class:`TrainEngine`,
so the training loop is written once::

    with engine.accumulate(last=is_last_micro):   # no gradient sync until the last
        loss = compute_loss(engine.model(...))
        engine.backward(loss)
    norm = engine.clip_grad_norm(max_norm)        # global norm, same on every rank
    engine.optimizer_step() / engine.zero_grad()
    engine.write_checkpoint(dir) / engine.load_checkpoint(dir)

- ``ddp``: ``DistributedDataParallel``; bf16 via autocast over fp32 master weights.
- ``fsdp``: FSDP2 ``fully_shard`` per decoder layer then the root, with a
  ``MixedPrecisionPolicy`` (bf16 params, fp32 gradient reduction) on GPUs.
- ``zero1``/``zero2``/``zero3``: ``deepspeed.initialize`` with that ZeRO stage;
  on CPU it needs ``DS_ACCELERATOR=cpu`` and uses gloo for collectives.

Checkpoints of ``ddp``/``fsdp`` go through ``torch.distributed.checkpoint``
with ``get_state_dict``/``set_state_dict`` (sharded, resharding-safe, async
when asked); DeepSpeed writes its own engine checkpoint. Both land inside the
staging directory of :class:`~trainwright_trainer.checkpoint.CheckpointManager`.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import importlib
import logging
import os
import socket
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainwright_trainer.config import TrainerConfig
from trainwright_trainer.errors import ConfigError
from trainwright_trainer.model import decoder_layers

__all__ = [
    "DeepSpeedTrainEngine",
    "DistEnv",
    "TorchTrainEngine",
    "TrainEngine",
    "build_engine",
    "init_distributed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(cfg: TrainerConfig) -> DistEnv:
    """Join the process group torchrun describes (or a group of one without torchrun)."""
    if "RANK" not in os.environ:
        # Plain `python -m trainwright_trainer`: a world of one, so the same code runs.
        os.environ.update(
            {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
        )
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    cuda = torch.cuda.is_available()
    backend = cfg.distributed.backend
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise ConfigError("distributed.backend: nccl needs CUDA GPUs; use gloo or auto on CPU")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=cfg.distributed.timeout_seconds)
    if not dist.is_initialized():
        if cfg.distributed.strategy.startswith("zero"):
            import deepspeed

            if not cuda:
                _skip_deepspeed_shm_op()
            deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
        else:
            # nccl for CUDA tensors plus gloo for CPU ones: dcp.async_save stages
            # the state in host memory and coordinates over a CPU-capable group.
            group_backend = "cuda:nccl,cpu:gloo" if backend == "nccl" else backend
            dist.init_process_group(
                backend=group_backend,
                timeout=timeout,
                device_id=device if cuda else None,
            )
    return DistEnv(rank, local_rank, world_size, device, backend)


def _skip_deepspeed_shm_op() -> None:
    # On CPU, DeepSpeed JIT-compiles a shared-memory all-reduce op at start-up
    # (minutes on a small machine, and it needs a C++ toolchain). gloo does the
    # collectives without it; DeepSpeed treats a missing op as "not available".
    # importlib, not `import deepspeed.comm.torch as m`: that name resolves to the
    # real torch module, which deepspeed.comm re-exports as an attribute.
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    ds_torch.build_shm_op = lambda: None


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class TrainEngine(abc.ABC):
    """What the loop needs from a strategy; see the module docstring."""

    model: Any
    optimizer: Any
    #: True when the engine scales/casts itself (DeepSpeed, FSDP2 mixed precision).
    handles_precision: bool = False

    @abc.abstractmethod
    def accumulate(self, *, last: bool) -> contextlib.AbstractContextManager[None]:
        """A context for one micro-batch's forward/backward; gradients sync only when ``last``."""

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    @abc.abstractmethod
    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip to ``max_norm`` (0: no clipping) and return the global norm, equal on all ranks."""

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @abc.abstractmethod
    def write_checkpoint(self, staging: Path, *, async_save: bool) -> Future[Any] | None:
        """Write model and optimizer state under ``staging``; a future when written async."""

    @abc.abstractmethod
    def load_checkpoint(self, ckpt_dir: Path) -> None:
        """Restore model and optimizer state from a verified checkpoint directory."""

    def unwrapped(self) -> Any:
        """The Hugging Face (or peft) model inside the wrapper."""
        return self.model


def _make_optimizer(cfg: TrainerConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    t = cfg.training
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    # Biases and norms get no weight decay (Loshchilov & Hutter 2019 practice, as in nanoGPT).
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.learning_rate, momentum=0.9)
    if t.optimizer in ("adamw8bit", "paged_adamw8bit"):
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError(
                f"training.optimizer: {t.optimizer} needs bitsandbytes; use adamw or sgd"
            ) from None
        cls = bnb.optim.PagedAdamW8bit if t.optimizer == "paged_adamw8bit" else bnb.optim.AdamW8bit
        optimizer: torch.optim.Optimizer = cls(groups, lr=t.learning_rate)
        return optimizer
    # Fused AdamW on plain CUDA tensors; FSDP2's DTensor parameters take the foreach path.
    fused = bool(params) and params[0].device.type == "cuda" and cfg.distributed.strategy != "fsdp"
    return torch.optim.AdamW(groups, lr=t.learning_rate, betas=(0.9, 0.95), fused=fused)


class TorchTrainEngine(TrainEngine):
    """DDP or FSDP2 with a torch optimizer; checkpoints through torch.distributed.checkpoint."""

    def __init__(
        self, cfg: TrainerConfig, env: DistEnv, hf_model: Any, compute_dtype: torch.dtype
    ) -> None:
        self.cfg = cfg
        self.env = env
        self.hf_model = hf_model
        self.strategy = cfg.distributed.strategy
        self.ignore_frozen = cfg.method != "full"
        if self.strategy == "fsdp":
            self.model = self._fully_shard(hf_model, compute_dtype, env)
            self.handles_precision = True
        elif env.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                hf_model, device_ids=[env.local_rank] if env.device.type == "cuda" else None
            )
        else:
            # One rank: DDP would only add a no-op wrapper; the bare model is identical.
            self.model = hf_model
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = _make_optimizer(cfg, trainable)
        self._trainable = trainable
        # dcp.async_save runs its collectives in a background thread while the next steps
        # all-reduce gradients. On one shared gloo group (CPU training) the two threads'
        # collectives interleave and both ranks hang; the checkpoint gets a group of its
        # own, as torch's async-checkpointing guidance says. Every rank creates it here,
        # in the same order, as new_group requires.
        self._checkpoint_group = (
            dist.new_group(backend="gloo")
            if dist.is_initialized() and env.world_size > 1 and cfg.checkpoint.async_save
            else None
        )

    @staticmethod
    def _fully_shard(model: Any, compute_dtype: torch.dtype, env: DistEnv) -> Any:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = None
        if env.device.type == "cuda" and compute_dtype != torch.float32:
            mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
        kwargs: dict[str, Any] = {"mp_policy": mp} if mp is not None else {}
        layers = decoder_layers(model)
        for layer in layers:
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model

    def accumulate(self, *, last: bool) -> contextlib.AbstractContextManager[None]:
        if self.strategy == "fsdp":
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        if not last and hasattr(self.model, "no_sync"):
            ctx: contextlib.AbstractContextManager[None] = self.model.no_sync()
            return ctx
        return contextlib.nullcontext()

    def clip_grad_norm(self, max_norm: float) -> float:
        # With max_norm 0 the norm is still computed (for the metrics and the NaN guard).
        limit = max_norm if max_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self._trainable, limit, foreach=True)
        if hasattr(norm, "full_tensor"):  # FSDP2 returns a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def _state_options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(ignore_frozen_params=self.ignore_frozen)

    def write_checkpoint(self, staging: Path, *, async_save: bool) -> Future[Any] | None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(
            self.model, self.optimizer, options=self._state_options()
        )
        state = {"model": model_sd, "optim": optim_sd}
        target = staging / "dcp"
        if async_save:
            future: Future[Any] = dcp.async_save(
                state, checkpoint_id=str(target), process_group=self._checkpoint_group
            )
            return future
        dcp.save(state, checkpoint_id=str(target))
        return None

    def load_checkpoint(self, ckpt_dir: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(
            self.model, self.optimizer, options=self._state_options()
        )
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(ckpt_dir / "dcp"))
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
            options=self._state_options(),
        )

    def unwrapped(self) -> Any:
        return self.hf_model


class DeepSpeedTrainEngine(TrainEngine):
    """DeepSpeed ZeRO stage 1/2/3; the engine owns precision, clipping and accumulation."""

    handles_precision = True

    def __init__(
        self,
        cfg: TrainerConfig,
        env: DistEnv,
        hf_model: Any,
        compute_dtype: torch.dtype,
        micro_batch_size: int,
        gradient_accumulation_steps: int,
    ) -> None:
        import deepspeed

        self.cfg = cfg
        self.hf_model = hf_model
        stage = int(cfg.distributed.strategy.removeprefix("zero"))
        ds_config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": micro_batch_size,
            "gradient_accumulation_steps": gradient_accumulation_steps,
            "gradient_clipping": cfg.training.max_grad_norm,
            "zero_optimization": {"stage": stage},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if compute_dtype == torch.bfloat16:
            ds_config["bf16"] = {"enabled": True}
        elif compute_dtype == torch.float16:
            ds_config["fp16"] = {"enabled": True}
        trainable = [p for p in hf_model.parameters() if p.requires_grad]
        optimizer = _make_optimizer(cfg, trainable)
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            model=hf_model, optimizer=optimizer, config=ds_config
        )
        self.engine = engine
        self.model = engine
        self.optimizer = ds_optimizer

    def accumulate(self, *, last: bool) -> contextlib.AbstractContextManager[None]:
        # The loop owns the boundary: DeepSpeed's own micro-step counter would be
        # off by the steps already taken once the OOM ladder changes accumulation.
        self.engine.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        # The loop already divides by the step's token count: no extra 1/accumulation.
        self.engine.backward(loss, scale_wrt_gas=False)
        # DeepSpeed counts micro-steps in step(); it updates only at the boundary.
        self.engine.step()

    def clip_grad_norm(self, max_norm: float) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def optimizer_step(self) -> None:
        return None  # applied by engine.step() at the accumulation boundary

    def zero_grad(self) -> None:
        return None  # DeepSpeed zeroes its gradient buffers after each update

    def write_checkpoint(self, staging: Path, *, async_save: bool) -> Future[Any] | None:
        self.engine.save_checkpoint(
            str(staging / "deepspeed"),
            tag="state",
            save_latest=False,
            exclude_frozen_parameters=True,
        )
        return None

    def load_checkpoint(self, ckpt_dir: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(ckpt_dir / "deepspeed"), tag="state", load_module_strict=False
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state under {ckpt_dir}")

    def unwrapped(self) -> Any:
        return self.hf_model


def build_engine(
    cfg: TrainerConfig,
    env: DistEnv,
    hf_model: Any,
    compute_dtype: torch.dtype,
    *,
    micro_batch_size: int,
    gradient_accumulation_steps: int,
) -> TrainEngine:
    """Wrap ``hf_model`` for the configured strategy and build its optimizer."""
    if cfg.distributed.strategy.startswith("zero"):
        return DeepSpeedTrainEngine(
            cfg, env, hf_model, compute_dtype, micro_batch_size, gradient_accumulation_steps
        )
    return TorchTrainEngine(cfg, env, hf_model, compute_dtype)


@contextlib.contextmanager
def autocast_for(engine: TrainEngine, device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """bf16/fp16 autocast where the engine does not cast itself (DDP on a GPU)."""
    enabled = not engine.handles_precision and dtype != torch.float32 and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled):
        yield
