"""The local cluster's Kueue setup without a cluster: hack/k8s/kueue/queues.yaml is valid
against Kueue's own CRD schemas and matches the devices of the fake inventory and the real
node, and hack/k8s/kueue/render.py points Kueue's webhooks at the loopback process.

The CRD schemas are the ones `make k8s-bin` copies out of the Kueue module
(hack/k8s/kueue/build.sh); without them these tests fail saying so.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from trainwright.planner.lookup import get_gpu

REPO_ROOT = Path(__file__).resolve().parents[2]
KUEUE_HACK = REPO_ROOT / "hack" / "k8s" / "kueue"
QUEUES = KUEUE_HACK / "queues.yaml"
INVENTORY = REPO_ROOT / "hack" / "k8s" / "inventory.yaml"
NODE_SCRIPT = REPO_ROOT / "hack" / "k8s" / "node.sh"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"


def _kueue_cache() -> Path:
    cache = Path(os.environ.get("TRAINWRIGHT_CACHE", str(Path.home() / ".cache" / "trainwright")))
    version = (KUEUE_HACK / "VERSION").read_text(encoding="utf-8").strip()
    return cache / "kueue" / version


def _load(path: Path, name: str) -> ModuleType:
    """A hack/ script imported as a module (hack/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load(KUEUE_HACK / "render.py", "kueue_render")
nodes = _load(REPO_ROOT / "hack" / "k8s" / "nodes.py", "hack_nodes")


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields rejected, as the API server's strict field validation
    does (a structural schema otherwise prunes a misspelt field silently)."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


@pytest.fixture(scope="module")
def kueue_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict openAPIV3Schema of that version of Kueue's CRD."""
    bases = _kueue_cache() / "crd" / "bases"
    if not bases.is_dir():
        pytest.fail(f"Kueue's CRDs are not in {bases}; run `make k8s-bin` first.", pytrace=False)
    schemas = {}
    for path in bases.glob("*.yaml"):
        crd = yaml.load(path.read_text(encoding="utf-8"), render.LOADER)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _queues() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(QUEUES.read_text(encoding="utf-8")) if doc]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _queues() if doc["kind"] == kind]


def _errors(schemas: dict[tuple[str, str], dict[str, Any]], doc: dict[str, Any]) -> list[str]:
    schema = schemas[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_every_queue_manifest_is_valid_against_kueues_crd_schema(
    kueue_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    docs = _queues()

    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds.count("ResourceFlavor") == 4
    assert kinds.count("LocalQueue") == 2
    assert {doc["apiVersion"] for doc in docs} == {"kueue.x-k8s.io/v1beta2"}
    for doc in docs:
        assert _errors(kueue_schemas, doc) == [], f"{doc['kind']} {doc['metadata']['name']}"


def test_the_schema_check_rejects_a_misspelt_quota(
    kueue_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    (cluster_queue,) = _of_kind("ClusterQueue")
    quota = cluster_queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
    quota["nominalQuotas"] = quota.pop("nominalQuota")

    errors = _errors(kueue_schemas, cluster_queue)

    assert any("nominalQuotas" in error for error in errors), errors


def test_a_gpu_flavour_per_inventory_product_named_after_it() -> None:
    products = {group["product"] for group in yaml.safe_load(INVENTORY.read_text())}
    gpu_flavours = {
        flavour["metadata"]["name"]: flavour["spec"]["nodeLabels"][GPU_PRODUCT_LABEL]
        for flavour in _of_kind("ResourceFlavor")
        if GPU_PRODUCT_LABEL in flavour["spec"]["nodeLabels"]
    }

    assert set(gpu_flavours.values()) == products
    assert all(name == product.lower() for name, product in gpu_flavours.items())


def test_the_cpu_flavour_selects_the_real_nodes_device_and_its_taint() -> None:
    cpu = get_gpu("CPU")
    (flavour,) = [
        f for f in _of_kind("ResourceFlavor") if cpu.product_label_key in f["spec"]["nodeLabels"]
    ]

    assert flavour["spec"]["nodeLabels"] == {cpu.product_label_key: cpu.product_labels[0]}
    assert flavour["metadata"]["name"] == cpu.product_labels[0].lower()
    (taint,) = flavour["spec"]["nodeTaints"]
    assert (taint["key"], taint["effect"]) == (cpu.resource_name, "NoSchedule")
    node_taint = f"{{key: {taint['key']}, value: {taint['value']}, effect: {taint['effect']}}}"
    assert node_taint in NODE_SCRIPT.read_text()


def _quotas() -> dict[str, dict[str, str]]:
    (cluster_queue,) = _of_kind("ClusterQueue")
    (group,) = cluster_queue["spec"]["resourceGroups"]
    return {
        flavour["name"]: {r["name"]: str(r["nominalQuota"]) for r in flavour["resources"]}
        for flavour in group["flavors"]
    }


def test_the_gpu_quota_of_each_flavour_is_the_inventorys_gpus() -> None:
    quotas = _quotas()

    for group in yaml.safe_load(INVENTORY.read_text()):
        quota = quotas[group["product"].lower()]
        assert int(quota[GPU_RESOURCE]) == group["nodes"] * group["gpusPerNode"]
        assert int(quota["cpu"]) == group["nodes"] * int(group["cpu"])


def test_the_cpu_flavour_quota_is_the_real_nodes_ranks() -> None:
    default_ranks = re.search(r"ranks=\$\{REAL_NODE_RANKS:-(\d+)\}", NODE_SCRIPT.read_text())
    assert default_ranks is not None

    quota = _quotas()["trainwright-cpu"]

    assert quota["trainwright.io/cpu-rank"] == default_ranks.group(1)
    assert quota[GPU_RESOURCE] == "0"


def test_every_flavour_quotes_every_covered_resource() -> None:
    (cluster_queue,) = _of_kind("ClusterQueue")
    (group,) = cluster_queue["spec"]["resourceGroups"]
    flavour_names = {f["metadata"]["name"] for f in _of_kind("ResourceFlavor")}

    assert {f["name"] for f in group["flavors"]} == flavour_names
    for flavour in group["flavors"]:
        assert [r["name"] for r in flavour["resources"]] == group["coveredResources"]


def test_two_local_queues_over_the_cluster_queue_and_two_priorities() -> None:
    (cluster_queue,) = _of_kind("ClusterQueue")
    local_queues = {q["metadata"]["name"]: q for q in _of_kind("LocalQueue")}
    priorities = {p["metadata"]["name"]: p["value"] for p in _of_kind("WorkloadPriorityClass")}

    assert sorted(local_queues) == ["team-a", "team-b"]
    for queue in local_queues.values():
        assert queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
    assert cluster_queue["spec"]["preemption"]["withinClusterQueue"] == "LowerPriority"
    assert priorities["high"] > priorities["low"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kueue_dir = _kueue_cache()
    if not (kueue_dir / "webhook" / "manifests.yaml").is_file():
        pytest.fail(
            f"Kueue's manifests are not in {kueue_dir}; run `make k8s-bin` first.", pytrace=False
        )
    out = tmp_path_factory.mktemp("kueue")
    ca = out / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot checked here\n")
    args = [str(kueue_dir), str(out), str(ca), "192.0.2.7", "40001", "40002", "40003", "40004",
            str(INVENTORY)]  # fmt: skip
    assert render.main(args) == 0
    return out


def test_webhooks_are_those_of_kueues_kinds_and_jobs_at_the_loopback_url(rendered: Path) -> None:
    configs = list(yaml.safe_load_all((rendered / "webhooks.yaml").read_text()))
    webhooks = [w for config in configs for w in config["webhooks"]]
    resources = {
        (group, resource)
        for w in webhooks
        for rule in w["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    ca_bundle = base64.b64decode(webhooks[0]["clientConfig"]["caBundle"])

    assert {c["kind"] for c in configs} == {
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
    assert {"mjob.kb.io", "vjob.kb.io", "mworkload.kb.io"} <= {w["name"] for w in webhooks}
    assert ("batch", "jobs") in resources
    assert {group for group, _ in resources} == {"batch", "kueue.x-k8s.io"}
    assert all(w["clientConfig"]["url"].startswith("https://127.0.0.1:40001/") for w in webhooks)
    for job_webhook in (w for w in webhooks if w["name"] in ("mjob.kb.io", "vjob.kb.io")):
        assert job_webhook["objectSelector"] == {
            "matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]
        }
    assert ca_bundle.startswith(b"-----BEGIN CERTIFICATE-----")


def test_conversion_webhooks_and_config_point_at_the_process(rendered: Path) -> None:
    crds = {
        crd["metadata"]["name"]: crd
        for crd in yaml.load_all((rendered / "crds.yaml").read_text(), render.LOADER)
    }
    (config,) = yaml.safe_load_all((rendered / "config.yaml").read_text())
    workloads = crds["workloads.kueue.x-k8s.io"]["spec"]["conversion"]["webhook"]

    assert len(crds) == 11
    assert workloads["clientConfig"]["url"] == "https://127.0.0.1:40001/convert"
    assert "conversion" not in crds["resourceflavors.kueue.x-k8s.io"]["spec"]
    assert config["webhook"] == {
        "host": "127.0.0.1",
        "port": 40001,
        "certDir": str(rendered / "certs"),
    }
    assert config["health"]["healthProbeBindAddress"] == "127.0.0.1:40002"
    # The operator dashboard's quota panel reads the ClusterQueue resource gauges.
    assert config["metrics"] == {
        "bindAddress": "127.0.0.1:40003",
        "enableClusterQueueResources": True,
    }
    assert config["manageJobsWithoutQueueName"] is False
    assert config["internalCertManagement"] == {"enable": False}


def test_the_visibility_api_is_served_through_a_service_at_the_host_process(rendered: Path) -> None:
    documents = list(yaml.safe_load_all((rendered / "visibility.yaml").read_text()))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    (service,) = by_kind["Service"]
    (endpoints,) = by_kind["Endpoints"]
    (subset,) = endpoints["subsets"]

    assert "selector" not in service["spec"]
    assert service["spec"]["ports"][0]["targetPort"] == 40004
    assert subset["addresses"] == [{"ip": "192.0.2.7"}]
    assert subset["ports"][0]["port"] == 40004
    assert sorted(a["metadata"]["name"] for a in by_kind["APIService"]) == [
        "v1beta1.visibility.kueue.x-k8s.io",
        "v1beta2.visibility.kueue.x-k8s.io",
    ]
    for apiservice in by_kind["APIService"]:
        assert apiservice["spec"]["service"] == {
            "name": service["metadata"]["name"],
            "namespace": "kueue-system",
            "port": 443,
        }
        assert "insecureSkipTLSVerify" not in apiservice["spec"]
        assert apiservice["spec"]["caBundle"]


# Rendered from the inventory (render.render_queues; cluster.sh applies what it writes) ----


def _groups(document: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = nodes.node_groups(document)  # validated as cluster.sh does
    return groups


def test_the_default_inventory_renders_exactly_the_committed_queues() -> None:
    """queues.yaml shows what a default cluster gets: its render from inventory.yaml is itself."""
    rendered = render.render_queues(_queues(), _groups(yaml.safe_load(INVENTORY.read_text())))
    assert yaml.safe_dump_all(rendered) == yaml.safe_dump_all(_queues())


def test_a_custom_inventory_gets_a_flavour_and_quota_per_product(
    kueue_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    inventory = [
        {"gpuType": "L40S", "product": "NVIDIA-L40S", "memoryMiB": 46068, "nodes": 3,
         "gpusPerNode": 4, "cpu": "48", "memory": "384Gi"},
        {"gpuType": "L40S", "product": "NVIDIA-L40S", "memoryMiB": 46068, "nodes": 1,
         "gpusPerNode": 8, "cpu": "96", "memory": "1Ti"},
        {"gpuType": "H100-SXM", "product": "NVIDIA-H100-80GB-HBM3", "memoryMiB": 81559,
         "nodes": 1, "gpusPerNode": 8, "cpu": "192", "memory": "2Ti"},
    ]  # fmt: skip
    rendered = render.render_queues(_queues(), _groups(inventory))
    flavours = {d["metadata"]["name"] for d in rendered if d["kind"] == "ResourceFlavor"}
    assert flavours == {"nvidia-l40s", "nvidia-h100-80gb-hbm3", "trainwright-cpu"}
    (cluster_queue,) = [d for d in rendered if d["kind"] == "ClusterQueue"]
    quotas = {
        f["name"]: {r["name"]: str(r["nominalQuota"]) for r in f["resources"]}
        for f in cluster_queue["spec"]["resourceGroups"][0]["flavors"]
    }
    assert quotas["nvidia-l40s"] == {
        GPU_RESOURCE: "20",  # 3 x 4 + 1 x 8
        "trainwright.io/cpu-rank": "0",
        "cpu": "240",  # 3 x 48 + 96
        "memory": str(3 * 384 * 2**30 + 2**40),  # bytes: Gi and Ti added up
    }
    assert quotas["nvidia-h100-80gb-hbm3"][GPU_RESOURCE] == "8"
    assert quotas["trainwright-cpu"]["trainwright.io/cpu-rank"] == "2"  # the real node's, kept
    assert [d["kind"] for d in rendered].count("LocalQueue") == 2
    for document in rendered:
        assert _errors(kueue_schemas, document) == [], document["metadata"]["name"]
