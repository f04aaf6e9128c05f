"""Write helm/trainwright/dashboards/*.json from hack/dashboards/dashboards.py (`make dashboards`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboards import DASHBOARDS

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "helm" / "trainwright" / "dashboards"


def render(name: str) -> str:
    """The dashboard as the JSON text committed to the chart."""
    built = DASHBOARDS[name]().build()
    document: Any = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(built))
    return json.dumps(document, sort_keys=True, indent=2) + "\n"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (OUT / f"{name}.json").write_text(render(name), encoding="utf-8")
        print(f"wrote {(OUT / f'{name}.json').relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
