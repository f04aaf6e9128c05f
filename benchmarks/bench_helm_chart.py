"""How long the Helm chart takes to render (`helm template`), per toggle of tests/chart_tools.py.

Prints the median of several renders of each values set and the size of what it
renders; needs `make tools` (helm v4).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chart_tools import TOGGLES, render_text, tool

REPEATS = 5


def main() -> int:
    helm = tool("helm")
    print(f"helm: {helm}")
    print(f"{'values':<28} {'median s':>9} {'objects':>8} {'KiB':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, values in TOGGLES.items():
            seconds = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                text = render_text(values, Path(tmp))
                seconds.append(time.perf_counter() - started)
            objects = sum(1 for doc in text.split("\n---\n") if "kind:" in doc)
            print(
                f"{name:<28} {statistics.median(seconds):>9.3f} {objects:>8} "
                f"{len(text.encode()) / 1024:>7.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
