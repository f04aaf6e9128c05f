"""When to stop and when to warn, from the evaluation history: pure rules, no torch.

- :class:`EarlyStopping`: an evaluation *improves* when its eval loss is below the
  best so far by more than ``min_delta``; after ``patience`` evaluations in a row
  without an improvement the run stops, and the best evaluation's checkpoint is the
  one to keep (Prechelt, "Early Stopping - But When?", 1998: the "patience"
  criterion; Keras' and Hugging Face's ``EarlyStoppingCallback`` count the same way).
- :class:`OverfitWatch`: *overfitting* is ``evaluations`` evaluations in a row where
  the training loss fell and the eval loss rose, each against the evaluation
  before it. The training loss is the mean over the steps since that evaluation,
  so one noisy step does not decide it.

Both keep their state in a plain dict for the checkpoint, so a resumed run
continues the same count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["OVERFITTING_ADVICE", "EarlyStopping", "OverfitWatch"]

OVERFITTING_ADVICE = (
    "the training loss kept falling while the eval loss rose for {evaluations} evaluations "
    "in a row (best eval loss {best_loss:.4f} at step {best_step}): the model is memorising "
    "the training data; stop at the best checkpoint, train fewer epochs, lower the learning "
    "rate or the LoRA rank, or add data"
)


@dataclass
class EarlyStopping:
    """Patience on the eval loss; ``patience`` None never stops but still tracks the best."""

    patience: int | None
    min_delta: float = 0.0
    best_loss: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0

    def observe(self, step: int, eval_loss: float) -> bool:
        """Record the evaluation at ``step``; True when it is the new best."""
        if self.best_loss is None or eval_loss < self.best_loss - self.min_delta:
            self.best_loss = eval_loss
            self.best_step = step
            self.evaluations_without_improvement = 0
            return True
        self.evaluations_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evaluations_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "evaluations_without_improvement": self.evaluations_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = state.get("best_loss")
        self.best_step = state.get("best_step")
        self.evaluations_without_improvement = int(state.get("evaluations_without_improvement", 0))


@dataclass
class OverfitWatch:
    """Train loss down and eval loss up, ``evaluations`` evaluations in a row."""

    evaluations: int
    history: list[tuple[float, float]] = field(default_factory=list)

    def observe(self, train_loss: float, eval_loss: float) -> bool:
        """Add one evaluation's (mean train loss, eval loss); True while overfitting."""
        self.history.append((train_loss, eval_loss))
        del self.history[: -(self.evaluations + 1)]
        return self.overfitting

    @property
    def overfitting(self) -> bool:
        if len(self.history) < self.evaluations + 1:
            return False
        pairs = zip(self.history, self.history[1:], strict=False)
        return all(later[0] < earlier[0] and later[1] > earlier[1] for earlier, later in pairs)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(pair) for pair in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(float(t), float(e)) for t, e in state.get("history", [])]
