"""``trainwright forecast``: demand forecast with P80/P95 bands, backtest and scenarios."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trainwright.cli._common import UsageError, add_output_flag, emit, format_table, positive_int

_EPILOG = """\
input: CSV with the header timestamp,value or JSON [{"timestamp": ..., "value": ...}],
from --input FILE (or - for stdin), or a Prometheus range query:
  --prometheus-url http://prometheus:9090 --query 'sum(rate(requests_total[5m]))'
  --range 28d --step 1h        (or --start 2026-10-01T00:00:00Z --end now)

scenarios (--scenario, repeatable), each a multiplier path applied to the forecast:
  launch=1.5                   every step x1.5
  growth=growth:5%/month       compound growth from the last observation
                               (also growth:0.05/30d, +5%/month; units h, d, w, month, year)
  promo=step:1.3@2026-12-01    x1.3 from that date (UTC) on

exit codes: 0 ok, 2 bad input (one line on stderr).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "forecast",
        help="forecast demand with P80/P95 bands from a file or Prometheus",
        description="Forecast a demand series with a backtested ensemble of ARIMA, ETS and "
        "STL/MSTL models, with P80/P95 intervals and what-if scenarios.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", metavar="FILE|-", help="CSV or JSON series; - reads stdin")
    prom = parser.add_argument_group("Prometheus source")
    prom.add_argument("--prometheus-url", metavar="URL", help="e.g. http://prometheus:9090")
    prom.add_argument("--query", metavar="PROMQL", help="a query returning one series")
    prom.add_argument("--start", metavar="TIME", help="RFC 3339 time or Unix seconds")
    prom.add_argument("--end", metavar="TIME", help="RFC 3339 time, Unix seconds or now")
    prom.add_argument("--range", metavar="DURATION", help="history before --end (default 28d)")
    prom.add_argument("--step", metavar="DURATION", default="1h", help="resolution (default 1h)")
    parser.add_argument(
        "--horizon",
        type=positive_int("--horizon"),
        help="steps to forecast (default: the longest season, else 12)",
    )
    parser.add_argument(
        "--season-length",
        type=positive_int("--season-length"),
        nargs="+",
        action="extend",
        metavar="S",
        help="seasonal periods in steps (default: from the interval; hourly 24 168)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME=EXPR",
        help="a what-if: NAME=MULTIPLIER, NAME=growth:RATE/PERIOD or NAME=step:FACTOR@DATE",
    )
    parser.add_argument(
        "--models",
        default=None,
        metavar="LIST",
        help="comma-separated subset of arima,ets,sarima,stl,theta (default: all of them)",
    )
    parser.add_argument(
        "--max-gap",
        type=positive_int("--max-gap"),
        metavar="POINTS",
        help="longest run of missing points to fill (default: a quarter of the shortest season)",
    )
    parser.add_argument(
        "--transform",
        choices=("auto", "log", "none"),
        default="auto",
        help="model scale: log when the seasonal swing grows with the level (default: auto)",
    )
    add_output_flag(parser)
    parser.set_defaults(handler=run)


def _read_input(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--input {path!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--input {path!r} is not UTF-8 text (CSV or JSON)") from None


def _load_raw(args: argparse.Namespace) -> Any:
    from trainwright.forecast import parse_series
    from trainwright.forecast.prometheus import (
        fetch_query_range,
        parse_duration_seconds,
        parse_time,
    )

    if (args.input is None) == (args.prometheus_url is None):
        raise UsageError("give exactly one source: --input FILE|- or --prometheus-url with --query")
    if args.input is not None:
        return parse_series(_read_input(args.input))
    if not args.query:
        raise UsageError(
            "--prometheus-url needs --query (a PromQL expression returning one series)"
        )
    if args.start and args.range:
        raise UsageError("give --start or --range, not both")
    end = parse_time(args.end or "now", "--end")
    if args.start:
        start = parse_time(args.start, "--start")
    else:
        import pandas as pd

        seconds = parse_duration_seconds(args.range or "28d", "--range")
        start = end - pd.Timedelta(seconds=seconds)
    step_seconds = parse_duration_seconds(args.step, "--step")
    return fetch_query_range(
        args.prometheus_url, args.query, start=start, end=end, step_seconds=step_seconds
    )


def run(args: argparse.Namespace) -> int:
    from trainwright.forecast import (
        DEFAULT_MODELS,
        ForecastError,
        forecast,
        parse_scenario,
        prepare,
    )
    from trainwright.forecast.report import to_document

    if args.models is None:
        models = list(DEFAULT_MODELS)
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        scenarios = [parse_scenario(text) for text in args.scenario]
        prepared = prepare(
            _load_raw(args), season_lengths=args.season_length, max_gap_points=args.max_gap
        )
        result = forecast(
            prepared,
            horizon=args.horizon,
            models=models,
            scenarios=scenarios,
            transform=args.transform,
        )
    except ForecastError as exc:
        raise UsageError(str(exc)) from None
    emit(to_document(result), args.output, render_table)
    return 0


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_table(document: dict[str, Any]) -> str:
    """Models and weights, the backtest, then one row per forecast step."""
    backtest = document["backtest"]
    lines = [
        f"interval {document['interval_seconds']} s, seasons {document['season_lengths'] or 'none'}",
        format_table(
            ["MODEL", "WEIGHT", "BACKTEST MASE", "METHOD"],
            [
                [name, f"{m['weight']:.3f}", _fmt(m["mase"]), m.get("method", "")]
                for name, m in document["models"].items()
            ],
        ).rstrip(),
        f"backtest: MASE {_fmt(backtest['mase'])} (seasonal naive {_fmt(backtest['seasonal_naive_mase'])}), "
        f"coverage P80 {_fmt(backtest['coverage_80'])}, P95 {_fmt(backtest['coverage_95'])}",
    ]
    lines += [f"warning: {w}" for w in document["warnings"]]
    headers = ["TIMESTAMP", "MEAN", "P80 LOW", "P80 HIGH", "P95 LOW", "P95 HIGH"]
    keys = ["mean", "lower_80", "upper_80", "lower_95", "upper_95"]
    lines.append(
        format_table(
            headers, [[r["timestamp"]] + [_fmt(r[k]) for k in keys] for r in document["forecast"]]
        ).rstrip()
    )
    for name, scenario_rows in document["scenarios"].items():
        peak = max(scenario_rows, key=lambda r: r["mean"] or 0.0)
        lines.append(
            f"scenario {name}: peak mean {_fmt(peak['mean'])}, P95 high {_fmt(peak['upper_95'])} "
            f"at {peak['timestamp']}"
        )
    return "\n".join(lines) + "\n"
