"""Reading a demand series from Prometheus's HTTP API (``/api/v1/query_range``).

The only I/O in :mod:`trainwright.forecast`. ``transport`` is the test seam:
pass ``httpx.MockTransport`` to script responses. Long ranges are split into
requests of at most ``MAX_POINTS_PER_REQUEST`` steps, because Prometheus refuses
queries that would return more than 11,000 points per series.

Reference: Prometheus HTTP API, "Range queries"
(https://prometheus.io/docs/prometheus/latest/querying/api/#range-queries).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from trainwright.forecast._errors import PrometheusError
from trainwright.forecast.series import RawSeries, from_pairs

MAX_POINTS_PER_REQUEST = 10_000
_DURATION = re.compile(r"^(?P<count>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d|w|y)$")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3_600.0,
    "d": 86_400.0,
    "w": 604_800.0,
    "y": 31_536_000.0,
}


def parse_duration_seconds(text: str, flag: str) -> float:
    """A Prometheus duration (``30s``, ``5m``, ``1h``, ``30d``, ``2w``) or plain seconds."""
    stripped = text.strip()
    match = _DURATION.match(stripped)
    try:
        seconds = float(match["count"]) * _UNIT_SECONDS[match["unit"]] if match else float(stripped)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise PrometheusError(
            f"{flag} must be a positive duration such as 30s, 5m, 1h, 30d or 2w; got {text!r}"
        )
    return seconds


def parse_time(text: str, flag: str) -> pd.Timestamp:
    """An RFC 3339 time, Unix seconds, or ``now``."""
    stripped = text.strip()
    try:
        if stripped == "now":
            return pd.Timestamp.now(tz="UTC")
        if re.fullmatch(r"\d+(\.\d+)?", stripped):
            return pd.Timestamp(float(stripped), unit="s", tz="UTC")
        stamp = pd.Timestamp(stripped)
    except ValueError:
        raise PrometheusError(
            f"{flag} must be an RFC 3339 time, Unix seconds or 'now'; got {text!r}"
        ) from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _get(client: Any, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
    import httpx

    try:
        response = client.get(url, params=params)
    except httpx.HTTPError as exc:
        raise PrometheusError(f"could not reach Prometheus at {url}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        raise PrometheusError(
            f"Prometheus at {url} answered HTTP {response.status_code} without a JSON body"
        ) from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "unknown error") if isinstance(body, dict) else "unknown error"
        raise PrometheusError(
            f"Prometheus rejected the query (HTTP {response.status_code}): {error}"
        )
    data = body.get("data", {})
    if data.get("resultType") != "matrix":
        raise PrometheusError(
            f"query_range returned a {data.get('resultType')!r} result; expected a matrix"
        )
    result: list[dict[str, Any]] = data.get("result", [])
    return result


def _describe(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


def fetch_query_range(
    url: str,
    query: str,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    step_seconds: float,
    timeout_seconds: float = 30.0,
    transport: Any = None,
) -> RawSeries:
    """Run ``query`` over ``[start, end]`` every ``step_seconds`` and return its one series.

    Raises :class:`PrometheusError` when Prometheus cannot be reached, rejects the
    query, or returns no series or several (aggregate them, e.g. ``sum(...)``).
    """
    import httpx

    if end <= start:
        raise PrometheusError(
            f"--end ({end.isoformat()}) must be after --start ({start.isoformat()})"
        )
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    chunk_seconds = step_seconds * MAX_POINTS_PER_REQUEST
    points: dict[float, str] = {}
    with httpx.Client(timeout=timeout_seconds, transport=transport) as client:
        chunk_start = start.value / 1e9
        final = end.value / 1e9
        while chunk_start <= final:
            chunk_end = min(final, chunk_start + chunk_seconds - step_seconds)
            params = {
                "query": query,
                "start": f"{chunk_start:.3f}",
                "end": f"{chunk_end:.3f}",
                "step": f"{step_seconds:g}",
            }
            series = _get(client, endpoint, params)
            if len(series) > 1:
                names = ", ".join(_describe(s.get("metric", {})) for s in series[:3])
                raise PrometheusError(
                    f"the query returned {len(series)} series ({names}, ...); forecast needs one: "
                    "aggregate them, e.g. sum(...) or sum by () (...)"
                )
            if series:
                points.update({float(t): v for t, v in series[0].get("values", [])})
            chunk_start = chunk_end + step_seconds
    if not points:
        raise PrometheusError(f"the query {query!r} returned no data between {start} and {end}")
    stamps = sorted(points)
    values = [math.nan if points[t] in ("NaN", "+Inf", "-Inf") else points[t] for t in stamps]
    return from_pairs(stamps, values)
