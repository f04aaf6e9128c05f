"""``trainwright forecast`` against a real Prometheus on loopback, with backfilled history.

The fixture writes three weeks of hourly request rates as OpenMetrics, turns them into
TSDB blocks with ``promtool tsdb create-blocks-from openmetrics``, starts ``prometheus``
on a free loopback port with its own data directory, and stops it by PID. Needs the
Debian ``prometheus`` package (``make system-deps``); without it the test fails saying so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from prometheus_server import PrometheusMissingError, backfilled_prometheus
from trainwright.cli import main

pytestmark = pytest.mark.prometheus

HOURS = 21 * 24


@dataclass(frozen=True)
class Server:
    url: str
    start: pd.Timestamp
    end: pd.Timestamp
    truth_next_day: np.ndarray


def demand(hours: np.ndarray) -> np.ndarray:
    """Requests per second: a daily cycle, quieter weekends (the series starts on a Monday)."""
    daily = 60.0 + 25.0 * np.sin(2 * np.pi * (hours % 24 - 9) / 24)
    weekend = np.where((hours // 24) % 7 >= 5, 0.7, 1.0)
    return daily * weekend


def _openmetrics(start: pd.Timestamp) -> str:
    rng = np.random.default_rng(17)
    hours = np.arange(HOURS)
    rps = demand(hours) + rng.normal(0.0, 1.5, HOURS)
    lines = [
        "# HELP trainwright_demo_requests_per_second Requests per second served.",
        "# TYPE trainwright_demo_requests_per_second gauge",
    ]
    for pod, share in (("a", 0.4), ("b", 0.6)):
        for h, value in zip(hours, rps, strict=True):
            stamp = start.timestamp() + 3600 * int(h)
            lines.append(
                f'trainwright_demo_requests_per_second{{pod="{pod}"}} {share * value:.4f} {stamp:.0f}'
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("prometheus")
    # Start on a Monday three weeks back, so the last point is a few hours before now.
    now = pd.Timestamp.now(tz="UTC").floor("h")
    start = (now - pd.Timedelta(hours=HOURS)).normalize()
    start -= pd.Timedelta(days=start.dayofweek)
    try:
        with backfilled_prometheus(root, _openmetrics(start)) as url:
            end = start + pd.Timedelta(hours=HOURS - 1)
            truth = demand(np.arange(HOURS, HOURS + 24))
            yield Server(url=url, start=start, end=end, truth_next_day=truth)
    except PrometheusMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_forecast_from_a_range_query_follows_the_daily_cycle(
    prometheus: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "forecast",
            "--prometheus-url", prometheus.url,
            "--query", "sum(trainwright_demo_requests_per_second)",
            "--start", prometheus.start.isoformat(),
            "--end", prometheus.end.isoformat(),
            "--step", "1h",
            "--horizon", "24",
            "-o", "json",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert document["interval_seconds"] == 3_600
    assert document["season_lengths"] == [24, 168]
    first = pd.Timestamp(document["forecast"][0]["timestamp"])
    assert first == prometheus.end + pd.Timedelta(hours=1)
    means = np.array([row["mean"] for row in document["forecast"]])
    assert float(np.mean(np.abs(means - prometheus.truth_next_day))) < 5.0
    lower = np.array([row["lower_95"] for row in document["forecast"]])
    upper = np.array([row["upper_95"] for row in document["forecast"]])
    truth = prometheus.truth_next_day
    assert float(np.mean((lower <= truth) & (truth <= upper))) >= 0.9
    assert 0.0 < document["backtest"]["mase"] < 1.0


def test_a_query_returning_one_series_per_pod_exits_2_asking_for_a_sum(
    prometheus: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "forecast",
            "--prometheus-url", prometheus.url,
            "--query", "trainwright_demo_requests_per_second",
            "--start", prometheus.start.isoformat(),
            "--end", prometheus.end.isoformat(),
            "--step", "1h",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "returned 2 series" in err and "sum(...)" in err


def test_a_malformed_query_exits_2_with_prometheus_own_message(
    prometheus: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["forecast", "--prometheus-url", prometheus.url, "--query", "sum(", "--range", "1d"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Prometheus rejected the query (HTTP 400)" in err
