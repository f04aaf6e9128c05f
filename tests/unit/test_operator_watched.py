"""Nodes and pods kept from watches (operator.watched): a node change is seen at once."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client

from trainwright.operator.inventory import NodeInventory, build_inventory
from trainwright.operator.kube import Kube
from trainwright.operator.watched import WatchedList, slim_node, slim_pod


def _node(name: str, gpus: int, *, version: str, unschedulable: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": version,
            "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        },
        "spec": {"unschedulable": unschedulable},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
    }


def _pod(name: str, node: str | None, gpus: int, *, version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "resourceVersion": version,
            "labels": {"batch.kubernetes.io/job-name": "ft-a0"},
            "managedFields": [{"manager": "kube-scheduler", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "trainer",
                    "image": "trainwright/trainer:0.1.0",
                    "env": [{"name": "RANK", "value": "0"}],
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
        "status": {"phase": "Running"},
    }


class FakeApi:
    """A listing, then watch events a test pushes (None ends the watch request)."""

    def __init__(self, listings: list[dict[str, Any]]) -> None:
        self.listings = listings
        self.lists = 0
        self.watch_queries: list[dict[str, str]] = []
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None) -> Any:
        listing = self.listings[min(self.lists, len(self.listings) - 1)]
        self.lists += 1
        return listing

    def watch(self, path: str, query: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        self.watch_queries.append(dict(query))
        while (event := self.events.get(timeout=5)) is not None:
            yield event


def _listing(version: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": version}, "items": list(items)}


def test_a_cordoned_added_or_deleted_node_is_seen_by_the_next_inventory() -> None:
    api = FakeApi(
        [_listing("10", _node("h100-0", 8, version="9"), _node("h100-1", 8, version="9"))]
    )
    nodes = WatchedList(api, "/api/v1/nodes")
    assert nodes.items() is None  # not listed yet: callers list for themselves
    version = nodes.relist()
    assert version == "10"
    assert build_inventory(nodes.items() or [], None).pools["H100-SXM"].allocatable_gpus == 16

    nodes.apply(
        {"type": "MODIFIED", "object": _node("h100-1", 8, version="11", unschedulable=True)}
    )
    assert build_inventory(nodes.items() or [], None).pools["H100-SXM"].allocatable_gpus == 8
    nodes.apply({"type": "ADDED", "object": _node("h100-2", 4, version="12")})
    nodes.apply({"type": "DELETED", "object": _node("h100-0", 8, version="13")})
    pool = build_inventory(nodes.items() or [], None).pools["H100-SXM"]
    assert (pool.nodes, pool.allocatable_gpus) == (1, 4)  # h100-2 only; h100-1 is cordoned


def test_the_watch_resumes_from_the_last_version_and_an_error_asks_for_a_new_listing() -> None:
    api = FakeApi([_listing("10", _node("h100-0", 8, version="9"))])
    nodes = WatchedList(api, "/api/v1/nodes")
    for event in (
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
        None,  # the request timed out: watch again from 15
        {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}},
    ):
        api.events.put(event)
    nodes.follow(nodes.relist())
    assert [q["resourceVersion"] for q in api.watch_queries] == ["10", "15"]
    assert all(
        q["watch"] == "true" and q["allowWatchBookmarks"] == "true" for q in api.watch_queries
    )


def test_pods_are_kept_as_the_fields_the_inventory_reads() -> None:
    pod = _pod("ft-a0-0", "h100-0", 8, version="3")
    slim = slim_pod(pod)
    assert "managedFields" not in slim["metadata"]
    assert "env" not in slim["spec"]["containers"][0]
    nodes = [_node("h100-0", 8, version="1"), _node("h100-1", 8, version="1")]
    assert build_inventory(nodes, [slim]).pools["H100-SXM"].free_per_node == (0, 8)


def _heartbeat(node: dict[str, Any], ready: str, at: str) -> dict[str, Any]:
    condition = {
        "type": "Ready",
        "status": ready,
        "lastHeartbeatTime": at,
        "reason": "KubeletReady",
    }
    return node | {"status": node["status"] | {"conditions": [condition]}}


def test_a_heartbeat_keeps_the_snapshot_and_its_inventory_a_readiness_change_does_not() -> None:
    """1,000 plans on 200 nodes share one inventory: rebuilt only when a node changes."""
    node = _node("h100-0", 8, version="9")
    api = FakeApi([_listing("10", _heartbeat(node, "True", "12:00:00"))])
    nodes = WatchedList(api, "/api/v1/nodes", slim=slim_node)
    nodes.relist()
    memo = NodeInventory()
    first = nodes.items() or []
    assert [(n["metadata"]["name"], n["status"]["conditions"][0]["status"]) for n in first] == [
        ("h100-0", "True")
    ]
    inventory = memo.of(first)
    assert inventory.pools["H100-SXM"].allocatable_gpus == 8

    nodes.apply({"type": "MODIFIED", "object": _heartbeat(node, "True", "12:00:40")})
    assert nodes.items() is first
    assert memo.of(nodes.items() or []) is inventory

    nodes.apply({"type": "MODIFIED", "object": _heartbeat(node, "False", "12:01:20")})
    after = nodes.items() or []
    assert after is not first
    assert after[0]["status"]["conditions"] == [
        {"type": "Ready", "status": "False", "reason": "KubeletReady"}
    ]
    assert "H100-SXM" not in memo.of(after).pools  # not Ready: offers nothing


def test_nodes_are_kept_as_the_fields_planning_and_the_failure_checks_read() -> None:
    node = _node("h100-0", 8, version="9", unschedulable=True)
    node["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    node["spec"]["taints"] = [{"key": "gpu-broken", "effect": "NoSchedule"}]
    node["status"]["images"] = [{"names": ["trainwright/trainer:0.1.0"], "sizeBytes": 1}]
    slim = slim_node(node)
    assert slim["metadata"] == {
        "name": "h100-0",
        "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    }
    assert slim["spec"] == {
        "unschedulable": True,
        "taints": [{"key": "gpu-broken", "effect": "NoSchedule"}],
    }
    assert slim["status"] == {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": []}


def _wait_for(probe: Any, what: str) -> None:
    deadline = time.monotonic() + 5
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_the_operator_reads_nodes_and_pods_from_its_watches_without_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = Kube(client.Configuration())
    node_api = FakeApi([_listing("10", _node("h100-0", 8, version="9"))])
    pod_api = FakeApi([_listing("20", _pod("ft-a0-0", "h100-0", 2, version="19"))])

    def request(method: str, path: str, *, query: Mapping[str, str] | None = None) -> Any:
        return (node_api if path == "/api/v1/nodes" else pod_api).request(method, path, query=query)

    def watch(path: str, query: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        return (node_api if path == "/api/v1/nodes" else pod_api).watch(path, query)

    monkeypatch.setattr(kube, "request", request)
    monkeypatch.setattr(kube, "watch", watch)
    kube.watch_inventory()
    try:
        _wait_for(lambda: node_api.watch_queries and pod_api.watch_queries, "both watches")
        assert pod_api.watch_queries[0]["fieldSelector"] == (
            "status.phase!=Succeeded,status.phase!=Failed"
        )
        nodes, pods = kube.nodes_and_pods(max_age_seconds=0.0)
        assert build_inventory(nodes, pods).pools["H100-SXM"].free_gpus == 6

        node_api.events.put({"type": "ADDED", "object": _node("h100-1", 8, version="11")})
        pod_api.events.put(
            {"type": "DELETED", "object": _pod("ft-a0-0", "h100-0", 2, version="21")}
        )
        _wait_for(lambda: len(kube.nodes()) == 2, "the added node")
        _wait_for(lambda: not kube.nodes_and_pods()[1], "the deleted pod")
        nodes, pods = kube.nodes_and_pods(max_age_seconds=0.0)
        assert build_inventory(nodes, pods).pools["H100-SXM"].free_gpus == 16
        assert (node_api.lists, pod_api.lists) == (1, 1)  # one listing each, then events
    finally:
        kube.close()
        node_api.events.put(None)
        pod_api.events.put(None)


class _Streamed:
    """A watch response whose chunks split events mid-line, as the network may."""

    status = 200

    def __init__(self, chunks: list[bytes]) -> None:
        self.response = self
        self.chunks = chunks
        self.released = False

    def stream(self, _amount: int) -> Iterator[bytes]:
        yield from self.chunks

    def release_conn(self) -> None:
        self.released = True


def test_watch_events_are_read_whole_across_chunk_boundaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = Kube(client.Configuration())
    streamed = _Streamed(
        [
            b'{"type":"ADDED","object":{"metadata":',
            b'{"name":"h100-0"}}}\n{"ty',
            b'pe":"DELETED","object":{}}\n',
        ]
    )
    monkeypatch.setattr(kube.api_client, "call_api", lambda *_args, **_kw: streamed)
    events = list(kube.watch("/api/v1/nodes", {"watch": "true", "timeoutSeconds": "5"}))
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]
    assert events[0]["object"]["metadata"]["name"] == "h100-0"
    assert streamed.released
    kube.close()
