"""Observability from rank 0: Prometheus metrics, a progress file, MFU.

Rank 0 serves ``/metrics`` (Prometheus text format, names prefixed
``trainwright_``, base units) and ``/progress`` (the progress JSON) on
``metrics.port``, and rewrites the progress file atomically after every logged
step so the operator can read step, total steps and ETA without scraping.
Other ranks create a :class:`TrainerMetrics` with ``enabled=False``: every
method is then a no-op, so the loop needs no ``if rank == 0`` around them.
Rank 0 also writes the step and eval figures as TensorBoard events
(:mod:`trainwright_trainer.tensorboard_events`) when given a directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trainwright_trainer.tensorboard_events import EventWriter

__all__ = [
    "PEAK_BF16_DENSE_FLOPS_PER_SECOND",
    "EvalRecord",
    "Progress",
    "TrainerMetrics",
    "mfu",
    "peak_flops_per_second",
    "training_flops_per_token",
    "write_progress",
]

log = logging.getLogger(__name__)

# Dense (no sparsity) bf16 tensor-core peak per GPU, in FLOP/s, from the vendor
# datasheets (the same figures as ../shared/reference/gpus.csv):
# NVIDIA H100 datasheet (SXM 989 TF, PCIe 756 TF), H200 datasheet (989 TF),
# A100 datasheet (312 TF), L40S datasheet (362 TF), L4 datasheet (121 TF),
# A10 datasheet (125 TF), B200 HGX datasheet (2250 TF), AMD MI300X (1307 TF).
# Keys are matched as substrings of torch.cuda.get_device_name(), longest first.
PEAK_BF16_DENSE_FLOPS_PER_SECOND: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "MI300X": 1307e12,
}


def peak_flops_per_second(device_name: str | None) -> float | None:
    """Datasheet dense bf16 peak for a device name, or None (CPU, unknown GPU)."""
    if not device_name:
        return None
    for key in sorted(PEAK_BF16_DENSE_FLOPS_PER_SECOND, key=len, reverse=True):
        if key in device_name:
            return PEAK_BF16_DENSE_FLOPS_PER_SECOND[key]
    return None


def training_flops_per_token(
    *,
    params: int,
    trainable_params: int,
    num_layers: int,
    hidden_size: int,
    seq_len: int,
    gradient_checkpointing: bool = False,
) -> float:
    """Model FLOPs per trained token: 6N plus attention, as the planner counts them.

    Kaplan et al. 2020 / Chinchilla: forward 2N, backward 4N per token. Frozen
    weights (LoRA) get no weight gradients, so the backward costs ~2N for them
    (``2N + 2N + 2 N_trainable``, "about 4N"). Attention scores add
    ``6 * L * h * s`` per token (Narayanan et al. 2021, eq. 3 without the
    recompute term). MFU conventionally excludes recomputation, so checkpointing
    is accepted but not counted (PaLM appendix B).
    """
    del gradient_checkpointing
    frozen = params - trainable_params
    dense = 6 * trainable_params + 4 * frozen
    attention = 6 * num_layers * hidden_size * seq_len
    return float(dense + attention)


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float | None) -> float:
    """Model FLOPs utilisation (0..1): achieved model FLOP/s over the summed peak; 0 when unknown."""
    if not peak_flops or peak_flops <= 0:
        return 0.0
    return tokens_per_second * flops_per_token / peak_flops


@dataclass
class Progress:
    """What the operator reads from the progress file or ``/progress``."""

    step: int
    total_steps: int
    epoch: int
    loss: float | None
    tokens_per_second: float
    eta_seconds: float | None
    updated_at: str
    state: str = "running"
    last_checkpoint_step: int | None = None
    # Seconds the last checkpoint save and the last optimizer step took: the operator's
    # checkpoint.intervalSteps: auto (Young/Daly) for the next attempt is made of them.
    checkpoint_save_seconds: float | None = None
    step_seconds: float | None = None
    eval_loss: float | None = None
    eval_perplexity: float | None = None
    eval_step: int | None = None
    best_step: int | None = None
    best_eval_loss: float | None = None
    overfitting: bool | None = None  # None: no evaluation yet
    early_stopped: bool | None = None
    # Rank 0's GPU: the most memory torch has allocated so far (bytes) and NVML's utilisation
    # (0..1) at the last sample; None on CPU or without a driver, never a made-up figure.
    peak_memory_bytes: int | None = None
    gpu_utilization: float | None = None
    # The last step's MFU (None where the device's peak is unknown: CPU ranks) and the
    # energy all ranks' GPUs drew since this attempt started (trainwright_trainer.energy;
    # None unless every rank measured its own): the operator's status.usage.
    mfu: float | None = None
    gpu_energy_joules: float | None = None


@dataclass
class EvalRecord:
    """The latest evaluation, as the progress reports it."""

    step: int
    loss: float
    perplexity: float | None
    best_step: int | None
    best_loss: float | None
    overfitting: bool


def write_progress(path: Path, progress: Progress) -> None:
    """Replace the progress file atomically (a reader never sees half a JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(progress)), encoding="utf-8")
    os.replace(tmp, path)


class TrainerMetrics:
    """The trainer's Prometheus metrics and progress reporting (active on rank 0 only)."""

    def __init__(
        self,
        *,
        enabled: bool,
        port: int,
        progress_path: Path | None,
        total_steps: int,
        host: str = "0.0.0.0",
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.enabled = enabled
        self.progress_path = progress_path
        self.total_steps = total_steps
        self.registry = CollectorRegistry()
        self._progress: Progress | None = None
        self._last_checkpoint_step: int | None = None
        self._last_save_seconds: float | None = None
        self._eval: EvalRecord | None = None
        self._early_stopped = False
        self._server: ThreadingHTTPServer | None = None
        self._nvml_handle: Any = None
        self.port = 0
        r = self.registry
        self.loss = Gauge("trainwright_train_loss", "Training loss of the last step", registry=r)
        self.learning_rate = Gauge("trainwright_learning_rate", "Learning rate", registry=r)
        self.grad_norm = Gauge("trainwright_grad_norm", "Gradient norm before clipping", registry=r)
        self.tokens_per_second = Gauge(
            "trainwright_tokens_per_second", "Trained tokens per second, all ranks", registry=r
        )
        self.mfu = Gauge("trainwright_mfu", "Model FLOPs utilisation (0..1)", registry=r)
        self.step = Gauge("trainwright_step", "Optimizer steps completed", registry=r)
        self.total_steps_gauge = Gauge(
            "trainwright_total_steps", "Optimizer steps planned", registry=r
        )
        self.epoch = Gauge("trainwright_epoch", "Current epoch (0-based)", registry=r)
        self.eta = Gauge(
            "trainwright_eta_seconds",
            "Seconds left at the current rate (as in /progress)",
            registry=r,
        )
        self.skipped_steps = Counter(
            "trainwright_skipped_steps", "Steps skipped for non-finite gradients", registry=r
        )
        self.loss_spikes = Counter("trainwright_loss_spikes", "Loss spikes detected", registry=r)
        self.rollbacks = Counter(
            "trainwright_rollbacks", "Rollbacks to the last good checkpoint", registry=r
        )
        self.oom_events = Counter(
            "trainwright_oom_events", "Agreed out-of-memory events", registry=r
        )
        self.checkpoint_save_seconds = Histogram(
            "trainwright_checkpoint_save_seconds",
            "Seconds from the start of a checkpoint save to its publication",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        # The age of the last checkpoint and the gap between the last two: the
        # TrainwrightCheckpointOverdue alert fires at three gaps without one.
        self.last_checkpoint_step = Gauge(
            "trainwright_last_checkpoint_step", "Step of the last published checkpoint", registry=r
        )
        self.last_checkpoint_timestamp = Gauge(
            "trainwright_last_checkpoint_timestamp_seconds",
            "Unix time the last checkpoint was published",
            registry=r,
        )
        self.checkpoint_interval = Gauge(
            "trainwright_checkpoint_interval_seconds",
            "Seconds between the last two published checkpoints",
            registry=r,
        )
        self._last_checkpoint_time: float | None = None
        self.eval_loss = Gauge(
            "trainwright_eval_loss", "Loss on the held-out data at the last evaluation", registry=r
        )
        self.eval_perplexity = Gauge(
            "trainwright_eval_perplexity", "exp(eval loss) at the last evaluation", registry=r
        )
        self.overfitting = Gauge(
            "trainwright_overfitting",
            "1 while train loss falls and eval loss rises (evaluation.overfitting_evaluations)",
            registry=r,
        )
        self.gpu_memory_used = Gauge(
            "trainwright_gpu_memory_used_bytes", "GPU memory used (NVML)", ["gpu"], registry=r
        )
        self.gpu_utilization = Gauge(
            "trainwright_gpu_utilization_ratio", "GPU utilisation (NVML, 0..1)", ["gpu"], registry=r
        )
        self.gpu_peak_memory = Gauge(
            "trainwright_gpu_peak_memory_bytes",
            "Most GPU memory torch has allocated on this GPU since the run started",
            ["gpu"],
            registry=r,
        )
        self.gpu_energy = Gauge(
            "trainwright_gpu_energy_joules",
            "Energy all ranks' GPUs drew since this attempt started (NVML), joules",
            registry=r,
        )
        self._utilization: float | None = None
        self.total_steps_gauge.set(total_steps)
        self.events = EventWriter(tensorboard_dir if enabled else None)
        if enabled:
            self._init_nvml()
            if port:
                self._start_server(host, port)

    def _init_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int(os.environ.get("LOCAL_RANK", "0"))
            if index < pynvml.nvmlDeviceGetCount():
                self._nvml_handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no driver, no GPU: the GPU metrics stay absent
            self._nvml_handle = None

    def _sample_gpu(self) -> None:
        if self._nvml_handle is None:
            return
        import pynvml

        try:
            memory = pynvml.nvmlDeviceGetMemoryInfo(self._nvml_handle)
            utilization = pynvml.nvmlDeviceGetUtilizationRates(self._nvml_handle)
        except pynvml.NVMLError:
            return
        gpu = os.environ.get("LOCAL_RANK", "0")
        self.gpu_memory_used.labels(gpu=gpu).set(memory.used)
        self._utilization = utilization.gpu / 100.0
        self.gpu_utilization.labels(gpu=gpu).set(self._utilization)

    def _peak_memory(self) -> int | None:
        """``torch.cuda.max_memory_allocated`` of this rank's GPU; None without CUDA."""
        try:
            import torch
        except ImportError:
            return None
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        peak = int(torch.cuda.max_memory_allocated())
        self.gpu_peak_memory.labels(gpu=os.environ.get("LOCAL_RANK", "0")).set(peak)
        return peak

    def _start_server(self, host: str, port: int) -> None:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, ctype = generate_latest(metrics.registry), CONTENT_TYPE_LATEST
                elif self.path.startswith("/progress"):
                    current = metrics._progress
                    body = json.dumps(asdict(current) if current else {}).encode()
                    ctype = "application/json"
                else:
                    self.send_error(404, "try /metrics or /progress")
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self._server.server_address[1])
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        log.info("metrics on :%d/metrics and /progress", self.port)

    def record_step(
        self,
        *,
        step: int,
        epoch: int,
        loss: float,
        learning_rate: float,
        grad_norm: float,
        tokens_per_second: float,
        mfu_ratio: float,
        eta_seconds: float | None,
        write_file: bool = True,
        step_seconds: float | None = None,
        gpu_energy_joules: float | None = None,
    ) -> None:
        if not self.enabled:
            return
        self.events.scalars(
            step,
            {
                "train/loss": loss,
                "train/learning_rate": learning_rate,
                "train/grad_norm": grad_norm,
                "train/tokens_per_second": tokens_per_second,
                "train/mfu": mfu_ratio if mfu_ratio > 0 else None,
            },
        )
        if gpu_energy_joules is not None:
            self.gpu_energy.set(gpu_energy_joules)
        self.step.set(step)
        self.epoch.set(epoch)
        self.loss.set(loss)
        self.learning_rate.set(learning_rate)
        self.grad_norm.set(grad_norm)
        self.tokens_per_second.set(tokens_per_second)
        self.mfu.set(mfu_ratio)
        if eta_seconds is not None:
            self.eta.set(eta_seconds)
        self._sample_gpu()
        self._progress = Progress(
            step=step,
            total_steps=self.total_steps,
            epoch=epoch,
            loss=loss if math.isfinite(loss) else None,  # strict JSON has no NaN
            tokens_per_second=tokens_per_second,
            eta_seconds=eta_seconds,
            updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            last_checkpoint_step=self._last_checkpoint_step,
            checkpoint_save_seconds=self._last_save_seconds,
            step_seconds=step_seconds,
            peak_memory_bytes=self._peak_memory(),
            gpu_utilization=self._utilization,
            mfu=mfu_ratio if mfu_ratio > 0 else None,
            gpu_energy_joules=gpu_energy_joules,
        )
        self._apply_eval(self._progress)
        if write_file and self.progress_path is not None:
            write_progress(self.progress_path, self._progress)

    def _apply_eval(self, progress: Progress) -> None:
        record = self._eval
        if record is None:
            return
        progress.early_stopped = self._early_stopped
        progress.eval_loss = record.loss if math.isfinite(record.loss) else None
        progress.eval_perplexity = record.perplexity
        progress.eval_step = record.step
        progress.best_step = record.best_step
        progress.best_eval_loss = record.best_loss
        progress.overfitting = record.overfitting

    def record_eval(self, record: EvalRecord) -> None:
        """An evaluation finished: gauges now, the progress file with it."""
        if not self.enabled:
            return
        self._eval = record
        self.events.scalars(
            record.step, {"eval/loss": record.loss, "eval/perplexity": record.perplexity}
        )
        self.eval_loss.set(record.loss)
        self.eval_perplexity.set(record.perplexity if record.perplexity is not None else math.inf)
        self.overfitting.set(1.0 if record.overfitting else 0.0)
        if self._progress is not None:
            self._apply_eval(self._progress)
            if self.progress_path is not None:
                write_progress(self.progress_path, self._progress)

    def mark_early_stopped(self) -> None:
        """The run ends before its planned steps because the eval loss stopped improving."""
        self._early_stopped = True
        if self._progress is not None:
            self._apply_eval(self._progress)

    def finish(self, state: str) -> None:
        """Write the final progress state (``succeeded``, ``preempted``, ``failed``)."""
        self.events.close()
        if not self.enabled or self._progress is None:
            return
        self._progress.state = state
        if state == "succeeded":
            self._progress.eta_seconds = 0.0
        if self.progress_path is not None:
            write_progress(self.progress_path, self._progress)

    def count(self, counter: Counter, amount: float = 1.0) -> None:
        if self.enabled:
            counter.inc(amount)

    def observe_checkpoint(self, seconds: float, *, step: int | None = None) -> None:
        """A checkpoint was published: its save time, and ``step`` for the progress."""
        if not self.enabled:
            return
        self.checkpoint_save_seconds.observe(seconds)
        self.events.flush()  # the events reach the volume with each checkpoint
        self._last_save_seconds = seconds
        if self._progress is not None:
            self._progress.checkpoint_save_seconds = seconds
        published = time.time()
        if self._last_checkpoint_time is not None:
            self.checkpoint_interval.set(published - self._last_checkpoint_time)
        self._last_checkpoint_time = published
        self.last_checkpoint_timestamp.set(published)
        if step is not None:
            self.last_checkpoint_step.set(step)
            self._last_checkpoint_step = step
            if self._progress is not None:
                self._progress.last_checkpoint_step = step

    def close(self) -> None:
        self.events.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
