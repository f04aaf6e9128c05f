"""Training progress for ``status.progress``, read from the trainer's rank-0 pod.

Rank 0 of the trainer serves its progress as JSON at ``/progress`` on the container
port named ``metrics`` (``trainwright_trainer.metrics``): step, total steps, epoch,
loss, tokens/s, ETA and the newest published checkpoint. While a TrainingJob is
Running the operator reads it every ``PROGRESS_SECONDS`` and writes it to status, so
``kubectl get tj`` shows step, loss and ETA. A trainer that cannot be reached (not
listening yet, or an operator outside the pod network) leaves the last progress in
place; progress is information, never a reason to fail a run.

With held-out data the trainer also reports the eval loss and perplexity, the best
checkpoint's step, whether the run stopped early, and ``overfitting`` (train loss
falling while eval loss rises for several evaluations); :func:`overfitting_condition`
turns the last into the ``Overfitting`` condition with a sentence of advice.
The last step's MFU and the energy all ranks' GPUs drew feed ``status.usage``
(:mod:`trainwright.operator.usage`).
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from trainwright.api.v1alpha1.trainingjob import ProgressStatus
from trainwright.resources.trainer import METRICS_PORT

# How often a Running TrainingJob's progress is read (seconds).
PROGRESS_SECONDS = 30.0
# Connect within 1 s (an unreachable pod IP must not hold a worker), answer within 3 s.
PROGRESS_TIMEOUT_SECONDS = 3.0
PROGRESS_CONNECT_SECONDS = 1.0
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"

logger = logging.getLogger(__name__)


def metrics_endpoint(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """The rank-0 pod's IP and its ``metrics`` container port, once it has an IP."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    port = METRICS_PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        for entry in container.get("ports") or []:
            if entry.get("name") == "metrics" and entry.get("containerPort"):
                port = int(entry["containerPort"])
    return str(ip), port


_client_lock = threading.Lock()
_client: Any = None  # one httpx.Client for every read (thread-safe, pooled)


def _http_client() -> Any:
    """The shared client: ``httpx.get`` built a client per call, TLS context included (CA
    bundle loaded from disk), for every Running job every 30 s."""
    global _client
    import httpx

    with _client_lock:
        if _client is None:
            timeout = httpx.Timeout(PROGRESS_TIMEOUT_SECONDS, connect=PROGRESS_CONNECT_SECONDS)
            _client = httpx.Client(timeout=timeout, trust_env=False)
        return _client


def fetch_progress(ip: str, port: int) -> dict[str, Any] | None:
    """``GET http://ip:port/progress``; None when the trainer cannot be reached or says nothing."""
    import httpx

    host = f"[{ip}]" if ":" in ip else ip
    try:
        response = _http_client().get(f"http://{host}:{port}/progress")
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        logger.debug("no progress from %s:%d: %s", ip, port, exc)
        return None
    return document if isinstance(document, dict) and document else None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


OVERFITTING_CONDITION = "Overfitting"


def overfitting_condition(progress: ProgressStatus) -> tuple[bool, str, str] | None:
    """(status, reason, message) of the ``Overfitting`` condition; None without evaluations."""
    if progress.overfitting is None:
        return None
    if not progress.overfitting:
        return False, "EvalLossFollowsTrainLoss", "The eval loss is not rising while training."
    best = ""
    if progress.best_step is not None and progress.best_eval_loss is not None:
        best = f" The best checkpoint is step {progress.best_step} (eval loss "
        best += f"{progress.best_eval_loss:.4f}, in best.json)."
    return (
        True,
        "EvalLossRising",
        "The training loss keeps falling while the eval loss rises: the model is memorising "
        "its training data. Set evaluation.earlyStoppingPatience to stop at the best "
        "checkpoint, or train fewer epochs, lower the learning rate or the LoRA rank, "
        f"or add data.{best}",
    )


def progress_status(
    document: Mapping[str, Any], *, now: datetime.datetime
) -> ProgressStatus | None:
    """The status block for one ``/progress`` document; None if it is not one.

    ``updatedTime`` is when the trainer wrote it (``updated_at``), else ``now``.
    """
    if not isinstance(document.get("step"), int):
        return None
    updated = now
    stamp = document.get("updated_at")
    if isinstance(stamp, str):
        try:
            updated = datetime.datetime.fromisoformat(stamp)
        except ValueError:
            updated = now
    try:
        return ProgressStatus(
            step=document["step"],
            total_steps=document.get("total_steps"),
            epoch=_finite(document.get("epoch")),
            loss=_finite(document.get("loss")),
            tokens_per_second=_finite(document.get("tokens_per_second")),
            eta_seconds=_finite(document.get("eta_seconds")),
            last_checkpoint_step=document.get("last_checkpoint_step"),
            checkpoint_save_seconds=_finite(document.get("checkpoint_save_seconds")),
            step_seconds=_finite(document.get("step_seconds")),
            eval_loss=_finite(document.get("eval_loss")),
            eval_perplexity=_finite(document.get("eval_perplexity")),
            eval_step=document.get("eval_step"),
            best_step=document.get("best_step"),
            best_eval_loss=_finite(document.get("best_eval_loss")),
            overfitting=_flag(document.get("overfitting")),
            early_stopped=_flag(document.get("early_stopped")),
            peak_memory_bytes=_count(document.get("peak_memory_bytes")),
            gpu_utilization=_finite(document.get("gpu_utilization")),
            mfu=_finite(document.get("mfu")),
            gpu_energy_joules=_finite(document.get("gpu_energy_joules")),
            updated_time=updated,
        )
    except ValidationError as exc:
        logger.debug("progress document rejected: %s", exc)
        return None
