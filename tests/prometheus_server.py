"""A real Prometheus on loopback serving backfilled history, for tests and doc pictures.

``promtool tsdb create-blocks-from openmetrics`` turns OpenMetrics text into TSDB
blocks; ``prometheus`` then serves them from its own data directory on a free port and
is stopped by PID. Both come from Debian's ``prometheus`` package (``make system-deps``).
Used by tests/integration/test_prometheus_forecast.py, tests/unit/test_dashboards.py and
hack/dashboards/render_png.py.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


class PrometheusMissingError(FileNotFoundError):
    """prometheus or promtool is not installed."""


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise PrometheusMissingError(f"{binary} is not installed: run `make system-deps`")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def backfilled_prometheus(
    root: Path, openmetrics: str, *, scrape_interval: str = "1h"
) -> Iterator[str]:
    """Backfill ``openmetrics`` under ``root`` and serve it; yields the server's URL."""
    promtool_bin = require("promtool")
    (root / "history.om").write_text(openmetrics)
    subprocess.run(
        [promtool_bin, "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"),
         str(root / "data")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    config = f"global:\n  scrape_interval: {scrape_interval}\n"
    with running_prometheus(root, config) as url:
        yield url


@contextlib.contextmanager
def running_prometheus(root: Path, config: str) -> Iterator[str]:
    """Prometheus with ``config`` (prometheus.yml text) and its data under ``root``."""
    prometheus_bin = require("prometheus")
    (root / "prometheus.yml").write_text(config)
    port = free_port()
    with (root / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                "--storage.tsdb.retention.time=3650d",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, root / "prometheus.log")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"prometheus was not ready in 90 s: {log_path.read_text()[-2000:]}")
