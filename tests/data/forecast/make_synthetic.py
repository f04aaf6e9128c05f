"""Regenerate the synthetic series in this folder (seeded, so the files never change).

- synthetic_hourly_trend_break.csv: 8 weeks of hourly request rates with a daily and a
  weekly cycle, AR(1) noise and a trend that turns from flat to +0.6 %/day in week 5.
- synthetic_daily_level_shift.csv: two years of daily demand with a weekly cycle, a
  gentle trend and a 20 % level step on day 500.

Run: python tests/data/forecast/make_synthetic.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    noise = rng.normal(0.0, sd, n)
    out = np.zeros(n)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + noise[i]
    return out


def hourly_trend_break(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 8 * 168
    t = np.arange(n)
    hour, day = t % 24, (t // 24) % 7
    daily = 30.0 * np.sin(2 * np.pi * (hour - 8) / 24) + 10.0 * np.sin(4 * np.pi * hour / 24)
    weekly = np.where(day >= 5, -25.0, 0.0)
    break_at = 4 * 168
    trend = 100.0 + np.where(t < break_at, 0.0, 0.6 * (t - break_at) / 24)
    values = trend + daily + weekly + _ar1(rng, n, 0.6, 4.0)
    stamps = pd.date_range("2026-01-05T00:00:00Z", periods=n, freq="h")
    return pd.DataFrame(
        {"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": values.round(3)}
    )


def daily_level_shift(seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 730
    t = np.arange(n)
    weekly = np.array([10.0, 12.0, 11.0, 9.0, 6.0, -20.0, -28.0])[t % 7]
    level = 200.0 + 0.05 * t + np.where(t >= 500, 40.0, 0.0)
    values = level + weekly + _ar1(rng, n, 0.5, 5.0)
    stamps = pd.date_range("2024-01-01", periods=n, freq="D")
    return pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d"), "value": values.round(3)})


if __name__ == "__main__":
    hourly_trend_break().to_csv(HERE / "synthetic_hourly_trend_break.csv", index=False)
    daily_level_shift().to_csv(HERE / "synthetic_daily_level_shift.csv", index=False)
