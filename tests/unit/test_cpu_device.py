"""The catalog's CPU device: how a TrainingJob is planned for and placed on the real node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.operator.inventory import build_inventory
from trainwright.operator.planning import plan_trainingjob
from trainwright.planner.lookup import device_node_keys, get_gpu
from trainwright.resources import trainer_job

GIB = 2**30

MANIFEST = """
apiVersion: trainwright.io/v1alpha1
kind: TrainingJob
metadata: {name: tiny-cpu, namespace: ml}
spec:
  model: {configPath: CONFIG, uri: pvc://work/model}
  method: full
  dataset: {uri: pvc://work/data/text.txt, format: text, tokens: 200000}
  training: {maxSteps: 60, seqLen: 64, microBatchSize: 2, precision: fp32}
  resources: {gpuType: CPU, nodes: 2, gpusPerNode: 1}
  strategy: ddp
  checkpoint: {pvc: work, intervalSteps: 10}
"""

REAL_NODE = {
    "metadata": {
        "name": "trainwright-real-0",
        "labels": {
            "trainwright.io/real-node": "true",
            "trainwright.io/device.product": "Trainwright-CPU",
        },
    },
    "status": {
        "allocatable": {"trainwright.io/cpu-rank": "2", "cpu": "2", "memory": "24Gi"},
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


# The tests' tiny Llama (tests/trainer_fixtures.py), as its config.json describes it.
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


@pytest.fixture(autouse=True)
def _tiny_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(TINY_LLAMA))
    monkeypatch.setattr(f"{__name__}.MANIFEST", MANIFEST.replace("CONFIG", str(path)))


def _job() -> TrainingJob:
    return TrainingJob.from_body(yaml.safe_load(MANIFEST))


def test_the_cpu_device_is_found_by_its_own_label_and_resource_not_nvidias() -> None:
    cpu = get_gpu("CPU")
    assert (cpu.product_label_key, cpu.resource_name) == (
        "trainwright.io/device.product",
        "trainwright.io/cpu-rank",
    )
    assert ("nvidia.com/gpu.product", "nvidia.com/gpu") in device_node_keys()
    assert (cpu.product_label_key, cpu.resource_name) in device_node_keys()
    # fp32 runs at the FMA rate on a CPU: no TF32 halving of a tensor-core rate.
    assert cpu.peak_flops_per_second("fp32") == cpu.fp32_flops_per_second


def test_two_one_rank_pods_are_planned_on_the_real_node_with_cpu_throughput() -> None:
    outcome = plan_trainingjob(_job(), build_inventory([REAL_NODE], []))
    assert outcome.reason == "Planned", outcome.message
    plan = outcome.plan
    assert plan is not None
    assert (plan.gpu_type, plan.gpu_product, plan.nodes, plan.gpus_per_node) == (
        "CPU",
        "Trainwright-CPU",
        2,
        1,
    )
    # Honest: a CPU rank trains orders of magnitude slower than any GPU, and costs nothing
    # the planner can price.
    assert plan.tokens_per_second < 5_000
    assert plan.estimated_cost_usd is None


def test_the_trainer_pods_request_a_rank_and_its_memory_and_tolerate_the_node() -> None:
    plan = plan_trainingjob(_job(), build_inventory([REAL_NODE], [])).plan
    assert plan is not None
    pod = trainer_job(_job(), plan, attempt=1)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"trainwright.io/device.product": "Trainwright-CPU"}
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"trainwright.io/cpu-rank": "1", "memory": str(4 * GIB)},
        "limits": {"trainwright.io/cpu-rank": "1", "memory": str(4 * GIB)},
    }
    assert {
        "key": "trainwright.io/cpu-rank",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in pod["tolerations"]
    assert "nvidia.com/gpu" not in str(container["resources"])


def test_a_gpu_plan_still_asks_for_nvidia_gpus_only() -> None:
    body = yaml.safe_load(MANIFEST)
    body["spec"]["resources"] = {"gpuType": "H100-SXM", "gpus": 8}
    body["spec"]["model"] = {"name": "llama-3.1-8b"}
    body["spec"]["training"] = {"epochs": 1, "seqLen": 2048}
    job = TrainingJob.from_body(body)
    gpu_node = {
        "metadata": {
            "name": "h100-0",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        },
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    }
    plan = plan_trainingjob(job, build_inventory([gpu_node], [])).plan
    assert plan is not None
    pod = trainer_job(job, plan, attempt=1)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"nvidia.com/gpu": "8"},
        "limits": {"nvidia.com/gpu": "8"},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
