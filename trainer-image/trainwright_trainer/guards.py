"""Guards that keep a long run alive: agreed flags, non-finite skips, spikes, the OOM ladder.

Every decision that changes what a rank does next (skip this step, save and
stop, shrink the micro-batch) is *agreed*: each rank contributes a local flag
and one ``all_reduce(MAX)`` over a small tensor makes every rank see the same
answer, so no rank waits in a collective the others never enter.

- :func:`agree_flags` is that reduction (the loop folds its per-step flags into
  the same all_reduce as the loss sums).
- :class:`PreemptionSignal` turns SIGTERM into a flag read at the next step boundary.
- :class:`SpikeDetector` flags a loss above ``factor`` x the running median of the
  last ``window`` accepted losses; ``patience`` spikes in a row ask for a rollback.
- :class:`OomLadder` is the fixed sequence of remedies: halve the micro-batch and
  double accumulation (same global batch) while the micro-batch is above 1, then
  turn on gradient checkpointing, then give up (the operator re-plans).
"""

from __future__ import annotations

import enum
import signal
import statistics
from collections import deque
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "OomLadder",
    "OomRung",
    "PreemptionSignal",
    "SpikeDetector",
    "SpikeVerdict",
    "agree_flags",
]


def agree_flags(flags: list[bool], device: torch.device | None = None) -> list[bool]:
    """Element-wise logical OR of ``flags`` over all ranks (one all_reduce MAX)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(flags)
    tensor = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


class PreemptionSignal:
    """Records SIGTERM (pod deletion, spot preemption) so the loop saves at the next step.

    The handler only sets a flag: saving from inside a signal handler would
    race the training step and the collectives. Kubernetes sends SIGTERM and
    waits ``terminationGracePeriodSeconds`` before SIGKILL; one step plus one
    save must fit in that grace period.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.received = False
        self._signals = signals
        self._previous: dict[int, Any] = {}

    def install(self) -> PreemptionSignal:
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True


class SpikeVerdict(enum.Enum):
    OK = "ok"
    SPIKE = "spike"
    ROLLBACK = "rollback"


class SpikeDetector:
    """Loss spikes against a running median (robust to the spikes themselves).

    A loss is a spike when ``loss > factor * median(last window accepted losses)``;
    spikes are not added to the window, so a burst cannot raise its own bar.
    The detector needs ``min(window, 8)`` accepted losses before it judges, so
    the steep start of training is never mistaken for a spike.
    """

    def __init__(self, *, window: int, factor: float, patience: int) -> None:
        if window < 2 or factor <= 1 or patience < 1:
            raise ValueError("window >= 2, factor > 1 and patience >= 1 are required")
        self.window = window
        self.factor = factor
        self.patience = patience
        self._history: deque[float] = deque(maxlen=window)
        self.consecutive = 0
        self.total_spikes = 0

    @property
    def warm(self) -> bool:
        return len(self._history) >= min(self.window, 8)

    def median(self) -> float | None:
        return statistics.median(self._history) if self._history else None

    def observe(self, loss: float) -> SpikeVerdict:
        median = self.median()
        if self.warm and median is not None and loss > self.factor * median:
            self.consecutive += 1
            self.total_spikes += 1
            if self.consecutive >= self.patience:
                self.consecutive = 0
                return SpikeVerdict.ROLLBACK
            return SpikeVerdict.SPIKE
        self.consecutive = 0
        self._history.append(loss)
        return SpikeVerdict.OK

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self._history),
            "consecutive": self.consecutive,
            "total_spikes": self.total_spikes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._history = deque((float(v) for v in state["history"]), maxlen=self.window)
        self.consecutive = int(state["consecutive"])
        self.total_spikes = int(state["total_spikes"])


@dataclass(frozen=True)
class OomRung:
    """One setting of the ladder: what the next attempt at the step runs with."""

    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool

    @property
    def sequences_per_step(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps


class OomLadder:
    """The remedies for out-of-memory, in order, keeping sequences per step constant."""

    def __init__(self, start: OomRung) -> None:
        self.current = start
        self.events = 0

    def next_rung(self) -> OomRung | None:
        """The next remedy after an agreed OOM, or None when the ladder is exhausted."""
        self.events += 1
        rung = self.current
        if rung.micro_batch_size > 1 and rung.micro_batch_size % 2 == 0:
            self.current = OomRung(
                rung.micro_batch_size // 2,
                rung.gradient_accumulation_steps * 2,
                rung.gradient_checkpointing,
            )
            return self.current
        if not rung.gradient_checkpointing:
            self.current = OomRung(rung.micro_batch_size, rung.gradient_accumulation_steps, True)
            return self.current
        return None

    def state_dict(self) -> dict[str, Any]:
        rung = self.current
        return {
            "micro_batch_size": rung.micro_batch_size,
            "gradient_accumulation_steps": rung.gradient_accumulation_steps,
            "gradient_checkpointing": rung.gradient_checkpointing,
            "events": self.events,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = OomRung(
            int(state["micro_batch_size"]),
            int(state["gradient_accumulation_steps"]),
            bool(state["gradient_checkpointing"]),
        )
        self.events = int(state["events"])
