"""The control plane the e2e tests run against: a private local cluster or a given one.

A private cluster is hack/k8s/cluster.sh (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok on loopback) started in its own state dir, so it never clashes with
a `make cluster-up` of the user. `TRAINWRIGHT_E2E_KUBECONFIG` points the tests at an existing
cluster instead (a kubeconfig path, or `1` to use `KUBECONFIG`).

kwok finishes pods on demand through annotations (hack/k8s/README.md); the constants below
are those annotation names so tests do not spell them out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO_ROOT / "hack" / "k8s" / "cluster.sh"
DEFAULT_INVENTORY = REPO_ROOT / "hack" / "k8s" / "inventory.yaml"
K8S_VERSION = "v1.34.4"
CONTROL_PLANE_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)

FAKE_RESULT = "trainwright.io/fake-result"
FAKE_EXIT_CODE = "trainwright.io/fake-exit-code"
FAKE_REASON = "trainwright.io/fake-reason"
FAKE_HOLD = "trainwright.io/fake-hold"
FAKE_DURATION = "trainwright.io/fake-duration"

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_RESOURCE = "nvidia.com/gpu"

T = TypeVar("T")


class ClusterStartError(RuntimeError):
    """The private control plane could not be started; the message says why and what to run."""


@dataclass
class Kube:
    """A reachable cluster: its kubeconfig, an API client, and kubectl bound to it."""

    kubeconfig: Path
    api_client: client.ApiClient
    kubectl_path: str
    private: bool
    state_dir: Path | None = None
    inventory: list[dict[str, Any]] = field(default_factory=list)

    @property
    def core_v1(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def batch_v1(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client)

    @property
    def env(self) -> dict[str, str]:
        """The environment for a subprocess (an operator, kubectl) that should use this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def nodes(self) -> list[client.V1Node]:
        return list(self.core_v1.list_node().items)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster and return its captured output."""
        return subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


def cache_bin_dir() -> Path:
    """Where hack/k8s/build.sh installs the control-plane binaries."""
    if "K8S_BIN" in os.environ:
        return Path(os.environ["K8S_BIN"])
    cache = os.environ.get("TRAINWRIGHT_CACHE", str(Path.home() / ".cache" / "trainwright"))
    return Path(cache) / "k8s" / K8S_VERSION / "bin"


def inventory_path() -> Path:
    return Path(os.environ.get("TRAINWRIGHT_INVENTORY", str(DEFAULT_INVENTORY)))


def load_inventory(path: Path) -> list[dict[str, Any]]:
    """The GPU node groups of an inventory file (its format is in hack/k8s/inventory.yaml)."""
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(groups, list):
        raise ValueError(f"{path} must be a YAML list of GPU node groups.")
    return groups


def _run_cluster_script(action: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLUSTER_DIR": str(state_dir)}
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def start_private_cluster(state_dir: Path) -> Kube:
    """Start hack/k8s/cluster.sh in state_dir; raise ClusterStartError naming the cause."""
    missing = [name for name in CONTROL_PLANE_BINARIES if not (cache_bin_dir() / name).exists()]
    if missing:
        raise ClusterStartError(
            f"the local control plane is not built ({', '.join(missing)} missing in "
            f"{cache_bin_dir()}); run `make k8s-bin` first."
        )
    started = _run_cluster_script("up", state_dir)
    if started.returncode != 0:
        _run_cluster_script("down", state_dir)
        detail = (started.stderr or started.stdout).strip().splitlines()
        raise ClusterStartError(
            "hack/k8s/cluster.sh up failed: " + (detail[-1] if detail else "no output")
        )
    kubeconfig = state_dir / "kubeconfig"
    return Kube(
        kubeconfig=kubeconfig,
        api_client=config.new_client_from_config(config_file=str(kubeconfig)),
        kubectl_path=str(cache_bin_dir() / "kubectl"),
        private=True,
        state_dir=state_dir,
        inventory=load_inventory(inventory_path()),
    )


def stop_private_cluster(kube: Kube) -> None:
    """Stop the cluster; its component logs stay in <state dir>-logs for reading after a run."""
    kube.api_client.close()
    if kube.state_dir is None:
        return
    kept = kube.state_dir.with_name(kube.state_dir.name + "-logs")
    kept.mkdir(exist_ok=True)
    for log in [*kube.state_dir.glob("*.log"), *kube.state_dir.glob("node/*.log")]:
        shutil.copy2(log, kept / log.name)
    _run_cluster_script("down", kube.state_dir)


def connect_existing_cluster(setting: str) -> Kube:
    """A cluster named by TRAINWRIGHT_E2E_KUBECONFIG (a path, or `1` for KUBECONFIG)."""
    if setting.lower() in ("1", "true", "yes"):
        path = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
    else:
        path = setting
    kubeconfig = Path(path.split(os.pathsep)[0]).expanduser()
    if not kubeconfig.is_file():
        raise ClusterStartError(
            f"TRAINWRIGHT_E2E_KUBECONFIG names {kubeconfig}, which is not a kubeconfig file."
        )
    kubectl_path = shutil.which("kubectl") or str(cache_bin_dir() / "kubectl")
    return Kube(
        kubeconfig=kubeconfig,
        api_client=config.new_client_from_config(config_file=str(kubeconfig)),
        kubectl_path=kubectl_path,
        private=False,
        # The GPU nodes a real cluster should have, if the user describes them in a file.
        inventory=load_inventory(inventory_path()) if "TRAINWRIGHT_INVENTORY" in os.environ else [],
    )


@contextmanager
def cluster_for_tests(tmp_dir: Path) -> Iterator[Kube]:
    """The cluster of a test session: the one named in the environment, or a private one."""
    setting = os.environ.get("TRAINWRIGHT_E2E_KUBECONFIG", "")
    if setting:
        kube = connect_existing_cluster(setting)
        try:
            yield kube
        finally:
            kube.api_client.close()
        return
    kube = start_private_cluster(tmp_dir)
    try:
        yield kube
    finally:
        stop_private_cluster(kube)


def wait_until(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.2
) -> T:
    """Poll probe until it returns something truthy; fail naming `what` did not happen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
