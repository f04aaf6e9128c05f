"""``trainwright compare JOB JOB...``: how runs differ in setup and in what they achieved.

Reads TrainingJobs from the cluster (``-n`` namespace) or from files of saved
``kubectl get tj -o yaml`` bodies (``-f``, a ``List`` or one object per document), and
prints the config fields that differ between them (spec and the plan the operator
chose), then each run's final train and eval loss, tokens/s, duration, GPU-hours,
cost, energy and CO2e, with the best value of each column marked. The JSON
(``-o json``) is documented in docs/compare.md.

Where the numbers come from: ``status.progress`` (loss, evalLoss, tokensPerSecond),
``status.startTime``/``completionTime`` (duration), ``status.usage`` when the operator
accounted it (gpuHours, costUsd, energyKwh, kgCo2e), else the plan's GPUs and price
times the duration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from trainwright.cli._common import UsageError, add_output_flag, emit, format_table

TRAININGJOBS = "trainingjobs"
KIND = "TrainingJob"
BEST_MARK = "*"
# The plan fields a comparison shows beside the spec: what the operator decided.
_PLAN_FIELDS = (
    "method",
    "gpuType",
    "numGpus",
    "strategy",
    "microBatchSize",
    "gradientAccumulationSteps",
)


class Metric(NamedTuple):
    key: str
    header: str
    better: Callable[[Iterable[float]], float]  # min or max
    render: Callable[[float], str]


METRICS: tuple[Metric, ...] = (
    Metric("train_loss", "TRAIN LOSS", min, lambda v: f"{v:.4f}"),
    Metric("eval_loss", "EVAL LOSS", min, lambda v: f"{v:.4f}"),
    Metric("tokens_per_second", "TOK/S", max, lambda v: f"{v:,.0f}"),
    Metric("duration_seconds", "DURATION", min, lambda v: _duration(v)),
    Metric("gpu_hours", "GPU-H", min, lambda v: f"{v:.2f}"),
    Metric("cost_usd", "COST", min, lambda v: f"${v:,.2f}"),
    Metric("energy_kwh", "KWH", min, lambda v: f"{v:.2f}"),
    Metric("kg_co2e", "KG CO2E", min, lambda v: f"{v:.3f}"),
)

_EPILOG = """\
examples:
  trainwright compare llama-lora-a llama-lora-b -n ml
  kubectl get tj run-a run-b -o yaml > runs.yaml; trainwright compare -f runs.yaml
  trainwright compare run-a run-b -f runs.yaml -o json

the best value of each column is marked with *; docs/compare.md describes the JSON.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare TrainingJobs: config differences, losses, speed, time and cost",
        description="Compare two or more TrainingJobs: what differs and which did best.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "jobs", nargs="*", metavar="JOB", help="TrainingJob names (with -f: picked from the files)"
    )
    parser.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="FILE",
        help="saved `kubectl get tj -o yaml` bodies ('-' for stdin); repeatable",
    )
    add_output_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.file:
        bodies = _select(_read_files(args.file), args.jobs)
    else:
        if len(args.jobs) < 2:
            raise UsageError("compare needs at least two JOB names (or -f FILE)")
        bodies = _read_cluster(args.namespace, args.jobs)
    if len(bodies) < 2:
        raise UsageError(f"compare needs at least two TrainingJobs, got {len(bodies)}")
    emit(compare_jobs(bodies), args.output, render_table)
    return 0


# Reading ---------------------------------------------------------------------------------


def _read_files(paths: list[str]) -> list[dict[str, Any]]:
    import yaml

    bodies: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            documents = list(yaml.safe_load_all(text))
        except OSError as exc:
            raise UsageError(f"-f {path}: cannot read it ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"-f {path}: not YAML or JSON ({_first_line(exc)})") from None
        for document in documents:
            bodies += _training_jobs(document, path)
    return bodies


def _training_jobs(document: Any, path: str) -> list[dict[str, Any]]:
    """The TrainingJobs of one document: a List's items, or the object itself."""
    if document is None:
        return []
    if not isinstance(document, dict):
        raise UsageError(
            f"-f {path}: expected TrainingJob objects, got a {type(document).__name__}"
        )
    if "items" in document:
        return [b for item in document["items"] or [] for b in _training_jobs(item, path)]
    if document.get("kind") != KIND:
        raise UsageError(f"-f {path}: expected kind {KIND}, got {document.get('kind')!r}")
    return [document]


def _select(bodies: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    if not names:
        return bodies
    by_name = {_name(b): b for b in bodies}
    missing = [n for n in names if n not in by_name]
    if missing:
        known = ", ".join(by_name) or "none"
        raise UsageError(f"JOB {', '.join(missing)} is not in the -f files (they hold: {known})")
    return [by_name[n] for n in names]


def _read_cluster(namespace: str, names: list[str]) -> list[dict[str, Any]]:
    from kubernetes.config import ConfigException

    from trainwright.operator.kube import Kube, load_client_configuration

    try:
        kube = Kube(load_client_configuration())
    except (ConfigException, OSError) as exc:
        raise UsageError(
            f"no cluster credentials: set KUBECONFIG, run in a pod, or use -f FILE ({exc})"
        ) from None
    bodies = []
    try:
        for name in names:
            try:
                body = kube.get_custom(TRAININGJOBS, namespace, name)
            except Exception as exc:  # unreachable server, forbidden: one sentence
                reason = getattr(exc, "reason", None) or exc.__class__.__name__
                raise UsageError(f"cannot read trainingjob {namespace}/{name}: {reason}") from None
            if body is None:
                raise UsageError(f"trainingjob {namespace}/{name} not found")
            bodies.append(body)
    finally:
        kube.close()
    return bodies


# Comparing -------------------------------------------------------------------------------


def compare_jobs(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparison document (docs/compare.md): jobs, differences, best per metric."""
    jobs = [_job_row(b) for b in bodies]
    configs = [_config(b) for b in bodies]
    fields = sorted({key for config in configs for key in config})
    differences = [
        {"field": field, "values": [config.get(field) for config in configs]}
        for field in fields
        if len({json.dumps(config.get(field), sort_keys=True) for config in configs}) > 1
    ]
    return {"jobs": jobs, "differences": differences, "best": _best(jobs)}


def _name(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


def _job_row(body: dict[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    progress = status.get("progress") or {}
    plan = status.get("plan") or {}
    usage = status.get("usage") or {}
    duration = _duration_seconds(status.get("startTime"), status.get("completionTime"))
    gpu_hours = _number(usage.get("gpuHours"))
    cost = _number(usage.get("costUsd"))
    source = "status.usage" if usage else None
    if not usage and duration is not None and plan.get("numGpus"):
        source = "plan x duration"
        gpu_hours = plan["numGpus"] * duration / 3600
        price = _number(plan.get("usdPerHour"))
        cost = price * duration / 3600 if price is not None else None
    return {
        "job": f"{metadata.get('namespace', 'default')}/{metadata.get('name', '')}",
        "name": str(metadata.get("name", "")),
        "namespace": str(metadata.get("namespace", "default")),
        "phase": status.get("phase"),
        "train_loss": _number(progress.get("loss")),
        "eval_loss": _number(progress.get("evalLoss")),
        "tokens_per_second": _number(progress.get("tokensPerSecond")),
        "duration_seconds": duration,
        "gpu_hours": _rounded(gpu_hours, 4),
        "cost_usd": _rounded(cost, 4),
        "energy_kwh": _number(usage.get("energyKwh")),
        "kg_co2e": _number(usage.get("kgCo2e")),
        "usage_source": source,
    }


def _config(body: dict[str, Any]) -> dict[str, Any]:
    """The spec and the plan's decisions as dotted paths (``spec.training.learningRate``)."""
    flat: dict[str, Any] = {}
    _flatten("spec", body.get("spec") or {}, flat)
    plan = (body.get("status") or {}).get("plan") or {}
    for key in _PLAN_FIELDS:
        if key in plan:
            flat[f"status.plan.{key}"] = plan[key]
    return flat


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, into)
    else:
        into[prefix] = value


def _best(jobs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """For each metric two or more jobs report: the jobs with the best value (ties share)."""
    best: dict[str, list[str]] = {}
    for metric in METRICS:
        values = [j[metric.key] for j in jobs if j[metric.key] is not None]
        if len(values) < 2:
            continue
        winner = metric.better(values)
        best[metric.key] = [j["job"] for j in jobs if j[metric.key] == winner]
    return best


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _duration_seconds(start: Any, end: Any) -> float | None:
    """Seconds from ``startTime`` to ``completionTime`` (RFC 3339); None until both exist."""
    try:
        began = _timestamp(start)
        ended = _timestamp(end)
    except ValueError:
        return None
    if began is None or ended is None:
        return None
    return max(0.0, (ended - began).total_seconds())


def _timestamp(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):  # YAML reads unquoted timestamps as datetimes
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# Rendering -------------------------------------------------------------------------------


def render_table(document: dict[str, Any]) -> str:
    jobs = document["jobs"]
    best = document["best"]
    shown = [m for m in METRICS if any(j[m.key] is not None for j in jobs)]
    rows = []
    for job in jobs:
        cells: list[object] = [job["job"], job["phase"] or "-"]
        for metric in shown:
            value = job[metric.key]
            mark = BEST_MARK if job["job"] in best.get(metric.key, []) else ""
            cells.append("-" if value is None else metric.render(value) + mark)
        rows.append(cells)
    text = format_table(["JOB", "PHASE", *(m.header for m in shown)], rows)
    text += f"{BEST_MARK} best in its column"
    if any(j["usage_source"] == "plan x duration" for j in jobs):
        text += "; GPU-hours and cost without status.usage are the plan's GPUs and price x duration"
    text += "\n\n"
    differences = document["differences"]
    if not differences:
        return text + "no config differences\n"
    diff_rows = [[d["field"], *(_cell(v) for v in d["values"])] for d in differences]
    return text + format_table(["FIELD", *(j["name"] for j in jobs)], diff_rows)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
