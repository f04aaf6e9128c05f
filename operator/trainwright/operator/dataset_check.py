"""The dataset check: read the dataset in a CPU pod before a TrainingJob is planned.

Before the first plan (and again whenever what the check reads changes: the dataset's
URI or format, ``training.seqLen``, the model), the controller runs the check Job
(:mod:`trainwright.resources.dataset_check`) and keeps the TrainingJob ``Pending`` with
the condition ``DatasetChecked=Unknown`` until its pod has written the report. Then:

- ``Passed``: ``status.dataset`` holds the findings, and the plan's duration and cost
  use the measured token count (:func:`planning_job`) instead of
  ``spec.dataset.tokens``. An estimate (no local tokenizer) replaces only a missing
  ``spec.dataset.tokens``; a user's number is kept over a guess.
- ``Failed``: the trainer would refuse the file (unreadable, no valid row, or more bad
  rows than the trainer's ``data.max_bad_row_fraction``: the same threshold, so the check
  and the trainer never disagree). The job ends ``Failed`` with reason ``DataError`` and
  the first bad rows in its message, before any trainer Job or GPU exists.
- ``Skipped``: the check could not say (a URI the pod cannot read, such as ``s3://`` or
  ``hf://``; a pod that did not start within the operator's ``--dataset-check-start``; a
  check that crashed). The job is planned as before, with the reason in ``status.dataset``.

It runs unless turned off: the operator's ``--no-dataset-check`` (Helm
``operator.datasetCheck.enabled``), or per TrainingJob the annotation
``trainwright.io/dataset-check: "off"`` (``"on"`` runs it whatever the operator's default).
Pure decisions (:func:`parse_report`, :func:`dataset_status`, :func:`data_error_message`,
:func:`planning_job`) are apart from :func:`run_check`, the one function with effects.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Mapping
from typing import Any

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.api.v1alpha1.trainingjob import DatasetCheckStatus
from trainwright.operator import lifecycle
from trainwright.operator.context import OperatorContext
from trainwright.operator.lifecycle import JobState
from trainwright.operator.waiting import JOB_NAME_LABEL
from trainwright.resources.dataset_check import (
    CHECK_LABEL,
    CONTAINER_NAME,
    dataset_check_job,
    dataset_check_job_name,
    inputs_digest,
    is_local,
)

__all__ = [
    "CHECK_LABEL",
    "CONDITION",
    "Outcome",
    "condition",
    "data_error_message",
    "dataset_status",
    "parse_report",
    "planning_job",
    "run_check",
]

CONDITION = "DatasetChecked"
ANNOTATION = "trainwright.io/dataset-check"
FIRST_BAD_ROWS_IN_MESSAGE = 5

CHECKING, PASSED, FAILED, SKIPPED = "Checking", "Passed", "Failed", "Skipped"
# The DatasetChecked condition for each state: (status, reason).
CONDITIONS: dict[str, tuple[bool | None, str]] = {
    CHECKING: (None, "Checking"),
    PASSED: (True, "Passed"),
    FAILED: (False, "DataError"),
    SKIPPED: (False, "Skipped"),
}


class ReportError(ValueError):
    """The check pod's termination message is not a report."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Where the check stands for this pass: ``status`` is ``status.dataset``."""

    state: str
    status: dict[str, Any]

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")


def enabled(metadata: Mapping[str, Any], *, default: bool) -> bool:
    """The annotation ``trainwright.io/dataset-check`` (on/off), else the operator's setting."""
    value = str((metadata.get("annotations") or {}).get(ANNOTATION, "")).strip().lower()
    if value in ("off", "false", "0", "no"):
        return False
    if value in ("on", "true", "1", "yes"):
        return True
    return default


def parse_report(message: str | None) -> dict[str, Any]:
    """The report from a termination message (:mod:`trainwright_trainer.data.check`)."""
    text = (message or "").strip()
    if not text:
        raise ReportError("the check pod wrote no report")
    try:
        report = json.loads(text)
    except ValueError:
        last = text.splitlines()[-1][:300]
        raise ReportError(f"the check pod's report is not JSON ({last})") from None
    if not isinstance(report, dict) or "version" not in report:
        raise ReportError("the check pod's report has no version")
    if "error" not in report and not isinstance(report.get("rows"), int):
        raise ReportError("the check pod's report has no row count")
    return report


def dataset_status(report: Mapping[str, Any], *, now: datetime.datetime) -> dict[str, Any]:
    """``status.dataset`` (state Passed or Failed) from a parsed report."""
    if "error" in report:
        return _validated(
            {"state": FAILED, "message": str(report["error"])[:1024], "checkedAt": now}
        )
    tokens = report.get("tokens") or {}
    bad = [{"row": b["row"], "reason": str(b["reason"])[:512]} for b in report["bad_rows"]]
    found: dict[str, Any] = {
        "state": PASSED if report.get("trainer_accepts") else FAILED,
        "format": report.get("format"),
        "rows": report["rows"],
        "validRows": report.get("valid_rows"),
        "badRows": report.get("bad_row_count", len(bad)),
        "firstBadRows": bad[:10],
        "tokens": tokens.get("total"),
        "tokensP95": tokens.get("p95"),
        "tokensEstimated": tokens.get("estimated"),
        # Capped: the report's share can pass 1 when rows cut to nothing count twice.
        "truncatedFraction": _share(report.get("truncated_fraction")),
        "duplicates": report.get("duplicates"),
        "nearEmptyRows": report.get("near_empty_rows"),
        "suggestions": [str(s)[:512] for s in report.get("suggestions") or []][:10],
        "checkSeconds": report.get("seconds"),
        "checkedAt": now,
    }
    found["message"] = _summary(found)
    return _validated(found)


def _share(value: Any) -> float | None:
    return None if value is None else min(1.0, float(value))


def _summary(found: Mapping[str, Any]) -> str:
    tokens = found.get("tokens") or 0
    counted = "estimated" if found.get("tokensEstimated") else "counted"
    head = (
        f"{found['validRows']} of {found['rows']} rows usable ({found['format']}), "
        f"{tokens:,} tokens {counted}"
    )
    if found["state"] == PASSED:
        return f"{head}."
    return f"{head}; the trainer would refuse the file: " + _bad_rows_text(found)


def _bad_rows_text(found: Mapping[str, Any]) -> str:
    bad = found.get("firstBadRows") or []
    if not bad:
        return "no row is usable."
    shown = "; ".join(f"row {b['row']}: {b['reason']}" for b in bad[:FIRST_BAD_ROWS_IN_MESSAGE])
    more = int(found.get("badRows") or len(bad)) - min(len(bad), FIRST_BAD_ROWS_IN_MESSAGE)
    return f"{found.get('badRows')} bad rows, first {shown}" + (
        f" (and {more} more)" if more else ""
    )


def _validated(found: dict[str, Any]) -> dict[str, Any]:
    return DatasetCheckStatus.model_validate(
        {k: v for k, v in found.items() if v is not None}
    ).to_manifest()


def skipped(reason: str, *, now: datetime.datetime) -> dict[str, Any]:
    return _validated({"state": SKIPPED, "message": reason[:1024], "checkedAt": now})


def data_error_message(job: TrainingJob, found: Mapping[str, Any]) -> str:
    """The Failed condition's sentence: which file, what is wrong, the first bad rows."""
    detail = str(found.get("message") or "")
    return (
        f"The dataset check refused spec.dataset.uri {job.spec.dataset.uri} before any GPU "
        f"was requested: {detail.rstrip('.')}. Fix the rows (`trainwright dataset inspect "
        "FILE` lists them all) and edit the spec to check it again."
    )


def planning_job(job: TrainingJob, status: Mapping[str, Any]) -> tuple[TrainingJob, str | None]:
    """``job`` with the measured token count in ``spec.dataset.tokens``, and a sentence
    saying so for the Planned condition; ``job`` itself when the check measured nothing
    that applies (another dataset, skipped, or an estimate beside the user's number)."""
    found = status.get("dataset") or {}
    if found.get("state") != PASSED or found.get("inputsDigest") != inputs_digest(job):
        return job, None
    measured = found.get("tokens")
    given = job.spec.dataset.tokens
    if not measured:
        return job, None
    estimated = bool(found.get("tokensEstimated"))
    if estimated and given is not None:
        return job, (
            f"Duration and cost use spec.dataset.tokens ({given:,}); the dataset check only "
            f"estimated {measured:,} (no tokenizer in the model directory)."
        )
    dataset = job.spec.dataset.model_copy(update={"tokens": int(measured)})
    spec = job.spec.model_copy(update={"dataset": dataset})
    was = f" instead of spec.dataset.tokens ({given:,})" if given is not None else ""
    how = "estimated" if estimated else "counted"
    return job.model_copy(update={"spec": spec}), (
        f"Planned with the {measured:,} tokens the dataset check {how}{was}."
    )


def run_check(
    context: OperatorContext,
    job: TrainingJob,
    status: Mapping[str, Any],
    *,
    generation: int,
    create: Callable[[dict[str, Any]], dict[str, Any]],
) -> Outcome | None:
    """Start, follow or read the check for ``job``; None when it is turned off.

    ``create`` makes a child of the TrainingJob (the controller adopts it). A finished
    check's Job is deleted once its report is in ``status.dataset``.
    """
    if not enabled(job.metadata, default=context.dataset_check):
        return None
    digest = inputs_digest(job)
    found = dict(status.get("dataset") or {})
    if found.get("inputsDigest") == digest and _still_valid(found, generation):
        return Outcome(str(found["state"]), found)
    now = context.now()
    name = dataset_check_job_name(job.name, digest)
    stamp = {"inputsDigest": digest, "observedGeneration": generation, "checkJob": name}
    if not is_local(job.spec.dataset.uri):
        scheme = job.spec.dataset.uri.split("://", 1)[0]
        reason = (
            f"the check pod reads only pvc:// claims and paths in the image; the trainer "
            f"reads {scheme}:// itself, so spec.dataset.uri was not checked"
        )
        stamp.pop("checkJob")  # no Job is made for it
        return Outcome(SKIPPED, skipped(reason, now=now) | stamp)
    check = context.kube.get_child("Job", job.namespace, name)
    if check is None:
        create(dataset_check_job(job, digest=digest, default_image=context.trainer_image))
        return _checking(name, stamp, now)
    state = lifecycle.job_state(check)
    pods = context.kube.list_pods(job.namespace, f"{JOB_NAME_LABEL}={name}")
    if state not in (JobState.SUCCEEDED, JobState.FAILED):
        late = _not_started(check, pods, now=now, limit_seconds=context.dataset_check_start)
        if late is None:
            return _checking(name, stamp, now)
        context.kube.delete_job(job.namespace, name)
        return Outcome(SKIPPED, skipped(late, now=now) | stamp)
    result = _read(pods, now=now)
    context.kube.delete_job(job.namespace, name)
    return Outcome(str(result["state"]), result | stamp)


def _still_valid(found: Mapping[str, Any], generation: int) -> bool:
    """A finished check stands for its inputs; a failed one is tried again after an edit
    (the file may have been fixed in place)."""
    if found.get("state") == FAILED:
        return int(found.get("observedGeneration") or 0) == generation
    return found.get("state") in (PASSED, SKIPPED)


def _checking(name: str, stamp: dict[str, Any], now: datetime.datetime) -> Outcome:
    message = f"Checking the dataset in Job {name} (a CPU pod) before any GPU is requested."
    return Outcome(CHECKING, _validated({"state": CHECKING, "message": message}) | stamp)


def _terminated(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == CONTAINER_NAME:
            terminated = (container.get("state") or {}).get("terminated")
            return dict(terminated) if terminated else None
    return None


def _read(pods: list[dict[str, Any]], *, now: datetime.datetime) -> dict[str, Any]:
    """``status.dataset`` from the finished pod: the report, or why there is none."""
    ended = [t for t in map(_terminated, pods) if t is not None]
    if not ended:
        return skipped(
            "the check's pod ended without a report (deleted or past its deadline)", now=now
        )
    terminated = ended[-1]
    code = terminated.get("exitCode")
    try:
        if code != 0:
            raise ReportError(f"the check pod exited with code {code}")
        return dataset_status(parse_report(terminated.get("message")), now=now)
    except ReportError as exc:
        tail = str(terminated.get("message") or "").strip().splitlines()[-1:] or [""]
        detail = f": {tail[0][:300]}" if code != 0 and tail[0] else ""
        return skipped(f"{exc}{detail}; planned without its findings", now=now)


def _not_started(
    check: Mapping[str, Any],
    pods: list[dict[str, Any]],
    *,
    now: datetime.datetime,
    limit_seconds: float,
) -> str | None:
    """Why the check is given up, when its pod has not started within ``limit_seconds``."""
    if any((p.get("status") or {}).get("phase") in ("Running", "Succeeded") for p in pods):
        return None
    created = str((check.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        started = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    waited = (now - started).total_seconds()
    if waited < limit_seconds:
        return None
    why = _pod_waiting_reason(pods) or "no pod was created"
    return (
        f"the check pod did not start within {limit_seconds:g} s ({why}); planned without "
        "its findings"
    )


def _pod_waiting_reason(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return str(condition.get("message") or condition.get("reason") or "unscheduled")
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting:
                return str(waiting.get("reason") or "waiting")
    return None


def condition(outcome: Outcome) -> tuple[str, bool | None, str, str]:
    """The DatasetChecked condition for ``outcome``."""
    value, reason = CONDITIONS[outcome.state]
    return CONDITION, value, reason, outcome.message or reason
