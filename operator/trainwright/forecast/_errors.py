"""Errors the forecaster raises, each one sentence a user can act on.

    ForecastError
     ├── SeriesError          the input series cannot be forecast as given
     │                        (non-numeric values, duplicates, long gaps, too short)
     ├── ScenarioError        a ``--scenario`` expression does not parse
     └── PrometheusError      a ``query_range`` failed (unreachable, rejected,
                              several series where one was expected)

All derive from ``ValueError`` so library callers can catch bad input in one
place; the CLI turns them into exit code 2.
"""

from __future__ import annotations


class ForecastError(ValueError):
    """Base of every error the forecaster raises on bad input."""


class SeriesError(ForecastError):
    """The series is malformed, too short or has a gap too long to fill."""


class ScenarioError(ForecastError):
    """A scenario expression does not parse."""


class PrometheusError(ForecastError):
    """Prometheus could not be reached or did not return one usable series."""
