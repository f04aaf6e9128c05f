"""The TrainingJob reconcile's own CPU: bench_scale's 1,000 jobs on its 200 nodes, no HTTP.

Each new TrainingJob is reconciled once, as its creation event does (plan, status write,
ConfigMap and Job), against an API answered from memory (`MemoryKube`: a dict per path, a
JSON round trip per request like a real reply's parse). Prints the CPU milliseconds per job
(process time: this thread and the API fan-out's), the requests by verb, and with
``--profile`` the functions that took the most. The scale benchmark (bench_scale.py) runs the
same jobs against a real control plane; this one isolates the operator's code from the
HTTP client, kopf and the API server.

Run: `.venv/bin/python benchmarks/bench_reconcile.py [--jobs 1000] [--nodes 200] [--profile]`.
"""

from __future__ import annotations

import argparse
import collections
import copy
import cProfile
import json
import pstats
import time
import uuid
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench_scale import inventory, manifest
from trainwright.operator.context import OperatorContext
from trainwright.operator.kube import Kube
from trainwright.operator.metrics import OperatorMetrics
from trainwright.operator.trainingjob import reconcile

NAMESPACE = "scale"
TRAININGJOBS = f"/apis/trainwright.io/v1alpha1/namespaces/{NAMESPACE}/trainingjobs"


def nodes(count: int) -> list[dict[str, Any]]:
    """Ready GPU nodes in bench_scale's mix, as the node watch keeps them."""
    made: list[dict[str, Any]] = []
    for group in inventory(count):
        for _ in range(group["nodes"]):
            made.append(
                {
                    "metadata": {
                        "name": f"gpu-{len(made):03d}",
                        "labels": {"nvidia.com/gpu.product": group["product"]},
                    },
                    "spec": {},
                    "status": {
                        "allocatable": {"nvidia.com/gpu": str(group["gpusPerNode"])},
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            )
    return made


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = value


class MemoryKube(Kube):
    """Kube whose requests are answered from a dict of objects by path."""

    def __init__(self, node_list: list[dict[str, Any]]) -> None:
        configuration = client.Configuration()
        configuration.host = "http://127.0.0.1:9"  # never dialled
        super().__init__(configuration)
        self.objects: dict[str, dict[str, Any]] = {}
        self.verbs: collections.Counter[str] = collections.Counter()
        self._node_list = node_list

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        self.verbs[method] += 1
        sent: dict[str, Any] = json.loads(json.dumps(body)) if body is not None else {}
        if method == "POST":
            sent["metadata"]["uid"] = str(uuid.uuid4())
            self.objects[f"{path}/{sent['metadata']['name']}"] = sent
            stored = sent
        elif method == "PATCH":  # a JSON merge patch, as every PATCH of Kube is
            stored = self.objects.setdefault(path.removesuffix("/status"), {})
            merge_patch(stored, sent)
        elif method == "GET" and path in self.objects:
            stored = self.objects[path]
        else:
            raise ApiException(status=404, reason="NotFound")
        reply: dict[str, Any] = json.loads(json.dumps(stored))
        return reply

    def nodes(self, *, max_age_seconds: float = 5.0) -> list[dict[str, Any]]:
        return self._node_list  # one snapshot, as the node watch hands out

    def nodes_and_pods(
        self, *, max_age_seconds: float = 2.0
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self._node_list, []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    args = parser.parse_args()

    kube = MemoryKube(nodes(args.nodes))
    context = OperatorContext(kube=kube, metrics=OperatorMetrics(), post_event=lambda *_: None)
    bodies = []
    for index in range(args.jobs):
        body = manifest(index, NAMESPACE)
        body["metadata"] |= {"uid": str(uuid.uuid4()), "generation": 1}
        kube.objects[f"{TRAININGJOBS}/{body['metadata']['name']}"] = body
        bodies.append(body)
    profile = cProfile.Profile() if args.profile else None
    started = time.process_time()
    if profile is not None:
        profile.enable()
    for body in bodies:
        reconcile(context, NAMESPACE, body["metadata"]["name"], body=copy.deepcopy(body))
    if profile is not None:
        profile.disable()
    cpu_ms = (time.process_time() - started) * 1000 / args.jobs
    planned = sum(
        1
        for path, obj in kube.objects.items()
        if "/trainingjobs/" in path and "plan" in obj.get("status", {})
    )
    kube.close()
    print(f"reconcile of a new TrainingJob: {cpu_ms:.1f} ms CPU per job ({args.jobs} jobs, "
          f"{args.nodes} nodes, in-memory API){' with cProfile on' if profile else ''}")  # fmt: skip
    print("  requests per job: " + ", ".join(
        f"{verb} {count / args.jobs:.2f}" for verb, count in sorted(kube.verbs.items())))  # fmt: skip
    print(f"  planned: {planned} of {args.jobs}")
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    return 0 if planned == args.jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
