"""The gang gate's pass at the issue's scale: 1,000 waiting gangs on 200 GPU nodes.

One pass (``trainwright.operator.admission``) turns one node and one pod listing into
the free devices per node (bound pods, pods not bound yet, gangs released moments ago)
and decides every waiting gang first come first served per device type. This times the
pure part of a pass (no API calls) on synthetic objects shaped like the local cluster's:
200 nodes of 8 GPUs over three products, 150 of them held by bound pods, 20 pods
pending, 1,000 waiting gangs of 1 to 4 pods of 8 GPUs. Printed: the pass time (median
of 20), and how many gangs it released.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from trainwright.operator.admission import Gang, decide, free_devices

PRODUCTS = {
    "H100-SXM": "NVIDIA-H100-80GB-HBM3",
    "A100-80GB-SXM": "NVIDIA-A100-SXM4-80GB",
    "L4": "NVIDIA-L4",
}
NODES = 200
BUSY = 150  # nodes whose 8 GPUs a bound pod holds
PENDING = 20  # pods of 8 GPUs not bound yet
WAITING = 1_000


def _node(index: int, product: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"node-{index}", "labels": {"nvidia.com/gpu.product": product}},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    }


def _pod(index: int, product: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeSelector": {"nvidia.com/gpu.product": product},
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": f"pod-{index}",
            "namespace": "bench",
            "labels": {"batch.kubernetes.io/job-name": f"job-{index}"},
        },
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


def main() -> None:
    rng = random.Random(15)
    products = list(PRODUCTS.items())
    nodes = [_node(i, products[i % 3][1]) for i in range(NODES)]
    pods = [_pod(i, products[i % 3][1], f"node-{i}") for i in range(BUSY)]
    pods += [_pod(BUSY + i, products[i % 3][1], None) for i in range(PENDING)]
    gangs = [
        Gang(
            "bench",
            f"tj-{i}",
            f"tj-{i}-a0",
            products[rng.randrange(3)][0],
            rng.randint(1, 4),
            8,
            f"2026-03-01T12:{i // 60:02d}:{i % 60:02d}Z",
        )
        for i in range(WAITING)
    ]
    seconds: list[float] = []
    released = 0
    for _ in range(20):
        started = time.perf_counter()
        verdicts = decide(gangs, free_devices(nodes, pods))
        seconds.append(time.perf_counter() - started)
        released = sum(v.admitted for v in verdicts.values())
    print(
        f"gang gate pass: {WAITING} waiting gangs, {NODES} nodes, {len(pods)} pods: "
        f"{statistics.median(seconds) * 1000:.1f} ms (median of 20); {released} released"
    )


if __name__ == "__main__":
    main()
