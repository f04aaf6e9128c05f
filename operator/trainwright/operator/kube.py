"""The few Kubernetes API calls the controllers make, as plain dicts in and out.

A thin layer over the official ``kubernetes`` client (its configuration, auth and
connection pool) with raw JSON requests, so the handlers see the same
dicts kopf gives them (and the client spends no time building model objects).
Creation is idempotent: 409 AlreadyExists reads and returns the existing
object, which is what a level-based reconcile wants after a restart.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from trainwright.operator.watched import WatchedList, slim_node, slim_pod
from trainwright.resources.queueing import KUEUE_GROUP, KUEUE_VERSION, pending_workloads_path

logger = logging.getLogger(__name__)

GROUP = "trainwright.io"
VERSION = "v1alpha1"

Body = dict[str, Any]
T = TypeVar("T")
UNFINISHED_PODS = "status.phase!=Succeeded,status.phase!=Failed"


def load_client_configuration() -> client.Configuration:
    """In-cluster credentials when running in a pod, the current KUBECONFIG otherwise."""
    configuration = client.Configuration()
    loaders: Any = config  # the loaders carry no type annotations
    try:
        loaders.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        loaders.load_kube_config(client_configuration=configuration)
    return configuration


def _is_status(exc: ApiException, code: int) -> bool:
    return bool(exc.status == code)


# Kind -> (path prefix, plural) for the children the controllers create.
_CHILD_PATHS = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Job": ("/apis/batch/v1", "jobs"),
    # Read only: the claims a TrainingJob names must exist (trainwright.operator.waiting).
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    # Kueue (spec.queue, trainwright.operator.admission): the LocalQueue is checked at
    # planning; a trainer Job's Workload is read, and deactivated while spec.suspend.
    "LocalQueue": (f"/apis/{KUEUE_GROUP}/{KUEUE_VERSION}", "localqueues"),
    "Workload": (f"/apis/{KUEUE_GROUP}/{KUEUE_VERSION}", "workloads"),
}


class Kube:
    """Raw REST access to the objects the controllers read and write.

    The generated client's typed methods validate every body into its models;
    raw requests with dicts are faster and keep fields the models do not know.
    """

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        *,
        pool_size: int = 16,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        configuration = configuration or load_client_configuration()
        configuration.connection_pool_maxsize = pool_size
        # Typed as Any: the generated client's call_api/read/close carry no annotations.
        self.api_client: Any = client.ApiClient(configuration)
        self._inventory_lock = threading.Lock()
        self._inventory_cache: tuple[float, list[Body], list[Body]] | None = None
        self._nodes_cache: tuple[float, list[Body]] | None = None
        self._watched_nodes: WatchedList | None = None
        self._watched_pods: WatchedList | None = None
        # Called with (HTTP verb, seconds) after every request: the latency metric.
        self._observe = observe
        # Independent requests of one reconcile go out together (see concurrently()).
        self._fan_out = concurrent.futures.ThreadPoolExecutor(
            max_workers=pool_size, thread_name_prefix="trainwright-api"
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Body:
        """One API call; raises ``ApiException`` on a non-2xx answer."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        started = time.perf_counter()
        response = self.api_client.call_api(*serialized)
        response.read()
        if self._observe is not None:
            self._observe(method, time.perf_counter() - started)
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(
                http_resp=response, body=response.data.decode("utf-8", "replace"), data=None
            )
        data: Body = json.loads(response.data)
        return data

    def _get_or_none(self, path: str) -> Body | None:
        try:
            return self.request("GET", path)
        except ApiException as exc:
            if _is_status(exc, 404):
                return None
            raise

    # Custom resources ----------------------------------------------------------------------

    def get_custom(self, plural: str, namespace: str, name: str) -> Body | None:
        return self._get_or_none(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}")

    def list_custom(self, plural: str, namespace: str) -> list[Body]:
        listing = self.request("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}")
        return list(listing.get("items") or [])

    def create_custom(self, plural: str, manifest: Mapping[str, Any]) -> Body:
        """Create a custom resource; if it already exists, return the existing one."""
        namespace = str(manifest["metadata"]["namespace"])
        name = str(manifest["metadata"]["name"])
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        try:
            return self.request("POST", path, body=manifest)
        except ApiException as exc:
            if not _is_status(exc, 409):
                raise
        existing = self.get_custom(plural, namespace, name)
        if existing is None:
            raise RuntimeError(f"{plural} {namespace}/{name} exists but could not be read")
        return existing

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Body | None:
        """Merge-patch ``status`` through the status subresource; None if the object is gone."""
        try:
            return self.request(
                "PATCH",
                f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
                body={"status": dict(status)},
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if _is_status(exc, 404):
                return None
            raise

    # Children ------------------------------------------------------------------------------

    @staticmethod
    def _child_path(kind: str, namespace: str, name: str | None = None) -> str:
        prefix, plural = _CHILD_PATHS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def get_child(self, kind: str, namespace: str, name: str) -> Body | None:
        return self._get_or_none(self._child_path(kind, namespace, name))

    def create_child(self, manifest: Mapping[str, Any]) -> Body:
        """Create a ConfigMap, Service or Job; if it already exists, return the existing one."""
        kind = str(manifest["kind"])
        namespace = str(manifest["metadata"]["namespace"])
        name = str(manifest["metadata"]["name"])
        try:
            return self.request("POST", self._child_path(kind, namespace), body=manifest)
        except ApiException as exc:
            if not _is_status(exc, 409):
                raise
        existing = self.get_child(kind, namespace, name)
        if existing is None:
            raise RuntimeError(f"{kind} {namespace}/{name} exists but could not be read")
        return existing

    def list_children(self, kind: str, namespace: str, label_selector: str) -> list[Body]:
        listing = self.request(
            "GET", self._child_path(kind, namespace), query={"labelSelector": label_selector}
        )
        return list(listing.get("items") or [])

    def list_pods(self, namespace: str, label_selector: str) -> list[Body]:
        listing = self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": label_selector}
        )
        return list(listing.get("items") or [])

    def list_pods_on_node(self, node: str, label_selector: str) -> list[Body]:
        """The pods of every namespace bound to ``node`` that carry ``label_selector``."""
        listing = self.request(
            "GET",
            "/api/v1/pods",
            query={"labelSelector": label_selector, "fieldSelector": f"spec.nodeName={node}"},
        )
        return list(listing.get("items") or [])

    def list_events(self, namespace: str, pod_name: str) -> list[Body]:
        """The Events about one pod (the scheduler's and the kubelet's reasons)."""
        selector = f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
        listing = self.request(
            "GET", f"/api/v1/namespaces/{namespace}/events", query={"fieldSelector": selector}
        )
        return list(listing.get("items") or [])

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; a Job already gone is fine."""
        self.delete_child("Job", namespace, name, body={"propagationPolicy": "Background"})

    def delete_child(
        self, kind: str, namespace: str, name: str, *, body: dict[str, Any] | None = None
    ) -> None:
        """Delete a ConfigMap, Service or Job; one already gone is fine."""
        try:
            self.request("DELETE", self._child_path(kind, namespace, name), body=body)
        except ApiException as exc:
            if not _is_status(exc, 404):
                raise

    def merge_patch_child(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Body | None:
        """Merge-patch a child (a Workload's spec.active); None if it is gone."""
        try:
            return self.request(
                "PATCH",
                self._child_path(kind, namespace, name),
                body=patch,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if _is_status(exc, 404):
                return None
            raise

    def pending_workloads(self, namespace: str, local_queue: str) -> list[Body] | None:
        """A LocalQueue's pending Workloads from Kueue's visibility API; None when that API
        is not served (Kueue without it, or no permission): positions are then unknown."""
        try:
            found = self.request("GET", pending_workloads_path(namespace, local_queue))
        except ApiException as exc:
            logger.debug("Kueue's visibility API did not answer: %s", exc.reason)
            return None
        return list(found.get("items") or [])

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        self.request(
            "PATCH",
            self._child_path("Job", namespace, name),
            body={"spec": {"suspend": suspend}},
            content_type="application/merge-patch+json",
        )

    # Inventory -----------------------------------------------------------------------------

    def watch_inventory(self) -> None:
        """Keep nodes and unfinished pods current from watches (trainwright.operator.watched)
        instead of listing them per plan or gang-gate pass; the operator calls it once."""
        self._watched_nodes = WatchedList(self, "/api/v1/nodes", slim=slim_node)
        self._watched_pods = WatchedList(
            self, "/api/v1/pods", query={"fieldSelector": UNFINISHED_PODS}, slim=slim_pod
        )
        self._watched_nodes.start()
        self._watched_pods.start()

    def watch(self, path: str, query: Mapping[str, str]) -> Iterator[Body]:
        """A watch request's events (one JSON object a line) as the API server sends them."""
        serialized = self.api_client.param_serialize(
            "GET",
            path,
            query_params=list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        timeout = float(query.get("timeoutSeconds") or 300) + 30
        response = self.api_client.call_api(*serialized, _request_timeout=(10, timeout))
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(
                http_resp=response, body=response.data.decode("utf-8", "replace"), data=None
            )
        pending = b""
        try:
            for chunk in response.response.stream(2**16):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        event: Body = json.loads(line)
                        yield event
        finally:
            response.response.release_conn()

    def nodes_and_pods(self, *, max_age_seconds: float = 2.0) -> tuple[list[Body], list[Body]]:
        """All nodes and all unfinished pods: from the watches once they are synced
        (:meth:`watch_inventory`), else listed and cached briefly.

        Many TrainingJobs applied at once would otherwise each list every node
        and pod in the cluster; a two-second-old view is as good for planning.
        """
        nodes = self._watched_nodes.items() if self._watched_nodes else None
        pods = self._watched_pods.items() if self._watched_pods else None
        if nodes is not None and pods is not None:
            return nodes, pods
        with self._inventory_lock:
            now = time.monotonic()
            if self._inventory_cache is not None and now - self._inventory_cache[0] < (
                max_age_seconds
            ):
                return self._inventory_cache[1], self._inventory_cache[2]
            nodes = list(self.request("GET", "/api/v1/nodes").get("items") or [])
            pods_listing = self.request(
                "GET",
                "/api/v1/pods",
                query={"fieldSelector": UNFINISHED_PODS},
            )
            pods = list(pods_listing.get("items") or [])
            self._inventory_cache = (now, nodes, pods)
            return nodes, pods

    def nodes(self, *, max_age_seconds: float = 5.0) -> list[Body]:
        """All nodes: from the watch once it is synced, else listed and cached briefly
        (planning many TrainingJobs at once reads them once)."""
        watched = self._watched_nodes.items() if self._watched_nodes else None
        if watched is not None:
            return watched
        with self._inventory_lock:
            now = time.monotonic()
            if self._nodes_cache is None or now - self._nodes_cache[0] >= max_age_seconds:
                listing = self.request("GET", "/api/v1/nodes")
                self._nodes_cache = (now, list(listing.get("items") or []))
            return self._nodes_cache[1]

    def concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run independent requests at once and return their results in order.

        A reconcile that creates three children waits one round trip instead of three
        (1,000 TrainingJobs applied at once queue behind those waits). The first
        exception is raised once every call has finished, so none is left running.
        """
        futures = [self._fan_out.submit(call) for call in calls]
        concurrent.futures.wait(futures)
        return [future.result() for future in futures]

    def close(self) -> None:
        for watched in (self._watched_nodes, self._watched_pods):
            if watched is not None:
                watched.stop()
        self._fan_out.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()
