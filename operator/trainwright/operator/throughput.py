"""Observed tokens/s against the plan: the readings kept in status, ``ThroughputBelowPlan``.

Every progress read of a Running TrainingJob appends (time, tokens/s) to
``status.throughput`` (:func:`add_sample`), which keeps the readings of the last
window and a half, at most ``MAX_SAMPLES``. From them, pure functions with the
clock passed in:

- :func:`below_plan_condition`: the ``ThroughputBelowPlan`` condition. It turns True
  once every reading for ``window`` seconds (10 minutes by default; the operator's
  ``--throughput-window``) was under ``BELOW_PLAN_RATIO`` (70%) of the planned
  tokens/s, and False again when a reading reaches it. The message gives both
  figures (the window's median) and the likely limit.
- :func:`steady_tokens_per_second`: the median over at least ``steady`` seconds of
  readings, the figure the calibration store records.

The likely limit uses what the trainer reports in ``/progress`` (rank 0's GPU):
``peak_memory_bytes`` against the plan's GPU memory (at 95% or more: memory, the
allocator is at the ceiling and the trainer's out-of-memory ladder may have shrunk
the micro-batch), and ``gpu_utilization`` (NVML; under 60% the GPU waits on
something: the input pipeline on one node, inter-node communication across several).
With neither signal (a CPU run, no driver) the message says the metrics do not tell.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from trainwright.api.v1alpha1.trainingjob import PlanStatus, ProgressStatus, ThroughputSample
from trainwright.operator.status import (
    conditions_equal_ignoring_time,
    find_condition,
    set_condition,
)

CONDITION = "ThroughputBelowPlan"
BELOW_PLAN_RATIO = 0.7
DEFAULT_WINDOW_SECONDS = 600.0
MAX_SAMPLES = 64  # status.throughput's maxItems
MEMORY_CEILING = 0.95
IDLE_UTILIZATION = 0.6
GIB = 2**30


def add_sample(
    samples: Sequence[ThroughputSample],
    tokens_per_second: float,
    *,
    now: datetime.datetime,
    window: float = DEFAULT_WINDOW_SECONDS,
) -> list[ThroughputSample]:
    """``samples`` with this reading appended; older than 1.5 windows or past the cap dropped."""
    kept = [s for s in samples if (now - s.time).total_seconds() <= 1.5 * window]
    kept.append(ThroughputSample(time=now, tokens_per_second=tokens_per_second))
    return kept[-MAX_SAMPLES:]


def steady_tokens_per_second(samples: Sequence[ThroughputSample], *, steady: float) -> float | None:
    """Median tokens/s once the readings span ``steady`` seconds; None before."""
    positive = [s for s in samples if s.tokens_per_second > 0]
    if len(positive) < 2 or (positive[-1].time - positive[0].time).total_seconds() < steady:
        return None
    return statistics.median(s.tokens_per_second for s in positive)


def likely_limit(progress: ProgressStatus | None, plan: PlanStatus) -> str:
    """What the trainer's own metrics point at, in a clause (see the module docstring)."""
    peak = progress.peak_memory_bytes if progress is not None else None
    utilization = progress.gpu_utilization if progress is not None else None
    capacity = plan.memory_capacity_bytes
    if peak is not None and capacity and peak >= MEMORY_CEILING * capacity:
        return (
            f"likely limit: memory (rank 0's peak {peak / GIB:.1f} of {capacity / GIB:.0f} GiB; "
            "the allocator is at the ceiling or the micro-batch was lowered)"
        )
    if utilization is not None and utilization < IDLE_UTILIZATION:
        if plan.nodes > 1:
            return (
                f"likely limit: communication (the GPU is busy {utilization:.0%} of the time "
                f"across {plan.nodes} nodes)"
            )
        return (
            f"likely limit: the input pipeline (the GPU is busy {utilization:.0%} of the time "
            "on one node, with no collective across nodes to wait for)"
        )
    if utilization is None and peak is None:
        return "the trainer reports no GPU metrics, so the limit is not known"
    return "the GPU is busy and below its memory ceiling, so the kernels themselves are slower"


def below_plan_condition(
    samples: Sequence[ThroughputSample],
    plan: PlanStatus,
    progress: ProgressStatus | None,
    *,
    now: datetime.datetime,
    window: float = DEFAULT_WINDOW_SECONDS,
    currently_true: bool = False,
) -> tuple[bool, str, str] | None:
    """(status, reason, message) of ``ThroughputBelowPlan``; None leaves it as it is.

    True when every reading of the last ``window`` seconds or more was under
    ``BELOW_PLAN_RATIO`` of the plan; False (only once it had been True) when the
    newest reading is back at or above it.
    """
    planned = plan.tokens_per_second
    if planned <= 0 or not samples:
        return None
    threshold = BELOW_PLAN_RATIO * planned
    newest = samples[-1]
    if newest.tokens_per_second >= threshold:
        if not currently_true:
            return None
        return (
            False,
            "ThroughputMeetsPlan",
            f"Observed {newest.tokens_per_second:,.0f} tokens/s, "
            f"{newest.tokens_per_second / planned:.0%} of the planned {planned:,.0f}.",
        )
    trailing: list[ThroughputSample] = []  # the readings since the last one at or above
    for sample in reversed(samples):
        if sample.tokens_per_second >= threshold:
            break
        trailing.insert(0, sample)
    if (now - trailing[0].time).total_seconds() < window:
        return None
    start = now - datetime.timedelta(seconds=window)
    in_window = [s for s in trailing if s.time >= start] or trailing[-1:]
    observed = statistics.median(s.tokens_per_second for s in in_window)
    minutes = window / 60
    return (
        True,
        "ThroughputBelowPlan",
        f"Observed {observed:,.0f} tokens/s (median of the last {minutes:g} min), "
        f"{observed / planned:.0%} of the planned {planned:,.0f} tokens/s, under "
        f"{BELOW_PLAN_RATIO:.0%} for {minutes:g} min; {likely_limit(progress, plan)}.",
    )


def throughput_patch(
    status: Mapping[str, Any],
    conditions: list[dict[str, Any]] | None,
    progress: ProgressStatus,
    *,
    generation: int,
    now: datetime.datetime,
    window: float = DEFAULT_WINDOW_SECONDS,
) -> dict[str, Any]:
    """The status patch for one progress reading: ``throughput`` with it appended and, when
    it changes, ``conditions`` (starting from ``conditions`` if the caller already set them).
    """
    if progress.tokens_per_second is None or not status.get("plan"):
        return {}
    plan = PlanStatus.model_validate(status["plan"])
    samples = add_sample(
        [ThroughputSample.model_validate(s) for s in status.get("throughput") or []],
        progress.tokens_per_second,
        now=now,
        window=window,
    )
    patch: dict[str, Any] = {"throughput": [s.to_manifest() for s in samples]}
    current = list(conditions if conditions is not None else status.get("conditions") or [])
    existing = find_condition(current, CONDITION)
    verdict = below_plan_condition(
        samples,
        plan,
        progress,
        now=now,
        window=window,
        currently_true=existing is not None and existing.get("status") == "True",
    )
    if verdict is not None:
        value, reason, message = verdict
        updated = set_condition(
            current,
            type_=CONDITION,
            status=value,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
        if not conditions_equal_ignoring_time(current, updated):
            patch["conditions"] = updated
    return patch
