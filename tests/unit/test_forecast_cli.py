"""``trainwright forecast``: the JSON contract, stdin, and one-line exit-2 errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainwright.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "forecast"
AIR = DATA / "air_passengers.csv"


def daily_csv(days: int, seed: int = 4) -> str:
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    values = 80.0 + 15.0 * np.sin(2 * np.pi * t / 7) + rng.normal(0.0, 2.0, days)
    stamps = pd.date_range("2026-06-01", periods=days, freq="D")
    return "timestamp,value\n" + "".join(
        f"{s.date()},{v:.3f}\n" for s, v in zip(stamps, values, strict=True)
    )


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_output_carries_every_contract_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["forecast", "--input", str(AIR), "--scenario", "launch=1.5", "-o", "json"], capsys
    )
    document = json.loads(out)
    assert code == 0
    assert document["interval_seconds"] == 2_629_746
    assert document["season_lengths"] == [12]
    # The default is the whole ensemble; sarima fits AirPassengers' one short season.
    assert set(document["models"]) == {"arima", "ets", "sarima", "stl", "theta"}
    assert all("weight" in m for m in document["models"].values())
    assert len(document["forecast"]) == 12
    assert set(document["forecast"][0]) == {
        "timestamp", "mean", "lower_80", "upper_80", "lower_95", "upper_95",
    }  # fmt: skip
    assert document["forecast"][0]["timestamp"] == "1961-01-01T00:00:00+00:00"
    assert set(document["backtest"]) >= {
        "mase",
        "seasonal_naive_mase",
        "coverage_80",
        "coverage_95",
    }
    assert document["backtest"]["mase"] < document["backtest"]["seasonal_naive_mase"]
    launch = document["scenarios"]["launch"]
    assert launch[5]["mean"] == pytest.approx(1.5 * document["forecast"][5]["mean"], rel=1e-5)


def test_stdin_input_with_explicit_season_and_horizon(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(daily_csv(63)))
    code, out, _ = run_cli(
        ["forecast", "--input", "-", "--season-length", "7", "--horizon", "10", "--models",
         "stl,ets", "-o", "json"],
        capsys,
    )  # fmt: skip
    document = json.loads(out)
    assert code == 0
    assert document["interval_seconds"] == 86_400
    assert len(document["forecast"]) == 10
    assert set(document["models"]) == {"stl", "ets"}


def test_table_output_lists_models_and_steps(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["forecast", "--input", str(AIR), "--models", "stl", "--horizon", "3", "-o", "table"],
        capsys,
    )
    assert code == 0
    assert "MODEL  WEIGHT" in out
    assert "1961-03-01T00:00:00+00:00" in out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("timestamp,value\n2026-01-01,1\n2026-01-02,abc\n2026-01-03,2\n", "row 2: value 'abc'"),
        (
            "timestamp,value\n2026-01-01,1\n2026-01-01,2\n2026-01-02,3\n",
            "timestamp 2026-01-01T00:00:00+00:00 appears more than once",
        ),
        (daily_csv(10), "the series has 10 points; at least 14 (two seasons of 7)"),
        ("[1, 2]", "JSON input must be a list of"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    body: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "series.csv"
    path.write_text(body)
    code, out, err = run_cli(["forecast", "--input", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", str(AIR), "--models", "arima,prophet"], "--models accepts"),
        (["--input", str(AIR), "--scenario", "launch=soon"], "--scenario 'launch=soon'"),
        (
            ["--input", "/nonexistent/series.csv"],
            "--input '/nonexistent/series.csv' cannot be read",
        ),
        ([], "give exactly one source"),
        (["--prometheus-url", "http://127.0.0.1:1"], "--prometheus-url needs --query"),
        (
            ["--prometheus-url", "http://127.0.0.1:1", "--query", "up", "--range", "1d"],
            "could not reach Prometheus at http://127.0.0.1:1",
        ),
        (["--input", str(AIR), "--season-length", "100"], "--season-length 100 needs at least 200"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["forecast", *argv], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert message in err


def test_a_non_positive_horizon_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["forecast", "--input", str(AIR), "--horizon", "0"])
    assert exit_info.value.code == 2
    assert "--horizon must be a positive integer, got '0'" in capsys.readouterr().err
