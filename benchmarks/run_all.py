"""Run every ``benchmarks/bench_*.py`` in turn (``make bench``) and print their figures.

Each benchmark runs as its own process with this interpreter (the venv's), so one
benchmark's imports or state cannot skew another's timings. Exits non-zero if
any benchmark fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failures: list[str] = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"=== {script.name}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], check=False)
        elapsed = time.perf_counter() - started
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"=== {script.name}: {status} in {elapsed:.1f} s\n", flush=True)
        if result.returncode != 0:
            failures.append(script.name)
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
