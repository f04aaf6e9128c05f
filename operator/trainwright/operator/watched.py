"""Nodes and pods kept current by one list and then a watch (the informer pattern).

Planning, the gang gate and CapacityPlans read every node and every unfinished pod.
Listed on demand, that is a full LIST of both per gang-gate pass (up to one a second
while gangs wait) and per plan that counts free GPUs; with 1,000 TrainingJobs on 200
nodes (benchmarks/bench_scale.py) those listings dominated the operator's memory and
the API server's work. A :class:`WatchedList` lists once, then follows a watch from the
listing's resourceVersion, and answers from memory; a watch that ends or expires (410
Gone) is resumed or listed again. Nodes and pods are kept as the few fields the
inventory, the gang gate and the failure checks read (:func:`slim_node`, :func:`slim_pod`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

Body = dict[str, Any]
# A watch request ends after this many seconds (the API server's own limit is 30-60 min);
# it is then resumed from the last resourceVersion seen.
WATCH_TIMEOUT_SECONDS = 300
RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0  # a watch the operator may not make (RBAC) is retried this rarely

logger = logging.getLogger(__name__)


class ListAndWatch(Protocol):
    """What a WatchedList needs of the API layer (trainwright.operator.kube.Kube)."""

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None) -> Body:
        """One API call returning its JSON."""
        ...

    def watch(self, path: str, query: Mapping[str, str]) -> Iterator[Body]:
        """The watch events of ``path`` (``type`` and ``object``) as they come."""
        ...


def slim_pod(pod: Mapping[str, Any]) -> Body:
    """The fields of a pod the inventory and the gang gate read: where it is bound, what
    its containers request, the node selector of a pending one, its phase and labels."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return {
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "labels", "resourceVersion")
            if key in metadata
        },
        "spec": {
            "nodeName": spec.get("nodeName"),
            "nodeSelector": spec.get("nodeSelector") or {},
            "containers": [
                {"name": c.get("name"), "resources": c.get("resources") or {}}
                for c in spec.get("containers") or []
            ],
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


def slim_node(node: Mapping[str, Any]) -> Body:
    """The fields of a node planning, the gang gate and the failure checks read: its name,
    labels, cordon and taints, allocatable devices and its conditions' states. The
    conditions' heartbeat times are left out, so a heartbeat that changes nothing else
    leaves the node as it was (no new snapshot, no inventory rebuilt)."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    return {
        "metadata": {key: metadata[key] for key in ("name", "uid", "labels") if key in metadata},
        "spec": {key: spec[key] for key in ("unschedulable", "taints") if key in spec},
        "status": {
            "allocatable": status.get("allocatable") or {},
            "conditions": [
                {key: c[key] for key in ("type", "status", "reason", "message") if key in c}
                for c in status.get("conditions") or []
            ],
        },
    }


def _key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace') or ''}/{metadata.get('name')}"


class WatchedList:
    """The objects at ``path`` (with ``query``, e.g. a field selector), kept current."""

    def __init__(
        self,
        api: ListAndWatch,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        slim: Callable[[Mapping[str, Any]], Body] = dict,
    ) -> None:
        self._api = api
        self._path = path
        self._query = dict(query or {})
        self._slim = slim
        self._lock = threading.Lock()
        self._objects: dict[str, Body] = {}
        # The list items() hands out, rebuilt only after a change: callers may key caches
        # on its identity (trainwright.operator.inventory.NodeInventory).
        self._snapshot: list[Body] | None = None
        self._synced = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def items(self) -> list[Body] | None:
        """The objects now; None until the first listing is in (callers then list)."""
        if not self._synced.is_set():
            return None
        with self._lock:
            if self._snapshot is None:
                self._snapshot = list(self._objects.values())
            return self._snapshot

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"trainwright-watch{self._path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        delay = RETRY_SECONDS
        while not self._stopped.is_set():
            try:
                self.follow(self.relist())
                delay = RETRY_SECONDS
            except Exception as exc:  # the API server away, a dropped connection: list again
                logger.warning(
                    "watching %s failed (%s); listing again in %.0f s", self._path, exc, delay
                )
                self._stopped.wait(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    def relist(self) -> str:
        """Replace what is known with a fresh listing; its resourceVersion."""
        listing = self._api.request("GET", self._path, query=self._query)
        objects = {_key(obj): self._slim(obj) for obj in listing.get("items") or []}
        with self._lock:
            self._objects = objects
            self._snapshot = None
        self._synced.set()
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def follow(self, version: str) -> None:
        """Apply watch events from ``version`` on, until an error event (410 Gone) asks
        for a new listing or the operator stops."""
        while not self._stopped.is_set():
            query = self._query | {
                "watch": "true",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS),
            }
            for event in self._api.watch(self._path, query):
                if event.get("type") == "ERROR":
                    return
                version = self.apply(event) or version
                if self._stopped.is_set():
                    return

    def apply(self, event: Mapping[str, Any]) -> str | None:
        """One watch event; the resourceVersion it carries."""
        obj = event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        kind = event.get("type")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            key = _key(obj)
            slim = None if kind == "DELETED" else self._slim(obj)
            with self._lock:
                if slim is None:
                    if self._objects.pop(key, None) is not None:
                        self._snapshot = None
                elif self._objects.get(key) != slim:
                    self._objects[key] = slim
                    self._snapshot = None
        return str(version) if version else None
