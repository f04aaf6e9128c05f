"""The operator under test: CRDs installed, `trainwright operator` as a subprocess.

The operator runs as its own process (as `make run` starts it) so a test can
kill -9 it mid-reconcile and start it again. Helpers here read objects as
dicts, the way the operator writes them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster import REPO_ROOT, Kube, wait_until

GROUP = "trainwright.io"
VERSION = "v1alpha1"
CRD_DIR = REPO_ROOT / "crds"
TRAINWRIGHT = Path(sys.executable).parent / "trainwright"
# kwok's fake nodes carry no taints; the toleration keeps the tests valid on
# clusters whose fake nodes do (as kwok's examples set them up).
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`trainwright operator --all-namespaces` against the test cluster, restartable."""

    def __init__(self, kube: Kube, log_path: Path) -> None:
        self.kube = kube
        self.log_path = log_path
        self.metrics_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(TRAINWRIGHT),
                "operator",
                "--all-namespaces",
                "--metrics-port",
                str(self.metrics_port),
                # kwok's fake pods never run the dataset check's pod; a test that wants it
                # annotates its TrainingJob trainwright.io/dataset-check: "on". Its pod may
                # wait as long as the real node's other pods for a cold image import.
                "--no-dataset-check",
                "--dataset-check-start=900",
            ],
            env=self.kube.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        wait_until(self.healthy, timeout_s=60, what="the operator's /healthz to answer 200")

    def healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the operator exited; its log: {self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finished patches, as a crashed pod would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def install_crds(kube: Kube) -> None:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRD_DIR))


@pytest.fixture(scope="module")
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator per test module; a test may kill and restart it."""
    install_crds(kube)
    process = OperatorProcess(kube, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


# Objects as dicts --------------------------------------------------------------------------


def custom_api(kube: Kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


def create(kube: Kube, namespace: str, plural: str, body: dict[str, Any]) -> None:
    custom_api(kube).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def get(kube: Kube, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = custom_api(kube).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def patch_spec(kube: Kube, namespace: str, plural: str, name: str, spec: dict[str, Any]) -> None:
    custom_api(kube).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, {"spec": spec}
    )


def status_of(kube: Kube, namespace: str, plural: str, name: str) -> dict[str, Any]:
    found = get(kube, namespace, plural, name)
    return dict((found or {}).get("status") or {})


def wait_for_phase(
    kube: Kube, namespace: str, name: str, phase: str, *, timeout_s: float = 60
) -> dict[str, Any]:
    """Wait for a TrainingJob's phase; on timeout the message shows where it stands."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal last
        last = status_of(kube, namespace, "trainingjobs", name)
        return last if last.get("phase") == phase else None

    try:
        return wait_until(reached, timeout_s=timeout_s, what=f"{name} to reach {phase}")
    except AssertionError as error:
        raise AssertionError(
            f"{error}; it is {last.get('phase')!r}: {last.get('message')!r}"
        ) from None


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for entry in status.get("conditions") or []:
        if entry.get("type") == type_:
            return dict(entry)
    raise AssertionError(f"no {type_} condition in {status.get('conditions')}")


def owned_children(kube: Kube, namespace: str, owner: str) -> dict[str, list[str]]:
    """Names of the Jobs, ConfigMaps and Services a TrainingJob owns."""
    selector = f"trainwright.io/job={owner}"
    core, batch = kube.core_v1, kube.batch_v1
    return {
        "Job": [
            j.metadata.name
            for j in batch.list_namespaced_job(namespace, label_selector=selector).items
        ],
        "ConfigMap": [
            c.metadata.name
            for c in core.list_namespaced_config_map(namespace, label_selector=selector).items
        ],
        "Service": [
            s.metadata.name
            for s in core.list_namespaced_service(namespace, label_selector=selector).items
        ],
    }


def trainingjob(
    name: str,
    *,
    model: str = "llama-3.1-8b",
    method: str = "lora",
    resources: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    max_restarts: int = 3,
    tokens: int = 2_000_000,
) -> dict[str, Any]:
    """A TrainingJob manifest as a user writes it, runnable on the fake nodes."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model},
            "method": method,
            "dataset": {"uri": "s3://datasets/alpaca.jsonl", "format": "alpaca", "tokens": tokens},
            "training": {"epochs": 1, "seqLen": 2048},
            "resources": resources or {"gpuType": "auto", "maxGpus": 8},
            "maxRestarts": max_restarts,
            "tolerations": [KWOK_TOLERATION],
            "podAnnotations": annotations or {},
        },
    }
