"""Every dashboard query against a live Prometheus scraping a real two-rank CPU trainer run.

The trainer is the real one (torchrun, two gloo ranks, the tiny model) serving
/metrics on rank 0; the operator side is a real ``OperatorMetrics`` behind its real
``serve_metrics`` endpoint, fed the way its reconciles feed it. Prometheus scrapes both
every second with the labels the chart's monitors give them (the trainer's
``namespace`` and ``trainingjob`` from the PodMonitor relabelling; the operator with
``honor_labels``). Kueue's queue metrics come from the sample data's ``KueueMetrics``
(Kueue's names and labels, held to the real Kueue by tests/e2e/test_queueing.py), served
and scraped the way Kueue's ServiceMonitor scrapes Kueue (no ``honor_labels``). While the
run is still going, after two checkpoints, each panel's query must return a series. The
one exception is GPU memory used: NVML has no GPU to read on CPU
(tests/unit/test_dashboards.py covers it with the backfilled data).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import start_http_server

from hack_dashboards import load, resolve, targets
from prometheus_server import PrometheusMissingError, running_prometheus
from trainer_fixtures import tiny_train_config
from trainwright.operator.metrics import OperatorMetrics, serve_metrics

pytestmark = [pytest.mark.distributed, pytest.mark.prometheus]

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
NEEDS_A_GPU = {"trainwright_gpu_memory_used_bytes"}
RATE_INTERVAL = "15s"  # four or more 1 s scrapes, as Grafana's $__rate_interval would be


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _prometheus_config(trainer_port: int, operator_port: int, kueue_port: int) -> str:
    sample_data = load("sample_data")
    trainer_labels = {
        "namespace": sample_data.NAMESPACE,
        "trainingjob": sample_data.TRAININGJOB,
        "pod": "llama8b-lora-a0-0-x7k2p",
    }
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "trainwright-operator",
                "honor_labels": True,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{operator_port}"],
                        "labels": {"namespace": sample_data.OPERATOR_NAMESPACE},
                    }
                ],
            },
            {
                "job_name": "trainwright-trainer",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{trainer_port}"], "labels": trainer_labels}
                ],
            },
            {
                "job_name": "kueue",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{kueue_port}"],
                        "labels": {"namespace": "kueue-system"},
                    }
                ],
            },
        ],
    }
    return json.dumps(config)  # JSON is YAML


def _feed_operator(metrics: OperatorMetrics, kueue: Any, stop: threading.Event) -> None:
    """Reconcile once a second, as the operator following this run would; Kueue's queues
    move on at the same pace."""
    sample_data = load("sample_data")
    start = time.time() - 600  # the run was planned ten minutes ago
    tick = 0
    while not stop.is_set():
        minutes = (time.time() - start) / 60
        sample_data.operator_tick(metrics, tick, minutes, start)
        kueue.tick(tick, minutes)
        tick += 1
        stop.wait(1.0)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping a training run in progress; yields its URL once two checkpoints exist."""
    trainer_port = _free_port()
    operator = OperatorMetrics()
    server = serve_metrics(operator, port=0, host="127.0.0.1", healthy=lambda: True)
    kueue = load("sample_data").KueueMetrics()
    kueue_server, _ = start_http_server(0, addr="127.0.0.1", registry=kueue.registry)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed_operator, args=(operator, kueue, stop), daemon=True)
    feeder.start()
    config = tiny_train_config(
        tmp_path,
        max_steps=400,  # stopped long before; the run must outlive the queries
        interval_steps=5,
        faults={"step_sleep_seconds": 0.3, "nan_grad_at_steps": [3]},
        metrics={"port": trainer_port, "log_interval_steps": 1},
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    trainer = subprocess.Popen(
        [TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
         "-m", "trainwright_trainer", "train", "--config", "config.json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    root = tmp_path / "prometheus"
    root.mkdir()
    try:
        config_text = _prometheus_config(
            trainer_port, server.server_address[1], kueue_server.server_address[1]
        )
        with running_prometheus(root, config_text) as url:
            _wait_for_two_checkpoints(url, trainer)
            yield url
    except PrometheusMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGTERM)
        try:
            trainer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.communicate(timeout=30)
        stop.set()
        feeder.join(timeout=5)
        for http_server in (server, kueue_server):
            http_server.shutdown()
            http_server.server_close()


def _instant(url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=30)
    body = response.json()
    assert response.status_code == 200, body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _wait_for_two_checkpoints(url: str, trainer: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        if trainer.poll() is not None:
            output = trainer.stdout.read() if trainer.stdout else ""
            pytest.fail(f"the trainer exited early: {output[-3000:]}", pytrace=False)
        ready = _instant(
            url, "trainwright_checkpoint_interval_seconds > 0 and trainwright_step > 12"
        )
        if ready:
            time.sleep(16)  # a full rate interval of scrapes after the second checkpoint
            return
        time.sleep(2)
    pytest.fail("the trainer did not publish two checkpoints in 420 s", pytrace=False)


def test_every_panel_query_returns_series_from_a_live_trainer_run(live: str) -> None:
    empty = []
    for name, title, ref, expr in targets():
        if not _instant(live, resolve(expr, RATE_INTERVAL)):
            empty.append((name, title, ref, expr))
    missing = [e for e in empty if not any(metric in e[3] for metric in NEEDS_A_GPU)]
    assert missing == []
    step = _instant(live, 'trainwright_step{trainingjob="llama8b-lora", namespace="team-a"}')
    assert float(step[0]["value"][1]) > 12
    skipped = _instant(live, "trainwright_skipped_steps_total")
    assert float(skipped[0]["value"][1]) == 1  # the NaN gradient injected at step 3
