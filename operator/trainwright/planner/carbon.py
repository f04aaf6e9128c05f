"""Energy and carbon of a training run: a dated grid-intensity table, PUE, and the arithmetic.

The footprint follows the location-based method of the GHG Protocol Scope 2 Guidance
(2015) as the ML papers apply it (Patterson et al., "Carbon Emissions and Large Neural
Network Training", 2021, eq. 1; Luccioni et al., "Estimating the Carbon Footprint of
BLOOM", 2022; Meta's Llama 3 model card):

    facility_kwh = gpu_kwh x PUE
    kg_co2e      = facility_kwh x grid_g_co2e_per_kwh / 1000

``gpu_kwh`` is what the trainer measured through NVML (each rank's own device, summed)
when there are GPUs. Otherwise it is estimated from the board power limit (``tdp_watts``
in the GPU catalog) and how loaded the device is:

    gpu_watts = tdp_watts x (IDLE_POWER_FRACTION + (1 - IDLE_POWER_FRACTION) x load)
    load      = min(1, mfu / gpu.training_efficiency)

Power follows the share of time the device is busy, not MFU itself: a run at the MFU a
tuned stack reaches (the catalog's ``training_efficiency``) keeps the GPU saturated and
draws about its TDP, which is what the BLOOM and Llama 3 estimates assume; a run at half
of that is taken to be busy half the time. An idle data-centre GPU draws about a tenth
of its limit (an idle H100 SXM reads 60-75 W of 700 W in ``nvidia-smi``). Host CPUs,
memory and network are not counted (the papers above count them only where measured).

Grid intensities are annual averages of electricity *generation* (lifecycle gCO2e/kWh
where the source publishes it), location-based: a provider's renewable purchases
(market-based figures) are not subtracted. Each row names its source and year; the
figures were transcribed from those publications without network access here, so a
user who reports them should check the row against its source, and can override any
row (``spec.carbon.gridIntensityGCo2ePerKwh`` in a TrainingJob, ``--grid-intensity``
on ``trainwright plan training``). Everything here is pure (no I/O).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trainwright.planner.errors import PlannerError
from trainwright.planner.lookup import get_gpu
from trainwright.planner.specs import GpuSpec
from trainwright.planner.training import TrainingPlan

SECONDS_PER_HOUR = 3600.0
WATT_SECONDS_PER_KWH = 3.6e6
IDLE_POWER_FRACTION = 0.1

EnergySource = Literal["measured", "estimated"]


class GridIntensity(BaseModel):
    """The average carbon intensity of one grid (a country, or a US eGRID subregion)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    zone: str = Field(description="ISO country code, or COUNTRY-SUBREGION")
    name: str
    g_co2e_per_kwh: float = Field(ge=0)
    year: int = Field(description="the year the figure describes")
    source: str


class CloudRegion(BaseModel):
    """A cloud region and the grid it draws from."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    cloud: str
    region: str
    zone: str
    location: str


class Pue(BaseModel):
    """Power usage effectiveness: facility energy over IT energy."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    value: float = Field(ge=1)
    source: str


_EMBER = "Ember, Yearly Electricity Data (carbon intensity of generation)"
_EGRID = "US EPA eGRID2022 (Jan 2024), subregion CO2e total output emission rate"

GRID_INTENSITIES: tuple[GridIntensity, ...] = (
    GridIntensity(zone="WORLD", name="World", g_co2e_per_kwh=480, year=2023, source=_EMBER),
    GridIntensity(zone="US", name="United States", g_co2e_per_kwh=369, year=2023, source=_EMBER),
    GridIntensity(
        zone="US-SRVC", name="Virginia/Carolinas", g_co2e_per_kwh=287, year=2022, source=_EGRID
    ),
    GridIntensity(
        zone="US-RFCW", name="Ohio (RFC West)", g_co2e_per_kwh=470, year=2022, source=_EGRID
    ),
    GridIntensity(
        zone="US-MROW", name="Iowa (MRO West)", g_co2e_per_kwh=428, year=2022, source=_EGRID
    ),
    GridIntensity(
        zone="US-NWPP",
        name="Oregon/Washington (NWPP)",
        g_co2e_per_kwh=272,
        year=2022,
        source=_EGRID,
    ),
    GridIntensity(zone="US-CAMX", name="California", g_co2e_per_kwh=225, year=2022, source=_EGRID),
    GridIntensity(
        zone="US-ERCT", name="Texas (ERCOT)", g_co2e_per_kwh=370, year=2022, source=_EGRID
    ),
    GridIntensity(zone="CA", name="Canada", g_co2e_per_kwh=170, year=2023, source=_EMBER),
    GridIntensity(
        zone="CA-QC",
        name="Quebec",
        g_co2e_per_kwh=2,
        year=2022,
        source="Environment Canada, National Inventory Report 2024, Annex 13 (Quebec)",
    ),
    GridIntensity(zone="BR", name="Brazil", g_co2e_per_kwh=98, year=2023, source=_EMBER),
    GridIntensity(zone="IE", name="Ireland", g_co2e_per_kwh=282, year=2023, source=_EMBER),
    GridIntensity(zone="GB", name="United Kingdom", g_co2e_per_kwh=238, year=2023, source=_EMBER),
    GridIntensity(zone="FR", name="France", g_co2e_per_kwh=56, year=2023, source=_EMBER),
    GridIntensity(zone="DE", name="Germany", g_co2e_per_kwh=381, year=2023, source=_EMBER),
    GridIntensity(zone="NL", name="Netherlands", g_co2e_per_kwh=268, year=2023, source=_EMBER),
    GridIntensity(zone="BE", name="Belgium", g_co2e_per_kwh=138, year=2023, source=_EMBER),
    GridIntensity(zone="ES", name="Spain", g_co2e_per_kwh=174, year=2023, source=_EMBER),
    GridIntensity(zone="IT", name="Italy", g_co2e_per_kwh=330, year=2023, source=_EMBER),
    GridIntensity(zone="PL", name="Poland", g_co2e_per_kwh=662, year=2023, source=_EMBER),
    GridIntensity(zone="SE", name="Sweden", g_co2e_per_kwh=41, year=2023, source=_EMBER),
    GridIntensity(zone="FI", name="Finland", g_co2e_per_kwh=79, year=2023, source=_EMBER),
    GridIntensity(zone="NO", name="Norway", g_co2e_per_kwh=30, year=2023, source=_EMBER),
    GridIntensity(zone="IN", name="India", g_co2e_per_kwh=713, year=2023, source=_EMBER),
    GridIntensity(zone="CN", name="China", g_co2e_per_kwh=582, year=2023, source=_EMBER),
    GridIntensity(zone="JP", name="Japan", g_co2e_per_kwh=485, year=2023, source=_EMBER),
    GridIntensity(zone="KR", name="South Korea", g_co2e_per_kwh=436, year=2023, source=_EMBER),
    GridIntensity(zone="TW", name="Taiwan", g_co2e_per_kwh=561, year=2023, source=_EMBER),
    GridIntensity(zone="SG", name="Singapore", g_co2e_per_kwh=470, year=2023, source=_EMBER),
    GridIntensity(zone="AU", name="Australia", g_co2e_per_kwh=549, year=2023, source=_EMBER),
    GridIntensity(
        zone="AU-NSW",
        name="New South Wales",
        g_co2e_per_kwh=680,
        year=2023,
        source="Australian National Greenhouse Accounts Factors 2023, Table 1 (NSW and ACT)",
    ),
    GridIntensity(zone="ZA", name="South Africa", g_co2e_per_kwh=709, year=2023, source=_EMBER),
)


def _regions(cloud: str, rows: str) -> tuple[CloudRegion, ...]:
    """``region zone location`` lines, one region each (the location may hold spaces)."""
    out = []
    for line in rows.strip().splitlines():
        region, zone, location = line.split(maxsplit=2)
        out.append(CloudRegion(cloud=cloud, region=region, zone=zone, location=location))
    return tuple(out)


# Where each provider's regions are (their region pages), so which grid they draw from.
CLOUD_REGIONS: tuple[CloudRegion, ...] = (
    *_regions(
        "aws",
        """
        us-east-1 US-SRVC Northern Virginia
        us-east-2 US-RFCW Ohio
        us-west-1 US-CAMX Northern California
        us-west-2 US-NWPP Oregon
        ca-central-1 CA-QC Montreal
        sa-east-1 BR Sao Paulo
        eu-west-1 IE Ireland
        eu-west-2 GB London
        eu-west-3 FR Paris
        eu-central-1 DE Frankfurt
        eu-north-1 SE Stockholm
        eu-south-2 ES Aragon
        ap-south-1 IN Mumbai
        ap-northeast-1 JP Tokyo
        ap-northeast-2 KR Seoul
        ap-southeast-1 SG Singapore
        ap-southeast-2 AU-NSW Sydney
        """,
    ),
    *_regions(
        "gcp",
        """
        us-central1 US-MROW Iowa
        us-east1 US-SRVC South Carolina
        us-east4 US-SRVC Northern Virginia
        us-west1 US-NWPP Oregon
        us-west2 US-CAMX Los Angeles
        northamerica-northeast1 CA-QC Montreal
        southamerica-east1 BR Sao Paulo
        europe-west1 BE Belgium
        europe-west2 GB London
        europe-west3 DE Frankfurt
        europe-west4 NL Netherlands
        europe-west9 FR Paris
        europe-north1 FI Finland
        asia-south1 IN Mumbai
        asia-east1 TW Taiwan
        asia-northeast1 JP Tokyo
        asia-southeast1 SG Singapore
        australia-southeast1 AU-NSW Sydney
        """,
    ),
    *_regions(
        "azure",
        """
        eastus US-SRVC Virginia
        eastus2 US-SRVC Virginia
        centralus US-MROW Iowa
        southcentralus US-ERCT Texas
        westus US-CAMX California
        westus2 US-NWPP Washington
        brazilsouth BR Sao Paulo
        northeurope IE Ireland
        westeurope NL Netherlands
        uksouth GB London
        francecentral FR Paris
        germanywestcentral DE Frankfurt
        swedencentral SE Gavle
        norwayeast NO Oslo
        centralindia IN Pune
        japaneast JP Tokyo
        koreacentral KR Seoul
        southeastasia SG Singapore
        australiaeast AU-NSW New South Wales
        """,
    ),
)

# The region each cloud's price list is quoted for (trainwright.planner.catalog.prices),
# so a plan's cost and carbon describe the same place; Lambda's data centres are in the
# US and RunPod's community cloud is worldwide, so those take the country and world means.
DEFAULT_LOCATIONS: dict[str, str] = {
    "aws": "us-east-1",
    "gcp": "us-central1",
    "azure": "eastus",
    "lambda": "US",
    "runpod": "WORLD",
}

_UPTIME = Pue(
    value=1.56,
    source="Uptime Institute Global Data Center Survey 2024 (industry average annual PUE)",
)
# Fleet-wide annual PUE as each provider reports it.
PUES: dict[str, Pue] = {
    "aws": Pue(value=1.15, source="Amazon 2023 Sustainability Report (AWS global PUE, 2023)"),
    "gcp": Pue(value=1.10, source="Google 2024 Environmental Report (fleet TTM PUE, 2023)"),
    "azure": Pue(value=1.18, source="Microsoft 2024 Environmental Sustainability Report"),
    "lambda": _UPTIME,
    "runpod": _UPTIME,
}


class CarbonEstimate(BaseModel):
    """GPU-hours, energy and emissions of a run (so far, or planned for the whole run)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    gpu_hours: float = Field(ge=0)
    gpu_energy_kwh: float = Field(ge=0, description="energy the accelerators drew")
    energy_source: EnergySource
    gpu_watts: float | None = Field(
        default=None, ge=0, description="estimated average power per GPU (None: measured)"
    )
    pue: float = Field(ge=1)
    energy_kwh: float = Field(ge=0, description="facility energy: gpu_energy_kwh x pue")
    g_co2e_per_kwh: float = Field(ge=0)
    kg_co2e: float = Field(ge=0)
    zone: str
    intensity_source: str
    intensity_year: int | None


def zones() -> list[str]:
    return [row.zone for row in GRID_INTENSITIES]


def regions(cloud: str | None = None) -> list[str]:
    return [r.region for r in CLOUD_REGIONS if cloud is None or r.cloud == cloud]


def grid_intensity(location: str, *, cloud: str | None = None) -> GridIntensity:
    """The grid a cloud region (``us-east-1``, ``gcp:us-central1``) or zone (``FR``) draws from.

    Raises :class:`PlannerError` naming the accepted values for an unknown location.
    """
    wanted_cloud, name = cloud, location
    if ":" in location:
        wanted_cloud, _, name = location.partition(":")
    for row in GRID_INTENSITIES:
        if row.zone.lower() == name.lower():
            return row
    for region in CLOUD_REGIONS:
        if region.region == name.lower() and wanted_cloud in (None, region.cloud):
            return _zone(region.zone)
    raise PlannerError(
        f"unknown carbon region {location!r}: use a cloud region ({', '.join(regions()[:4])}, "
        f"...; {len(CLOUD_REGIONS)} known) or a grid zone ({', '.join(zones())})"
    )


def _zone(zone: str) -> GridIntensity:
    return next(row for row in GRID_INTENSITIES if row.zone == zone)


def default_location(cloud: str) -> str:
    """The region a cloud's prices are quoted for (the carbon of a plan with no region)."""
    return DEFAULT_LOCATIONS.get(cloud, "WORLD")


def pue_for(cloud: str) -> Pue:
    """The provider's reported fleet PUE, else the industry average."""
    return PUES.get(cloud, _UPTIME)


def device_load(gpu: GpuSpec, mfu: float) -> float:
    """How busy the device is, 0..1: the MFU over what a tuned stack reaches on it."""
    if mfu < 0:
        raise PlannerError(f"mfu must be >= 0, got {mfu}")
    return min(1.0, mfu / gpu.training_efficiency)


def estimated_gpu_watts(gpu: GpuSpec, load: float) -> float:
    """Average board power at a device load between idle and the power limit."""
    if gpu.tdp_watts is None:
        raise PlannerError(f"GPU {gpu.key} has no tdp_watts in the catalog to estimate its power")
    load = min(1.0, max(0.0, load))
    return gpu.tdp_watts * (IDLE_POWER_FRACTION + (1 - IDLE_POWER_FRACTION) * load)


def estimated_gpu_energy_kwh(gpu: GpuSpec, *, gpus: int, seconds: float, mfu: float) -> float:
    """Energy ``gpus`` devices draw in ``seconds`` at the given MFU (each at the same load)."""
    watts = estimated_gpu_watts(gpu, device_load(gpu, mfu))
    return watts * gpus * max(0.0, seconds) / WATT_SECONDS_PER_KWH


def carbon_estimate(
    *,
    gpu_hours: float,
    gpu_energy_kwh: float,
    energy_source: EnergySource,
    intensity: GridIntensity,
    pue: float,
    gpu_watts: float | None = None,
) -> CarbonEstimate:
    """Facility energy and kg CO2e for the energy the GPUs drew."""
    if pue < 1:
        raise PlannerError(f"pue must be at least 1 (facility energy over IT energy), got {pue}")
    energy_kwh = gpu_energy_kwh * pue
    return CarbonEstimate(
        gpu_hours=gpu_hours,
        gpu_energy_kwh=gpu_energy_kwh,
        energy_source=energy_source,
        gpu_watts=gpu_watts,
        pue=pue,
        energy_kwh=energy_kwh,
        g_co2e_per_kwh=intensity.g_co2e_per_kwh,
        kg_co2e=energy_kwh * intensity.g_co2e_per_kwh / 1000.0,
        zone=intensity.zone,
        intensity_source=intensity.source,
        intensity_year=intensity.year,
    )


def override_intensity(
    base: GridIntensity, g_co2e_per_kwh: float | None, *, source: str = "user override"
) -> GridIntensity:
    """``base`` with a user's own figure (keeps the zone so a reader knows where it applies)."""
    if g_co2e_per_kwh is None:
        return base
    if g_co2e_per_kwh < 0:
        raise PlannerError(f"grid intensity must be >= 0 gCO2e/kWh, got {g_co2e_per_kwh}")
    return base.model_copy(update={"g_co2e_per_kwh": g_co2e_per_kwh, "source": source})


def estimate_run(
    gpu: GpuSpec,
    *,
    gpus: int,
    seconds: float,
    mfu: float,
    intensity: GridIntensity,
    pue: float,
    measured_gpu_energy_kwh: float | None = None,
) -> CarbonEstimate:
    """A run's footprint: the measured GPU energy when given, else the TDP estimate."""
    gpu_hours = gpus * max(0.0, seconds) / SECONDS_PER_HOUR
    if measured_gpu_energy_kwh is not None:
        return carbon_estimate(
            gpu_hours=gpu_hours,
            gpu_energy_kwh=measured_gpu_energy_kwh,
            energy_source="measured",
            intensity=intensity,
            pue=pue,
        )
    watts = estimated_gpu_watts(gpu, device_load(gpu, mfu))
    return carbon_estimate(
        gpu_hours=gpu_hours,
        gpu_energy_kwh=watts * gpus * max(0.0, seconds) / WATT_SECONDS_PER_KWH,
        energy_source="estimated",
        intensity=intensity,
        pue=pue,
        gpu_watts=watts,
    )


def resolve_intensity(
    cloud: str, location: str | None = None, g_co2e_per_kwh: float | None = None
) -> GridIntensity:
    """The grid a run on ``cloud`` draws from: ``location`` (a region or zone) or the region
    the cloud's prices are quoted for, with a user's own figure in place of the table's."""
    base = grid_intensity(location or default_location(cloud), cloud=cloud)
    return override_intensity(base, g_co2e_per_kwh)


def resolve_pue(cloud: str, pue: float | None = None) -> float:
    """A user's PUE, else the provider's reported one."""
    if pue is not None and pue < 1:
        raise PlannerError(f"pue must be at least 1 (facility energy over IT energy), got {pue}")
    return pue if pue is not None else pue_for(cloud).value


def training_plan_carbon(
    plan: TrainingPlan,
    *,
    location: str | None = None,
    g_co2e_per_kwh: float | None = None,
    pue: float | None = None,
) -> CarbonEstimate | None:
    """The whole run's estimate for a plan (its GPUs, duration and MFU); None without a
    duration (no dataset size to plan one)."""
    if plan.duration_seconds is None:
        return None
    cloud = plan.cost.cloud
    return estimate_run(
        get_gpu(plan.gpu),
        gpus=plan.num_gpus,
        seconds=plan.duration_seconds,
        mfu=plan.throughput.mfu,
        intensity=resolve_intensity(cloud, location, g_co2e_per_kwh),
        pue=resolve_pue(cloud, pue),
    )
