"""The TrainingJob state machine in one place: phases, conditions, reasons, exit codes.

:data:`TRANSITIONS` lists every move between phases the controller makes, with
the condition it sets and that condition's reason; :data:`EXIT_RULES` says what
the operator does after a failed attempt for each of the trainer's exit codes
(:mod:`trainwright_trainer.exitcodes`). ``trainingjob.py`` and ``lifecycle.py``
take their phases, reasons and decisions from here, and ``docs/operator.md``
shows :func:`render_markdown`'s output (a test fails on drift:
``python -m trainwright.operator.transitions`` prints it).

Pure data and functions: no API calls.
"""

from __future__ import annotations

import dataclasses
import enum

from trainwright.operator.status import ConditionType, Phase
from trainwright_trainer.exitcodes import PERMANENT_EXIT_CODES, ExitCode

# The state before the first reconcile writes a phase (the diagram's start).
NEW = "[*]"


class Action(enum.Enum):
    """What the operator does after an attempt failed."""

    FAIL = "fail"
    RESTART = "restart"  # attempt N+1 from the last checkpoint
    REPLAN = "replan"  # attempt N+1 on a new plan with more memory headroom


@dataclasses.dataclass(frozen=True)
class ExitRule:
    """The operator's answer to one exit code of a failed attempt.

    ``action`` applies while restarts remain; ``exhausted`` (the ``Failed`` reason) once
    ``spec.maxRestarts`` is used up, or at once for a permanent code. ``message`` is the
    Failed condition's sentence for a permanent code: what happened and what to do.
    """

    action: Action
    reason: str
    exhausted: str
    message: str = ""


EXIT_RULES: dict[ExitCode, ExitRule] = {
    ExitCode.CONFIG_ERROR: ExitRule(
        Action.FAIL,
        "ConfigError",
        "ConfigError",
        f"The trainer rejected its configuration (exit code {int(ExitCode.CONFIG_ERROR)}); "
        "fix the spec and re-apply.",
    ),
    ExitCode.DATA_ERROR: ExitRule(
        Action.FAIL,
        "DataError",
        "DataError",
        f"The trainer could not use the dataset (exit code {int(ExitCode.DATA_ERROR)}); "
        "check spec.dataset.",
    ),
    ExitCode.DIVERGED: ExitRule(
        Action.FAIL,
        "Diverged",
        "Diverged",
        "The loss kept spiking after every rollback to the last checkpoint "
        f"(exit code {int(ExitCode.DIVERGED)}): "
        "the run diverges at this learning rate; lower spec.training.learningRate or look "
        "for bad rows in the dataset, then re-apply (a restart would only diverge again).",
    ),
    ExitCode.NEEDS_REPLAN: ExitRule(Action.REPLAN, "Replanning", "NeedsReplan"),
    ExitCode.RETRYABLE: ExitRule(Action.RESTART, "Restarting", "BackoffLimitExceeded"),
}
# A crash (segfault, 137 = OOM-killed, an unknown code, no code at all): retryable.
CRASH_RULE = ExitRule(Action.RESTART, "Restarting", "BackoffLimitExceeded")


def exit_rule(exit_code: int | None) -> ExitRule:
    """The rule for a failed attempt's exit code; unknown codes and None are crashes."""
    if exit_code is None:
        return CRASH_RULE
    try:
        return EXIT_RULES.get(ExitCode(exit_code), CRASH_RULE)
    except ValueError:
        return CRASH_RULE


def exit_code_rank(code: int) -> int:
    """Which exit code explains a failure best when ranks disagree.

    One rank's permanent error makes the others lose their peer (75) or be killed
    (137); the permanent code is the cause, so it wins, then a re-plan, then the
    retryable code, then a bare crash.
    """
    rule = exit_rule(code)
    if rule.action is Action.FAIL or code in PERMANENT_EXIT_CODES:
        return 0
    if rule.action is Action.REPLAN:
        return 1
    return 3 if rule is CRASH_RULE else 2


# Gang admission (trainwright.operator.admission): the Admitted condition's reasons.
WAITING_FOR_ADMISSION = "WaitingForAdmission"  # spec.queue: Kueue has not admitted it
WAITING_FOR_CAPACITY = "WaitingForCapacity"  # no queue: the gang does not fit on free GPUs
ADMITTED = "Admitted"
PREEMPTED = "Preempted"  # Kueue suspended a running gang for a higher priority
EVICTED = "Evicted"  # Kueue suspended it for another reason (PodsReady timeout, ...)
QUEUE_NOT_FOUND = "QueueNotFound"  # a planning failure: spec.queue names no LocalQueue

# Infrastructure failures (trainwright.operator.node_failures): a node holding a trainer pod
# went NotReady/Unknown or was deleted, or a pod was evicted or deleted by someone else. The
# whole gang restarts from the last checkpoint without using spec.maxRestarts
# (status.infrastructureRestarts counts them), up to a bound: more than
# MAX_INFRASTRUCTURE_RESTARTS within INFRASTRUCTURE_WINDOW_SECONDS is no longer bad luck (the
# Llama 3 rate, one failure per ~50,000 GPU-hours, gives a 64-GPU job one per ~33 days) but a
# cause a restart does not cure (a partition, the job crashing its own nodes), and each
# restart costs a model reload and the steps since the last checkpoint.
NODE_FAILURE = "NodeFailure"
INFRASTRUCTURE_RESTARTS_EXCEEDED = "InfrastructureRestartsExceeded"
MAX_INFRASTRUCTURE_RESTARTS = 5
INFRASTRUCTURE_WINDOW_SECONDS = 3600.0
# A node that failed the same job this many times is kept out of its later attempts
# (required node anti-affinity on kubernetes.io/hostname).
AVOID_NODE_AFTER_FAILURES = 2

# Planning failures a spec edit can cure; a run that failed stays failed.
PLANNING_REASONS = frozenset(
    {"InvalidSpec", "DoesNotFit", "InsufficientCapacity", "DataError", QUEUE_NOT_FOUND}
)
# Run failures that only ran out of restarts: raising spec.maxRestarts resumes the run.
OUT_OF_RESTARTS_REASONS = frozenset({"BackoffLimitExceeded", "NeedsReplan"})


@dataclasses.dataclass(frozen=True)
class Transition:
    """One move of the TrainingJob: ``source`` → ``target`` when ``trigger`` happens,
    setting condition ``condition`` to ``status`` with ``reason``."""

    source: str
    target: str
    trigger: str
    condition: str
    status: bool
    reason: str


def _t(
    sources: tuple[str, ...], target: str, trigger: str, condition: str, status: bool, reason: str
) -> list[Transition]:
    return [Transition(s, target, trigger, condition, status, reason) for s in sources]


_P, _R, _S, _F, _D = Phase.PLANNED, Phase.RUNNING, Phase.SUSPENDED, Phase.FAILED, Phase.SUCCEEDED
_Q = Phase.QUEUED
_C = ConditionType
_ACTIVE = (_P.value, _R.value)

TRANSITIONS: tuple[Transition, ...] = tuple(
    [
        *_t((NEW,), _P, "plan stored, children created", _C.PLANNED, True, "Planned"),
        *_t((NEW,), _F, "a spec field is invalid", _C.PLANNED, False, "InvalidSpec"),
        *_t((NEW,), _F, "no layout fits in GPU memory", _C.PLANNED, False, "DoesNotFit"),
        *_t((NEW,), _F, "the cluster lacks the nodes", _C.PLANNED, False, "InsufficientCapacity"),
        *_t(
            (NEW,),
            _F,
            "the dataset check's pod finds rows the trainer would refuse (before any GPU)",
            _C.PLANNED,
            False,
            "DataError",
        ),
        *_t((_P,), _P, "the Job's pods are not ready yet", _C.RUNNING, False, "WaitingForPods"),
        *_t(
            (_P,),
            _P,
            "a pod cannot start (scheduler, image, init container)",
            _C.RUNNING,
            False,
            "PodsNotStarting",
        ),
        *_t(
            (_P,),
            _P,
            "a PersistentVolumeClaim the spec names is missing (the pods wait for it)",
            _C.RUNNING,
            False,
            "MissingReference",
        ),
        *_t((_P,), _R, "the Job's pods are ready", _C.RUNNING, True, "PodsReady"),
        # Gang admission (trainwright.operator.admission): the Job is created suspended.
        *_t(
            (NEW,),
            _F,
            "the LocalQueue spec.queue names does not exist",
            _C.PLANNED,
            False,
            QUEUE_NOT_FOUND,
        ),
        *_t(
            (_P, _S),
            _Q,
            "spec.queue: Kueue has not admitted the gang's Workload yet",
            _C.ADMITTED,
            False,
            WAITING_FOR_ADMISSION,
        ),
        *_t(
            (_P, _S),
            _Q,
            "no spec.queue: the gang's pods do not all fit on free GPUs of the planned type",
            _C.ADMITTED,
            False,
            WAITING_FOR_CAPACITY,
        ),
        *_t(
            (_Q,),
            _P,
            "Kueue admitted the Workload, or all the gang's pods fit on free GPUs",
            _C.ADMITTED,
            True,
            ADMITTED,
        ),
        *_t(
            (_R, _P),
            _Q,
            "Kueue preempted the gang for a higher priority: it resumes from its checkpoint "
            "when admitted again, spec.maxRestarts untouched",
            _C.ADMITTED,
            False,
            PREEMPTED,
        ),
        *_t(
            (_R, _P),
            _Q,
            "Kueue evicted the gang (its pods not ready in time, the queue stopped, the "
            "Workload deactivated): it resumes from its checkpoint, spec.maxRestarts untouched",
            _C.ADMITTED,
            False,
            EVICTED,
        ),
        *_t((_Q,), _S, "spec.suspend: true", _C.SUSPENDED, True, "Suspended"),
        *_t(_ACTIVE, _D, "the Job completed", _C.SUCCEEDED, True, "Completed"),
        *_t(_ACTIVE, _S, "spec.suspend: true", _C.SUSPENDED, True, "Suspended"),
        *_t((_S,), _P, "spec.suspend: false", _C.SUSPENDED, False, "Resumed"),
        *[
            tr
            for code, rule in EXIT_RULES.items()
            for tr in _t(
                _ACTIVE,
                _F if rule.action is Action.FAIL else _P,
                f"exit code {int(code)}"
                + ("" if rule.action is Action.FAIL else ", restarts left"),
                _C.FAILED if rule.action is Action.FAIL else _C.RUNNING,
                rule.action is Action.FAIL,
                rule.reason,
            )
        ],
        *_t(_ACTIVE, _P, "a crash (other code), restarts left", _C.RUNNING, False, "Restarting"),
        *_t(
            _ACTIVE,
            _F,
            f"exit code {int(ExitCode.RETRYABLE)} or a crash, restarts used up",
            _C.FAILED,
            True,
            "BackoffLimitExceeded",
        ),
        *_t(
            _ACTIVE,
            _F,
            f"exit code {int(ExitCode.NEEDS_REPLAN)}, restarts used up or no other layout",
            _C.FAILED,
            True,
            "NeedsReplan",
        ),
        *_t(
            _ACTIVE,
            _P,
            "a node holding a trainer pod failed, or a pod was evicted or deleted: the gang "
            "restarts from its checkpoint, spec.maxRestarts untouched",
            _C.RUNNING,
            False,
            NODE_FAILURE,
        ),
        *_t(
            _ACTIVE,
            _F,
            f"a node failure after {MAX_INFRASTRUCTURE_RESTARTS} infrastructure restarts within "
            f"{INFRASTRUCTURE_WINDOW_SECONDS / 3600:g} h",
            _C.FAILED,
            True,
            INFRASTRUCTURE_RESTARTS_EXCEEDED,
        ),
        *_t(
            (_F,),
            _P,
            "spec.maxRestarts raised after BackoffLimitExceeded/NeedsReplan",
            _C.FAILED,
            False,
            "MaxRestartsRaised",
        ),
        *_t(
            (_P, _S, _F),
            _P,
            "spec edited (a planning failure, or no pod running)",
            _C.PLANNED,
            True,
            "Planned",
        ),
        *_t(
            (_F,),
            _P,
            "spec edited after a failure",
            _C.FAILED,
            False,
            "Replanned",
        ),
    ]
)

# The phase while the current attempt's Job is in each state (lifecycle.JobState values).
PHASE_FOR_JOB_STATE: dict[str, Phase] = {
    "Absent": Phase.PLANNED,
    "Waiting": Phase.PLANNED,
    "Running": Phase.RUNNING,
    "Suspended": Phase.SUSPENDED,
    "Succeeded": Phase.SUCCEEDED,
    "Failed": Phase.FAILED,
}


def reasons() -> frozenset[str]:
    """Every condition reason the TrainingJob controller can write."""
    return frozenset(t.reason for t in TRANSITIONS)


def render_mermaid() -> str:
    """The state diagram: one arrow per (source, target), labelled with its reasons."""
    edges: dict[tuple[str, str], list[str]] = {}
    for t in TRANSITIONS:
        labels = edges.setdefault((t.source, t.target), [])
        if t.reason not in labels:
            labels.append(t.reason)
    lines = ["```mermaid", "stateDiagram-v2"]
    for (source, target), labels in edges.items():
        lines.append(f"    {source} --> {target}: {', '.join(labels)}")
    lines += [f"    {_D.value} --> {NEW}", "```"]
    return "\n".join(lines)


def render_markdown() -> str:
    """The diagram, the transition table and the exit-code table, as docs/operator.md shows them."""
    rows = ["| from | to | when | condition | reason |", "|---|---|---|---|---|"]
    for t in TRANSITIONS:
        source = "(new)" if t.source == NEW else f"`{t.source}`"
        rows.append(
            f"| {source} | `{t.target}` | {t.trigger} | `{t.condition}={t.status}` | `{t.reason}` |"
        )
    codes = ["| exit code | name | restarts left | restarts used up |", "|---|---|---|---|"]
    for code, rule in sorted(EXIT_RULES.items()):
        left = f"`Failed`, `{rule.reason}`" if rule.action is Action.FAIL else rule.action.value
        codes.append(f"| {int(code)} | `{code.name}` | {left} | `Failed`, `{rule.exhausted}` |")
    codes.append(
        f"| other, or none | crash | {CRASH_RULE.action.value} | `Failed`, `{CRASH_RULE.exhausted}` |"
    )
    return "\n\n".join([render_mermaid(), "\n".join(rows), "\n".join(codes)]) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
