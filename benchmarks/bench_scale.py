"""Scale: 1,000 TrainingJobs applied at once on 200 fake GPU nodes, against plain Jobs.

Issue 15's scale targets, in one run on a private local control plane
(hack/k8s/cluster.sh, REAL_NODE=0: kwok only) with a generated inventory of
H100 / A100 / L40S / L4 / A10G nodes and `trainwright operator` as a process:

1. Reference: the same control plane creates and schedules 1,000 plain one-pod
   batch/v1 Jobs (applied at once from the same client threads); time until every
   pod is bound, p50/p95 apply -> bound.
2. Scale: 1,000 TrainingJobs (half `gpuType: auto`, a model/method mix from
   examples/, sizes that fit the cluster) applied at once; apply -> status.plan
   p50/p95/max, time until all 1,000 trainer Jobs exist and its ratio to the
   reference (target <= 1.5x), the operator's peak RSS (VmHWM, target < 300 MiB),
   and API requests per TrainingJob: the operator's own client (its
   trainwright_api_request_duration_seconds_count), plus kopf's writes counted
   by the API server (PATCHes of trainingjobs, which only kopf sends, and the
   Events it posted).
3. Chaos: a second wave of TrainingJobs while the operator is SIGKILLed at random
   moments (20 times) and restarted; then every TrainingJob must converge (planned,
   the Job of its attempt there) with no duplicate Jobs of one attempt, ConfigMaps or
   Services. A violated check prints FAIL and the benchmark exits 1.

Run (holding the e2e lock, the machine holds one private cluster's worth of load):
`flock /tmp/trainwright-e2e.lock .venv/bin/python benchmarks/bench_scale.py
[--jobs 1000] [--nodes 200] [--kills 20] [--chaos-jobs 200]`.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import datetime
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from bench_operator import (
    GROUP,
    PLURAL,
    TRAINWRIGHT,
    VERSION,
    _free_port,
    _wait_healthy,
    kubectl,
    peak_rss_bytes,
    percentile,
    private_cluster,
)

REPO = Path(__file__).resolve().parents[1]
SCALE_NS, CHAOS_NS, REFERENCE_NS = "scale", "chaos", "reference"
JOB_LABEL, ATTEMPT_LABEL = "trainwright.io/job", "trainwright.io/attempt"
HOLD = {"trainwright.io/fake-hold": "true"}  # kwok keeps the pods Running
TARGET_RATIO, TARGET_P95_S, TARGET_RSS_MIB = 1.5, 3.0, 300

# Share of the nodes, and the shape of one node, per GPU type (p5.48xlarge,
# p4de.24xlarge, g6e.12xlarge, g6.12xlarge, g5.12xlarge).
NODE_MIX = [
    (0.30, {"gpuType": "H100-SXM", "product": "NVIDIA-H100-80GB-HBM3", "memoryMiB": 81559,
            "gpusPerNode": 8, "cpu": "192", "memory": "2Ti"}),
    (0.25, {"gpuType": "A100-80GB-SXM", "product": "NVIDIA-A100-SXM4-80GB", "memoryMiB": 81920,
            "gpusPerNode": 8, "cpu": "96", "memory": "1152Gi"}),
    (0.20, {"gpuType": "L40S", "product": "NVIDIA-L40S", "memoryMiB": 46068,
            "gpusPerNode": 4, "cpu": "48", "memory": "384Gi"}),
    (0.15, {"gpuType": "L4", "product": "NVIDIA-L4", "memoryMiB": 23034,
            "gpusPerNode": 4, "cpu": "48", "memory": "192Gi"}),
    (0.10, {"gpuType": "A10G", "product": "NVIDIA-A10G", "memoryMiB": 23028,
            "gpusPerNode": 4, "cpu": "48", "memory": "192Gi"}),
]  # fmt: skip

# (model, method, GPU types it may be pinned to, GPU counts), after examples/: LoRA and
# QLoRA of 7-9B models, full fine-tunes of small ones, a few 70B QLoRAs on 80 GB cards.
WORKLOADS = [
    ("llama-3.1-8b", "lora", ("H100-SXM", "A100-80GB-SXM", "L40S"), (1, 2, 4, 8)),
    ("qwen2.5-7b", "qlora", ("H100-SXM", "A100-80GB-SXM", "L40S", "L4", "A10G"), (1, 2, 4)),
    ("mistral-7b", "lora", ("H100-SXM", "A100-80GB-SXM", "L40S"), (1, 2, 4)),
    ("gemma-2-9b", "qlora", ("A100-80GB-SXM", "L40S", "L4"), (1, 2, 4)),
    ("llama-3.2-3b", "full", ("H100-SXM", "A100-80GB-SXM"), (1, 2, 4, 8)),
    ("qwen2.5-1.5b", "full", ("H100-SXM", "A100-80GB-SXM", "L40S"), (1, 2)),
    ("qwen2.5-14b", "lora", ("H100-SXM", "A100-80GB-SXM"), (2, 4, 8)),
    ("llama-3.1-70b", "qlora", ("H100-SXM", "A100-80GB-SXM"), (2, 4, 8)),
]


def inventory(nodes: int) -> list[dict[str, Any]]:
    """``nodes`` fake GPU nodes split by NODE_MIX (hack/k8s/inventory.yaml's format)."""
    counts = [max(1, round(share * nodes)) for share, _ in NODE_MIX]
    counts[0] += nodes - sum(counts)
    return [shape | {"nodes": n} for (_, shape), n in zip(NODE_MIX, counts, strict=True)]


def manifest(index: int, namespace: str) -> dict[str, Any]:
    """Every other job `gpuType: auto` (up to 8 GPUs), the rest pinned to a type and count."""
    rng = random.Random(f"{namespace}-{index}")
    model, method, pinned_types, counts = rng.choice(WORKLOADS)
    resources: dict[str, Any] = (
        {"gpuType": "auto", "maxGpus": rng.choice((4, 8))}
        if index % 2
        else {"gpuType": rng.choice(pinned_types), "gpus": rng.choice(counts)}
    )
    if resources["gpuType"] in ("L40S", "L4", "A10G"):  # four GPUs per node
        resources["gpus"] = min(resources["gpus"], 4)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": f"{namespace}-{index:04d}", "namespace": namespace},
        "spec": {
            "model": {"name": model},
            "method": method,
            "dataset": {
                "uri": "s3://datasets/alpaca.jsonl",
                "format": "alpaca",
                "tokens": rng.choice((1_000_000, 5_000_000, 20_000_000)),
            },
            "training": {"epochs": 1, "seqLen": rng.choice((1024, 2048))},
            "resources": resources,
            "podAnnotations": HOLD,
        },
    }


def plain_job(index: int) -> dict[str, Any]:
    """The reference: a one-pod batch/v1 Job as a user would write it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"plain-{index:04d}", "namespace": REFERENCE_NS},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": HOLD},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36"}],
                },
            },
        },
    }


# Watching --------------------------------------------------------------------------------


class FirstSeen:
    """The first time each object passes a test, from a watch that survives restarts."""

    def __init__(self, list_fn: Callable[..., Any], key: Callable[[Any], str | None]) -> None:
        self.list_fn, self.key = list_fn, key
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # The list functions carry no docstring, so the watch yields plain dicts.
        version: str | None = None
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self.list_fn, timeout_seconds=30, resource_version=version
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    name = self.key(obj)
                    if name is not None:
                        self.seen.setdefault(name, time.time())
            except ApiException as error:  # 410 Gone: start over from a fresh list
                version = None if error.status == 410 else version
                time.sleep(0.2)
            except (OSError, urllib3.exceptions.HTTPError):  # a dropped connection: resume
                time.sleep(0.2)

    def close(self) -> None:
        self.stop.set()


def _planned_key(written: dict[str, float]) -> Callable[[dict[str, Any]], str | None]:
    """A TrainingJob is decided once the operator wrote its phase (Planned, or Failed);
    ``written`` gets, per name, the seconds from its creationTimestamp to its Planned
    condition's lastTransitionTime (the API server's and the operator's own clocks, 1 s
    resolution: a check on the watch's figure that no client's lag can skew)."""

    def key(obj: dict[str, Any]) -> str | None:
        status = obj.get("status") or {}
        if not (status.get("plan") or status.get("phase")):
            return None
        name = str(obj["metadata"]["name"])
        planned = next((c for c in status.get("conditions") or [] if c["type"] == "Planned"), None)
        if planned is not None and name not in written:
            written[name] = _seconds_between(
                obj["metadata"]["creationTimestamp"], planned["lastTransitionTime"]
            )
        return name

    return key


def _seconds_between(start: str, end: str) -> float:
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return (
        datetime.datetime.strptime(end, stamp) - datetime.datetime.strptime(start, stamp)
    ).total_seconds()


def _bound_key(pod: dict[str, Any]) -> str | None:
    bound = (pod.get("spec") or {}).get("nodeName")
    return str(pod["metadata"]["labels"]["batch.kubernetes.io/job-name"]) if bound else None


def _watch_main(kubeconfig: str, what: str, namespace: str, conn: Any, count: Any) -> None:
    """A watcher process: FirstSeen of ``what`` in ``namespace`` until told to stop, then
    its times (and the plans' server-side seconds) sent back."""
    api_client = config.new_client_from_config(config_file=kubeconfig)
    written: dict[str, float] = {}
    if what == "plans":
        custom = client.CustomObjectsApi(api_client)
        seen = FirstSeen(
            lambda **kw: custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kw
            ),
            _planned_key(written),
        )
    elif what == "trainer-jobs":
        batch = client.BatchV1Api(api_client)
        seen = FirstSeen(
            lambda **kw: batch.list_namespaced_job(namespace, label_selector=JOB_LABEL, **kw),
            lambda job: str(job["metadata"]["labels"][JOB_LABEL]),
        )
    else:
        core = client.CoreV1Api(api_client)
        seen = FirstSeen(lambda **kw: core.list_namespaced_pod(namespace, **kw), _bound_key)
    conn.send("ready")
    while not conn.poll(0.2):
        count.value = len(seen.seen)
    conn.recv()
    seen.close()
    conn.send((dict(seen.seen), written))


class Watcher:
    """FirstSeen in a process of its own: in the bench's process the watch thread shares
    one GIL with the 16 applying threads and stamps events late while they run (a lag that
    was counted as the operator's)."""

    def __init__(self, kubeconfig: Path, what: str, namespace: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._count = context.Value("i", 0)
        self._process = context.Process(
            target=_watch_main,
            args=(str(kubeconfig), what, namespace, child, self._count),
            daemon=True,
        )
        self._process.start()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            raise SystemExit(f"the {what} watcher did not start")
        self.seen: dict[str, float] = {}
        self.written: dict[str, float] = {}

    def count(self) -> int:
        return int(self._count.value)

    def close(self) -> None:
        """Stop the watch; ``seen`` (and ``written``) then hold its figures."""
        self._conn.send("stop")
        self.seen, self.written = self._conn.recv()
        self._process.join(timeout=30)


def apply_all(
    bodies: list[dict[str, Any]], create: Callable[[dict[str, Any]], Any], workers: int
) -> dict[str, float]:
    """Create every object from ``workers`` threads; name -> when its create was sent."""
    sent: dict[str, float] = {}

    def one(body: dict[str, Any]) -> None:
        sent[body["metadata"]["name"]] = time.time()
        create(body)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, bodies))
    return sent


def wait_for(done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.2)
    return done()


def latencies(sent: dict[str, float], seen: dict[str, float]) -> list[float]:
    return sorted(seen[name] - sent[name] for name in sent if name in seen)


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a (fewer than 2 samples)"
    return (
        f"p50 {percentile(values, 50):.2f} s, p95 {percentile(values, 95):.2f} s, "
        f"max {max(values):.2f} s"
    )


# The operator ----------------------------------------------------------------------------


class Operator:
    """`trainwright operator -A` as a subprocess that can be SIGKILLed and restarted."""

    def __init__(self, kubeconfig: Path, log_path: Path, workers: int | None = None) -> None:
        self.kubeconfig, self.log_path = kubeconfig, log_path
        self.workers = workers  # --workers of the operator; None: its default
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_mib: list[float] = []

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                # kwok's pods never run, so the dataset check pod could not either.
                [str(TRAINWRIGHT), "operator", "--all-namespaces", "--no-dataset-check",
                 "--metrics-port", str(self.port),
                 *(["--workers", str(self.workers)] if self.workers else [])],
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_healthy(self.port)

    def rss_mib(self) -> float:
        assert self.process is not None
        return peak_rss_bytes(self.process.pid) / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time the operator process has used (/proc/PID/stat)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        assert self.process is not None
        self.peak_rss_mib.append(self.rss_mib())
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
            if self.process.poll() is None:
                self.process.kill()

    def request_counts(self) -> dict[str, float]:
        """The operator's own client requests by verb (its latency histogram's counts)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        prefix = "trainwright_api_request_duration_seconds_count{"
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(prefix):
                labels, value = line[len(prefix) :].rsplit(" ", 1)
                counts[labels.split('verb="')[1].split('"')[0]] = float(value)
        return counts


def apiserver_trainingjob_patches(api_client: client.ApiClient) -> float:
    """PATCHes of trainingjobs (not /status) the API server served: kopf's annotations and
    finalizers (the operator's own client patches only /status, the bench never patches)."""
    response = api_client.call_api(
        *api_client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    )
    response.read()
    text = response.data.decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="trainingjobs"' in line
            and 'verb="PATCH"' in line
            and 'subresource=""' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def events_posted(core: client.CoreV1Api, namespace: str) -> int:
    """Events about TrainingJobs in ``namespace`` (each counted as often as it was posted)."""
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.kind=TrainingJob"
    ).items
    return sum(event.count or 1 for event in events)


def settled_events(core: client.CoreV1Api, namespace: str, timeout_s: float = 60) -> int:
    """events_posted once it stops growing: kopf posts Events from a queue of its own, which
    may still be draining when the last Job exists."""
    deadline = time.monotonic() + timeout_s
    count = events_posted(core, namespace)
    while time.monotonic() < deadline:
        time.sleep(3)
        now = events_posted(core, namespace)
        if now == count:
            break
        count = now
    return count


# Phases ----------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def check(self, ok: bool, what: str) -> None:
        self.say(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)


def reference_phase(
    api_client: client.ApiClient, kubeconfig: Path, jobs: int, workers: int, report: Report
) -> float:
    """Plain one-pod Jobs applied at once; seconds until every pod is bound."""
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    core.create_namespace({"metadata": {"name": REFERENCE_NS}})
    bound = Watcher(kubeconfig, "bound-pods", REFERENCE_NS)
    begin = time.time()
    sent = apply_all(
        [plain_job(i) for i in range(jobs)],
        lambda body: batch.create_namespaced_job(REFERENCE_NS, body),
        workers,
    )
    applied_s = time.time() - begin
    wait_for(lambda: bound.count() >= jobs, 600)
    bound.close()
    all_s = max(bound.seen.values(), default=begin) - begin
    report.say(f"reference: {jobs} plain one-pod Jobs applied in {applied_s:.1f} s")
    report.say(f"  pods bound: {len(bound.seen)} of {jobs}, all within {all_s:.1f} s")
    report.say(f"  apply -> pod bound: {spread(latencies(sent, bound.seen))}")
    # Out of the way of the next phase: the namespace goes, with its Jobs and pods.
    core.delete_namespace(REFERENCE_NS)
    wait_for(lambda: not _namespace_exists(core, REFERENCE_NS), 300)
    return all_s


def _namespace_exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def scale_phase(
    api_client: client.ApiClient,
    kubeconfig: Path,
    operator: Operator,
    jobs: int,
    workers: int,
    reference_s: float,
    report: Report,
) -> None:
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    core.create_namespace({"metadata": {"name": SCALE_NS}})
    planned = Watcher(kubeconfig, "plans", SCALE_NS)
    created = Watcher(kubeconfig, "trainer-jobs", SCALE_NS)
    requests_before = operator.request_counts()
    cpu_before = operator.cpu_seconds()
    patches_before = apiserver_trainingjob_patches(api_client)
    begin = time.time()
    sent = apply_all(
        [manifest(i, SCALE_NS) for i in range(jobs)],
        lambda body: custom.create_namespaced_custom_object(GROUP, VERSION, SCALE_NS, PLURAL, body),
        workers,
    )
    applied_s = time.time() - begin
    wait_for(lambda: planned.count() >= jobs and created.count() >= jobs, 900)
    planned.close()
    created.close()
    all_jobs_s = max(created.seen.values(), default=begin) - begin
    to_plan = latencies(sent, planned.seen)
    ratio = all_jobs_s / reference_s if reference_s else float("inf")
    by_verb = {
        verb: count - requests_before.get(verb, 0)
        for verb, count in operator.request_counts().items()
    }
    requests = sum(by_verb.values())
    cpu_s = operator.cpu_seconds() - cpu_before
    patches = apiserver_trainingjob_patches(api_client) - patches_before
    rss = operator.rss_mib()
    events = settled_events(core, SCALE_NS)
    report.say(f"scale: {jobs} TrainingJobs applied in {applied_s:.1f} s ({workers} threads)")
    report.say(f"  planned: {len(planned.seen)} of {jobs}; apply -> plan: {spread(to_plan)}")
    report.say(
        "  creation -> plan by the objects' own timestamps (1 s resolution): "
        + spread(sorted(planned.written.values()))
    )
    report.say(f"  trainer Jobs: {len(created.seen)} of {jobs}, all within {all_jobs_s:.1f} s")
    report.say(f"  apply -> trainer Job: {spread(latencies(sent, created.seen))}")
    report.say(f"  vs plain Jobs bound ({reference_s:.1f} s): x{ratio:.2f}")
    report.say(f"  operator peak RSS (VmHWM): {rss:.0f} MiB; CPU {cpu_s:.0f} s")
    report.say(
        f"  API requests per TrainingJob: {(requests + patches + events) / jobs:.2f} "
        f"(operator client {requests / jobs:.2f}, kopf patches {patches / jobs:.2f}, "
        f"events {events / jobs:.2f})"
    )
    report.say(
        "  operator client by verb: "
        + ", ".join(f"{verb} {count / jobs:.2f}" for verb, count in sorted(by_verb.items()))
    )
    report.check(len(planned.seen) == jobs, f"every TrainingJob planned ({len(planned.seen)})")
    report.check(len(created.seen) == jobs, f"every trainer Job created ({len(created.seen)})")
    if len(to_plan) >= 2:
        p95 = percentile(to_plan, 95)
        report.check(p95 < TARGET_P95_S, f"p95 apply -> plan {p95:.2f} s < {TARGET_P95_S} s")
    report.check(ratio <= TARGET_RATIO, f"all Jobs within x{TARGET_RATIO} of plain Jobs")
    report.check(rss < TARGET_RSS_MIB, f"peak RSS {rss:.0f} MiB < {TARGET_RSS_MIB} MiB")


def chaos_phase(
    api_client: client.ApiClient,
    operator: Operator,
    jobs: int,
    kills: int,
    workers: int,
    report: Report,
) -> None:
    """A second wave applied while the operator is SIGKILLed ``kills`` times."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    core.create_namespace({"metadata": {"name": CHAOS_NS}})
    bodies = [manifest(i, CHAOS_NS) for i in range(jobs)]
    applier = threading.Thread(
        target=apply_all,
        args=(
            bodies,
            lambda body: custom.create_namespaced_custom_object(
                GROUP, VERSION, CHAOS_NS, PLURAL, body
            ),
            max(1, workers // 4),  # a trickle, so the kills land all through the wave
        ),
        daemon=True,
    )
    rng = random.Random(15)
    begin = time.time()
    applier.start()
    for _ in range(kills):
        time.sleep(rng.uniform(0.2, 5.0))
        operator.kill()
        operator.start()
    applier.join()
    report.say(f"chaos: {jobs} TrainingJobs applied while SIGKILLing the operator {kills} times")
    report.say(f"  {time.time() - begin:.1f} s; peak RSS of the killed processes: "
               f"{max(operator.peak_rss_mib, default=0):.0f} MiB")  # fmt: skip
    converged = wait_for(lambda: not unconverged(api_client), 600)
    report.say(f"  converged {time.time() - begin:.1f} s after the first kill")
    for namespace in (SCALE_NS, CHAOS_NS):
        left = unconverged(api_client, namespace)
        report.check(converged and not left, f"{namespace}: every job converged {left[:3]}")
        twice = duplicates(api_client, namespace)
        report.check(
            not twice,
            f"{namespace}: no two Jobs of one attempt, no duplicate ConfigMaps or Services "
            f"{twice[:3]}",
        )


def unconverged(api_client: client.ApiClient, namespace: str | None = None) -> list[str]:
    """TrainingJobs without a plan, or whose attempt's Job does not exist (owned by it)."""
    custom, batch = client.CustomObjectsApi(api_client), client.BatchV1Api(api_client)
    left = []
    for ns in [namespace] if namespace else [SCALE_NS, CHAOS_NS]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        jobs = {
            job.metadata.name: job
            for job in batch.list_namespaced_job(ns, label_selector=JOB_LABEL).items
        }
        for item in items:
            status = item.get("status") or {}
            job = jobs.get((status.get("children") or {}).get("job", ""))
            owned = job is not None and any(
                ref.uid == item["metadata"]["uid"] for ref in job.metadata.owner_references or []
            )
            if not status.get("plan") or not owned:
                left.append(f"{item['metadata']['name']} ({status.get('phase')})")
    return left


def duplicates(api_client: client.ApiClient, namespace: str) -> list[str]:
    """Children a TrainingJob has twice: Jobs of one attempt, ConfigMaps, Services."""
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    kinds: dict[str, list[Any]] = {
        "Job": batch.list_namespaced_job(namespace, label_selector=JOB_LABEL).items,
        "ConfigMap": core.list_namespaced_config_map(namespace, label_selector=JOB_LABEL).items,
        "Service": core.list_namespaced_service(namespace, label_selector=JOB_LABEL).items,
    }
    problems = []
    for kind, objects in kinds.items():
        counted = collections.Counter(
            (o.metadata.labels[JOB_LABEL], o.metadata.labels.get(ATTEMPT_LABEL, ""))
            if kind == "Job"
            else o.metadata.labels[JOB_LABEL]
            for o in objects
        )
        problems += [f"{count} {kind}s for {key}" for key, count in counted.items() if count > 1]
    return problems


def run(args: argparse.Namespace) -> int:
    report = Report()
    with (
        tempfile.TemporaryDirectory(prefix="tw-scale-") as tmp,
        private_cluster(Path(tmp), inventory(args.nodes)) as kubeconfig,
    ):
        load = os.getloadavg()
        report.say(f"cluster: {args.nodes} fake GPU nodes ({_mix(args.nodes)}); "
                   f"load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
        kubectl(kubeconfig, "apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "-f", str(REPO / "crds"))
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        api_client.configuration.connection_pool_maxsize = args.workers + 8
        reference_s = reference_phase(api_client, kubeconfig, args.jobs, args.workers, report)
        operator = Operator(kubeconfig, Path(tmp) / "operator.log", args.operator_workers)
        operator.start()
        try:
            scale_phase(
                api_client, kubeconfig, operator, args.jobs, args.workers, reference_s, report
            )
            if args.kills:
                chaos_phase(api_client, operator, args.chaos_jobs, args.kills, args.workers, report)
        finally:
            operator.stop()
            if args.keep_log:
                Path(args.keep_log).write_bytes(operator.log_path.read_bytes())
        load = os.getloadavg()
        report.say(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if report.failures:
        print(f"FAILED: {len(report.failures)} check(s): {'; '.join(report.failures)}")
        return 1
    return 0


def _mix(nodes: int) -> str:
    return ", ".join(f"{g['nodes']} {g['gpuType']} x{g['gpusPerNode']}" for g in inventory(nodes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="TrainingJobs (and plain Jobs)")
    parser.add_argument("--nodes", type=int, default=200, help="fake GPU nodes")
    parser.add_argument("--workers", type=int, default=16, help="client threads applying")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the operator; 0: none")
    parser.add_argument("--chaos-jobs", type=int, default=200, help="TrainingJobs of that wave")
    parser.add_argument("--keep-log", help="copy the operator's log to this file")
    parser.add_argument(
        "--operator-workers", type=int, help="the operator's --workers (default: its own)"
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
