"""The grid-intensity table and the energy/carbon arithmetic (trainwright.planner.carbon)."""

from __future__ import annotations

import pytest

from trainwright.planner import PlannerError, TrainingRequest, get_gpu, plan_training
from trainwright.planner.carbon import (
    CLOUD_REGIONS,
    DEFAULT_LOCATIONS,
    GRID_INTENSITIES,
    PUES,
    default_location,
    estimate_run,
    estimated_gpu_watts,
    grid_intensity,
    override_intensity,
    pue_for,
    training_plan_carbon,
)
from trainwright.planner.catalog import CLOUDS, GPUS


def test_every_row_names_its_source_and_year_and_every_region_a_known_zone() -> None:
    zones = {row.zone for row in GRID_INTENSITIES}
    assert len(zones) == len(GRID_INTENSITIES)
    for row in GRID_INTENSITIES:
        assert row.source and 2015 <= row.year <= 2026
        assert 0 <= row.g_co2e_per_kwh < 1200
    for region in CLOUD_REGIONS:
        assert region.zone in zones, region
    for cloud in CLOUDS:
        assert grid_intensity(default_location(cloud), cloud=cloud)
        assert 1.0 <= pue_for(cloud).value < 2.0
    assert set(DEFAULT_LOCATIONS) == set(CLOUDS) == set(PUES)


def test_every_catalog_device_has_a_power_limit() -> None:
    assert all(gpu.tdp_watts for gpu in GPUS)
    assert get_gpu("H100-SXM").tdp_watts == 700


def test_regions_resolve_to_their_grids() -> None:
    assert grid_intensity("us-east-1").zone == "US-SRVC"
    assert grid_intensity("gcp:us-central1").zone == "US-MROW"
    assert grid_intensity("europe-west9", cloud="gcp").g_co2e_per_kwh == 56
    assert grid_intensity("fr").zone == "FR"
    # A low-carbon grid is a tenth of a coal-heavy one: the table keeps them apart.
    assert grid_intensity("eu-north-1").g_co2e_per_kwh * 10 < grid_intensity("PL").g_co2e_per_kwh


def test_an_unknown_region_names_what_is_accepted() -> None:
    with pytest.raises(PlannerError, match=r"unknown carbon region 'mars-1'.*us-east-1.*FR"):
        grid_intensity("mars-1")
    with pytest.raises(PlannerError, match="unknown carbon region"):
        grid_intensity("aws:us-central1")  # a GCP region under the wrong cloud


def test_power_runs_from_a_tenth_of_tdp_idle_to_tdp_saturated() -> None:
    h100 = get_gpu("H100-SXM")
    assert estimated_gpu_watts(h100, 0.0) == pytest.approx(70.0)
    assert estimated_gpu_watts(h100, 1.0) == pytest.approx(700.0)
    assert estimated_gpu_watts(h100, 2.0) == pytest.approx(700.0)


def test_eight_h100s_for_ten_hours_by_hand() -> None:
    """8 H100 SXM for 10 h in us-east-1 (AWS PUE 1.15, eGRID SRVC 287 g/kWh).

    At the MFU a tuned stack reaches (0.50, the catalog's training_efficiency) the
    device is saturated: 700 W x 8 x 10 h = 56 kWh at the boards, x 1.15 = 64.4 kWh,
    x 0.287 kg/kWh = 18.4828 kg CO2e. At half that MFU (0.25) the load is 0.5:
    700 x (0.1 + 0.9 x 0.5) = 385 W -> 30.8 kWh -> 35.42 kWh -> 10.16554 kg.
    """
    h100 = get_gpu("H100-SXM")
    grid = grid_intensity("us-east-1")
    pue = pue_for("aws").value
    full = estimate_run(h100, gpus=8, seconds=36000, mfu=0.5, intensity=grid, pue=pue)
    assert full.gpu_hours == pytest.approx(80.0)
    assert full.gpu_energy_kwh == pytest.approx(56.0)
    assert full.energy_kwh == pytest.approx(64.4)
    assert full.kg_co2e == pytest.approx(18.4828)
    assert full.energy_source == "estimated"
    half = estimate_run(h100, gpus=8, seconds=36000, mfu=0.25, intensity=grid, pue=pue)
    assert half.kg_co2e == pytest.approx(10.16554)


def test_measured_energy_replaces_the_estimate_and_a_user_figure_the_table() -> None:
    grid = override_intensity(grid_intensity("FR"), 100.0)
    assert (grid.zone, grid.source) == ("FR", "user override")
    run = estimate_run(
        get_gpu("L4"),
        gpus=2,
        seconds=1800,
        mfu=0.3,
        intensity=grid,
        pue=1.2,
        measured_gpu_energy_kwh=0.1,
    )
    assert run.energy_source == "measured"
    assert run.gpu_hours == pytest.approx(1.0)
    assert run.energy_kwh == pytest.approx(0.12)
    assert run.kg_co2e == pytest.approx(0.012)


def test_bad_overrides_say_what_is_accepted() -> None:
    with pytest.raises(PlannerError, match="grid intensity must be >= 0"):
        override_intensity(grid_intensity("FR"), -1.0)
    with pytest.raises(PlannerError, match="pue must be at least 1"):
        estimate_run(
            get_gpu("L4"), gpus=1, seconds=1, mfu=0.1, intensity=grid_intensity("FR"), pue=0.9
        )


def test_a_plan_carries_its_whole_run_estimate_at_its_own_mfu() -> None:
    """8 H100s for a 100M-token full fine-tune of an 8B model on AWS (us-east-1 by default).

    The estimate is the plan's GPU-hours at the power its MFU implies:
    watts = 700 x (0.1 + 0.9 x min(1, mfu / 0.5)), kWh = watts x GPU-hours / 1000 x 1.15.
    """
    plan = plan_training(
        TrainingRequest(
            model="llama-3.1-8b",
            method="full",
            gpu="H100-SXM",
            num_gpus=8,
            dataset_tokens=100_000_000,
            cloud="aws",
        )
    )
    carbon = training_plan_carbon(plan)
    assert carbon is not None and plan.duration_seconds is not None
    gpu_hours = 8 * plan.duration_seconds / 3600
    watts = 700 * (0.1 + 0.9 * min(1.0, plan.throughput.mfu / 0.5))
    assert carbon.gpu_hours == pytest.approx(gpu_hours)
    assert carbon.gpu_watts == pytest.approx(watts)
    assert carbon.energy_kwh == pytest.approx(watts * gpu_hours / 1000 * 1.15)
    assert carbon.kg_co2e == pytest.approx(carbon.energy_kwh * 0.287)
    assert carbon.zone == "US-SRVC"
    # The same run on a hydro grid, with the user's own PUE, and without a dataset size.
    quebec = training_plan_carbon(plan, location="ca-central-1", pue=1.3)
    assert quebec is not None and quebec.kg_co2e < carbon.kg_co2e / 100
    assert quebec.energy_kwh == pytest.approx(carbon.gpu_energy_kwh * 1.3)
    unsized = plan_training(
        TrainingRequest(model="llama-3.1-8b", method="lora", gpu="L4", num_gpus=1)
    )
    assert training_plan_carbon(unsized) is None
