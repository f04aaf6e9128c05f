"""Reading and aligning a demand series: intervals, jitter, gaps, and one-sentence errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trainwright.forecast import SeriesError, from_pairs, parse_series, prepare
from trainwright.forecast.series import SECONDS_PER_MONTH


def hourly_csv(values: list[float], start: str = "2026-03-02T00:00:00Z", jitter_s: int = 0) -> str:
    stamps = pd.date_range(start, periods=len(values), freq="h")
    rng = np.random.default_rng(3)
    lines = ["timestamp,value"]
    for stamp, value in zip(stamps, values, strict=True):
        shifted = stamp + pd.Timedelta(seconds=int(rng.integers(-jitter_s, jitter_s + 1)))
        lines.append(f"{shifted.isoformat()},{value}")
    return "\n".join(lines) + "\n"


def daily_cycle(days: int) -> list[float]:
    hours = np.arange(24 * days)
    return list(100.0 + 20.0 * np.sin(2 * np.pi * hours / 24))


def test_jittered_hourly_timestamps_land_on_the_whole_hour() -> None:
    prepared = prepare(parse_series(hourly_csv(daily_cycle(3), jitter_s=90)))
    assert prepared.series.interval.seconds == 3_600
    assert prepared.series.timestamps[0] == pd.Timestamp("2026-03-02T00:00:00Z")
    assert len(prepared.series) == 72
    assert prepared.series.gaps_filled == ()


def test_hourly_series_of_three_days_keeps_the_daily_season_and_drops_the_weekly() -> None:
    prepared = prepare(parse_series(hourly_csv(daily_cycle(3))))
    assert prepared.season_lengths == (24,)
    assert any("season 168 dropped" in note for note in prepared.notes)


def test_monthly_series_steps_by_calendar_months_with_a_season_of_12() -> None:
    stamps = pd.date_range("2020-01-31", periods=30, freq="ME")
    prepared = prepare(from_pairs([s.isoformat() for s in stamps], list(range(30))))
    assert prepared.series.interval.seconds == SECONDS_PER_MONTH
    assert prepared.season_lengths == (12,)
    assert prepared.series.future_timestamps(2)[1].strftime("%Y-%m-%d") == "2022-08-31"


def test_a_two_hour_gap_is_filled_from_the_day_before_and_reported() -> None:
    values = daily_cycle(3)
    csv = hourly_csv(values).splitlines()
    del csv[1 + 50 : 1 + 52]  # hours 50 and 51 missing
    prepared = prepare(parse_series("\n".join(csv)))
    series = prepared.series
    assert len(series) == 72
    assert [(g.points, g.start[:13]) for g in series.gaps_filled] == [(2, "2026-03-04T02")]
    np.testing.assert_allclose(series.values[50:52], values[50:52], atol=1e-9)


def test_a_gap_longer_than_a_quarter_of_the_day_is_an_error_naming_its_dates() -> None:
    csv = hourly_csv(daily_cycle(3)).splitlines()
    del csv[1 + 30 : 1 + 40]
    with pytest.raises(SeriesError, match=r"gap of 10 points from 2026-03-03T06:00:00\+00:00"):
        prepare(parse_series("\n".join(csv)))


def test_a_non_numeric_value_names_its_row() -> None:
    csv = hourly_csv(daily_cycle(3)).replace(",100.0\n", ",lots\n", 1)
    with pytest.raises(SeriesError, match=r"^row 1: value 'lots' is not a number$"):
        parse_series(csv)


def test_a_duplicate_timestamp_is_refused() -> None:
    csv = hourly_csv(daily_cycle(3))
    first_row = csv.splitlines()[1]
    with pytest.raises(SeriesError, match="2026-03-02T00:00:00\\+00:00 appears more than once"):
        prepare(parse_series(csv + first_row + "\n"))


def test_fewer_points_than_two_days_of_hourly_data_is_refused() -> None:
    with pytest.raises(SeriesError, match=r"has 30 points; at least 48 \(two seasons of 24\)"):
        prepare(parse_series(hourly_csv(daily_cycle(2)[:30])))


def test_an_explicit_season_needs_two_cycles_of_history() -> None:
    with pytest.raises(SeriesError, match="--season-length 48 needs at least 96 points"):
        prepare(parse_series(hourly_csv(daily_cycle(3))), season_lengths=[48])


def test_json_and_csv_of_the_same_points_give_the_same_series() -> None:
    values = daily_cycle(3)
    stamps = pd.date_range("2026-03-02T00:00:00Z", periods=len(values), freq="h")
    document = json.dumps(
        [{"timestamp": int(s.timestamp()), "value": v} for s, v in zip(stamps, values, strict=True)]
    )
    from_json = prepare(parse_series(document)).series
    from_csv = prepare(parse_series(hourly_csv(values))).series
    assert list(from_json.timestamps) == list(from_csv.timestamps)
    np.testing.assert_allclose(from_json.values, from_csv.values)


def test_a_csv_without_the_contract_header_says_which_columns_it_needs() -> None:
    with pytest.raises(SeriesError, match="header must name the columns timestamp,value"):
        parse_series("time,count\n2026-01-01,3\n")


def test_an_unparseable_timestamp_names_its_row() -> None:
    with pytest.raises(SeriesError, match="row 2: timestamp 'yesterday' is not an ISO 8601"):
        parse_series("timestamp,value\n2026-01-01,3\nyesterday,4\n")


def test_two_readings_in_one_hour_slot_are_averaged_and_reported() -> None:
    csv = hourly_csv(daily_cycle(3)) + "2026-03-02T05:10:00Z,1000\n"
    series = prepare(parse_series(csv)).series
    assert series.points_merged == 1
    assert series.values[5] == pytest.approx((daily_cycle(3)[5] + 1000.0) / 2)
    assert any("averaged 1 grid slot" in note for note in series.warnings)
