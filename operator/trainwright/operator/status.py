"""Phases and conditions: how the operator reports what it decided, in ``status``.

Conditions follow the Kubernetes API conventions (``metav1.Condition``): one
entry per ``type``, ``status`` is ``"True"``, ``"False"`` or ``"Unknown"``,
``reason`` is CamelCase, and ``lastTransitionTime`` changes only when
``status`` does. Every function here is pure: the handlers pass in the current
status and the time, and write back what these return.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from trainwright.api.v1alpha1.common import Condition as ApiCondition
from trainwright.api.v1alpha1.common import ConditionStatus
from trainwright.api.v1alpha1.common import set_condition as api_set_condition

Condition = dict[str, Any]


class Phase(enum.StrEnum):
    """The one word a person reads first (CONTRACTS.md, status conventions)."""

    PENDING = "Pending"
    PLANNED = "Planned"
    # Admitted by neither Kueue (spec.queue) nor the operator's own gang check yet.
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class ConditionType(enum.StrEnum):
    PLANNED = "Planned"
    # The whole gang may start: Kueue admitted its Workload, or its pods fit on free GPUs.
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    READY = "Ready"


def utc_timestamp(now: datetime.datetime) -> str:
    """RFC 3339 with seconds precision and a ``Z``, as the API server writes times."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime.datetime,
) -> list[Condition]:
    """Return ``conditions`` (as status dicts) with the entry of ``type_`` replaced or added.

    ``status`` None means ``"Unknown"``. The API models' ``set_condition`` keeps
    the transition time when the status is unchanged, so re-running a
    reconcile is not a transition.
    """
    status_text: ConditionStatus = "Unknown" if status is None else ("True" if status else "False")
    updated = api_set_condition(
        [ApiCondition.model_validate(c) for c in conditions],
        type=type_,
        status=status_text,
        reason=reason,
        message=message,
        observed_generation=generation,
        now=now.replace(microsecond=0),
    )
    return [c.to_manifest() for c in updated]


def find_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def condition_is_true(conditions: Sequence[Mapping[str, Any]], type_: str) -> bool:
    condition = find_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def conditions_equal_ignoring_time(
    left: Sequence[Mapping[str, Any]], right: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether two condition lists say the same thing (so no status write is needed)."""

    def key(conditions: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (
                c.get("type"),
                c.get("status"),
                c.get("reason"),
                c.get("message"),
                c.get("observedGeneration"),
            )
            for c in conditions
        )

    return key(left) == key(right)


def status_patch(
    current: Mapping[str, Any],
    *,
    phase: Phase,
    conditions: Sequence[Mapping[str, Any]],
    generation: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The merge patch for ``status``, or None when the status already says all of it.

    Skipping no-op writes keeps a level-based reconcile quiet: running it again
    on an unchanged object writes nothing and fires no watch event.
    """
    patch: dict[str, Any] = {}
    if current.get("phase") != phase.value:
        patch["phase"] = phase.value
    if current.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    if not conditions_equal_ignoring_time(current.get("conditions") or [], conditions):
        patch["conditions"] = [dict(c) for c in conditions]
    for key, value in (extra or {}).items():
        if current.get(key) != value:
            patch[key] = value
    return patch or None
