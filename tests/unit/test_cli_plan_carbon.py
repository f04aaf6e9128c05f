"""`trainwright plan training`: the whole run's energy and CO2e, and the flags that move them."""

from __future__ import annotations

import json

import pytest

from trainwright.cli import main

PLAN = ("plan", "training", "--model", "llama-3.1-8b", "--method", "lora", "--gpu", "H100-SXM")


def _plan(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main([*PLAN, "--gpus", "8", "--dataset-tokens", "100M", *argv, "-o", "json"]) == 0
    document: dict = json.loads(capsys.readouterr().out)  # type: ignore[type-arg]
    return document


def test_the_plan_shows_the_runs_carbon_in_the_price_region_and_where_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    default = _plan(capsys)
    carbon = default["carbon"]
    gpu_hours = 8 * default["duration_seconds"] / 3600
    assert carbon["gpu_hours"] == pytest.approx(gpu_hours)
    assert (carbon["zone"], carbon["pue"], carbon["g_co2e_per_kwh"]) == ("US-SRVC", 1.15, 287)
    assert carbon["energy_kwh"] == pytest.approx(carbon["gpu_watts"] * gpu_hours / 1000 * 1.15)
    assert carbon["kg_co2e"] == pytest.approx(carbon["energy_kwh"] * 0.287)
    sweden = _plan(capsys, "--region", "eu-north-1")["carbon"]
    assert sweden["zone"] == "SE" and sweden["kg_co2e"] == pytest.approx(
        carbon["kg_co2e"] * 41 / 287
    )
    own = _plan(capsys, "--grid-intensity", "500", "--pue", "1.5")["carbon"]
    assert (own["g_co2e_per_kwh"], own["intensity_source"]) == (500, "user override")
    assert own["energy_kwh"] == pytest.approx(carbon["gpu_energy_kwh"] * 1.5)


def test_the_table_has_a_carbon_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PLAN, "--gpus", "8", "--dataset-tokens", "100M", "-o", "table"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("carbon:")]
    assert "kg CO2e" in line and "287 g/kWh in US-SRVC" in line and "PUE 1.15" in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--region", "mars-1"), "--region: unknown carbon region 'mars-1'"),
        (("--pue", "0.5"), "--pue: pue must be at least 1"),
        (("--grid-intensity", "-3"), "--grid-intensity must be a positive number"),
    ],
)
def test_bad_carbon_flags_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        code = main([*PLAN, "--gpus", "8", "--dataset-tokens", "100M", *flags, "-o", "json"])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
