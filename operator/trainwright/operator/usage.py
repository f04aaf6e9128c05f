"""``status.usage``: GPU-hours, dollars, energy and kg CO2e a TrainingJob has used so far.

Each progress read of a Running TrainingJob (every ``PROGRESS_SECONDS``, whether or not
rank 0 answers: its pods hold their GPUs either way) accounts the time since the last one (or since the ``Running`` condition turned True, whichever is
later, so time spent Suspended, Queued or waiting for pods is not counted):

    gpu_hours  += plan.numGpus x dt / 3600
    cost_usd   += plan.usdPerHour x dt / 3600     (the plan's price for all its GPUs)
    gpu_kwh    += the trainer's NVML reading since the last one, when every rank measured
                  (trainwright_trainer.energy), else TDP x load x GPUs x dt
                  (trainwright.planner.carbon: load from the measured MFU, else the plan's)

and restates facility energy (x PUE) and kg CO2e (x the grid intensity of
``spec.carbon`` or the cloud's price region) from those totals. The trainer's energy
counts from its own start, per attempt: a new attempt's Job (``trainerJob``) starts its
readings from zero, so the attempts add up. The last seconds of a run between the final
progress read and the pods' exit are not counted (at most ``PROGRESS_SECONDS``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from trainwright.api.v1alpha1.trainingjob import PlanStatus, ProgressStatus
from trainwright.api.v1alpha1.usage import CarbonSpec, UsageEnergySource, UsageStatus
from trainwright.planner.carbon import (
    SECONDS_PER_HOUR,
    WATT_SECONDS_PER_KWH,
    device_load,
    estimated_gpu_watts,
    resolve_intensity,
    resolve_pue,
)
from trainwright.planner.errors import PlannerError
from trainwright.planner.lookup import get_gpu
from trainwright.vocabulary import CLOUDS

JOULES_PER_KWH = WATT_SECONDS_PER_KWH


def _timestamp(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def running_since(status: Mapping[str, Any]) -> datetime.datetime | None:
    """When the ``Running`` condition last turned True (None while it is not True)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Running" and condition.get("status") == "True":
            return _timestamp(condition.get("lastTransitionTime"))
    return None


def estimated_watts_per_gpu(plan: PlanStatus, progress: ProgressStatus | None) -> float:
    """Average power per GPU: at the measured MFU when the trainer reports one, else the
    plan's estimate, else the device's TDP (saturated)."""
    gpu = get_gpu(plan.gpu_type)
    if progress is not None and progress.mfu is not None and progress.mfu > 0:
        return estimated_gpu_watts(gpu, device_load(gpu, progress.mfu))
    if plan.carbon is not None and plan.carbon.gpu_watts is not None:
        return plan.carbon.gpu_watts
    return estimated_gpu_watts(gpu, 1.0)


def _last_reading(previous: UsageStatus | None, trainer_job: str) -> float | None:
    """The attempt's last NVML reading (None: another attempt, or not measured)."""
    if previous is None or previous.trainer_job != trainer_job:
        return None
    return previous.trainer_gpu_energy_joules


def _measured_joules(
    previous: UsageStatus | None, trainer_job: str, reading: float | None
) -> float | None:
    """Joules the trainer measured since the last reading of the same attempt."""
    if reading is None:
        return None
    last = _last_reading(previous, trainer_job)
    if last is not None and reading >= last:
        return reading - last
    return reading  # a new attempt (or its restarted process) counts from zero


def _energy_source(measured_kwh: float, total_kwh: float, measuring: bool) -> UsageEnergySource:
    if total_kwh <= 0:
        return "measured" if measuring else "estimated"
    if measured_kwh >= total_kwh:
        return "measured"
    return "estimated" if measured_kwh <= 0 else "mixed"


def account_usage(
    previous: UsageStatus | None,
    *,
    plan: PlanStatus,
    progress: ProgressStatus | None,
    trainer_job: str,
    cloud: str,
    carbon: CarbonSpec | None,
    since: datetime.datetime,
    now: datetime.datetime,
) -> UsageStatus:
    """``previous`` plus the interval from ``since`` (or its last update) to ``now``.

    Without a progress reading (rank 0 not answering) the time still counts; a metered
    attempt's energy then waits for its next reading, whose delta covers the gap.
    """
    start = max(since, previous.updated_time) if previous is not None else since
    seconds = max(0.0, (now - start).total_seconds())
    reading = progress.gpu_energy_joules if progress is not None else None
    joules = _measured_joules(previous, trainer_job, reading)
    metered = progress is None and _last_reading(previous, trainer_job) is not None
    if progress is None:
        reading = _last_reading(previous, trainer_job)
    if joules is not None:
        measured_kwh = joules / JOULES_PER_KWH
        interval_kwh = measured_kwh
    elif metered:
        measured_kwh = interval_kwh = 0.0
    else:
        measured_kwh = 0.0
        watts = estimated_watts_per_gpu(plan, progress)
        interval_kwh = watts * plan.num_gpus * seconds / WATT_SECONDS_PER_KWH
    gpu_hours = plan.num_gpus * seconds / SECONDS_PER_HOUR
    cost = plan.usd_per_hour * seconds / SECONDS_PER_HOUR if plan.usd_per_hour else None
    if previous is not None:
        gpu_hours += previous.gpu_hours
        interval_kwh += previous.gpu_energy_kwh
        measured_kwh += previous.measured_gpu_energy_kwh
        if previous.cost_usd is not None:
            cost = previous.cost_usd + (cost or 0.0)
    spec = carbon or CarbonSpec()
    intensity = resolve_intensity(cloud, spec.region, spec.grid_intensity_g_co2e_per_kwh)
    pue = resolve_pue(cloud, spec.pue)
    energy_kwh = interval_kwh * pue
    return UsageStatus(
        gpu_hours=gpu_hours,
        cost_usd=cost,
        gpu_energy_kwh=interval_kwh,
        measured_gpu_energy_kwh=measured_kwh,
        energy_source=_energy_source(measured_kwh, interval_kwh, reading is not None),
        energy_kwh=energy_kwh,
        kg_co2e=energy_kwh * intensity.g_co2e_per_kwh / 1000.0,
        g_co2e_per_kwh=intensity.g_co2e_per_kwh,
        pue=pue,
        zone=intensity.zone,
        intensity_source=intensity.source[:256],
        trainer_job=trainer_job,
        trainer_gpu_energy_joules=reading,
        updated_time=now,
    )


def usage_patch(
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    progress: ProgressStatus | None,
    *,
    now: datetime.datetime,
) -> dict[str, Any]:
    """``{"usage": ...}`` for a Running TrainingJob's status, or ``{}`` when nothing changed
    or it cannot be accounted (no plan or Job yet, a GPU outside the catalog)."""
    plan_body = status.get("plan")
    trainer_job = (status.get("children") or {}).get("job")
    since = running_since(status)
    if not plan_body or not trainer_job or since is None:
        return {}
    spec = body.get("spec") or {}
    cloud = str(spec.get("cloud") or "aws")
    try:
        plan = PlanStatus.model_validate(plan_body)
        previous_body = status.get("usage")
        previous = UsageStatus.model_validate(previous_body) if previous_body else None
        carbon = CarbonSpec.model_validate(spec["carbon"]) if spec.get("carbon") else None
        usage = account_usage(
            previous,
            plan=plan,
            progress=progress,
            trainer_job=str(trainer_job),
            cloud=cloud if cloud in CLOUDS else "aws",
            carbon=carbon,
            since=since,
            now=now,
        )
    except (ValidationError, PlannerError):
        return {}
    manifest = usage.to_manifest()
    return {} if manifest == status.get("usage") else {"usage": manifest}
