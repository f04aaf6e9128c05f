"""Draw each dashboard as a PNG for docs/dashboards.md (`make dashboards-png`).

No Grafana server can be installed here, so the panels are drawn with matplotlib from
the same JSON the chart ships: each target's ``expr`` runs as a range query against a
Prometheus serving hack/dashboards/sample_data.py's simulated two-hour run, with the
template variables set as a user would pick them.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_data

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "helm" / "trainwright" / "dashboards"
OUT = ROOT / "docs" / "dashboards"
VARIABLES = {
    "$namespace": "team-a|serving|trainwright-system",
    "$trainingjob": sample_data.TRAININGJOB,
    "$capacityplan": sample_data.CAPACITYPLAN,
    "$__rate_interval": sample_data.RATE_INTERVAL,
}
UNIT_LABELS = {
    "none": "",
    "short": "",
    "percentunit": "fraction",
    "bytes": "bytes",
    "s": "seconds",
    "ops": "per second",
    "reqps": "requests/s",
    "currencyUSD": "US dollars",
}


def _resolve(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def _query_range(url: str, expr: str, end: float) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{url}/api/v1/query_range",
        params={
            "query": _resolve(expr),
            "start": end - sample_data.DURATION_SECONDS,
            "end": end,
            "step": 60,
        },
        timeout=60,
    )
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def draw(name: str, url: str, end: float) -> Path:
    dashboard = json.loads((SOURCE / f"{name}.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(15, 3.2 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        axis.set_title(panel["title"], fontsize=10, loc="left")
        axis.set_ylabel(UNIT_LABELS.get(unit, unit), fontsize=8)
        axis.tick_params(labelsize=7)
        stat_lines = []
        for target in panel["targets"]:
            for series in _query_range(url, target["expr"], end):
                label = _legend(target.get("legendFormat", ""), series["metric"])
                times = [
                    datetime.datetime.fromtimestamp(float(t), datetime.UTC)
                    for t, _ in series["values"]
                ]
                values = [float(v) for _, v in series["values"]]
                if panel["type"] == "stat":
                    stat_lines.append(f"{label}: {values[-1]:,.0f}")
                    continue
                axis.plot(times, values, linewidth=1, label=label)
        if panel["type"] == "stat":
            axis.axis("off")
            axis.text(
                0.02, 0.5, "\n".join(stat_lines), fontsize=14, va="center", transform=axis.transAxes
            )
            continue
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        axis.legend(fontsize=6, loc="best")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle(
        f"{dashboard['title']}  (drawn with matplotlib from the dashboard's queries; no Grafana server)",
        fontsize=12,
    )
    figure.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    figure.savefig(path, dpi=70)
    plt.close(figure)
    return path


def main() -> int:
    with (
        tempfile.TemporaryDirectory() as root,
        sample_data.prometheus_with_sample_data(Path(root)) as server,
    ):
        for name in ("training", "capacity", "operator"):
            path = draw(name, server.url, server.end)
            print(
                f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
