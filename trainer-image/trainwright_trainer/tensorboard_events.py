"""TensorBoard event files from rank 0, beside the checkpoints (``<checkpoint.dir>/tensorboard``).

The same figures as the Prometheus metrics, so a person with only the run's volume
(no Prometheus) can open ``tensorboard --logdir <checkpoint.dir>/tensorboard``:

    train/loss, train/learning_rate, train/grad_norm, train/tokens_per_second, train/mfu
    eval/loss, eval/perplexity

written with tensorboardX (a small pure-Python writer: the ``tensorboard`` package
would bring grpcio and a web server into the trainer image for no use there). Each
process writes its own event file, so a resumed run adds a file; steps it trains again
after a restart or a rollback appear twice, the later value last, as TensorBoard
expects of restarted runs. Without tensorboardX installed the writer is off.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["TENSORBOARD_DIR_NAME", "EventWriter"]

TENSORBOARD_DIR_NAME = "tensorboard"
# Seconds between flushes of the writer's queue to disk: a killed pod loses at most this.
FLUSH_SECONDS = 10


class EventWriter:
    """Scalars into a TensorBoard log directory; every call is a no-op when disabled."""

    def __init__(self, log_dir: Path | None) -> None:
        self._writer: Any = None
        if log_dir is None:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log.info("tensorboardX is not installed: no TensorBoard events")
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(logdir=str(log_dir), flush_secs=FLUSH_SECONDS)
        self.log_dir = log_dir

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """One point per tag at ``step``; None and non-finite values are left out."""
        if self._writer is None:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(tag, float(value), global_step=step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
