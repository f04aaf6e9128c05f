"""Reading a demand series and putting it on a regular grid.

The contract format is CSV with the header ``timestamp,value`` or JSON
``[{"timestamp": ..., "value": ...}]``; timestamps are ISO 8601 (or Unix
seconds). Real exports are untidy, so :func:`regularize` infers the interval
(fixed seconds, or calendar months/quarters/years), snaps jittered timestamps
to the nearest grid slot, fills short gaps and refuses long ones.

Short gaps are filled seasonally when a full season precedes them: the value
one season back plus a straight line joining the seasonal differences at the
gap's two edges (the "seasonal interpolation" of Hyndman & Athanasopoulos,
*Forecasting: Principles and Practice*, 3rd ed., §13.9), otherwise linearly.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from trainwright.forecast._errors import SeriesError

FloatArray = NDArray[np.float64]

# Calendar intervals: nominal seconds (mean Gregorian month/quarter/year) reported as
# ``interval_seconds``; the grid itself steps by calendar units.
SECONDS_PER_MONTH = 2_629_746
SECONDS_PER_QUARTER = 3 * SECONDS_PER_MONTH
SECONDS_PER_YEAR = 12 * SECONDS_PER_MONTH
_DAY_SECONDS = 86_400
# Fixed intervals people sample at; a jittered median snaps to the nearest within 10 %.
_COMMON_INTERVAL_SECONDS = (
    1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800,
    14_400, 21_600, 43_200, 86_400, 604_800,
)  # fmt: skip


@dataclass(frozen=True)
class RawSeries:
    """Points as read, in input order; ``nan`` marks a missing value."""

    timestamps: pd.DatetimeIndex
    values: FloatArray


@dataclass(frozen=True)
class Gap:
    """Consecutive missing grid slots that were filled."""

    start: str
    points: int


@dataclass(frozen=True)
class Interval:
    """The sampling interval: fixed seconds, or a calendar unit (``months`` steps)."""

    seconds: int
    months: int = 0
    month_end: bool = False

    @property
    def is_calendar(self) -> bool:
        return self.months > 0

    def offset(self, steps: int) -> Any:
        if self.month_end:
            return pd.offsets.MonthEnd(self.months * steps)
        if self.is_calendar:
            return pd.DateOffset(months=self.months * steps)
        return pd.Timedelta(seconds=self.seconds * steps)


@dataclass(frozen=True)
class TimeSeries:
    """A regular series: ``values[i]`` is observed at ``timestamps[i]``."""

    timestamps: pd.DatetimeIndex
    values: FloatArray
    interval: Interval
    gaps_filled: tuple[Gap, ...] = ()
    points_merged: int = 0
    warnings: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.values)

    def future_timestamps(self, horizon: int) -> pd.DatetimeIndex:
        """The ``horizon`` grid timestamps after the last observation."""
        first, n = self.timestamps[0], len(self.timestamps)
        steps = range(n, n + horizon)
        return pd.DatetimeIndex([first + self.interval.offset(k) for k in steps])

    def tail(self, points: int) -> TimeSeries:
        """The last ``points`` observations (the fit window of a long series)."""
        return TimeSeries(
            timestamps=self.timestamps[-points:],
            values=self.values[-points:],
            interval=self.interval,
            gaps_filled=self.gaps_filled,
            points_merged=self.points_merged,
            warnings=self.warnings,
        )

    def head(self, points: int) -> TimeSeries:
        """The first ``points`` observations (a backtest's training part)."""
        return TimeSeries(
            timestamps=self.timestamps[:points],
            values=self.values[:points],
            interval=self.interval,
        )


# --- reading -------------------------------------------------------------------------------


def _parse_value(text: Any, row: int) -> float:
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "nan", "null")):
        return math.nan
    if isinstance(text, bool):
        raise SeriesError(f"row {row}: value {text!r} is not a number")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SeriesError(f"row {row}: value {text!r} is not a number") from None
    if math.isinf(value):
        raise SeriesError(f"row {row}: value {text!r} is not a finite number")
    return value


def _parse_timestamps(texts: Sequence[Any]) -> pd.DatetimeIndex:
    parsed: list[pd.Timestamp] = []
    for row, text in enumerate(texts, start=1):
        try:
            if isinstance(text, int | float) and not isinstance(text, bool):
                stamp = pd.Timestamp(float(text), unit="s", tz="UTC")
            else:
                stamp = pd.Timestamp(str(text).strip())
                stamp = (
                    stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
                )
        except (TypeError, ValueError, OverflowError):
            raise SeriesError(
                f"row {row}: timestamp {text!r} is not an ISO 8601 date-time or Unix seconds"
            ) from None
        if pd.isna(stamp):
            raise SeriesError(f"row {row}: timestamp is empty")
        parsed.append(stamp)
    return pd.DatetimeIndex(parsed)


def _raw(timestamps: Sequence[Any], values: Sequence[Any]) -> RawSeries:
    if not timestamps:
        raise SeriesError("the series is empty: it needs rows of timestamp and value")
    numbers = np.array([_parse_value(v, i) for i, v in enumerate(values, start=1)])
    return RawSeries(timestamps=_parse_timestamps(timestamps), values=numbers)


def parse_csv(text: str) -> RawSeries:
    """Read CSV with the header ``timestamp,value`` (column order free, extra columns ignored)."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "timestamp" not in header or "value" not in header:
        raise SeriesError(f"CSV header must name the columns timestamp,value; got {header}")
    t_col, v_col = header.index("timestamp"), header.index("value")
    stamps: list[str] = []
    values: list[str] = []
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) <= max(t_col, v_col):
            raise SeriesError(f"CSV line {line_no} has {len(row)} fields; expected timestamp,value")
        stamps.append(row[t_col])
        values.append(row[v_col])
    return _raw(stamps, values)


def parse_json(text: str) -> RawSeries:
    """Read JSON ``[{"timestamp": ..., "value": ...}, ...]``."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SeriesError(f"input is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(document, list) or not all(isinstance(p, dict) for p in document):
        raise SeriesError('JSON input must be a list of {"timestamp": ..., "value": ...} objects')
    for row, point in enumerate(document, start=1):
        if "timestamp" not in point or "value" not in point:
            raise SeriesError(f"JSON point {row} lacks a 'timestamp' or 'value' key")
    return _raw([p["timestamp"] for p in document], [p["value"] for p in document])


def parse_series(text: str) -> RawSeries:
    """Read CSV or JSON, telling them apart by the first non-blank character."""
    stripped = text.lstrip()
    if not stripped:
        raise SeriesError("the input is empty: it needs rows of timestamp and value")
    return parse_json(text) if stripped[0] in "[{" else parse_csv(text)


def from_pairs(timestamps: Sequence[Any], values: Sequence[Any]) -> RawSeries:
    """Build a raw series from Python sequences (inline CapacityPlan data, Prometheus)."""
    if len(timestamps) != len(values):
        raise SeriesError(f"{len(timestamps)} timestamps but {len(values)} values")
    return _raw(list(timestamps), list(values))


# --- the grid ------------------------------------------------------------------------------


def infer_interval(timestamps: pd.DatetimeIndex) -> Interval:
    """The sampling interval: calendar months/quarters/years, else the median step in seconds."""
    seconds = np.diff(timestamps.asi8) / 1e9
    median = float(np.median(seconds))
    days = median / _DAY_SECONDS
    if 27.5 <= days <= 31.5:
        return Interval(seconds=SECONDS_PER_MONTH, months=1)
    if 88.5 <= days <= 92.5:
        return Interval(seconds=SECONDS_PER_QUARTER, months=3)
    if 364.5 <= days <= 366.5:
        return Interval(seconds=SECONDS_PER_YEAR, months=12)
    nearest = min(_COMMON_INTERVAL_SECONDS, key=lambda c: abs(c - median))
    if abs(nearest - median) <= 0.1 * nearest:
        return Interval(seconds=nearest)
    return Interval(seconds=max(1, round(median)))


def _slots(timestamps: pd.DatetimeIndex, interval: Interval) -> tuple[NDArray[np.int64], Any]:
    """Grid slot of each timestamp (0 = first) and the grid's anchor."""
    if interval.is_calendar:
        months = timestamps.year * 12 + timestamps.month - 1
        slots = np.asarray((months - months[0]) // interval.months, dtype=np.int64)
        return slots, timestamps[0]
    step_ns = interval.seconds * 10**9
    offsets = timestamps.asi8 - timestamps.asi8[0]
    # Anchor the grid at the median phase so jitter on the first point does not shift it.
    phase = offsets / step_ns - np.round(offsets / step_ns)
    anchor_ns = int(timestamps.asi8[0] + float(np.median(phase)) * step_ns)
    # Round the anchor to the whole minute (second for sub-minute steps): samplers tick on it.
    unit_ns = 60 * 10**9 if interval.seconds >= 60 else 10**9
    anchor_ns = round(anchor_ns / unit_ns) * unit_ns
    slots = np.round((timestamps.asi8 - anchor_ns) / step_ns).astype(np.int64)
    return slots - slots[0], pd.Timestamp(anchor_ns + int(slots[0]) * step_ns, tz="UTC")


def default_max_gap_points(season_lengths: Sequence[int]) -> int:
    """Longest run of missing points that is filled: a quarter of the shortest season, at least 1."""
    seasonal = [m for m in season_lengths if m > 1]
    return max(1, min(seasonal) // 4) if seasonal else 2


def _fill_gap(values: FloatArray, start: int, stop: int, season: int) -> None:
    """Fill ``values[start:stop]`` in place (seasonal interpolation when a season precedes it)."""
    left, right = start - 1, stop
    if season > 1 and left - season >= 0 and right - season >= 0:
        d_left = values[left] - values[left - season]
        d_right = values[right] - values[right - season]
        for i in range(start, stop):
            frac = (i - left) / (right - left)
            values[i] = values[i - season] + d_left + frac * (d_right - d_left)
        return
    for i in range(start, stop):
        frac = (i - left) / (right - left)
        values[i] = values[left] + frac * (values[right] - values[left])


def regularize(
    raw: RawSeries,
    *,
    season_lengths: Sequence[int] = (),
    max_gap_points: int | None = None,
    interval: Interval | None = None,
) -> TimeSeries:
    """Sort, check and align ``raw`` on its inferred grid, filling short gaps.

    Raises :class:`SeriesError` for duplicate timestamps, fewer than three
    points, a gap longer than ``max_gap_points`` (default: a quarter of the
    shortest season) or missing values at either end.
    """
    order = np.argsort(raw.timestamps.asi8, kind="stable")
    stamps = raw.timestamps[order]
    values = raw.values[order]
    duplicated = stamps.duplicated()
    if duplicated.any():
        first = stamps[duplicated][0].isoformat()
        raise SeriesError(f"timestamp {first} appears more than once; each point needs its own")
    present = ~np.isnan(values)
    if present.sum() < 3:
        raise SeriesError(f"the series has {int(present.sum())} numeric points; at least 3 needed")
    interval = interval or infer_interval(stamps[present])
    if interval.is_calendar and bool(stamps.is_month_end.all()):
        interval = Interval(seconds=interval.seconds, months=interval.months, month_end=True)
    slots, anchor = _slots(stamps, interval)
    size = int(slots[-1]) + 1
    counts = np.zeros(size)
    np.add.at(counts, slots[present], 1.0)
    sums = np.zeros(size)
    np.add.at(sums, slots[present], values[present])
    grid = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
    merged = int((counts > 1).sum())
    timestamps = pd.DatetimeIndex([anchor + interval.offset(k) for k in range(size)])
    if np.isnan(grid[0]) or np.isnan(grid[-1]):
        raise SeriesError("the series must start and end with a numeric value")
    limit = default_max_gap_points(season_lengths) if max_gap_points is None else max_gap_points
    season = min((m for m in season_lengths if m > 1), default=1)
    gaps: list[Gap] = []
    missing = np.isnan(grid)
    i = 0
    while i < size:
        if not missing[i]:
            i += 1
            continue
        j = i
        while j < size and missing[j]:
            j += 1
        if j - i > limit:
            raise SeriesError(
                f"the series has a gap of {j - i} points from {timestamps[i].isoformat()} to "
                f"{timestamps[j - 1].isoformat()}; at most {limit} consecutive missing points are "
                "filled (pass a shorter range or a series without the outage)"
            )
        _fill_gap(grid, i, j, season)
        gaps.append(Gap(start=timestamps[i].isoformat(), points=j - i))
        i = j
    notes: list[str] = []
    if gaps:
        notes.append(f"filled {len(gaps)} gap(s), {sum(g.points for g in gaps)} point(s) in all")
    if merged:
        notes.append(f"averaged {merged} grid slot(s) that held more than one point")
    return TimeSeries(
        timestamps=timestamps,
        values=grid.astype(np.float64),
        interval=interval,
        gaps_filled=tuple(gaps),
        points_merged=merged,
        warnings=tuple(notes),
    )
