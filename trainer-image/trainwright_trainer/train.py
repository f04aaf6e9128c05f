"""The training recipe: setup / train / save_checkpoint / cleanup (torchtune's shape).

One optimizer step, on every rank::

    take micro_batch_size x accumulation sequences from this rank's shard
    forward/backward each micro-batch (gradient sync only on the last)
    clip -> global gradient norm
    one all_reduce(SUM) of [loss sum, label tokens, oom, non-finite, SIGTERM]
    oom        -> next rung of the OOM ladder, redo the step (or exit 76)
    non-finite -> zero the gradients, skip the update, count it
    otherwise  -> optimizer step; the spike detector sees the global loss
    every checkpoint.interval_steps, on SIGTERM and at the end -> checkpoint

The loss is the mean over label tokens (``labels != -100``) of each rank's step,
computed here so it does not depend on the model class's loss: by default fused
with the output head in chunks (:mod:`trainwright_trainer.loss`), so the full
logits tensor never exists.
The learning rate is a pure function of the step (warmup then cosine, linear or
constant) times ``lr_scale`` (lowered by rollbacks), so resuming needs only the
step and the scale, no scheduler object.

Rank 0 appends every step to ``<checkpoint.dir>/train_log.jsonl`` (step, loss,
learning rate, gradient norm, skipped), which the crash tests compare between
an interrupted and an uninterrupted run.

With held-out data (``data.eval_fraction`` or ``data.eval_path``) the loop
evaluates at step 0 (the base model), every ``evaluation.interval_steps`` and at
the end (:mod:`trainwright_trainer.evaluation`); the eval loss feeds early
stopping and the overfitting watch (:mod:`trainwright_trainer.stopping`). An
evaluation that improves on the best gets a checkpoint at its step, marked in
``best.json``; a run stopped early saves the best checkpoint's weights as its output.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from trainwright.vocabulary import TRAIN_LOG_NAME
from trainwright_trainer.checkpoint import CheckpointManager, step_dir_name
from trainwright_trainer.config import DataConfig, TrainerConfig
from trainwright_trainer.distributed import (
    DeepSpeedTrainEngine,
    DistEnv,
    TrainEngine,
    autocast_for,
    build_engine,
    destroy_distributed,
    init_distributed,
)
from trainwright_trainer.energy import GpuEnergyMeter
from trainwright_trainer.errors import ConfigError, DivergedError, NeedsReplanError, TrainerError
from trainwright_trainer.evaluation import (
    SAMPLES_NAME,
    SamplePrompt,
    append_samples,
    eval_batches,
    generate_samples,
    perplexity,
    prompts_from_split,
)
from trainwright_trainer.exitcodes import ExitCode
from trainwright_trainer.guards import (
    OomLadder,
    OomRung,
    PreemptionSignal,
    SpikeDetector,
    SpikeVerdict,
    agree_flags,
)
from trainwright_trainer.loss import causal_lm_loss_sum, install_chunked_loss
from trainwright_trainer.metrics import (
    EvalRecord,
    TrainerMetrics,
    mfu,
    peak_flops_per_second,
    training_flops_per_token,
)
from trainwright_trainer.model import (
    ModelBundle,
    build_model,
    enable_gradient_checkpointing,
    load_tokenizer,
)
from trainwright_trainer.stopping import OVERFITTING_ADVICE, EarlyStopping, OverfitWatch
from trainwright_trainer.tensorboard_events import TENSORBOARD_DIR_NAME

__all__ = ["Recipe", "lr_at_step", "run_training"]

log = logging.getLogger("trainwright_trainer")

IGNORE_INDEX = -100


def lr_at_step(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, schedule: str
) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then the schedule.

    Cosine decays to 10% of the peak (as in Llama 2, Touvron et al. 2023, §2.2);
    linear decays to 0; constant holds the peak.
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    floor = 0.1 * base_lr
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _seed_everything(seed: int, rank: int) -> None:
    # Same model init on every rank (seed), different dropout streams per rank.
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)


class _Faults:
    """Test-only fault injection (``faults`` in the config); inert when it is absent."""

    def __init__(self, cfg: TrainerConfig, rank: int) -> None:
        self.cfg = cfg.faults
        self.rank = rank
        self.pending_oom = collections.Counter(self.cfg.oom_at_steps if self.cfg else ())
        self.fired: set[tuple[str, int]] = set()

    def _mine(self) -> bool:
        return self.cfg is not None and self.cfg.fault_rank in (None, self.rank)

    def once(self, kind: str, step: int, steps: tuple[int, ...] | int | None) -> bool:
        if not self._mine() or steps is None:
            return False
        listed = step in steps if isinstance(steps, tuple) else step == steps
        if not listed or (kind, step) in self.fired:
            return False
        self.fired.add((kind, step))
        return True

    def oom(self, step: int) -> bool:
        # Every rank: data-parallel ranks run the same shapes, so they run out together.
        if self.pending_oom[step] > 0:
            self.pending_oom[step] -= 1
            return True
        return False

    def before_step(self, step: int) -> None:
        if self.cfg is None:
            return
        if self.cfg.step_sleep_seconds:
            time.sleep(self.cfg.step_sleep_seconds)
        if self.once("crash", step, self.cfg.crash_at_step):
            log.warning("fault: SIGKILL at step %d", step)
            os.kill(os.getpid(), signal.SIGKILL)
        if self.once("sigterm", step, self.cfg.sigterm_at_step):
            log.warning("fault: SIGTERM at step %d", step)
            os.kill(os.getpid(), signal.SIGTERM)

    def kill_during_save(self, step: int) -> bool:
        return self.cfg is not None and self.once("save", step, self.cfg.crash_during_save_at_step)


class Recipe:
    """A training run: ``setup()``, ``train()`` (returns the exit code), ``cleanup()``."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.step = 0  # optimizer steps completed
        self.lr_scale = 1.0
        self.rollbacks = 0
        self.skipped_steps = 0
        self.tokens_trained = 0
        self.loop_seconds = 0.0  # wall time of the step loop (setup and final save excluded)
        self.loop_cpu_seconds = 0.0  # CPU time of this process over the same span
        self.preemption = PreemptionSignal()
        ev = cfg.evaluation
        self.stopper = EarlyStopping(ev.early_stopping_patience, ev.early_stopping_min_delta)
        self.overfit = OverfitWatch(ev.overfitting_evaluations)
        self.eval_dataset: Any = None
        self.train_loss_sum = 0.0  # accepted steps' losses since the last evaluation
        self.train_loss_steps = 0
        self.pending_best: tuple[int, dict[str, Any]] | None = None
        self.early_stopped = False
        self._sample_prompts: list[SamplePrompt] | None = None
        self._overfitting_reported = False
        self.gpu_energy_joules: float | None = None  # all ranks, this attempt (None: unmetered)

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        self.preemption.install()
        self.env: DistEnv = init_distributed(cfg)
        env = self.env
        _seed_everything(cfg.training.seed, env.rank)
        self.faults = _Faults(cfg, env.rank)
        tokenizer = load_tokenizer(cfg)
        self.tokenizer = tokenizer
        self.dataset = self._prepare_data(tokenizer, cfg.data)
        self._split_eval(tokenizer)
        from trainwright_trainer.data.loader import ShardedLoader

        t = cfg.training
        self.loader = ShardedLoader(
            self.dataset,
            rank=env.rank,
            world_size=env.world_size,
            micro_batch_size=t.micro_batch_size,
            seed=t.seed,
            shuffle=cfg.data.shuffle,
        )
        self.ladder = OomLadder(
            OomRung(t.micro_batch_size, t.gradient_accumulation_steps, t.gradient_checkpointing)
        )
        self.sequences_per_step = t.micro_batch_size * t.gradient_accumulation_steps
        self.steps_per_epoch = self.loader.sequences_per_rank // self.sequences_per_step
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"training.micro_batch_size x gradient_accumulation_steps = "
                f"{self.sequences_per_step} sequences per rank per step, but each of "
                f"{env.world_size} ranks has only {self.loader.sequences_per_rank}; lower them"
            )
        planned = t.epochs * self.steps_per_epoch
        self.total_steps = min(planned, t.max_steps) if t.max_steps else planned
        self.bundle: ModelBundle = build_model(cfg, env.device)
        # Before any wrapper: the head's forward is replaced on the instance itself.
        self.loss_head = install_chunked_loss(self.bundle.model, t.loss_chunk_tokens)
        self.engine: TrainEngine = build_engine(
            cfg,
            env,
            self.bundle.model,
            self.bundle.compute_dtype,
            micro_batch_size=t.micro_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
        )
        self.spikes = SpikeDetector(
            window=cfg.guards.spike_window,
            factor=cfg.guards.spike_factor,
            patience=cfg.guards.spike_patience,
        )
        self.ckpt_root = Path(cfg.checkpoint.dir)
        self.metrics = TrainerMetrics(
            enabled=env.is_main,
            port=cfg.metrics.port,
            progress_path=cfg.progress_path,
            total_steps=self.total_steps,
            tensorboard_dir=self.ckpt_root / TENSORBOARD_DIR_NAME,
        )
        self.energy = GpuEnergyMeter(env.device)
        self.checkpoints = CheckpointManager(
            self.ckpt_root,
            rank=env.rank,
            keep_last=cfg.checkpoint.keep_last,
            on_published=self._on_published,
        )
        self.checkpoints.clean_staging()
        resume = self.checkpoints.resume_point()
        if resume is not None:
            self._load(resume[1])
            log.info("resumed from %s at step %d", resume[1], self.step)
        self.flops_per_token = training_flops_per_token(
            params=self.bundle.params,
            trainable_params=self.bundle.trainable_params,
            num_layers=self.bundle.num_layers,
            hidden_size=self.bundle.hidden_size,
            seq_len=self.dataset.seq_len,
        )
        device_name = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else None
        self.peak_flops = peak_flops_per_second(device_name)
        self.train_log = self.ckpt_root / TRAIN_LOG_NAME
        if env.is_main:
            log.info(
                "training %s (%s, %s, %d ranks): %d params, %d trainable, %d steps",
                cfg.model.path,
                cfg.method,
                cfg.distributed.strategy,
                env.world_size,
                self.bundle.params,
                self.bundle.trainable_params,
                self.total_steps,
            )

    def _split_eval(self, tokenizer: Any) -> None:
        """Hold out ``data.eval_fraction`` of the sequences, or prepare ``data.eval_path``."""
        data = self.cfg.data
        if data.eval_path is not None:
            eval_cfg = data.model_copy(update={"path": data.eval_path, "eval_path": None})
            self.eval_dataset = self._prepare_data(tokenizer, eval_cfg)
        elif data.eval_fraction > 0:
            from trainwright_trainer.data.dataset import holdout_split

            train, held_out = holdout_split(
                len(self.dataset), data.eval_fraction, self.cfg.training.seed
            )
            self.dataset, self.eval_dataset = (
                self.dataset.subset(train),
                self.dataset.subset(held_out),
            )

    def _prepare_data(self, tokenizer: Any, data: DataConfig) -> Any:
        from trainwright_trainer.data import load_prepared, prepare_dataset

        # Tokenize once per node (local rank 0) before any other collective: without a
        # shared volume the cache sits on node-local disk, and prepare_dataset publishes
        # atomically, so nodes sharing one cache do not clash. A data error on the
        # preparing rank is handed to every rank so all exit with its code at once,
        # instead of the others waiting in a collective until the timeout.
        outcome: tuple[str, str, int] | None = None
        if self.env.local_rank == 0:
            try:
                outcome = (
                    "ok",
                    str(prepare_dataset(data, tokenizer, cache_dir=self.cfg.data_cache_dir)),
                    0,
                )
            except TrainerError as exc:
                outcome = ("error", exc.message, int(exc.exit_code))
        if dist.is_initialized() and self.env.world_size > 1:
            gathered: list[tuple[str, str, int] | None] = [None] * self.env.world_size
            dist.all_gather_object(gathered, outcome)
        else:
            gathered = [outcome]
        for item in gathered:
            if item is not None and item[0] == "error":
                raise TrainerError(item[1], ExitCode(item[2]))
        paths = [item[1] for item in gathered if item is not None]
        if not paths:
            raise RuntimeError("no rank prepared the dataset")
        path = Path(paths[0])
        return load_prepared(path)

    # ------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "loader": self.loader.state_dict(),
            "rng": _rng_state(),
            "spikes": self.spikes.state_dict(),
            "ladder": self.ladder.state_dict(),
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "skipped_steps": self.skipped_steps,
            "tokens_trained": self.tokens_trained,
            "early_stopping": self.stopper.state_dict(),
            "overfit": self.overfit.state_dict(),
            "train_loss_since_eval": [self.train_loss_sum, self.train_loss_steps],
        }

    def save_checkpoint(self, *, final: bool = False) -> None:
        step = self.step
        kill = self.faults.kill_during_save(step)

        def before_publish(staging: Path) -> None:
            if kill:
                log.warning("fault: SIGKILL during the save of step %d", step)
                os.kill(os.getpid(), signal.SIGKILL)

        async_save = self.cfg.checkpoint.async_save and not final
        self.checkpoints.save(
            step,
            lambda staging: self.engine.write_checkpoint(staging, async_save=async_save),
            extra_state=self._extra_state(),
            meta={"world_size": self.env.world_size, "strategy": self.cfg.distributed.strategy},
            before_publish=before_publish if kill else None,
        )

    def _load(self, ckpt_dir: Path) -> None:
        self.engine.load_checkpoint(ckpt_dir)
        extra = self.checkpoints.load_extra_state(ckpt_dir)
        self.step = int(extra["step"])
        self.loader.load_state_dict(extra["loader"])
        self.spikes.load_state_dict(extra["spikes"])
        self.skipped_steps = int(extra["skipped_steps"])
        self.tokens_trained = int(extra["tokens_trained"])
        self.lr_scale = float(extra["lr_scale"])
        self.rollbacks = int(extra["rollbacks"])
        ladder = extra["ladder"]
        self.ladder.load_state_dict(ladder)
        self._apply_rung(self.ladder.current)
        _set_rng_state(extra["rng"])
        # Checkpoints from before evaluation existed have none of these.
        self.stopper.load_state_dict(extra.get("early_stopping", {}))
        self.overfit.load_state_dict(extra.get("overfit", {}))
        self.train_loss_sum, steps = extra.get("train_loss_since_eval", [0.0, 0])
        self.train_loss_steps = int(steps)
        self.checkpoints.keep_step = self.stopper.best_step

    # ------------------------------------------------------------------ train
    def train(self) -> ExitCode:
        cfg = self.cfg
        started = time.monotonic()
        cpu_started = time.process_time()
        last_log = time.monotonic()
        first_step = self.step
        if self.eval_dataset is not None and self.step == 0:
            self._evaluate(base=True)
        while self.step < self.total_steps:
            step_no = self.step + 1
            self.faults.before_step(step_no)
            step_started = time.monotonic()
            outcome = self._train_step(step_no)
            if outcome is None:
                continue  # the OOM ladder changed the batch shape: redo this step
            loss, grad_norm, tokens, skipped, preempted = outcome
            if self.faults.cfg and self.faults.once(
                "spike", step_no, self.faults.cfg.spike_at_steps
            ):
                # The injected spike scales the measured loss (every rank agrees on it).
                loss *= self.faults.cfg.spike_loss_factor
            self.step = step_no
            self.tokens_trained += tokens
            lr = self._current_lr(step_no - 1)
            if skipped:
                self.skipped_steps += 1
                self.metrics.count(self.metrics.skipped_steps)
                log.warning("step %d: non-finite gradients on some rank; step skipped", step_no)
            if not skipped and math.isfinite(loss):
                self.train_loss_sum += loss
                self.train_loss_steps += 1
            verdict = SpikeVerdict.OK if skipped else self.spikes.observe(loss)
            if verdict is not SpikeVerdict.OK:
                self.metrics.count(self.metrics.loss_spikes)
            now = time.monotonic()
            step_seconds = now - step_started
            tokens_per_second = tokens / step_seconds if step_seconds > 0 else 0.0
            self._log_step(step_no, loss, lr, grad_norm, skipped, verdict, step_seconds)
            done = self.step - first_step
            eta = (now - started) / done * (self.total_steps - self.step) if done else None
            if self.env.is_main and (
                step_no % cfg.metrics.log_interval_steps == 0 or step_no == self.total_steps
            ):
                log.info(
                    "step %d/%d loss %.4f lr %.3g grad_norm %.3f tokens/s %.0f",
                    step_no,
                    self.total_steps,
                    loss,
                    lr,
                    grad_norm,
                    tokens_per_second,
                )
            write_file = now - last_log > 1.0 or step_no == self.total_steps
            if write_file:
                last_log = now
            self.metrics.record_step(
                step=step_no,
                epoch=self.loader.epoch,
                loss=loss,
                learning_rate=lr,
                grad_norm=grad_norm,
                tokens_per_second=tokens_per_second,
                mfu_ratio=mfu(
                    tokens_per_second,
                    self.flops_per_token,
                    self.peak_flops * self.env.world_size if self.peak_flops else None,
                ),
                eta_seconds=eta,
                step_seconds=step_seconds,
                write_file=write_file,
                gpu_energy_joules=self.gpu_energy_joules,
            )
            if verdict is SpikeVerdict.ROLLBACK:
                self._rollback(step_no)
                continue
            if preempted:
                log.warning("SIGTERM: saving step %d and exiting for a restart", self.step)
                self.save_checkpoint(final=True)
                self.metrics.finish("preempted")
                return ExitCode.RETRYABLE
            improved = self._evaluate() if self._eval_due() else False
            if self.step < self.total_steps and (
                self.step % cfg.checkpoint.interval_steps == 0 or improved
            ):
                self.save_checkpoint()
            if self.stopper.should_stop:
                self._stop_early()
                break
        self.loop_seconds = time.monotonic() - started
        self.loop_cpu_seconds = time.process_time() - cpu_started
        if self.env.is_main:
            log.info("trained %d steps in %.1f s", self.step - first_step, self.loop_seconds)
        if self.checkpoints.last_published_step != self.step:
            self.save_checkpoint(final=True)
        self.checkpoints.wait()
        if self.early_stopped:
            self._restore_best()
        self._save_output()
        self.metrics.finish("succeeded")
        return ExitCode.SUCCESS

    # ------------------------------------------------------------ evaluation
    def _eval_due(self) -> bool:
        every = self.cfg.evaluation.interval_steps or self.cfg.checkpoint.interval_steps
        return self.eval_dataset is not None and (
            self.step % every == 0 or self.step == self.total_steps
        )

    def _eval_loss(self) -> tuple[float, int]:
        """(summed cross-entropy, label tokens) over the held-out data, all ranks."""
        model = self.engine.model
        loss_sum = 0.0
        label_tokens = 0
        model.eval()
        try:
            with torch.no_grad():
                for batch in eval_batches(
                    self.eval_dataset,
                    rank=self.env.rank,
                    world_size=self.env.world_size,
                    micro_batch_size=self.ladder.current.micro_batch_size,
                    max_sequences=self.cfg.evaluation.max_sequences,
                ):
                    label_tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                    loss_sum += float(self._micro_loss(batch))
        finally:
            model.train()
        reduced = _all_reduce_sum([loss_sum, float(label_tokens)], self.env.device)
        return reduced[0], int(reduced[1])

    def _evaluate(self, *, base: bool = False) -> bool:
        """Evaluate at the current step; True when it is the best so far (not for ``base``)."""
        loss_sum, label_tokens = self._eval_loss()
        eval_loss = loss_sum / max(label_tokens, 1)
        improved = False
        if not base:
            improved = self.stopper.observe(self.step, eval_loss)
            if self.train_loss_steps:
                self.overfit.observe(self.train_loss_sum / self.train_loss_steps, eval_loss)
            self.train_loss_sum, self.train_loss_steps = 0.0, 0
        ppl = perplexity(eval_loss)
        if improved:
            self.pending_best = (self.step, {"eval_loss": eval_loss, "eval_perplexity": ppl})
        record = EvalRecord(
            step=self.step,
            loss=eval_loss,
            perplexity=ppl,
            best_step=self.stopper.best_step,
            best_loss=self.stopper.best_loss,
            overfitting=self.overfit.overfitting,
        )
        self.metrics.record_eval(record)
        if self.env.is_main:
            self._append_log(
                {
                    "event": "eval",
                    "at_step": self.step,
                    "eval_loss": eval_loss,
                    "eval_perplexity": ppl,
                    "eval_tokens": label_tokens,
                    "best_step": record.best_step,
                    "overfitting": record.overfitting,
                }
            )
            log.info("step %d: eval loss %.4f (%d tokens)", self.step, eval_loss, label_tokens)
        self._report_overfitting()
        final = self.step == self.total_steps or self.stopper.should_stop
        self._write_samples("base" if base else "final" if final else "eval")
        return improved

    def _report_overfitting(self) -> None:
        if not self.overfit.overfitting or self._overfitting_reported:
            return
        self._overfitting_reported = True
        log.warning(
            OVERFITTING_ADVICE.format(
                evaluations=self.overfit.evaluations,
                best_loss=self.stopper.best_loss or float("nan"),
                best_step=self.stopper.best_step,
            )
        )

    def _write_samples(self, label: str) -> None:
        ev = self.cfg.evaluation
        sharded = self.cfg.distributed.strategy in ("fsdp", "zero3") and self.env.world_size > 1
        if not (ev.sample_prompts or ev.samples) or not (sharded or self.env.is_main):
            return
        if self._sample_prompts is None:
            self._sample_prompts = [
                SamplePrompt(tuple(self.tokenizer(p)["input_ids"])) for p in ev.sample_prompts
            ] or prompts_from_split(self.eval_dataset, ev.samples)
        model = self.engine.unwrapped()
        model.eval()
        try:
            with (
                torch.no_grad(),
                autocast_for(self.engine, self.env.device, self.bundle.compute_dtype),
            ):
                samples = generate_samples(
                    model,
                    self.tokenizer,
                    self._sample_prompts,
                    device=self.env.device,
                    max_new_tokens=ev.sample_max_new_tokens,
                    synced=sharded,
                )
        finally:
            model.train()
        if self.env.is_main:
            append_samples(
                self.ckpt_root / SAMPLES_NAME, step=self.step, label=label, samples=samples
            )

    def _on_published(self, step: int, seconds: float) -> None:
        self.metrics.observe_checkpoint(seconds, step=step)
        if self.pending_best is not None and self.pending_best[0] == step:
            self.checkpoints.mark_best(step, self.pending_best[1])
            self.pending_best = None

    def _stop_early(self) -> None:
        self.early_stopped = True
        self.metrics.mark_early_stopped()
        if self.env.is_main:
            log.info(
                "early stopping at step %d: no eval-loss improvement over %.4f (step %s) "
                "in %d evaluations",
                self.step,
                self.stopper.best_loss or float("nan"),
                self.stopper.best_step,
                self.stopper.evaluations_without_improvement,
            )
            self._append_log({"event": "early_stop", "at_step": self.step})

    def _restore_best(self) -> None:
        """Load the best checkpoint's weights so the output is the best model."""
        best = self.stopper.best_step
        if best is None or best == self.step:
            return
        self._load(self.ckpt_root / step_dir_name(best))
        log.info("output: the best checkpoint, step %d", best)

    def _current_lr(self, step_index: int) -> float:
        t = self.cfg.training
        base = lr_at_step(
            step_index,
            base_lr=t.learning_rate,
            warmup_steps=t.warmup_steps,
            total_steps=self.total_steps,
            schedule=t.lr_scheduler,
        )
        return base * self.lr_scale

    def _next_step_batches(self) -> list[dict[str, torch.Tensor]]:
        if self.loader.sequences_per_rank - self.loader.position < self.sequences_per_step:
            self.loader.set_epoch(self.loader.epoch + 1)
        rung = self.ladder.current
        iterator = iter(self.loader)
        return [next(iterator) for _ in range(rung.gradient_accumulation_steps)]

    def _train_step(self, step_no: int) -> tuple[float, float, int, bool, bool] | None:
        engine = self.engine
        env = self.env
        position = (self.loader.epoch, self.loader.position)
        batches = self._next_step_batches()
        engine.set_lr(self._current_lr(step_no - 1))
        label_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        tokens = sum(int(b["input_ids"].numel()) for b in batches)
        denominator = max(label_tokens, 1)
        is_ds = isinstance(engine, DeepSpeedTrainEngine)
        faults = self.faults
        inject_nan = faults.once("nan", step_no, faults.cfg.nan_grad_at_steps if faults.cfg else ())
        loss_sum = 0.0
        oom = False
        loss_nonfinite = False
        try:
            for index, batch in enumerate(batches):
                if index == 0 and faults.oom(step_no):
                    raise torch.OutOfMemoryError(f"injected out-of-memory at step {step_no}")
                last = index == len(batches) - 1
                with engine.accumulate(last=last):
                    loss = self._micro_loss(batch) / denominator
                    if inject_nan and is_ds:
                        loss = loss * float("nan")
                    if is_ds:
                        # ZeRO reduces gradients inside backward: agree before entering it.
                        finite = bool(torch.isfinite(loss).item())
                        loss_nonfinite |= agree_flags([not finite], env.device)[0]
                        if loss_nonfinite:
                            # DeepSpeed updates inside engine.step() at the boundary:
                            # back-propagate zeros and apply that update with lr 0.
                            loss = loss.nan_to_num(0.0) * 0.0
                            engine.set_lr(0.0)
                    else:
                        loss_nonfinite |= not bool(torch.isfinite(loss).item())
                    engine.backward(loss)
                loss_sum += float(loss.detach()) * denominator
        except torch.OutOfMemoryError as exc:
            log.warning("rank %d: %s", env.rank, str(exc).splitlines()[0])
            oom = True
        if loss_nonfinite:
            loss_sum = float("nan")  # the step's loss is unknown, not 0
        if inject_nan and not is_ds and not oom:
            _poison_one_gradient(engine)
        grad_norm = float("nan")
        if not oom:
            grad_norm = engine.clip_grad_norm(self.cfg.training.max_grad_norm)
        nonfinite = loss_nonfinite or (not oom and not math.isfinite(grad_norm))
        joules = self.energy.joules()
        reduced = _all_reduce_sum(
            [
                loss_sum,
                float(label_tokens),
                float(tokens),
                float(oom),
                float(nonfinite),
                float(self.preemption.received),
                joules or 0.0,  # each rank meters its own GPU: the sum is the run's
                float(joules is not None),
            ],
            env.device,
        )
        self.gpu_energy_joules = reduced[6] if reduced[7] == env.world_size else None
        if reduced[3] > 0:
            self._handle_oom(position)
            return None
        skipped = reduced[4] > 0 and self.cfg.guards.skip_nonfinite
        if skipped:
            engine.zero_grad()
        else:
            engine.optimizer_step()
            engine.zero_grad()
        global_loss = reduced[0] / max(reduced[1], 1.0)
        return global_loss, grad_norm, int(reduced[2]), skipped, reduced[5] > 0

    def _micro_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = self.env.device
        on_device = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return causal_lm_loss_sum(
            self.engine.model,
            on_device,
            head=self.loss_head,
            autocast=autocast_for(self.engine, device, self.bundle.compute_dtype),
        )

    # ---------------------------------------------------------------- guards
    def _apply_rung(self, rung: OomRung) -> None:
        self.loader.set_micro_batch_size(rung.micro_batch_size)
        if rung.gradient_checkpointing:
            enable_gradient_checkpointing(self.engine.unwrapped())
        if isinstance(self.engine, DeepSpeedTrainEngine):
            ds = self.engine.engine
            ds.set_train_micro_batch_size(rung.micro_batch_size)
            ds.set_train_batch_size(
                rung.micro_batch_size * rung.gradient_accumulation_steps * self.env.world_size
            )

    def _handle_oom(self, position: tuple[int, int]) -> None:
        self.engine.zero_grad()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.metrics.count(self.metrics.oom_events)
        rung = self.ladder.next_rung() if self.cfg.guards.oom_ladder else None
        if rung is None:
            raise NeedsReplanError(
                f"out of memory at step {self.step + 1} with micro-batch "
                f"{self.ladder.current.micro_batch_size} and gradient checkpointing on; "
                "the job needs more memory per sequence (more GPUs or another strategy)"
            )
        log.warning(
            "out of memory at step %d: retrying with micro-batch %d x %d accumulation, "
            "gradient checkpointing %s",
            self.step + 1,
            rung.micro_batch_size,
            rung.gradient_accumulation_steps,
            "on" if rung.gradient_checkpointing else "off",
        )
        # Redo the same sequences: rewind the loader to the start of the step.
        self.loader.epoch, self.loader.position = position
        self._apply_rung(rung)

    def _rollback(self, step_no: int) -> None:
        guards = self.cfg.guards
        if self.rollbacks >= guards.max_rollbacks:
            raise DivergedError(
                f"the loss spiked {guards.spike_patience} steps in a row at step {step_no} "
                f"after {self.rollbacks} rollbacks (guards.max_rollbacks); "
                "lower training.learning_rate or check the data"
            )
        resume = self.checkpoints.resume_point()
        if resume is None:
            log.warning("loss spikes at step %d but no checkpoint to roll back to", step_no)
            return
        rollbacks = self.rollbacks + 1
        lr_scale = self.lr_scale * guards.rollback_lr_factor
        self._load(resume[1])
        self.rollbacks = rollbacks
        self.lr_scale = lr_scale
        self.metrics.count(self.metrics.rollbacks)
        log.warning(
            "rolled back to step %d after %d loss spikes; learning rate x%.3g",
            self.step,
            guards.spike_patience,
            self.lr_scale,
        )
        if self.env.is_main:
            self._append_log(
                {
                    "event": "rollback",
                    "at_step": step_no,
                    "to_step": self.step,
                    "lr_scale": self.lr_scale,
                }
            )

    # -------------------------------------------------------------- logging
    def _append_log(self, record: dict[str, Any]) -> None:
        self.train_log.parent.mkdir(parents=True, exist_ok=True)
        with self.train_log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _log_step(
        self,
        step_no: int,
        loss: float,
        lr: float,
        grad_norm: float,
        skipped: bool,
        verdict: SpikeVerdict,
        step_seconds: float,
    ) -> None:
        if not self.env.is_main:
            return
        memory: dict[str, int] = {}
        if self.env.device.type == "cuda":
            memory = {
                "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(self.env.device),
                "max_memory_reserved_bytes": torch.cuda.max_memory_reserved(self.env.device),
            }
        self._append_log(
            {
                "step_seconds": step_seconds,
                **memory,
                "step": step_no,
                "loss": loss if math.isfinite(loss) else None,
                "lr": lr,
                "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                "skipped": skipped,
                "spike": verdict is not SpikeVerdict.OK,
                "micro_batch_size": self.ladder.current.micro_batch_size,
                "gradient_accumulation_steps": self.ladder.current.gradient_accumulation_steps,
                "gradient_checkpointing": self.ladder.current.gradient_checkpointing,
            }
        )

    # --------------------------------------------------------------- output
    def _save_output(self) -> None:
        out_dir = Path(self.cfg.output.dir)
        state = _full_state_dict(self.engine)
        if not self.env.is_main:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        model = self.engine.unwrapped()
        model.save_pretrained(str(out_dir), state_dict=state, safe_serialization=True)
        if self.cfg.output.save_merged and hasattr(model, "merge_and_unload"):
            log.info("merging the adapter into the base weights")
            merged = model.merge_and_unload()
            merged.save_pretrained(str(out_dir / "merged"), safe_serialization=True)
        log.info(
            "saved the trained %s to %s",
            "adapter" if self.cfg.method != "full" else "model",
            out_dir,
        )

    def cleanup(self) -> None:
        self.preemption.uninstall()
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.close()
        destroy_distributed()


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def _poison_one_gradient(engine: TrainEngine) -> None:
    for param in engine.model.parameters():
        if param.grad is not None:
            grad = param.grad
            local = grad.to_local() if hasattr(grad, "to_local") else grad
            local.fill_(float("nan"))
            return


def _full_state_dict(engine: TrainEngine) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on CPU on rank 0 (gathered from shards); None elsewhere."""
    if isinstance(engine, DeepSpeedTrainEngine):
        ds = engine.engine
        if ds.zero_optimization_partition_weights():
            sd: dict[str, torch.Tensor] | None = ds._zero3_consolidated_16bit_state_dict()
            return sd
        return {k: v.detach().cpu() for k, v in engine.hf_model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full: dict[str, torch.Tensor] = get_model_state_dict(engine.model, options=options)
    return full


def run_training(cfg: TrainerConfig) -> int:
    """Run one training job from a validated config; returns the process exit code."""
    recipe = Recipe(cfg)
    try:
        recipe.setup()
        return int(recipe.train())
    finally:
        recipe.cleanup()
