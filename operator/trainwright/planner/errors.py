"""The planner's errors: each ``str(e)`` is one sentence a user can act on.

PlannerError                 bad or impossible request (base class)
├── UnknownModelError        model name not in the catalog; ``.suggestions``
├── UnknownGpuError          GPU name not in the catalog; ``.suggestions``
└── InfeasibleError          nothing fits; ``.min_memory_bytes`` per GPU
"""

from __future__ import annotations


class PlannerError(ValueError):
    """A request the planner cannot serve; the message names the field at fault."""


class UnknownModelError(PlannerError):
    """The model is neither a catalog key nor a known Hugging Face alias."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown model {name!r}{hint} (see `trainwright models`, or pass a config.json path)"
        )


class UnknownGpuError(PlannerError):
    """The GPU is not a catalog key or alias."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown GPU {name!r}{hint} (see `trainwright gpus`)")


class InfeasibleError(PlannerError):
    """No GPU type, count or strategy fits; ``min_memory_bytes`` is the least per-GPU need."""

    def __init__(self, reason: str, min_memory_bytes: int) -> None:
        self.reason = reason
        self.min_memory_bytes = min_memory_bytes
        gib = min_memory_bytes / 2**30
        super().__init__(f"{reason}; the smallest plan needs {gib:.1f} GiB per GPU")
