"""What a trainer Job's state means for its TrainingJob: pure decisions, no API calls.

The trainer's exit codes (``trainwright_trainer.exitcodes``) are the contract,
and :data:`trainwright.operator.transitions.EXIT_RULES` the operator's answer to
each: permanent codes fail the run, 76 re-plans with more memory per sample, and
75 or any crash is transient: the operator deletes the failed Job and starts the
next attempt, which resumes from the last complete checkpoint, until
``spec.maxRestarts``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from trainwright.api.v1alpha1 import PlanStatus
from trainwright.operator.status import Phase
from trainwright.operator.transitions import PHASE_FOR_JOB_STATE, exit_code_rank, exit_rule
from trainwright.operator.transitions import Action as Action
from trainwright_trainer.exitcodes import ExitCode


class JobState(enum.Enum):
    """Where a batch/v1 Job stands, from its ``status.conditions`` and counters."""

    ABSENT = "Absent"
    WAITING = "Waiting"  # created, no pod ready yet (scheduling, pulling)
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def job_state(job: Mapping[str, Any] | None) -> JobState:
    """Read a Job's state; ``Complete``/``Failed`` conditions win over the counters."""
    if job is None:
        return JobState.ABSENT
    status = job.get("status") or {}
    true_conditions = {
        c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    if "Complete" in true_conditions:
        return JobState.SUCCEEDED
    if "Failed" in true_conditions or "FailureTarget" in true_conditions:
        return JobState.FAILED
    if (job.get("spec") or {}).get("suspend"):
        return JobState.SUSPENDED
    if int(status.get("ready") or 0) > 0:
        return JobState.RUNNING
    return JobState.WAITING


def job_signature(job: Mapping[str, Any]) -> tuple[str, int, bool]:
    """What about a Job matters to its TrainingJob: state, ready pods, suspension.

    A Job's status changes often (active counts, uncounted pods, timestamps);
    events that leave this unchanged need no reconcile.
    """
    status = job.get("status") or {}
    suspended = bool((job.get("spec") or {}).get("suspend"))
    return job_state(job).value, int(status.get("ready") or 0), suspended


def job_failure_reason(job: Mapping[str, Any]) -> str:
    """The Job controller's reason for failing (``BackoffLimitExceeded``, ``DeadlineExceeded``)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Failed", "FailureTarget") and condition.get("reason"):
            return str(condition["reason"])
    return "JobFailed"


def failed_exit_code(pods: Iterable[Mapping[str, Any]]) -> int | None:
    """The exit code that explains a failed attempt, from its pods' terminated states.

    Returns None when no container has terminated with a non-zero code (the pod
    was evicted or deleted before it ran).
    """
    codes: list[int] = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            for state_key in ("state", "lastState"):
                terminated = (container.get(state_key) or {}).get("terminated") or {}
                code = terminated.get("exitCode")
                if isinstance(code, int) and code != 0:
                    codes.append(code)
    if not codes:
        return None
    return min(codes, key=lambda code: (exit_code_rank(code), code))


NEEDS_REPLAN_ADVICE = (
    "The trainer ran out of GPU memory even at its smallest micro-batch "
    f"(exit code {int(ExitCode.NEEDS_REPLAN)}); "
    "allow more GPUs (spec.resources) or choose a sharded strategy such as fsdp or zero3."
)


@dataclasses.dataclass(frozen=True)
class FailureDecision:
    """What to do after an attempt failed: its reason and message go to the Failed condition."""

    action: Action
    reason: str
    message: str


def decide_after_failure(
    *, exit_code: int | None, restarts: int, max_restarts: int, job_reason: str = "JobFailed"
) -> FailureDecision:
    """Fail for good, or start attempt ``restarts + 1`` (resuming from the checkpoint),
    as :data:`trainwright.operator.transitions.EXIT_RULES` says for ``exit_code``."""
    rule = exit_rule(exit_code)
    if rule.action is Action.FAIL:
        return FailureDecision(Action.FAIL, rule.reason, rule.message)
    if rule.action is Action.REPLAN:
        if restarts < max_restarts:
            return FailureDecision(
                Action.REPLAN,
                rule.reason,
                f"Attempt {restarts} ran out of GPU memory even at its smallest micro-batch "
                f"(exit code {exit_code}); planning again with more memory headroom for attempt "
                f"{restarts + 1}, which resumes from the last checkpoint.",
            )
        return FailureDecision(Action.FAIL, rule.exhausted, NEEDS_REPLAN_ADVICE)
    described = "exit code unknown" if exit_code is None else f"exit code {exit_code}"
    if restarts < max_restarts:
        return FailureDecision(
            Action.RESTART,
            rule.reason,
            f"Attempt {restarts} failed ({described}); starting attempt {restarts + 1} of "
            f"at most {max_restarts + 1}, resuming from the last checkpoint.",
        )
    return FailureDecision(
        Action.FAIL,
        rule.exhausted,
        f"Attempt {restarts} failed ({described}, {job_reason}) and the job has used all "
        f"{max_restarts} restarts allowed by spec.maxRestarts.",
    )


def same_gpus_and_strategy(a: PlanStatus, b: PlanStatus) -> bool:
    """Two plans exit 76 would end the same way: the trainer's out-of-memory ladder
    (halving the micro-batch down to 1, then gradient checkpointing) already tried what
    else a plan with these GPUs and this strategy could change."""
    return (a.gpu_type, a.num_gpus, a.strategy) == (b.gpu_type, b.num_gpus, b.strategy)


def phase_for_job_state(state: JobState) -> Phase:
    """The TrainingJob phase while its current attempt's Job is in ``state``."""
    return PHASE_FOR_JOB_STATE[state.value]
