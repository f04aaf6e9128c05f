"""``checkpoint.intervalSteps: auto``: the operator chooses each attempt's interval.

The trainer reports how long its last checkpoint save and its last optimizer step
took (``/progress``: ``checkpoint_save_seconds``, ``step_seconds``; copied into
``status.progress``). When an attempt fails and the next one starts, the operator
computes Young/Daly's interval (:mod:`trainwright.planner.checkpointing`) from those
measurements and the job's MTBF: the prior per-GPU failure rate updated with the node
failures observed in the cluster over the GPU-hours of GPU nodes watched
(:class:`trainwright.operator.node_failures.ClusterFailures`), or, before the operator
has watched any, with this run's failures (``status.restarts`` +
``status.infrastructureRestarts`` + 1) over its GPU-seconds since ``status.startTime``.
It stores the interval in ``status.plan.checkpointInterval`` and writes it
into the next attempt's trainer config. The interval is fixed within an attempt: every
rank must save at the same step, so it is never changed under a running gang.

The first attempt has nothing measured yet: it saves every
``CheckpointSpec``'s default number of steps and says so.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.api.v1alpha1.trainingjob import CheckpointIntervalStatus
from trainwright.operator.node_failures import FailureRecord
from trainwright.planner.checkpointing import auto_interval
from trainwright.resources.trainer import AUTO_INTERVAL as AUTO
from trainwright.resources.trainer import DEFAULT_CHECKPOINT_INTERVAL_STEPS as DEFAULT_STEPS


def is_auto(job: TrainingJob) -> bool:
    checkpoint = job.spec.checkpoint
    return checkpoint is not None and checkpoint.interval_steps == AUTO


def initial(job: TrainingJob, plan: PlanStatus) -> PlanStatus:
    """The plan of a first attempt (or a re-plan) with the interval it starts with."""
    if not is_auto(job) or plan.checkpoint_interval is not None:
        return plan
    chosen = CheckpointIntervalStatus(
        steps=DEFAULT_STEPS,
        message=(
            f"Checkpoint every {DEFAULT_STEPS} step(s) until a save and a step are measured; "
            "the next attempt uses Young/Daly, sqrt(2 x save seconds x MTBF)."
        ),
    )
    return plan.model_copy(update={"checkpoint_interval": chosen})


def _seconds_since(stamp: Any, now: datetime.datetime) -> float:
    if not isinstance(stamp, str):
        return 0.0
    try:
        started = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return 0.0
    return max(0.0, (now - started).total_seconds())


def failures_behind_mtbf(
    plan: PlanStatus,
    status: Mapping[str, Any],
    now: datetime.datetime,
    cluster: FailureRecord | None = None,
) -> tuple[FailureRecord, str]:
    """The failures and GPU-seconds the MTBF is updated with, and a phrase saying whose.

    The cluster's record once the operator has watched GPU nodes; before that, this run's
    own failures (the one that just ended an attempt included) over its GPU-seconds.
    """
    if cluster is not None and cluster.gpu_seconds > 0:
        return cluster, (
            f"{cluster.failures} node failure(s) observed in the cluster over "
            f"{cluster.gpu_seconds / 3600:,.0f} GPU-hours"
        )
    failures = int(status.get("restarts") or 0) + int(status.get("infrastructureRestarts") or 0) + 1
    running = _seconds_since(status.get("startTime"), now) * plan.num_gpus
    return FailureRecord(failures, running), (
        f"this run's {failures} failure(s) over {running / 3600:,.1f} GPU-hours"
    )


def for_next_attempt(
    job: TrainingJob,
    plan: PlanStatus,
    status: Mapping[str, Any],
    now: datetime.datetime,
    cluster: FailureRecord | None = None,
) -> PlanStatus | None:
    """``plan`` with Young/Daly's interval for the attempt after a failure; None when the
    spec does not ask for auto, or nothing was measured (the interval stays).

    ``cluster``: the node failures observed in the cluster (the operator's
    :class:`~trainwright.operator.node_failures.ClusterFailures`)."""
    if not is_auto(job):
        return None
    progress = status.get("progress") or {}
    save, step = progress.get("checkpointSaveSeconds"), progress.get("stepSeconds")
    if not isinstance(save, int | float) or not isinstance(step, int | float) or step <= 0:
        return None
    observed, source = failures_behind_mtbf(plan, status, now, cluster)
    chosen = auto_interval(
        save_seconds=float(save),
        step_seconds=float(step),
        num_gpus=plan.num_gpus,
        failures=observed.failures,
        observed_gpu_seconds=observed.gpu_seconds,
    )
    interval = CheckpointIntervalStatus(
        steps=chosen.steps,
        save_seconds=chosen.save_seconds,
        step_seconds=chosen.step_seconds,
        mtbf_seconds=chosen.mtbf_seconds,
        failures_observed=observed.failures,
        observed_gpu_hours=round(observed.gpu_seconds / 3600, 3),
        message=f"{chosen.message} MTBF from the prior and {source}.",
    )
    return plan.model_copy(update={"checkpoint_interval": interval})
