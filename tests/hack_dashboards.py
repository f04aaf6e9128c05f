"""Import a module of hack/dashboards/ (scripts for `make dashboards`, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HACK = Path(__file__).resolve().parents[1] / "hack" / "dashboards"


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


def served_metric_names() -> set[str]:
    """Every sample name the operator and a trainer serve in the simulated run."""
    sample_data = load("sample_data")
    return {sample.name for sample in sample_data.simulate(end=1_800_000_000.0)}
