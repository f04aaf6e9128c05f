"""The feedback loop on the local control plane: a slow run is flagged, recorded, and the
next TrainingJob of its shape is planned with what it observed.

The trainer pod runs on kwok's fake H100 node (held running); its /progress is a small
HTTP server in this test serving 60% of the planned tokens/s, which the operator reads
through --progress-endpoint (kwok's pod IPs are not reachable from the host). The
operator runs with a 60 s ThroughputBelowPlan window (--throughput-window) and records
after 30 s of readings (--calibration-steady), so the test takes about two minutes:
progress is read every 30 s.
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import FAKE_HOLD, REPO_ROOT, Kube, wait_until
from e2e.operator_harness import (
    TRAINWRIGHT,
    OperatorProcess,
    condition,
    create,
    install_crds,
    status_of,
    trainingjob,
    wait_for_phase,
)

SPEED = 0.6  # the fake trainer's share of the planned tokens/s
STORE = "trainwright-calibration"
RESOURCES = {"gpuType": "H100-SXM", "gpus": 1}


class FakeTrainer:
    """/progress as rank 0 of the trainer serves it, at a tokens/s the test sets."""

    def __init__(self) -> None:
        self.tokens_per_second: float | None = None  # None: nothing to report yet
        self.step = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                document: dict[str, Any] = {}
                if self.path.startswith("/progress") and fake.tokens_per_second is not None:
                    fake.step += 1  # each read is a new step, so a new reading
                    document = {
                        "step": fake.step,
                        "total_steps": 10_000,
                        "epoch": 0,
                        "loss": 2.0,
                        "tokens_per_second": fake.tokens_per_second,
                        "eta_seconds": 3600.0,
                        "updated_at": datetime.datetime.now(datetime.UTC).isoformat(),
                        "peak_memory_bytes": None,  # as on a node without CUDA
                        "gpu_utilization": 0.4,
                    }
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CalibratingOperator(OperatorProcess):
    """The operator with a short window, an early recording and the fake trainer."""

    def __init__(self, kube: Kube, log_path: Path, *, namespace: str, progress_port: int) -> None:
        super().__init__(kube, log_path)
        self.extra = [
            "--throughput-window=60",
            "--calibration-steady=30",
            f"--calibration-namespace={namespace}",
            f"--progress-endpoint=127.0.0.1:{progress_port}",
        ]

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(TRAINWRIGHT), "operator", "--all-namespaces",
             f"--metrics-port={self.metrics_port}", *self.extra],
            env=self.kube.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )  # fmt: skip
        wait_until(self.healthy, timeout_s=60, what="the operator's /healthz to answer 200")


@pytest.fixture
def fake_trainer() -> Iterator[FakeTrainer]:
    trainer = FakeTrainer()
    try:
        yield trainer
    finally:
        trainer.close()


@pytest.fixture
def calibrating_operator(
    kube: Kube, namespace: str, fake_trainer: FakeTrainer, tmp_path: Path
) -> Iterator[CalibratingOperator]:
    install_crds(kube)
    process = CalibratingOperator(
        kube, tmp_path / "operator.log", namespace=namespace, progress_port=fake_trainer.port
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _store(kube: Kube, namespace: str) -> dict[str, Any] | None:
    found = kube.kubectl("get", "configmap", STORE, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    return dict(json.loads(json.loads(found.stdout)["data"]["observations.json"]))


def test_a_run_at_60_percent_is_flagged_recorded_and_calibrates_the_next_plan(
    kube: Kube,
    namespace: str,
    fake_trainer: FakeTrainer,
    calibrating_operator: CalibratingOperator,
) -> None:
    create(kube, namespace, "trainingjobs",
           trainingjob("slow", resources=RESOURCES, annotations={FAKE_HOLD: "true"}))  # fmt: skip
    status = wait_until(
        lambda: (s := status_of(kube, namespace, "trainingjobs", "slow")).get("plan") and s,
        timeout_s=60,
        what="the slow TrainingJob to be planned",
    )
    planned = status["plan"]
    # The store is empty: the plan says so and is the physics alone.
    assert planned["calibration"]["applied"] is False
    assert planned["calibration"]["observations"] == 0
    assert planned["calibration"]["source"] == f"configmap {namespace}/{STORE}"
    fake_trainer.tokens_per_second = SPEED * planned["tokensPerSecond"]
    wait_for_phase(kube, namespace, "slow", "Running", timeout_s=60)

    def flagged() -> dict[str, Any] | None:
        current = status_of(kube, namespace, "trainingjobs", "slow")
        found = [c for c in current.get("conditions") or [] if c["type"] == "ThroughputBelowPlan"]
        return found[0] if found and found[0]["status"] == "True" else None

    below = wait_until(flagged, timeout_s=150, what="ThroughputBelowPlan on the slow run")
    assert below["reason"] == "ThroughputBelowPlan"
    observed = f"{SPEED * planned['tokensPerSecond']:,.0f} tokens/s"
    assert f"Observed {observed}" in below["message"]
    assert f"60% of the planned {planned['tokensPerSecond']:,.0f} tokens/s" in below["message"]
    assert "likely limit: the input pipeline (the GPU is busy 40%" in below["message"]

    store = wait_until(
        lambda: (_store(kube, namespace) or {}).get("observations"),
        timeout_s=60,
        what="the calibration store to hold the slow run",
    )
    (entry,) = store
    uid = kube.kubectl("get", "trainingjob", "slow", "-n", namespace, "-o",
                       "jsonpath={.metadata.uid}").stdout  # fmt: skip
    assert entry["job"] == f"{namespace}/slow/{uid}"
    assert (entry["kind"], entry["gpu"], entry["method"], entry["model"]) == (
        "training", "H100-SXM", "lora", "llama-3.1-8b",
    )  # fmt: skip
    assert entry["tokens_per_second"] == pytest.approx(SPEED * planned["tokensPerSecond"], rel=1e-3)
    assert entry["planned_tokens_per_second"] == pytest.approx(planned["tokensPerSecond"], rel=1e-3)
    assert entry["peak_memory_bytes"] is None

    exported = subprocess.run(
        [str(TRAINWRIGHT), "calibration", "export", "-n", namespace, "-o", "json"],
        env=kube.env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(exported.stdout)["observations"] == [entry]

    create(kube, namespace, "trainingjobs",
           trainingjob("next", resources=RESOURCES, annotations={FAKE_HOLD: "true"}))  # fmt: skip
    nxt = wait_until(
        lambda: (s := status_of(kube, namespace, "trainingjobs", "next")).get("plan") and s,
        timeout_s=60,
        what="the next TrainingJob to be planned",
    )
    plan = nxt["plan"]
    factor = math.sqrt(SPEED)  # one observation moves a plan half of the way (log space)
    assert plan["calibration"]["applied"] is True and plan["calibration"]["observations"] == 1
    assert plan["calibration"]["throughputFactor"] == pytest.approx(factor, rel=1e-3)
    assert plan["tokensPerSecond"] == pytest.approx(planned["tokensPerSecond"] * factor, rel=1e-3)
    assert plan["estimatedDurationSeconds"] == pytest.approx(
        planned["estimatedDurationSeconds"] / factor, rel=0.01
    )
    assert plan["estimatedCostUsd"] == pytest.approx(planned["estimatedCostUsd"] / factor, rel=0.01)
    message = condition(nxt, "Planned")["message"]
    assert f"Calibrated from 1 observed run(s) of this shape in configmap {namespace}/{STORE}" in (
        message
    )
    assert f"throughput x{factor:.2f}" in message

    create(kube, namespace, "trainingjobs",
           trainingjob("opted-out", resources=RESOURCES) | {"metadata": {
               "name": "opted-out", "annotations": {"trainwright.io/calibration": "off"}}})  # fmt: skip
    opted = wait_until(
        lambda: (s := status_of(kube, namespace, "trainingjobs", "opted-out")).get("plan") and s,
        timeout_s=60,
        what="the opted-out TrainingJob to be planned",
    )
    assert "calibration" not in opted["plan"]  # and, opted out, it is never recorded either
    assert opted["plan"]["tokensPerSecond"] == pytest.approx(planned["tokensPerSecond"], rel=1e-6)
