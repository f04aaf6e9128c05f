"""The real node: trainer pods that execute (kubelet, containerd, runc), not kwok fakes.

hack/k8s/node.sh starts the node with the cluster: `trainwright-real-0`, two
`trainwright.io/cpu-rank` (the catalog's CPU device, one per torchrun rank), tainted for
them, with CoreDNS and kube-proxy; the trainer image comes from the loopback registry
under its usual name. Model and data are a tiny Llama and the shipped corpus on a
hostPath PersistentVolume, as a user's claim would hold them. A Kueue preemption of a
run on the node stops its real trainer (SIGTERM, a checkpoint) and the run resumes from
that checkpoint once Kueue admits it again.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from e2e.cluster import Kube, wait_until
from e2e.kueue import KUEUE_GROUP, KUEUE_VERSION, create_queue, kueue_api
from e2e.operator_harness import (
    GROUP,
    VERSION,
    OperatorProcess,
    condition,
    create,
    operator,  # noqa: F401  (the module's operator fixture)
    status_of,
    wait_for_phase,
)
from trainer_fixtures import TRAINER_DATA_DIR, build_tiny_model, tiny_train_config
from trainwright import __version__

REAL_NODE = "trainwright-real-0"
RANK_RESOURCE = "trainwright.io/cpu-rank"
TRAINER_IMAGE = f"trainwright/trainer:{__version__}"
TRAINER_UID = 1000
# A cold pull of the 6 GB trainer image into containerd takes minutes; later runs reuse it.
POD_TIMEOUT_S = 900
CLAIM = "work"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
# Long enough that a pod is still training when the test kills it after step 20.
STEPS = 60


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    shutil.chown(root, uid, gid)
    for path in root.rglob("*"):
        shutil.chown(path, uid, gid)
        path.chmod(path.stat().st_mode | 0o060)


@pytest.fixture(scope="module")
def work_volume(kube: Kube) -> Iterator[Path]:
    """A host directory with the tiny model and the corpus, writable by the trainer's UID.

    Outside pytest's base temp dir: another pytest session on the machine may prune
    that while the pods still write here.
    """
    root = Path(tempfile.mkdtemp(prefix="trainwright-e2e-work-"))
    build_tiny_model(root / "model")
    (root / "data").mkdir()
    shutil.copy(TRAINER_DATA_DIR / "text.txt", root / "data" / "text.txt")
    _chown_tree(root, TRAINER_UID, 0)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def work_claim(kube: Kube, namespace: str, work_volume: Path) -> Iterator[str]:
    """Claim `work` in the test's namespace, bound to a hostPath volume of the work dir."""
    volume = f"{namespace}-work"
    host_path = work_volume
    kube.core_v1.create_persistent_volume(
        {
            "metadata": {"name": volume, "labels": {"trainwright.io/e2e": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_path), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        }
    )
    kube.core_v1.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": CLAIM},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    yield CLAIM
    kube.core_v1.delete_persistent_volume(volume)


def _pod(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    pod = kube.core_v1.read_namespaced_pod(name, namespace)
    return dict(kube.api_client.sanitize_for_serialization(pod))


def _wait_pod_phase(kube: Kube, namespace: str, name: str, phases: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(_pod(kube, namespace, name))
        return found["status"].get("phase") in phases

    wait_until(
        reached,
        timeout_s=POD_TIMEOUT_S,
        what=f"pod {namespace}/{name} to be {' or '.join(sorted(phases))}",
    )
    return found


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as response:
        return str(response.read().decode())


def test_the_real_node_is_ready_with_its_cpu_ranks_and_taint(kube: Kube) -> None:
    node = kube.core_v1.read_node(REAL_NODE)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.allocatable[RANK_RESOURCE] == "2"
    assert node.metadata.labels["trainwright.io/device.product"] == "Trainwright-CPU"
    assert [(t.key, t.effect) for t in node.spec.taints] == [(RANK_RESOURCE, "NoSchedule")]
    assert node.status.node_info.container_runtime_version.startswith("containerd://1.6")


def test_a_two_rank_torchrun_trains_in_a_pod_on_the_real_node(
    kube: Kube, namespace: str, work_volume: Path, work_claim: str
) -> None:
    """Config from a ConfigMap, model/data/checkpoints on a PVC, metrics over the pod network."""
    run = f"pod-{uuid.uuid4().hex[:6]}"
    mount = "/mnt/work"
    config = tiny_train_config(Path("/tmp"), max_steps=40, interval_steps=20, learning_rate=3e-3)
    config["model"] = {"path": f"{mount}/model", "dtype": "fp32"}
    config["data"] |= {"path": f"{mount}/data/text.txt", "cache_dir": f"{mount}/{run}/cache"}
    config["checkpoint"]["dir"] = f"{mount}/{run}/ckpt"
    config["output"] = {"dir": f"{mount}/{run}/out"}
    config["metrics"] = {"port": 9464, "log_interval_steps": 5}
    kube.core_v1.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "trainer"}, "data": {"config.yaml": yaml.safe_dump(config)}},
    )
    kube.core_v1.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "trainer"},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"trainwright.io/real-node": "true"},
                "tolerations": [
                    {"key": RANK_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
                ],
                "securityContext": {"runAsUser": TRAINER_UID, "runAsGroup": 0},
                "containers": [
                    {
                        "name": "trainer",
                        "image": TRAINER_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["torchrun", "--standalone", "--nproc-per-node=2"],
                        "args": [
                            "-m",
                            "trainwright_trainer",
                            "train",
                            "--config",
                            "/etc/trainwright/config.yaml",
                        ],
                        "resources": {
                            "requests": {RANK_RESOURCE: "2", "cpu": "1", "memory": "4Gi"},
                            "limits": {RANK_RESOURCE: "2", "memory": "8Gi"},
                        },
                        "ports": [{"name": "metrics", "containerPort": 9464}],
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/trainwright", "readOnly": True},
                            {"name": "work", "mountPath": mount},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "config", "configMap": {"name": "trainer"}},
                    {"name": "work", "persistentVolumeClaim": {"claimName": CLAIM}},
                ],
            },
        },
    )
    running = _wait_pod_phase(kube, namespace, "trainer", {"Running", "Succeeded", "Failed"})
    assert running["spec"]["nodeName"] == REAL_NODE
    pod_ip = running["status"]["podIP"]
    assert pod_ip.startswith("100.65.")

    scraped: list[str] = []

    def step_metric_served() -> bool:
        if _pod(kube, namespace, "trainer")["status"].get("phase") != "Running":
            raise AssertionError("the trainer finished before its metrics were scraped")
        try:
            text = _scrape(f"http://{pod_ip}:9464/metrics")
        except OSError:
            return False
        scraped.append(text)
        return "trainwright_step " in text and "trainwright_step 0.0" not in text

    wait_until(
        step_metric_served, timeout_s=POD_TIMEOUT_S, what="rank 0's /metrics over the pod network"
    )
    assert "trainwright_train_loss" in scraped[-1]

    done = _wait_pod_phase(kube, namespace, "trainer", {"Succeeded", "Failed"})
    logs = kube.core_v1.read_namespaced_pod_log("trainer", namespace)  # apiserver -> kubelet
    assert done["status"]["phase"] == "Succeeded", logs[-3000:]
    assert "ddp, 2 ranks" in logs, logs[-3000:]
    checkpoints = sorted(p.name for p in (work_volume / run / "ckpt").glob("step-*"))
    assert checkpoints[-1] == "step-000040", checkpoints


def _tiny_job(
    name: str,
    work_volume: Path,
    *,
    nodes: int,
    max_steps: int,
    max_restarts: int,
    queue: str | None = None,
    priority: str | None = None,
) -> dict[str, Any]:
    """A tiny full fine-tune on the real node's CPU ranks, one rank per pod (ranks meet
    through the headless Service); with ``queue``, in that Kueue LocalQueue at ``priority``."""
    spec: dict[str, Any] = {
        "model": {
            "configPath": str(work_volume / "model" / "config.json"),
            "uri": f"pvc://{CLAIM}/model",
        },
        "method": "full",
        "dataset": {"uri": f"pvc://{CLAIM}/data/text.txt", "format": "text", "tokens": 200000},
        "training": {
            "epochs": 1000,  # the corpus is a few steps long; maxSteps ends the run
            "maxSteps": max_steps,
            "seqLen": 64,
            "microBatchSize": 2,
            "learningRate": 3.0e-3,
            "precision": "fp32",
        },
        "resources": {"gpuType": "CPU", "nodes": nodes, "gpusPerNode": 1},
        "strategy": "ddp",
        "image": TRAINER_IMAGE,
        "checkpoint": {"pvc": CLAIM, "intervalSteps": 20},
        "maxRestarts": max_restarts,
    }
    if queue is not None:
        spec |= {"queue": queue, "priorityClass": priority}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_a_trainingjob_planned_on_the_cpu_device_trains_resumes_and_succeeds(
    kube: Kube,
    namespace: str,
    work_volume: Path,
    work_claim: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    """Two pods, one rank each, rendezvous through the headless Service; a killed pod
    restarts the gang from the checkpoint and the run still succeeds."""
    name = "tiny-cpu"
    create(
        kube,
        namespace,
        "trainingjobs",
        _tiny_job(name, work_volume, nodes=2, max_steps=STEPS, max_restarts=2),
    )
    running = wait_for_phase(kube, namespace, name, "Running", timeout_s=POD_TIMEOUT_S)
    assert running["plan"]["gpuType"] == "CPU"
    assert (running["plan"]["nodes"], running["plan"]["gpusPerNode"]) == (2, 1)
    assert running["attempt"] == 0

    checkpoint_dir = work_volume / name

    def first_checkpoint() -> bool:
        status = status_of(kube, namespace, "trainingjobs", name)
        if status.get("phase") not in ("Running", "Planned"):
            raise AssertionError(f"the run left Running before its first checkpoint: {status}")
        return (checkpoint_dir / "step-000020").is_dir()

    wait_until(first_checkpoint, timeout_s=POD_TIMEOUT_S, what="the first checkpoint (step 20)")
    pods = kube.core_v1.list_namespaced_pod(namespace, label_selector=f"trainwright.io/job={name}")
    assert sorted(p.spec.node_name for p in pods.items) == [REAL_NODE, REAL_NODE]
    victim = next(p.metadata.name for p in pods.items if p.metadata.labels[INDEX_LABEL] == "1")
    kube.core_v1.delete_namespaced_pod(victim, namespace)

    succeeded = wait_for_phase(kube, namespace, name, "Succeeded", timeout_s=POD_TIMEOUT_S)
    # Cost and carbon: the operator accounted the run on its progress reads (CPU ranks have
    # no NVML counter, so the energy is the TDP estimate), and rank 0 of each attempt wrote
    # TensorBoard events beside the checkpoints.
    usage = succeeded.get("usage")
    assert usage is not None, succeeded
    assert usage["energySource"] == "estimated" and usage["zone"] == "US-SRVC"
    assert usage["gpuHours"] > 0 and usage["kgCo2e"] > 0
    assert succeeded["plan"]["carbon"]["kgCo2e"] > 0
    assert len(list((checkpoint_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    # A pod deleted by someone else is an infrastructure restart: spec.maxRestarts is kept.
    assert (succeeded["restarts"], succeeded["infrastructureRestarts"]) == (0, 1)
    assert succeeded["attempt"] == 1
    assert condition(succeeded, "Succeeded")["status"] == "True"
    rank0 = kube.core_v1.list_namespaced_pod(
        namespace, label_selector=f"trainwright.io/job={name},{INDEX_LABEL}=0"
    ).items
    rank0_attempt1 = next(
        p.metadata.name for p in rank0 if p.metadata.name.startswith(f"{name}-a1-")
    )
    resumed = kube.core_v1.read_namespaced_pod_log(rank0_attempt1, namespace)
    assert "resumed from" in resumed, resumed[-3000:]
    # The killed pod's SIGTERM may have saved a checkpoint past step 20 first.
    found = re.search(r"resumed from \S+ at step (\d+)", resumed)
    assert found is not None, resumed[-3000:]
    step = int(found.group(1))
    assert 20 <= step < STEPS
    assert "ddp, 2 ranks" in resumed
    assert sorted(p.name for p in checkpoint_dir.glob("step-*"))[-1] == f"step-{STEPS:06d}"


def test_a_kueue_preemption_stops_a_real_run_which_resumes_from_its_checkpoint(
    kube: Kube,
    namespace: str,
    work_volume: Path,
    work_claim: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    """Kueue preempts a low-priority run holding both CPU ranks for a high-priority one:
    Kueue suspends the low run's Job, its pods get SIGTERM and the trainer checkpoints; the
    TrainingJob waits Queued (Preempted) with no restart used; once the high run is done,
    Kueue admits the low one again and its new pods resume from the checkpoint."""
    api = kueue_api(kube)
    cluster_queue = create_queue(
        api,
        namespace,
        flavour="trainwright-cpu",
        gpus=2,
        local_queue="cpu",
        device=RANK_RESOURCE,
        preempt_lower=True,
    )
    try:
        # Never finishes on its own: the test ends it once it trains again after resuming.
        # No restart allowed: a preemption must not use one up.
        low = _tiny_job(
            "low", work_volume, nodes=2, max_steps=100000, max_restarts=0, queue="cpu",
            priority="low",
        )  # fmt: skip
        create(kube, namespace, "trainingjobs", low)
        wait_for_phase(kube, namespace, "low", "Running", timeout_s=POD_TIMEOUT_S)
        checkpoints = work_volume / "low"
        wait_until(
            lambda: (checkpoints / "step-000020").is_dir(),
            timeout_s=POD_TIMEOUT_S,
            what="low's first checkpoint (step 20)",
        )
        created = time.monotonic()
        high = _tiny_job(
            "high", work_volume, nodes=1, max_steps=10, max_restarts=0, queue="cpu",
            priority="high",
        )  # fmt: skip
        create(kube, namespace, "trainingjobs", high)

        def preempted() -> dict[str, Any] | None:
            found = status_of(kube, namespace, "trainingjobs", "low")
            return found if found.get("phase") == "Queued" else None

        queued = wait_until(preempted, timeout_s=120, what="low to be preempted")
        print(f"\nreal node: high created -> low preempted in {time.monotonic() - created:.1f} s")
        assert condition(queued, "Admitted")["reason"] == "Preempted"
        assert (queued["restarts"], queued["attempt"]) == (0, 0)
        wait_for_phase(kube, namespace, "high", "Succeeded", timeout_s=POD_TIMEOUT_S)
        finished = time.monotonic()
        resumed = wait_for_phase(kube, namespace, "low", "Running", timeout_s=POD_TIMEOUT_S)
        print(f"real node: high done -> low Running again in {time.monotonic() - finished:.1f} s")
        # The same Job and attempt: Kueue unsuspended it, no restart was counted.
        assert (resumed["restarts"], resumed["attempt"]) == (0, 0)
        assert resumed["children"]["job"] == queued["children"]["job"]
        rank0 = f"trainwright.io/job=low,{INDEX_LABEL}=0"

        def resumed_step() -> int | None:
            for pod in kube.core_v1.list_namespaced_pod(namespace, label_selector=rank0).items:
                if pod.status.phase != "Running":
                    continue
                log = kube.core_v1.read_namespaced_pod_log(pod.metadata.name, namespace)
                found = re.search(r"resumed from \S+ at step (\d+)", log)
                if found is not None:
                    return int(found.group(1))
            return None

        step = wait_until(resumed_step, timeout_s=POD_TIMEOUT_S, what="low's new rank 0 to resume")
        # SIGTERM may have saved a checkpoint past step 20 before the pods went.
        print(f"real node: low's new rank 0 resumed from its checkpoint at step {step}")
        assert step >= 20
        assert (checkpoints / f"step-{step:06d}").is_dir()

        def saved_steps() -> list[int]:  # finished checkpoints (not step-N.tmp-*)
            found = (re.fullmatch(r"step-(\d+)", path.name) for path in checkpoints.iterdir())
            return [int(match.group(1)) for match in found if match is not None]

        wait_until(
            lambda: max(saved_steps()) > step,
            timeout_s=POD_TIMEOUT_S,
            what=f"low to train on past step {step} and checkpoint again",
        )
    finally:
        api.delete_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues", cluster_queue)


def test_a_pod_that_does_not_tolerate_the_real_node_never_lands_there(
    kube: Kube, namespace: str
) -> None:
    kube.core_v1.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "intruder"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": REAL_NODE},
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.1"}],
            },
        },
    )

    def unschedulable() -> bool:
        try:
            pod = _pod(kube, namespace, "intruder")
        except ApiException:
            return False
        conditions = {c["type"]: c for c in pod["status"].get("conditions") or []}
        scheduled = conditions.get("PodScheduled", {})
        return scheduled.get("reason") == "Unschedulable"

    wait_until(unschedulable, timeout_s=30, what="the scheduler to refuse the untolerating pod")
    time.sleep(1)
    assert _pod(kube, namespace, "intruder")["spec"].get("nodeName") is None


def test_a_lora_run_on_the_real_node_is_exported_to_files_a_server_loads(
    kube: Kube,
    namespace: str,
    work_volume: Path,
    work_claim: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    """The whole chain with real processes: the operator's trainer Job trains a LoRA
    adapter, the ModelExport's Job (the trainer image, CPU only) merges and converts it,
    and what status lists exists, matches its sha256 and computes the trained model."""
    import hashlib

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job, export = "tiny-lora", "tiny-lora-export"
    placement = {
        "tolerations": [{"key": RANK_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"trainwright.io/real-node": "true"},
    }
    create(
        kube,
        namespace,
        "trainingjobs",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TrainingJob",
            "metadata": {"name": job},
            "spec": {
                "model": {
                    "configPath": str(work_volume / "model" / "config.json"),
                    "uri": f"pvc://{CLAIM}/model",
                },
                "method": "lora",
                "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
                "dataset": {"uri": f"pvc://{CLAIM}/data/text.txt", "format": "text"},
                "training": {
                    "epochs": 1000,
                    "maxSteps": 20,
                    "seqLen": 64,
                    "microBatchSize": 2,
                    "learningRate": 1.0e-2,
                    "precision": "fp32",
                },
                "resources": {"gpuType": "CPU", "nodes": 1, "gpusPerNode": 2},
                "image": TRAINER_IMAGE,
                "checkpoint": {"pvc": CLAIM, "intervalSteps": 10},
                "output": {"uri": f"pvc://{CLAIM}/{job}/adapter"},
            },
        },
    )
    create(
        kube,
        namespace,
        "modelexports",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelExport",
            "metadata": {"name": export},
            "spec": {
                "source": {"trainingJob": job},
                "modelName": "tiny",
                "formats": ["safetensors", "gguf", "ollama"],
                "quantization": "f16",
                "output": {"uri": f"pvc://{CLAIM}/exports/tiny"},
                "image": TRAINER_IMAGE,
                **placement,
            },
        },
    )
    started = time.monotonic()
    wait_for_phase(kube, namespace, job, "Succeeded", timeout_s=POD_TIMEOUT_S)

    def exported() -> dict[str, Any] | None:
        status = status_of(kube, namespace, "modelexports", export)
        if status.get("phase") == "Failed":
            raise AssertionError(f"the export failed: {status}")
        return status if status.get("phase") == "Succeeded" else None

    status = wait_until(exported, timeout_s=POD_TIMEOUT_S, what=f"{export} to succeed")
    chain_seconds = time.monotonic() - started
    print(f"chain: trained and exported in {chain_seconds:.0f} s")
    assert status["version"] == "0.1.0"
    assert status["lineage"]["trainingJob"] == job

    root = work_volume / "exports" / "tiny"
    formats = {artifact["format"] for artifact in status["artifacts"]}
    assert formats == {"safetensors", "gguf", "ollama"}
    for artifact in status["artifacts"]:
        path = root / artifact["path"]
        assert path.is_file(), f"{artifact} is not on the volume"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact["sha256"]
        assert path.stat().st_size <= artifact["sizeBytes"]
    modelfile = next(root.rglob("Modelfile")).read_text()
    assert modelfile.startswith("FROM ./") or "\nFROM ./" in modelfile

    merged_dir = next(p.parent for p in root.rglob("config.json") if "adapter" not in str(p))
    prompt = torch.tensor([[1, 17, 42, 99, 7, 3]])
    base = AutoModelForCausalLM.from_pretrained(str(work_volume / "model"), dtype=torch.float32)
    trained = PeftModel.from_pretrained(base, str(work_volume / job / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = trained(prompt).logits
        got = merged(prompt).logits
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= 1e-3 * scale
