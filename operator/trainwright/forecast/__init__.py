"""Demand forecasting for capacity plans: statsmodels models in a backtested ensemble.

Read a series (:func:`parse_series`, :func:`fetch_query_range`), align it
(:func:`prepare`), forecast it with P80/P95 bands (:func:`forecast`), refresh it
cheaply as points arrive (:func:`update`), and turn a request-rate forecast into
GPUs (:func:`capacity_forecast`). The pure parts do
no I/O; only :mod:`trainwright.forecast.prometheus` talks HTTP.
"""

from trainwright.forecast._errors import ForecastError, PrometheusError, ScenarioError, SeriesError
from trainwright.forecast.capacity import CapacityForecast, CapacityStep, capacity_forecast
from trainwright.forecast.engine import (
    DEFAULT_MODELS,
    Backtest,
    Band,
    ForecastResult,
    ModelReport,
    PreparedSeries,
    forecast,
    prepare,
    update,
)
from trainwright.forecast.scenarios import Scenario, parse_scenario
from trainwright.forecast.series import (
    RawSeries,
    TimeSeries,
    from_pairs,
    parse_csv,
    parse_json,
    parse_series,
)

__all__ = [
    "DEFAULT_MODELS",
    "Backtest",
    "Band",
    "CapacityForecast",
    "CapacityStep",
    "ForecastError",
    "ForecastResult",
    "ModelReport",
    "PreparedSeries",
    "PrometheusError",
    "RawSeries",
    "Scenario",
    "ScenarioError",
    "SeriesError",
    "TimeSeries",
    "capacity_forecast",
    "forecast",
    "from_pairs",
    "parse_csv",
    "parse_json",
    "parse_scenario",
    "parse_series",
    "prepare",
    "update",
]
