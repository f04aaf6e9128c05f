"""The trainer's children: an indexed Job per attempt, a headless Service and the config it mounts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.resources import (
    FAIL_RULE_NEEDS_REPLAN,
    FAIL_RULE_PERMANENT,
    headless_service,
    trainer_config,
    trainer_configmap,
    trainer_job,
    trainer_job_name,
)
from trainwright.resources.names import dns_label
from trainwright.resources.trainer import render_trainer_config
from trainwright_trainer.config import parse_config

MANIFEST = """
apiVersion: trainwright.io/v1alpha1
kind: TrainingJob
metadata: {name: llama8b-lora, namespace: ml}
spec:
  model: {name: llama-3.1-8b}
  method: lora
  lora: {rank: 32, targetModules: [q_proj, v_proj]}
  dataset: {uri: pvc://datasets/alpaca.jsonl, format: alpaca, tokens: 20000000}
  training: {epochs: 2, seqLen: 4096, learningRate: 1.0e-4}
  resources: {gpuType: H100-SXM, gpus: 16}
  checkpoint: {pvc: checkpoints, intervalSteps: 200}
  tolerations: [{key: kwok.x-k8s.io/node, operator: Equal, value: fake, effect: NoSchedule}]
  podAnnotations: {trainwright.io/fake-result: succeed}
"""


def make_job(**spec_changes: Any) -> TrainingJob:
    body = yaml.safe_load(MANIFEST)
    body["spec"].update(spec_changes)
    return TrainingJob.from_body(body)


def make_plan(nodes: int = 2, gpus_per_node: int = 8) -> PlanStatus:
    return PlanStatus(
        gpu_type="H100-SXM",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        num_gpus=nodes * gpus_per_node,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        strategy="fsdp",
        micro_batch_size=4,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        memory_per_gpu_bytes=61_000_000_000,
        tokens_per_second=180_000.0,
    )


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifest)["env"]}


def test_the_job_runs_one_pod_per_node_and_never_retries_a_pod_itself() -> None:
    job = trainer_job(make_job(), make_plan(nodes=2), attempt=0)
    spec = job["spec"]
    assert job["metadata"]["name"] == "llama8b-lora-a0"
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # Created suspended: the gang gate (or Kueue) releases all of it at once.
    assert spec["suspend"] is True
    assert not any(key.startswith("kueue.x-k8s.io/") for key in job["metadata"]["labels"])


def test_permanent_and_replan_exit_codes_fail_the_job_at_known_rule_indexes() -> None:
    rules = trainer_job(make_job(), make_plan(), attempt=0)["spec"]["podFailurePolicy"]["rules"]
    assert rules[FAIL_RULE_PERMANENT]["action"] == "FailJob"
    assert rules[FAIL_RULE_PERMANENT]["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "In",
        "values": [64, 65, 79],
    }
    assert rules[FAIL_RULE_NEEDS_REPLAN]["onExitCodes"]["values"] == [76]


def test_pods_request_the_planned_gpus_on_nodes_of_the_planned_product() -> None:
    manifest = trainer_job(make_job(), make_plan(nodes=2, gpus_per_node=8), attempt=0)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert container(manifest)["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    keys = [t.get("key") for t in pod["tolerations"]]
    assert keys == ["nvidia.com/gpu", "kwok.x-k8s.io/node"]
    assert pod["subdomain"] == "llama8b-lora-workers"


def test_torchrun_gets_the_layout_and_rendezvous_at_pod_zero_of_the_service() -> None:
    manifest = trainer_job(make_job(), make_plan(nodes=2, gpus_per_node=8), attempt=3)
    assert container(manifest)["command"] == [
        "/bin/sh",
        "-c",
        "exec /bin/sh /etc/trainwright/launch.sh torchrun --nnodes=2 --nproc-per-node=8 "
        "--node-rank=${NODE_RANK} --rdzv-backend=static "
        "--master-addr=llama8b-lora-a3-0.llama8b-lora-workers --master-port=29500 "
        "--max-restarts=0 -m trainwright_trainer train --config /etc/trainwright/config.yaml",
    ]
    env = env_of(manifest)
    assert env["MASTER_ADDR"] == "llama8b-lora-a3-0.llama8b-lora-workers"
    assert env["NODE_RANK"] == {
        "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        }
    }


def test_a_single_node_job_rendezvouses_on_loopback() -> None:
    manifest = trainer_job(make_job(), make_plan(nodes=1, gpus_per_node=4), attempt=0)
    assert env_of(manifest)["MASTER_ADDR"] == "127.0.0.1"
    assert "--nnodes=1 --nproc-per-node=4" in container(manifest)["command"][2]
    assert "--master-addr=127.0.0.1" in container(manifest)["command"][2]


def test_the_pod_mounts_config_shared_memory_and_each_claim_once() -> None:
    manifest = trainer_job(make_job(), make_plan(), attempt=0)
    mounts = {m["mountPath"]: m for m in container(manifest)["volumeMounts"]}
    assert mounts["/etc/trainwright"]["readOnly"] is True
    assert "/dev/shm" in mounts
    assert mounts["/mnt/pvc/datasets"]["readOnly"] is True
    assert mounts["/mnt/pvc/checkpoints"]["readOnly"] is False
    volumes = {v["name"]: v for v in manifest["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "llama8b-lora-trainer"
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["pvc-checkpoints"]["persistentVolumeClaim"]["claimName"] == "checkpoints"


def test_labels_name_the_job_and_attempt_and_user_pod_annotations_pass_through() -> None:
    manifest = trainer_job(make_job(), make_plan(), attempt=2)
    template = manifest["spec"]["template"]["metadata"]
    assert template["labels"]["trainwright.io/job"] == "llama8b-lora"
    assert template["labels"]["trainwright.io/attempt"] == "2"
    assert template["labels"]["app.kubernetes.io/managed-by"] == "trainwright"
    assert template["annotations"]["trainwright.io/fake-result"] == "succeed"
    assert len(template["annotations"]["trainwright.io/config-sha256"]) == 64


def test_the_pods_config_hash_changes_with_the_config_and_not_with_who_rendered_it() -> None:
    def config_hash(manifest: dict[str, Any]) -> str:
        return str(manifest["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH])

    job, plan = make_job(), make_plan()
    rendered_here = config_hash(trainer_job(job, plan, attempt=0))
    passed_in = trainer_job(job, plan, attempt=0, config_map=trainer_configmap(job, plan))
    assert config_hash(passed_in) == rendered_here
    smaller_batches = plan.model_copy(update={"micro_batch_size": 2})
    assert config_hash(trainer_job(job, smaller_batches, attempt=0)) != rendered_here


CONFIG_HASH = "trainwright.io/config-sha256"


def test_the_config_map_renders_a_trainer_config_the_trainer_accepts() -> None:
    configmap = trainer_configmap(make_job(), make_plan())
    assert configmap["metadata"]["name"] == "llama8b-lora-trainer"
    assert configmap["data"]["launch.sh"].startswith("#!/bin/sh")
    config = parse_config(yaml.safe_load(configmap["data"]["config.yaml"]))
    assert config.model.path == "meta-llama/Llama-3.1-8B"
    assert config.method == "lora"
    assert config.lora is not None and config.lora.rank == 32
    assert config.lora.target_modules == ("q_proj", "v_proj")
    assert config.data.path == "/mnt/pvc/datasets/alpaca.jsonl"
    assert config.data.seq_len == 4096
    assert config.training.epochs == 2
    assert config.training.micro_batch_size == 4
    assert config.training.gradient_accumulation_steps == 2
    assert config.training.gradient_checkpointing is True
    assert config.distributed.strategy == "fsdp"
    assert config.checkpoint.dir == "/mnt/pvc/checkpoints/llama8b-lora"
    assert config.checkpoint.interval_steps == 200
    assert config.output.dir == "/mnt/pvc/checkpoints/llama8b-lora/output"
    assert config.metrics.port == 9464


def test_without_a_checkpoint_volume_checkpoints_go_to_pod_local_storage() -> None:
    job = make_job(checkpoint=None, method="full", lora=None)
    config = trainer_config(job, make_plan())
    assert config.checkpoint.dir == "/checkpoints"
    assert config.lora is None
    volumes = trainer_job(job, make_plan(), attempt=0)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "checkpoints", "emptyDir": {}} in volumes


def test_the_headless_service_publishes_pods_before_they_are_ready() -> None:
    service = headless_service(make_job())
    assert service["metadata"]["name"] == "llama8b-lora-workers"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {
        "trainwright.io/job": "llama8b-lora",
        "app.kubernetes.io/component": "trainer",
    }
    pod_labels = trainer_job(make_job(), make_plan(), attempt=0)["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("name", ["x" * 253, "a" * 60, "My.Team.Job", "1st-run"])
def test_child_names_are_dns_labels_even_for_long_or_odd_job_names(name: str) -> None:
    job_name = trainer_job_name(name, attempt=12, nodes=64)
    assert len(job_name) + len("-63") <= 63
    assert job_name.endswith("-a12")
    for child in (job_name, dns_label(name, suffix="-workers")):
        assert child[0].isalpha() and child.replace("-", "").isalnum() and child.islower()
        assert len(child) <= 63


def test_two_long_names_with_the_same_prefix_get_different_children() -> None:
    first, second = "p" * 70 + "-one", "p" * 70 + "-two"
    assert trainer_job_name(first, 0, nodes=2) != trainer_job_name(second, 0, nodes=2)


def test_the_fast_config_rendering_is_the_trainers_own_yaml() -> None:
    config = trainer_config(make_job(), make_plan())
    assert render_trainer_config(config) == config.to_yaml()


def test_the_held_out_file_and_evaluation_settings_reach_the_trainer_config() -> None:
    job = make_job(
        dataset={"uri": "pvc://datasets/train.jsonl", "evalUri": "pvc://evalsets/eval.jsonl"},
        evaluation={"earlyStoppingPatience": 3, "samplePrompts": ["Say hi."]},
    )
    config = parse_config(yaml.safe_load(render_trainer_config(trainer_config(job, make_plan()))))
    volumes = trainer_job(job, make_plan(), 0)["spec"]["template"]["spec"]["volumes"]

    assert config.data.eval_path == "/mnt/pvc/evalsets/eval.jsonl"
    assert config.evaluation.early_stopping_patience == 3
    assert config.evaluation.sample_prompts == ("Say hi.",)
    assert {"claimName": "evalsets", "readOnly": True} in [
        v.get("persistentVolumeClaim") for v in volumes
    ]
    held_out = trainer_config(
        make_job(dataset={"uri": "/d.jsonl", "evalFraction": 0.1}), make_plan()
    )
    assert held_out.data.eval_fraction == 0.1 and held_out.data.eval_path is None
