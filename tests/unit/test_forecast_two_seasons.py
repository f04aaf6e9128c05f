"""A series of exactly two of its longest seasons is enough to forecast (issue: MSTL drops it)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trainwright.cli import main


def _hourly_csv(path: Path, hours: int) -> Path:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = ["timestamp,value"]
    for i in range(hours):
        value = 100 + 20 * math.sin(2 * math.pi * i / 24) + 0.05 * i
        rows.append(f"{(start + timedelta(hours=i)).isoformat()},{value:.4f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_exactly_two_weeks_of_hourly_data_forecasts_the_daily_cycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = _hourly_csv(tmp_path / "two-weeks.csv", 336)
    assert main(["forecast", "--input", str(series), "--horizon", "24", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["season_lengths"] == [24, 168]
    means = [row["mean"] for row in report["forecast"]]
    assert len(means) == 24
    # The daily swing of ±20 around ~117 survives: peak and trough a cycle apart.
    assert max(means) - min(means) == pytest.approx(40, abs=6)
    for row in report["forecast"]:
        assert row["lower_95"] <= row["lower_80"] <= row["mean"] <= row["upper_80"]
        assert row["upper_80"] <= row["upper_95"]
