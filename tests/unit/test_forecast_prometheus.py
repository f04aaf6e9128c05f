"""The Prometheus reader against scripted HTTP answers (httpx.MockTransport, no network)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from trainwright.forecast import PrometheusError
from trainwright.forecast import prometheus as prom

START = pd.Timestamp("2026-11-01T00:00:00Z")


def matrix(*series: list[tuple[float, str]], labels: list[dict[str, str]] | None = None) -> Any:
    names = labels or [{"__name__": "requests", "pod": f"p{i}"} for i in range(len(series))]
    return {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": names[i], "values": [[t, v] for t, v in s]} for i, s in enumerate(series)
            ],
        },
    }


def transport_answering(handler: Any, calls: list[httpx.Request]) -> httpx.MockTransport:
    def respond(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return handler(request)

    return httpx.MockTransport(respond)


def test_a_range_query_returns_its_points_with_nan_as_missing() -> None:
    t0 = START.timestamp()
    body = matrix([(t0, "1"), (t0 + 3600, "NaN"), (t0 + 7200, "3.5")])
    calls: list[httpx.Request] = []
    raw = prom.fetch_query_range(
        "http://prom:9090/",
        "sum(rate(requests_total[5m]))",
        start=START,
        end=START + pd.Timedelta(hours=2),
        step_seconds=3600,
        transport=transport_answering(lambda r: httpx.Response(200, json=body), calls),
    )
    assert calls[0].url.path == "/api/v1/query_range"
    assert calls[0].url.params["query"] == "sum(rate(requests_total[5m]))"
    assert calls[0].url.params["step"] == "3600"
    np.testing.assert_array_equal(raw.values, [1.0, np.nan, 3.5])
    assert raw.timestamps[2] == START + pd.Timedelta(hours=2)


def test_a_long_range_is_split_into_requests_prometheus_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prom, "MAX_POINTS_PER_REQUEST", 10)

    def answer(request: httpx.Request) -> httpx.Response:
        start, end = float(request.url.params["start"]), float(request.url.params["end"])
        points = [(t, "2") for t in np.arange(start, end + 1, 60.0)]
        return httpx.Response(200, json=matrix(points))

    calls: list[httpx.Request] = []
    raw = prom.fetch_query_range(
        "http://prom:9090",
        "up",
        start=START,
        end=START + pd.Timedelta(minutes=24),
        step_seconds=60,
        transport=transport_answering(answer, calls),
    )
    assert len(calls) == 3
    assert len(raw.values) == 25


def test_several_series_without_aggregation_ask_for_a_sum() -> None:
    t0 = START.timestamp()
    body = matrix([(t0, "1")], [(t0, "2")])
    with pytest.raises(PrometheusError, match=r"returned 2 series .*aggregate them, e\.g\. sum"):
        prom.fetch_query_range(
            "http://prom:9090",
            "rate(requests_total[5m])",
            start=START,
            end=START + pd.Timedelta(hours=1),
            step_seconds=3600,
            transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body)),
        )


def test_a_rejected_query_repeats_prometheus_own_error() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"}
    with pytest.raises(PrometheusError, match=r"rejected the query \(HTTP 400\): parse error"):
        prom.fetch_query_range(
            "http://prom:9090",
            "sum(",
            start=START,
            end=START + pd.Timedelta(hours=1),
            step_seconds=3600,
            transport=httpx.MockTransport(lambda r: httpx.Response(400, json=body)),
        )


def test_an_unreachable_server_is_one_sentence_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PrometheusError, match=r"^could not reach Prometheus at http://prom:9090"):
        prom.fetch_query_range(
            "http://prom:9090",
            "up",
            start=START,
            end=START + pd.Timedelta(hours=1),
            step_seconds=3600,
            transport=httpx.MockTransport(refuse),
        )


def test_an_empty_result_says_the_query_found_no_data() -> None:
    body = json.loads(json.dumps(matrix()))
    with pytest.raises(PrometheusError, match="returned no data"):
        prom.fetch_query_range(
            "http://prom:9090",
            "absent_metric",
            start=START,
            end=START + pd.Timedelta(hours=1),
            step_seconds=3600,
            transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body)),
        )


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("28d", 2_419_200.0)]
)
def test_durations_read_like_prometheus_durations(text: str, seconds: float) -> None:
    assert prom.parse_duration_seconds(text, "--step") == seconds


def test_a_bad_duration_names_the_flag_and_the_accepted_forms() -> None:
    with pytest.raises(PrometheusError, match=r"^--range must be a positive duration such as 30s"):
        prom.parse_duration_seconds("soon", "--range")
