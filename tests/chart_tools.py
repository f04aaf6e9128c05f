"""The Helm chart's tools (built by `make tools`, hack/tools/build.sh) and its renders.

Shared by tests/unit/test_helm_chart.py and benchmarks/bench_helm_chart.py. A missing
tool is a failure that says to run `make tools`, never a skip: `make test` builds them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "trainwright"
CACHE = Path(os.environ.get("TRAINWRIGHT_CACHE") or Path.home() / ".cache" / "trainwright")
TOOLS_BIN = CACHE / "tools" / "bin"
K8S_VERSION = re.search(
    r"^K8S_VERSION=(\S+)$", (ROOT / "hack" / "k8s" / "build.sh").read_text(), re.MULTILINE
)[1]  # type: ignore[index]
SCHEMAS = CACHE / "tools" / "schemas" / K8S_VERSION

# Every value that changes which objects the chart renders, and how (one render each).
TOGGLES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "standby": {
        "operator": {"standby": {"enabled": True}, "podDisruptionBudget": {"enabled": True}}
    },
    "standby-namespaced": {
        "operator": {"standby": {"enabled": True}, "watchNamespaces": ["team-a"]}
    },
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
            "prometheusRule": {
                "enabled": True,
                "alerts": {"TrainwrightCheckpointOverdue": {"for": "1h"}},
            },
            "dashboards": {"enabled": True},
        }
    },
    "no-crds-no-rbac": {"crds": {"enabled": False}, "rbac": {"create": False}},
    "crds-deleted-on-uninstall": {"crds": {"keep": False}},
    "existing-service-account": {"serviceAccount": {"create": False, "name": "existing"}},
    "images": {
        "operator": {"image": {"repository": "registry.example/operator", "tag": "1.2"}},
        "trainer": {"image": {"digest": "sha256:" + "0" * 64}},
    },
}


def tool(name: str) -> Path:
    """The path of a chart tool; fails (not skips) when it has not been built."""
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: run `make tools` (hack/tools/build.sh)")
    return path


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed:\n{result.stderr}")
    return result


def render_text(
    values: dict[str, Any], tmp: Path, *, namespace: str = "trainwright", release: str = "tw"
) -> str:
    """`helm template` of the chart with these values, as YAML text."""
    values_file = tmp / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return run(
        tool("helm"), "template", release, CHART, "--namespace", namespace, "--values", values_file
    ).stdout


def render(values: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    """`helm template` of the chart with these values, as objects."""
    return [doc for doc in yaml.safe_load_all(render_text(values, tmp)) if doc]
