"""Operator throughput: 500 TrainingJobs applied at once on 120 fake GPU nodes.

Starts a private local control plane (hack/k8s/cluster.sh) with a bench
inventory of 120 kwok GPU nodes, runs `trainwright operator` as a subprocess,
creates the TrainingJobs from 16 client threads, and watches TrainingJobs and
Jobs to time, per job, apply -> status.plan written and apply -> trainer Job
created. Prints the time until all are planned with children, p50/p95 of both
latencies, and the operator's peak RSS (VmHWM).

Run: `.venv/bin/python benchmarks/bench_operator.py [--jobs 500] [--workers 16]`
(needs `make k8s-bin`). The pods are held Running by kwok (no completions), so
the figures measure the operator, not pod churn.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "hack" / "k8s" / "cluster.sh"
TRAINWRIGHT = Path(sys.executable).parent / "trainwright"
GROUP, VERSION, PLURAL = "trainwright.io", "v1alpha1", "trainingjobs"
NAMESPACE = "bench"

# 120 nodes, 880 GPUs: shapes of p5.48xlarge, p4de.24xlarge and g6.12xlarge.
BENCH_INVENTORY = [
    {"gpuType": "H100-SXM", "product": "NVIDIA-H100-80GB-HBM3", "memoryMiB": 81559,
     "nodes": 40, "gpusPerNode": 8},
    {"gpuType": "A100-80GB-SXM", "product": "NVIDIA-A100-SXM4-80GB", "memoryMiB": 81920,
     "nodes": 50, "gpusPerNode": 8},
    {"gpuType": "L4", "product": "NVIDIA-L4", "memoryMiB": 23034, "nodes": 30, "gpusPerNode": 4},
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_cluster(work_dir: Path, groups: list[dict[str, Any]] | None = None) -> Iterator[Path]:
    """cluster.sh in ``work_dir/cluster`` (which it owns and clears), kwok nodes only, with
    ``groups`` (default: the bench inventory) as its GPU nodes."""
    inventory = work_dir / "bench-inventory.yaml"
    inventory.write_text(yaml.safe_dump(groups or BENCH_INVENTORY), encoding="utf-8")
    state_dir = work_dir / "cluster"
    env = {
        **os.environ,
        "CLUSTER_DIR": str(state_dir),
        "TRAINWRIGHT_INVENTORY": str(inventory),
        # The benchmarks measure the operator on the control plane: kwok nodes only, no
        # containerd node and no Kueue in the way of the Jobs.
        "REAL_NODE": "0",
        "KUEUE": "0",
    }
    started = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "up"], env=env, capture_output=True, text=True, check=False
    )
    try:
        if started.returncode != 0:
            raise SystemExit(f"cluster.sh up failed: {started.stderr.strip()[-500:]}")
        yield state_dir / "kubeconfig"
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "down"], env=env, capture_output=True)


def kubectl(kubeconfig: Path, *args: str) -> None:
    cache = Path(os.environ.get("TRAINWRIGHT_CACHE", Path.home() / ".cache" / "trainwright"))
    binary = cache / "k8s" / "v1.34.4" / "bin" / "kubectl"
    subprocess.run([str(binary), "--kubeconfig", str(kubeconfig), *args], check=True,
                   capture_output=True)  # fmt: skip


def manifest(index: int) -> dict[str, Any]:
    """Half pinned to a GPU type, half `auto`: both planner paths, all fitting the cluster."""
    resources = (
        {"gpuType": "auto", "maxGpus": 8}
        if index % 2
        else {"gpuType": ("H100-SXM", "A100-80GB-SXM")[index % 4 // 2], "gpus": 1}
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": f"bench-{index:04d}"},
        "spec": {
            "model": {"name": ("llama-3.1-8b", "qwen2.5-7b")[index % 2]},
            "method": "lora",
            "dataset": {"uri": "s3://datasets/alpaca.jsonl", "tokens": 1_000_000},
            "resources": resources,
            "podAnnotations": {"trainwright.io/fake-hold": "true"},
        },
    }


class Watcher:
    """Records the first time each TrainingJob has a plan and each owner has a Job."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.planned: dict[str, float] = {}
        self.job_created: dict[str, float] = {}
        self.stop = threading.Event()

    def watch_plans(self) -> None:
        api = client.CustomObjectsApi(self.api_client)
        self._watch(api.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL)

    def watch_jobs(self) -> None:
        api = client.BatchV1Api(self.api_client)
        self._watch(api.list_namespaced_job, NAMESPACE, label_selector="trainwright.io/job")

    def _watch(self, list_fn: Any, *args: Any, **kwargs: Any) -> None:
        """Restart short watches until stopped; a 410/504 from a lagging cache just restarts."""
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(list_fn, *args, timeout_seconds=5, **kwargs):
                    self._record(event["object"])
            except ApiException:
                time.sleep(0.2)

    def _record(self, obj: Any) -> None:
        if isinstance(obj, dict):
            if (obj.get("status") or {}).get("plan"):
                self.planned.setdefault(obj["metadata"]["name"], time.time())
        else:
            self.job_created.setdefault(obj.metadata.labels["trainwright.io/job"], time.time())


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def operator_figures(port: int) -> dict[str, float]:
    """Reconcile and API request counts and seconds, from the operator's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    figures: dict[str, float] = {}
    for line in text.splitlines():
        for prefix in (
            "trainwright_reconciles_total",
            "trainwright_reconcile_duration_seconds_sum",
            "trainwright_api_request_duration_seconds_sum",
            "trainwright_api_request_duration_seconds_count",
        ):
            if line.startswith(prefix + "{"):
                labels, value = line[len(prefix) :].rsplit(" ", 1)
                figures[prefix.split("_", 1)[1] + labels] = float(value)
    return figures


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(jobs: int, workers: int, timeout_s: float) -> int:
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp, private_cluster(Path(tmp)) as kc:
        kubectl(kc, "apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl(kc, "wait", "--for=condition=Established", "-f", str(REPO / "crds"))
        kubectl(kc, "create", "namespace", NAMESPACE)
        api_client = config.new_client_from_config(config_file=str(kc))
        api_client.configuration.connection_pool_maxsize = workers
        port = _free_port()
        log = (Path(tmp) / "operator.log").open("wb")
        operator = subprocess.Popen(
            [str(TRAINWRIGHT), "operator", "-n", NAMESPACE, "--metrics-port", str(port),
             "--workers", str(workers)],
            env={**os.environ, "KUBECONFIG": str(kc)}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            return measure(api_client, operator, port, jobs, workers, timeout_s)
        finally:
            operator.terminate()
            operator.wait(timeout=30)


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit("the operator did not become healthy within 60 s")


def measure(
    api_client: client.ApiClient,
    operator: subprocess.Popen[bytes],
    port: int,
    jobs: int,
    workers: int,
    timeout_s: float,
) -> int:
    _wait_healthy(port)
    watcher = Watcher(api_client)
    threads = [
        threading.Thread(target=t, daemon=True) for t in (watcher.watch_plans, watcher.watch_jobs)
    ]
    for thread in threads:
        thread.start()
    api = client.CustomObjectsApi(api_client)
    applied: dict[str, float] = {}

    def apply(index: int) -> None:
        body = manifest(index)
        started = time.time()
        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        applied[body["metadata"]["name"]] = started

    begin = time.time()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(apply, range(jobs)))
    applied_s = time.time() - begin
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(watcher.planned) >= jobs and len(watcher.job_created) >= jobs:
            break
        time.sleep(0.2)
    watcher.stop.set()
    done = [n for n in applied if n in watcher.planned and n in watcher.job_created]
    to_plan = [watcher.planned[n] - applied[n] for n in done]
    to_job = [watcher.job_created[n] - applied[n] for n in done]
    all_done_s = max(max(watcher.planned[n], watcher.job_created[n]) for n in done) - begin
    print(f"TrainingJobs applied:             {jobs} in {applied_s:.1f} s ({workers} threads)")
    print(f"planned with children:            {len(done)} of {jobs}")
    print(f"time until all planned + Job:     {all_done_s:.1f} s")
    print(
        f"apply -> plan p50 / p95:          {percentile(to_plan, 50):.2f} s / {percentile(to_plan, 95):.2f} s"
    )
    print(
        f"apply -> Job  p50 / p95:          {percentile(to_job, 50):.2f} s / {percentile(to_job, 95):.2f} s"
    )
    print(f"operator peak RSS (VmHWM):        {peak_rss_bytes(operator.pid) / 2**20:.0f} MiB")
    print(f"operator workers (threads):       {workers}")
    for key, value in sorted(operator_figures(port).items()):
        print(f"  {key}: {value:.1f}")
    return 0 if len(done) == jobs else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all")
    args = parser.parse_args()
    return run(args.jobs, args.workers, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
