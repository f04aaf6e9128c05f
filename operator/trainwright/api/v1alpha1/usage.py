"""A TrainingJob's cost, energy and carbon: ``spec.carbon``, ``status.plan.carbon``, ``status.usage``.

The arithmetic and the dated grid-intensity table live in :mod:`trainwright.planner.carbon`;
these are the fields a user writes and reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from trainwright.api.v1alpha1.common import ApiModel
from trainwright.planner.carbon import CarbonEstimate, grid_intensity
from trainwright.planner.errors import PlannerError

UsageEnergySource = Literal["measured", "estimated", "mixed"]


class CarbonSpec(ApiModel):
    """Where the run's electricity comes from, when the price list's region is not it."""

    region: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "A cloud region (us-east-1, gcp:europe-west4, swedencentral) or a grid zone "
            "(FR, DE, US-CAMX); unset: the region spec.cloud's prices are quoted for."
        ),
    )
    grid_intensity_g_co2e_per_kwh: float | None = Field(
        default=None,
        alias="gridIntensityGCo2ePerKwh",
        ge=0,
        le=2000,
        description="Your own grid intensity in gCO2e/kWh, in place of the table's.",
    )
    pue: float | None = Field(
        default=None,
        ge=1,
        le=3,
        description="Data-centre PUE; unset: the provider's reported fleet PUE (1.56 elsewhere).",
    )

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                grid_intensity(value)
            except PlannerError as exc:
                raise ValueError(str(exc)) from None
        return value


class PlanCarbon(ApiModel):
    """The whole run's energy and emissions, as planned."""

    gpu_hours: float = Field(ge=0, description="GPUs x planned duration, hours.")
    gpu_watts: float | None = Field(
        default=None, ge=0, description="Estimated average power per GPU at the planned MFU, W."
    )
    energy_kwh: float = Field(ge=0, description="Facility energy (GPU energy x PUE), kWh.")
    kg_co2e: float = Field(alias="kgCo2e", ge=0, description="Emissions, kg CO2e (location-based).")
    g_co2e_per_kwh: float = Field(
        alias="gCo2ePerKwh", ge=0, description="Grid intensity used, gCO2e/kWh."
    )
    pue: float = Field(ge=1, description="PUE used.")
    zone: str = Field(max_length=64, description="The grid zone the intensity is for.")
    intensity_source: str = Field(max_length=256, description="Where the intensity comes from.")
    intensity_year: int | None = Field(default=None, description="The year it describes.")


def plan_carbon_from(estimate: CarbonEstimate | None) -> PlanCarbon | None:
    """``status.plan.carbon`` for a planner estimate."""
    if estimate is None:
        return None
    return PlanCarbon(
        gpu_hours=estimate.gpu_hours,
        gpu_watts=estimate.gpu_watts,
        energy_kwh=estimate.energy_kwh,
        kg_co2e=estimate.kg_co2e,
        g_co2e_per_kwh=estimate.g_co2e_per_kwh,
        pue=estimate.pue,
        zone=estimate.zone,
        intensity_source=estimate.intensity_source[:256],
        intensity_year=estimate.intensity_year,
    )


class UsageStatus(ApiModel):
    """What the run has used so far, over all its attempts (updated while Running)."""

    gpu_hours: float = Field(ge=0, description="GPU-hours the trainer pods held while Running.")
    cost_usd: float | None = Field(
        default=None, ge=0, description="Dollars spent so far at the plan's price."
    )
    gpu_energy_kwh: float = Field(ge=0, description="Energy the GPUs drew, kWh.")
    measured_gpu_energy_kwh: float = Field(
        default=0, ge=0, description="The part of it NVML measured on every rank, kWh."
    )
    energy_source: UsageEnergySource = Field(
        description="measured (NVML on every rank), estimated (TDP x load), or mixed."
    )
    energy_kwh: float = Field(ge=0, description="Facility energy: GPU energy x PUE, kWh.")
    kg_co2e: float = Field(
        alias="kgCo2e", ge=0, description="Emissions so far, kg CO2e (location-based)."
    )
    g_co2e_per_kwh: float = Field(
        alias="gCo2ePerKwh", ge=0, description="Grid intensity used, gCO2e/kWh."
    )
    pue: float = Field(ge=1, description="PUE used.")
    zone: str = Field(max_length=64, description="The grid zone the intensity is for.")
    intensity_source: str = Field(max_length=256, description="Where the intensity comes from.")
    trainer_job: str | None = Field(
        default=None, max_length=63, description="The attempt's Job of the last reading."
    )
    trainer_gpu_energy_joules: float | None = Field(
        default=None, ge=0, description="That attempt's last NVML reading (all ranks), J."
    )
    updated_time: dt.datetime = Field(description="When this was accounted up to.")
