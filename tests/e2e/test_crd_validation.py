"""The API server enforces the generated CRDs: examples are accepted, bad manifests are
rejected with messages that name the field, defaults are filled in, and a Running job's
inputs cannot change under it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster import Kube, wait_until
from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.resources import headless_service, trainer_configmap, trainer_job

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "trainwright.io", "v1alpha1"
PLURALS = {
    "TrainingJob": "trainingjobs",
    "CapacityPlan": "capacityplans",
    "ModelExport": "modelexports",
}


@pytest.fixture(scope="module")
def crds(kube: Kube) -> Iterator[None]:
    """The CRDs from crds/, created or replaced, and Established."""
    extensions = client.ApiextensionsV1Api(kube.api_client)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 409:
                raise
            stored = extensions.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = stored.metadata.resource_version
            extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)

    def established() -> bool:
        for plural in PLURALS.values():
            crd = extensions.read_custom_resource_definition(f"{plural}.{GROUP}")
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") != "True":
                return False
        return True

    wait_until(established, timeout_s=60, what="the trainwright CRDs to be Established")
    yield


def custom(kube: Kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


def create(kube: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = custom(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body
    )
    return created


def rejection(kube: Kube, namespace: str, body: dict[str, Any]) -> str:
    """The API server's message when it refuses ``body``."""
    with pytest.raises(ApiException) as caught:
        create(kube, namespace, body)
    assert caught.value.status == 422, caught.value.body
    return str(yaml.safe_load(caught.value.body)["message"])


def example(name: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "examples" / name).read_text(encoding="utf-8"))
    return next(d for d in docs if d and d.get("apiVersion") == f"{GROUP}/{VERSION}")


def lora_job(**spec_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(example("training-lora.yaml"))
    body["metadata"] = {"name": "bad-job"}
    body["spec"].update(spec_changes)
    return body


def test_every_example_is_accepted(kube: Kube, namespace: str, crds: None) -> None:
    names = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("apiVersion") == f"{GROUP}/{VERSION}":
                names.append(create(kube, namespace, doc)["metadata"]["name"])
    assert sorted(names) == [
        "chat-serving",
        "chat-serving-forecast",
        "llama8b-lora",
        "llama8b-lora-export",
        "qwen7b-qlora",
        "tiny-cpu",
        "tiny-cpu-export",
    ]


def test_the_api_server_fills_in_the_defaults(kube: Kube, namespace: str, crds: None) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": "minimal"},
        "spec": {
            "model": {"name": "llama-3.2-1b"},
            "method": "lora",
            "dataset": {"uri": "pvc://datasets/a.jsonl"},
        },
    }
    spec = create(kube, namespace, body)["spec"]
    assert spec["maxRestarts"] == 3
    assert spec["strategy"] == "auto"
    assert spec["resources"] == {"gpuType": "auto"}
    assert spec["training"]["seqLen"] == 2048
    assert spec["training"]["epochs"] == 1
    assert spec["dataset"]["format"] == "auto"


@pytest.mark.parametrize(
    ("spec_changes", "expected"),
    [
        ({"resources": {"gpuType": "H100-SXM", "gpus": 0}}, "spec.resources.gpus"),
        ({"strategy": "zero4"}, 'spec.strategy: Unsupported value: "zero4"'),
        ({"budget": {"maxCostUsd": -1}}, "spec.budget.maxCostUsd"),
        (
            {"model": {"name": "llama-3.1-8b", "configPath": "/m/config.json"}},
            'spec.model: Invalid value: "object": model: set exactly one of name or configPath',
        ),
        (
            {"method": "full"},
            'spec.lora: Invalid value: "object": lora is only allowed with method auto, lora, qlora or dora',
        ),
        (
            {"resources": {"gpuType": "auto", "gpusPerNode": 8}},
            "resources.gpusPerNode needs a concrete resources.gpuType, not auto",
        ),
        (
            {"resources": {"gpuType": "L4", "gpus": 12, "nodes": 2, "gpusPerNode": 4}},
            "resources.gpus must equal resources.nodes x resources.gpusPerNode",
        ),
    ],
    ids=[
        "zero-gpus",
        "strategy-enum",
        "negative-budget",
        "two-models",
        "lora-on-full",
        "auto-layout",
        "layout-sum",
    ],
)
def test_an_invalid_training_job_is_rejected_naming_the_field(
    kube: Kube, namespace: str, crds: None, spec_changes: dict[str, Any], expected: str
) -> None:
    assert expected in rejection(kube, namespace, lora_job(**spec_changes))


def test_an_invalid_capacity_plan_and_export_are_rejected_naming_the_field(
    kube: Kube, namespace: str, crds: None
) -> None:
    plan = copy.deepcopy(example("capacityplan-chat.yaml"))
    plan["spec"]["workload"]["training"] = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://d/a.jsonl"},
    }
    assert (
        'spec.workload: Invalid value: "object": workload: set exactly one of inference or training'
        in rejection(kube, namespace, plan)
    )
    export = copy.deepcopy(example("modelexport.yaml"))
    export["spec"]["formats"] = ["safetensors"]
    del export["spec"]["ollama"]
    assert (
        'spec.quantization: Invalid value: "object": quantization needs format gguf or ollama'
        in rejection(kube, namespace, export)
    )


def test_the_method_cannot_change_after_creation(kube: Kube, namespace: str, crds: None) -> None:
    created = create(kube, namespace, example("training-lora.yaml"))
    changed = copy.deepcopy(created)
    changed["spec"]["method"] = "dora"
    with pytest.raises(ApiException) as caught:
        custom(kube).replace_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", "llama8b-lora", changed
        )
    assert 'spec.method: Invalid value: "object": method is immutable' in str(
        yaml.safe_load(caught.value.body)["message"]
    )


def test_a_running_job_keeps_its_inputs_until_it_stops_running(
    kube: Kube, namespace: str, crds: None
) -> None:
    api = custom(kube)
    create(kube, namespace, example("training-lora.yaml"))
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "trainingjobs", "llama8b-lora", {"status": {"phase": "Running"}}
    )
    bigger = {"spec": {"resources": {"gpuType": "H100-SXM", "gpus": 16}}}
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", "llama8b-lora", bigger
        )
    assert "immutable while the job is Running" in str(yaml.safe_load(caught.value.body)["message"])
    # Fields that do not change the run (suspend, restarts) may still change.
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingjobs", "llama8b-lora", {"spec": {"suspend": True}}
    )
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "trainingjobs",
        "llama8b-lora",
        {"status": {"phase": "Suspended"}},
    )
    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingjobs", "llama8b-lora", bigger
    )
    assert patched["spec"]["resources"]["gpus"] == 16


def test_kubectl_get_tj_prints_the_plan_columns(kube: Kube, namespace: str, crds: None) -> None:
    create(kube, namespace, example("training-lora.yaml"))
    status = {
        "phase": "Running",
        "plan": {
            "gpuType": "H100-SXM",
            "numGpus": 8,
            "nodes": 1,
            "gpusPerNode": 8,
            "strategy": "fsdp",
            "microBatchSize": 4,
            "gradientAccumulationSteps": 2,
            "memoryPerGpuBytes": 61000000000,
            "tokensPerSecond": 100340.0,
            "estimatedCostUsd": 5.44,
            "estimatedFinishTime": "2026-11-23T08:00:00Z",
        },
    }
    custom(kube).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "trainingjobs", "llama8b-lora", {"status": status}
    )
    table = kube.kubectl("get", "tj", "-n", namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "PHASE",
        "GPUS",
        "GPU",
        "TYPE",
        "STRATEGY",
        "ETA",
        "COST",
        "USD",
        "AGE",
    ]
    row = table[1].split()
    assert row[:7] == [
        "llama8b-lora",
        "Running",
        "8",
        "H100-SXM",
        "fsdp",
        "2026-11-23T08:00:00Z",
        "5.44",
    ]
    listed = kube.kubectl("get", "trainwright", "-n", namespace, "-o", "name").stdout.split()
    assert "trainingjob.trainwright.io/llama8b-lora" in listed


def test_the_trainer_children_pass_the_api_servers_validation(
    kube: Kube, namespace: str, crds: None
) -> None:
    # The builders' dicts, as the controller would create them (dry run: nothing runs).
    body = example("training-lora.yaml") | {
        "metadata": {"name": "llama8b-lora", "namespace": namespace}
    }
    job = TrainingJob.from_body(body)
    plan = PlanStatus(
        gpu_type="H100-SXM",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        num_gpus=16,
        nodes=2,
        gpus_per_node=8,
        strategy="fsdp",
        micro_batch_size=4,
        gradient_accumulation_steps=2,
        memory_per_gpu_bytes=61_000_000_000,
        tokens_per_second=180_000.0,
    )
    core, batch = kube.core_v1, kube.batch_v1
    created = [
        core.create_namespaced_config_map(namespace, trainer_configmap(job, plan), dry_run="All"),
        core.create_namespaced_service(namespace, headless_service(job), dry_run="All"),
        batch.create_namespaced_job(namespace, trainer_job(job, plan, attempt=0), dry_run="All"),
    ]
    assert [c.metadata.name for c in created] == [
        "llama8b-lora-trainer",
        "llama8b-lora-workers",
        "llama8b-lora-a0",
    ]
    indexed = created[2].spec
    assert indexed.completion_mode == "Indexed"
    assert indexed.completions == indexed.parallelism == 2
    assert indexed.pod_failure_policy.rules[1].on_exit_codes.values == [76]


# --- the trainer's children on the fake GPU cluster ---------------------------------------


@pytest.fixture
def claims(kube: Kube, namespace: str) -> Iterator[None]:
    """The `datasets` and `checkpoints` claims the lora example mounts, bound to hostPath PVs."""
    core = kube.core_v1
    volumes = [f"{namespace}-{claim}" for claim in ("datasets", "checkpoints")]
    for claim, volume in zip(("datasets", "checkpoints"), volumes, strict=True):
        core.create_persistent_volume(
            {
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "hostPath": {"path": f"/tmp/{volume}"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            }
        )
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
    yield
    for volume in volumes:
        core.delete_persistent_volume(volume)


def run_trainer_job(
    kube: Kube, namespace: str, *, attempt: int, pod_annotations: dict[str, str]
) -> client.V1Job:
    """Create the lora example's children for a 2 x 8 H100 plan; wait for the Job to finish."""
    body = example("training-lora.yaml") | {
        "metadata": {"name": "llama8b-lora", "namespace": namespace}
    }
    body["spec"]["podAnnotations"] = pod_annotations
    job = TrainingJob.from_body(body)
    plan = PlanStatus(
        gpu_type="H100-SXM",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        num_gpus=16,
        nodes=2,
        gpus_per_node=8,
        strategy="fsdp",
        micro_batch_size=4,
        gradient_accumulation_steps=2,
        memory_per_gpu_bytes=61_000_000_000,
        tokens_per_second=180_000.0,
    )
    kube.core_v1.create_namespaced_config_map(namespace, trainer_configmap(job, plan))
    kube.core_v1.create_namespaced_service(namespace, headless_service(job))
    manifest = trainer_job(job, plan, attempt=attempt)
    # Created suspended (no partial gang); the operator's gang gate releases it once both
    # pods fit. No operator runs here, and the two H100 nodes are free: release it as the
    # gate would.
    assert manifest["spec"]["suspend"] is True
    manifest["spec"]["suspend"] = False
    kube.batch_v1.create_namespaced_job(namespace, manifest)

    def finished() -> client.V1Job | None:
        current = kube.batch_v1.read_namespaced_job(manifest["metadata"]["name"], namespace)
        done = {c.type for c in (current.status.conditions or []) if c.status == "True"}
        return current if done & {"Complete", "Failed"} else None

    return wait_until(finished, timeout_s=120, what=f"Job {manifest['metadata']['name']} to finish")


def test_the_trainer_job_runs_one_pod_on_each_h100_node_and_completes(
    kube: Kube, namespace: str, crds: None, claims: None
) -> None:
    finished = run_trainer_job(kube, namespace, attempt=0, pod_annotations={})
    assert finished.status.succeeded == 2
    pods = kube.core_v1.list_namespaced_pod(
        namespace, label_selector="trainwright.io/attempt=0"
    ).items
    assert sorted(p.spec.hostname for p in pods) == ["llama8b-lora-a0-0", "llama8b-lora-a0-1"]
    assert {p.spec.subdomain for p in pods} == {"llama8b-lora-workers"}
    nodes = {p.spec.node_name for p in pods}
    assert len(nodes) == 2  # 8 GPUs each: one pod fills one node
    for name in nodes:
        labels = kube.core_v1.read_node(name).metadata.labels
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_a_needs_replan_exit_fails_the_job_at_once_by_the_second_failure_rule(
    kube: Kube, namespace: str, crds: None, claims: None
) -> None:
    finished = run_trainer_job(
        kube,
        namespace,
        attempt=1,
        pod_annotations={
            "trainwright.io/fake-result": "fail",
            "trainwright.io/fake-exit-code": "76",
        },
    )
    failed = next(c for c in finished.status.conditions if c.type == "Failed")
    assert failed.reason == "PodFailurePolicy"
    assert "exit code 76" in failed.message
    assert "rule at index 1" in failed.message
