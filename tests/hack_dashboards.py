"""The dashboards' generator modules (hack/dashboards/, scripts for `make dashboards`, not a
package) and their committed JSON, as the dashboard tests read them."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HACK = ROOT / "hack" / "dashboards"
OUT = ROOT / "helm" / "trainwright" / "dashboards"
NAMES = ("training", "capacity", "operator")
# What each query variable is set to when a test runs a query.
VALUES = {
    "$namespace": "team-a|serving|trainwright-system",
    "$trainingjob": "llama8b-lora",
    "$capacityplan": "chat-serving",
}


def load(module: str) -> ModuleType:
    if module in sys.modules:
        return sys.modules[module]
    spec = importlib.util.spec_from_file_location(module, HACK / f"{module}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded  # dataclasses look their module up while it loads
    sys.path.insert(0, str(HACK))
    try:
        spec.loader.exec_module(loaded)
    finally:
        sys.path.remove(str(HACK))
    return loaded


@functools.cache
def served_metric_names() -> frozenset[str]:
    """Every sample name the operator, a trainer and Kueue serve in the simulated run."""
    sample_data = load("sample_data")
    return frozenset(sample.name for sample in sample_data.simulate(end=1_800_000_000.0))


def dashboard(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((OUT / f"{name}.json").read_text())
    return document


def panels(name: str) -> list[dict[str, Any]]:
    return [p for p in dashboard(name)["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, str, str, str]]:
    """(dashboard, panel title, refId, expr) of every query."""
    return [
        (name, panel["title"], target["refId"], target["expr"])
        for name in NAMES
        for panel in panels(name)
        for target in panel["targets"]
    ]


def resolve(expr: str, rate_interval: str = "2m") -> str:
    """The query as Grafana sends it once the variables are set."""
    for variable, value in VALUES.items():
        expr = expr.replace(variable, value)
    return expr.replace("$__rate_interval", rate_interval)
