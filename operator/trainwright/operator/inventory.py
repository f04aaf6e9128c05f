"""The cluster's GPUs, read from Node and Pod objects: pure functions over their dicts.

Nodes are grouped by the GPU feature discovery label ``nvidia.com/gpu.product``
and mapped to a catalog GPU (``trainwright.planner.gpu_key_for_product_label``);
each node offers its allocatable ``nvidia.com/gpu`` minus what the pods bound
to it and not finished request. Cordoned nodes and nodes whose Ready condition
is not True offer nothing. The catalog's other devices are found the same way by
their own label and resource (the trainer's CPU device on the local cluster's real
node: ``trainwright.io/device.product`` and ``trainwright.io/cpu-rank``).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from trainwright.planner.lookup import device_node_keys

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"

ProductMapper = Callable[[str], str | None]


@functools.lru_cache(maxsize=256)
def _default_mapper(product: str) -> str | None:
    from trainwright.planner import PlannerError, gpu_key_for_product_label

    try:
        return gpu_key_for_product_label(product)
    except (PlannerError, KeyError, ValueError):
        return None


def _quantity_to_int(value: object) -> int:
    """Extended resources such as ``nvidia.com/gpu`` are whole numbers ("8")."""
    try:
        return int(str(value))
    except ValueError:
        return 0


@dataclasses.dataclass(frozen=True)
class GpuPool:
    """The nodes of one GPU type: per-node allocatable and free GPUs, in node order."""

    gpu: str
    product: str
    allocatable_per_node: tuple[int, ...]
    free_per_node: tuple[int, ...]

    @property
    def nodes(self) -> int:
        return len(self.allocatable_per_node)

    @property
    def allocatable_gpus(self) -> int:
        return sum(self.allocatable_per_node)

    @property
    def free_gpus(self) -> int:
        return sum(self.free_per_node)

    @property
    def max_gpus_per_node(self) -> int:
        return max(self.allocatable_per_node, default=0)

    def nodes_holding(self, gpus_per_node: int, *, free_only: bool) -> int:
        """How many nodes can take a pod requesting ``gpus_per_node`` GPUs."""
        per_node = self.free_per_node if free_only else self.allocatable_per_node
        return sum(1 for gpus in per_node if gpus >= gpus_per_node)

    def pods_holding(self, gpus_per_node: int, *, free_only: bool) -> int:
        """How many pods requesting ``gpus_per_node`` GPUs each the nodes hold.

        The scheduler may put several of a job's pods on one node when it has the
        GPUs (two one-rank pods on the real node's two CPU ranks); with pods as wide
        as the nodes, this is :meth:`nodes_holding`.
        """
        per_node = self.free_per_node if free_only else self.allocatable_per_node
        return sum(gpus // gpus_per_node for gpus in per_node) if gpus_per_node > 0 else 0

    def replicas_holding(self, gpus_per_replica: int) -> int:
        """Replicas of ``gpus_per_replica`` GPUs (each on one node) the free GPUs hold."""
        if gpus_per_replica <= 0:
            return 0
        return sum(free // gpus_per_replica for free in self.free_per_node)

    def to_status(self) -> dict[str, Any]:
        return {
            "gpuType": self.gpu,
            "product": self.product,
            "nodes": self.nodes,
            "gpusPerNode": self.max_gpus_per_node,
            "allocatableGpus": self.allocatable_gpus,
            "freeGpus": self.free_gpus,
        }


@dataclasses.dataclass(frozen=True)
class CapacityCheck:
    """Whether a plan's nodes x GPUs fit: on the cluster at all, and free right now."""

    fits_cluster: bool
    fits_now: bool
    message: str


@dataclasses.dataclass(frozen=True)
class Inventory:
    """GPU pools by catalog key, plus the products no catalog GPU matches."""

    pools: Mapping[str, GpuPool]
    unknown_products: tuple[str, ...] = ()
    # False when built from nodes alone: free GPUs then equal allocatable ones.
    pods_counted: bool = True

    def gpu_types(self) -> list[str]:
        """Catalog keys of the GPU types present, most allocatable GPUs first."""
        return sorted(self.pools, key=lambda gpu: (-self.pools[gpu].allocatable_gpus, gpu))

    def check(self, gpu: str, *, nodes: int, gpus_per_node: int) -> CapacityCheck:
        pool = self.pools.get(gpu)
        need = f"{nodes} node(s) x {gpus_per_node} {gpu}"
        if pool is None:
            return CapacityCheck(False, False, f"The plan needs {need}; {self._no_pool_text(gpu)}")
        holding = pool.pods_holding(gpus_per_node, free_only=False)
        if holding < nodes:
            return CapacityCheck(
                False,
                False,
                f"The plan needs {need}, but the {gpu} nodes hold only {holding} pod(s) of "
                f"{gpus_per_node} GPUs; {self.describe()}.",
            )
        free = pool.pods_holding(gpus_per_node, free_only=True)
        if free < nodes:
            return CapacityCheck(
                True,
                False,
                f"The plan needs {need}; the free GPUs hold {free} such pod(s) now, so pods "
                "wait for running work to finish.",
            )
        return CapacityCheck(
            True, True, f"The plan needs {need}; the free GPUs hold {free} such pod(s)."
        )

    def _no_pool_text(self, gpu: str) -> str:
        if not self.pools:
            return "the cluster has no nodes labelled nvidia.com/gpu.product with GPUs."
        return f"the cluster has no {gpu} nodes; it has {self.describe()}."

    def describe(self) -> str:
        """One phrase a person reads: what GPUs the cluster has and how many are free."""
        if not self.pools:
            return "no GPU nodes"
        parts = [
            f"{pool.nodes} {gpu} node(s) with up to {pool.max_gpus_per_node} GPUs"
            + (f" ({pool.free_gpus} of {pool.allocatable_gpus} free)" if self.pods_counted else "")
            for gpu, pool in ((g, self.pools[g]) for g in self.gpu_types())
        ]
        return ", ".join(parts)

    def to_status(self) -> list[dict[str, Any]]:
        return [self.pools[gpu].to_status() for gpu in self.gpu_types()]


def _node_is_usable(node: Mapping[str, Any]) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return True


def pod_gpu_request(pod: Mapping[str, Any]) -> int:
    """Devices a pod holds: the larger of request and limit, summed over its containers
    (a node offers one kind of device, so the kinds never mix on one node)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        for _, resource in device_node_keys():
            requests = (resources.get("requests") or {}).get(resource, 0)
            limits = (resources.get("limits") or {}).get(resource, 0)
            total += max(_quantity_to_int(requests), _quantity_to_int(limits))
    return total


def gpus_requested_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """GPUs held on each node by bound pods that have not finished."""
    held: dict[str, int] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node_name or phase in ("Succeeded", "Failed"):
            continue
        held[node_name] = held.get(node_name, 0) + pod_gpu_request(pod)
    return held


def build_inventory(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]] | None,
    *,
    product_to_gpu: ProductMapper = _default_mapper,
) -> Inventory:
    """Group usable GPU nodes by catalog GPU and subtract the GPUs pods hold.

    ``pods`` None skips the subtraction (what the cluster *can* hold, which is
    all a TrainingJob's plan is checked against).
    """
    held = gpus_requested_by_node(pods or [])
    allocatable: dict[str, list[int]] = {}
    free: dict[str, list[int]] = {}
    products: dict[str, str] = {}
    unknown: set[str] = set()
    for node in nodes:
        metadata = node.get("metadata") or {}
        labels = metadata.get("labels") or {}
        allocatable_resources = (node.get("status") or {}).get("allocatable") or {}
        product, gpus = None, 0
        for label, resource in device_node_keys():
            if labels.get(label):
                product = labels[label]
                gpus = _quantity_to_int(allocatable_resources.get(resource, 0))
                break
        if not product or gpus <= 0 or not _node_is_usable(node):
            continue
        gpu = product_to_gpu(product)
        if gpu is None:
            unknown.add(product)
            continue
        products.setdefault(gpu, product)
        allocatable.setdefault(gpu, []).append(gpus)
        free.setdefault(gpu, []).append(max(0, gpus - held.get(str(metadata.get("name")), 0)))
    pools = {
        gpu: GpuPool(gpu, products[gpu], tuple(allocatable[gpu]), tuple(free[gpu]))
        for gpu in allocatable
    }
    return Inventory(
        pools=pools, unknown_products=tuple(sorted(unknown)), pods_counted=pods is not None
    )


class NodeInventory:
    """``build_inventory(nodes, None)`` of the last node snapshot, built once per snapshot.

    Every plan is checked against what the cluster can hold; 1,000 TrainingJobs applied at
    once on 200 nodes rebuilt the same inventory 1,000 times (a quarter of the reconcile's
    CPU under cProfile). The watched node list (trainwright.operator.watched.WatchedList)
    hands out the same list object until a node changes, so its identity is the key; the
    memo keeps that list alive, so the identity cannot be reused by another list meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[Sequence[Mapping[str, Any]], Inventory] | None = None

    def of(self, nodes: Sequence[Mapping[str, Any]]) -> Inventory:
        with self._lock:
            if self._last is not None and self._last[0] is nodes:
                return self._last[1]
        inventory = build_inventory(nodes, None)
        with self._lock:
            self._last = (nodes, inventory)
        return inventory
