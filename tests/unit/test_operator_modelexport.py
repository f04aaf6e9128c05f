"""The ModelExport reconcile against kmock's in-memory Kubernetes API.

As for the TrainingJob controller: no kopf loop and no cluster; each test calls
:func:`reconcile` the way a handler does, then changes the world as the job
controller and the kubelet would (a Job's status, a finished pod with its
termination message) and reconciles again.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kubernetes import client

from trainwright.operator.context import OperatorContext
from trainwright.operator.kube import Kube
from trainwright.operator.metrics import OperatorMetrics
from trainwright.operator.modelexport import (
    export_owner,
    reconcile,
    trainingjob_changed,
)
from trainwright.planner.lookup import get_model
from trainwright_trainer.export.config import load_export_config

NS = "team-a"
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
RESOURCES = {
    "v1/pods": ("Pod", True),
    "v1/configmaps": ("ConfigMap", True),
    "batch/v1/jobs": ("Job", True),
    "trainwright.io/v1alpha1/trainingjobs": ("TrainingJob", True),
    "trainwright.io/v1alpha1/modelexports": ("ModelExport", True),
}
TJ = "trainwright.io/v1alpha1/trainingjobs"
MX = "trainwright.io/v1alpha1/modelexports"
GIB = 1024**3
SHA = "ab" * 32
pytestmark = pytest.mark.asyncio


class CountingKube(Kube):
    status_writes = 0

    def patch_status(self, plural: str, namespace: str, name: str, status: Any) -> Any:
        self.status_writes += 1
        return super().patch_status(plural, namespace, name, status)


class World:
    def __init__(self, server: kmock.KubernetesEmulator) -> None:
        self.server = server
        configuration = client.Configuration()
        configuration.host = str(server.url).rstrip("/")
        self.kube = CountingKube(configuration)
        self.events: list[tuple[str, str, str]] = []
        self.context = OperatorContext(
            kube=self.kube,
            metrics=OperatorMetrics(),
            now=lambda: NOW,
            post_event=lambda _body, type_, reason, message: self.events.append(
                (type_, reason, message)
            ),
        )

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def reconcile(self, name: str) -> dict[str, Any]:
        await asyncio.to_thread(reconcile, self.context, NS, name)
        return await self.status(name)

    async def status(self, name: str) -> dict[str, Any]:
        body = await self.call(self.kube.get_custom, "modelexports", NS, name)
        return dict(body.get("status") or {})

    async def child(self, kind: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.call(self.kube.get_child, kind, NS, name)
        return found

    async def need(self, kind: str, name: str) -> dict[str, Any]:
        found = await self.child(kind, name)
        if found is None:
            raise AssertionError(f"{kind} {name} does not exist")
        return found

    async def finish_job(self, name: str, *, exit_code: int, message: str) -> None:
        job = await self.need("Job", name)
        condition = "Complete" if exit_code == 0 else "Failed"
        self.server.objects["batch/v1/jobs", NS, name] = {
            **job,
            "status": {"conditions": [{"type": condition, "status": "True"}]},
        }
        self.server.objects["v1/pods", NS, f"{name}-x"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-x",
                "namespace": NS,
                "labels": {"batch.kubernetes.io/job-name": name, "job-name": name},
            },
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": "exporter",
                        "state": {"terminated": {"exitCode": exit_code, "message": message}},
                    }
                ],
            },
        }


def _trainingjob(name: str, phase: str | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://datasets/alpaca.jsonl", "tokens": 2_000_000},
        "output": {"uri": "pvc://checkpoints/out/ft"},
    }
    body.update(spec)
    manifest: dict[str, Any] = {
        "apiVersion": "trainwright.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-tj-{name}", "generation": 1},
        "spec": body,
    }
    if phase is not None:
        manifest["status"] = {
            "phase": phase,
            "attempt": 1,
            "plan": {"gpuType": "H100-SXM", "numGpus": 8, "strategy": "fsdp"},
            "progress": {"lastCheckpointStep": 300},
        }
    return manifest


def _export(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"trainingJob": "ft"},
        "formats": ["safetensors", "gguf"],
        "quantization": "q8_0",
        "output": {"uri": "pvc://exports/ft"},
    }
    body.update(spec)
    return {
        "apiVersion": "trainwright.io/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-mx-{name}", "generation": 1},
        "spec": body,
    }


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _summary(**extra: Any) -> str:
    summary = {
        "output": "/mnt/export/exports/ft",
        "artifacts": [
            {
                "format": "safetensors",
                "path": "safetensors/model-00001-of-00004.safetensors",
                "size_bytes": 16_000_000_000,
                "sha256": SHA,
            },
            {
                "format": "gguf",
                "path": "gguf/model-q8_0.gguf",
                "size_bytes": 8_500_000_000,
                "sha256": "cd" * 32,
            },
        ],
        "checkpointStep": 320,
        "verified": True,
    }
    return json.dumps(summary | extra)


@pytest.fixture
def world(kmock: kmock.KubernetesEmulator) -> World:
    for key, (kind, namespaced) in RESOURCES.items():
        kmock.resources[key] = {"kind": kind, "namespaced": namespaced}
    return World(kmock)


async def test_an_export_waits_for_its_running_trainingjob_with_source_ready_false(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Running")
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    status = await world.reconcile("ft-x")
    assert status["phase"] == "Pending"
    ready = _condition(status, "SourceReady")
    assert (ready["status"], ready["reason"]) == ("False", "TrainingJobNotFinished")
    assert ready["message"] == "Waiting for TrainingJob ft to succeed (it is Running)."
    assert await world.child("Job", "ft-x-export") is None


@pytest.mark.parametrize(
    ("phase", "reason", "message"),
    [
        (None, "TrainingJobNotFound", "TrainingJob ft does not exist in namespace team-a"),
        ("Failed", "TrainingJobFailed", "TrainingJob ft failed; there is no model to export"),
    ],
)
async def test_an_export_of_a_missing_or_failed_trainingjob_fails_naming_the_field(
    world: World, phase: str | None, reason: str, message: str
) -> None:
    if phase is not None:
        world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", phase)
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    status = await world.reconcile("ft-x")
    assert status["phase"] == "Failed"
    failed = _condition(status, "Failed")
    assert failed["reason"] == reason
    assert failed["message"].startswith("spec.source.trainingJob: ")
    assert message in failed["message"]
    assert _condition(status, "SourceReady")["status"] == "False"
    assert ("Warning", reason) in [(t, r) for t, r, _ in world.events]


async def test_a_trainingjob_whose_output_was_in_an_emptydir_cannot_be_exported(
    world: World,
) -> None:
    tj = _trainingjob("ft", "Succeeded")
    del tj["spec"]["output"]
    world.server.objects[TJ, NS, "ft"] = tj
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    status = await world.reconcile("ft-x")
    assert (status["phase"], _condition(status, "Failed")["reason"]) == (
        "Failed",
        "SourceNotPersisted",
    )


async def test_a_succeeded_trainingjob_gets_one_adopted_cpu_only_export_job(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Succeeded")
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    status = await world.reconcile("ft-x")
    assert status["phase"] == "Running"
    assert (status["modelName"], status["version"], status["job"]) == ("ft", "0.1.0", "ft-x-export")
    assert status["lineage"] == {
        "trainingJob": "ft",
        "attempt": 1,
        "gpuType": "H100-SXM",
        "numGpus": 8,
        "strategy": "fsdp",
        "checkpointStep": 300,
        "datasetUri": "pvc://datasets/alpaca.jsonl",
        "baseModel": "meta-llama/Llama-3.1-8B",
        "sourceUri": "pvc://checkpoints/out/ft",
    }
    job = await world.need("Job", "ft-x-export")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelExport", "ft-x", True)
    assert export_owner(job) == "ft-x"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "trainwright_trainer", "export"]
    assert container["args"] == ["--config", "/etc/trainwright-export/export.yaml"]
    params = get_model("llama-3.1-8b").total_params
    memory = str(4 * params + 3 * GIB)  # fp32 verification + one shard + overhead
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": memory},
        "limits": {"memory": memory},
    }
    mounts = {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]}
    assert mounts["/mnt/pvc/checkpoints"] is True  # the training output: read-only
    assert mounts["/mnt/export/exports"] is False  # the destination: read-write
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "nodeSelector" not in pod and "tolerations" not in pod
    config_map = await world.need("ConfigMap", "ft-x-export")
    assert config_map["metadata"]["ownerReferences"][0]["name"] == "ft-x"
    config = yaml.safe_load(config_map["data"]["export.yaml"])
    assert config["source"] == "/mnt/pvc/checkpoints/out/ft"
    assert config["output"] == "/mnt/export/exports/ft"
    assert config["formats"] == ["safetensors", "gguf"] and config["quantization"] == "q8_0"
    assert config["lineage"]["trainingJob"] == "ft" and config["lineage"]["version"] == "0.1.0"


async def test_reconciling_a_running_export_again_writes_and_creates_nothing(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Succeeded")
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    await world.reconcile("ft-x")
    await world.reconcile("ft-x")
    writes, job = world.kube.status_writes, await world.need("Job", "ft-x-export")
    await world.reconcile("ft-x")
    assert world.kube.status_writes == writes
    assert (await world.need("Job", "ft-x-export"))["metadata"] == job["metadata"]


async def test_a_completed_job_fills_artifacts_size_and_lineage_from_its_termination_message(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Succeeded")
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    await world.reconcile("ft-x")
    await world.finish_job("ft-x-export", exit_code=0, message=_summary())
    status = await world.reconcile("ft-x")
    assert status["phase"] == "Succeeded"
    assert status["artifacts"] == [
        {
            "format": "safetensors",
            "uri": "pvc://exports/ft/safetensors",
            "sizeBytes": 16_000_000_000,
            "sha256": SHA,
            "path": "safetensors/model-00001-of-00004.safetensors",
        },
        {
            "format": "gguf",
            "uri": "pvc://exports/ft/gguf",
            "sizeBytes": 8_500_000_000,
            "sha256": "cd" * 32,
            "path": "gguf/model-q8_0.gguf",
        },
    ]
    assert status["sizeBytes"] == 24_500_000_000
    assert status["verified"] is True
    assert status["lineage"]["checkpointStep"] == 320  # what the exporter found wins
    assert _condition(status, "Succeeded")["status"] == "True"
    assert status["message"] == "Exported ft 0.1.0: safetensors, gguf (24500000000 bytes)."


async def test_bad_input_fails_the_export_with_the_exporters_own_sentence(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Succeeded")
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    await world.reconcile("ft-x")
    sentence = (
        "trainwright-trainer: error (rank 0): --base: the adapter /mnt/pvc/checkpoints/out/ft "
        "does not fit /mnt/pvc/models/other"
    )
    await world.finish_job("ft-x-export", exit_code=64, message=f"loading\n{sentence}\n")
    status = await world.reconcile("ft-x")
    assert status["phase"] == "Failed"
    failed = _condition(status, "Failed")
    assert (failed["reason"], failed["message"]) == ("InvalidInput", sentence)


async def test_files_written_but_not_verified_fail_the_export_as_verification_failed(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Succeeded")
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    await world.reconcile("ft-x")
    await world.finish_job("ft-x-export", exit_code=65, message=_summary(verified=False))
    status = await world.reconcile("ft-x")
    assert (status["phase"], _condition(status, "Failed")["reason"]) == (
        "Failed",
        "VerificationFailed",
    )
    assert "artifacts" not in status


async def test_the_rendered_export_config_is_one_the_exporter_accepts(
    world: World, tmp_path: Path
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Succeeded")
    world.server.objects[MX, NS, "ft-x"] = _export(
        "ft-x",
        formats=["adapter", "ollama"],
        ollama={"modelName": "ft:latest", "systemPrompt": "Be brief."},
        additionalSources=[{"uri": "pvc://adapters/other", "weight": 0.25}],
        source={"trainingJob": "ft", "weight": 0.75},
        combination="ties",
    )
    await world.reconcile("ft-x")
    config_map = await world.need("ConfigMap", "ft-x-export")
    path = tmp_path / "export.yaml"
    path.write_text(config_map["data"]["export.yaml"])
    config = load_export_config(path)  # what `export --config` reads in the pod
    assert [(s.path, s.weight) for s in config.sources] == [
        ("/mnt/pvc/checkpoints/out/ft", 0.75),
        ("/mnt/pvc/adapters/other", 0.25),
    ]
    assert (config.combination, config.formats) == ("ties", ("adapter", "ollama"))
    assert config.ollama.system_prompt == "Be brief."
    assert config.lineage.training_job == "ft" and config.lineage.checkpoint_step == 300
    job = await world.need("Job", "ft-x-export")
    mounts = {
        m["mountPath"]: m["readOnly"]
        for m in job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts["/mnt/pvc/adapters"] is True


async def test_exports_of_one_model_name_get_increasing_versions_and_a_taken_one_is_refused(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Succeeded")
    versions = []
    for name, spec in (
        ("a", {}),
        ("b", {}),
        ("c", {"version": "0.2.0"}),
        ("d", {"version": "1.0.0"}),
        ("e", {}),
    ):
        world.server.objects[MX, NS, name] = _export(
            name, modelName="support", output={"uri": f"pvc://exports/{name}"}, **spec
        )
        status = await world.reconcile(name)
        versions.append(status.get("version"))
        if name == "c":
            failed = _condition(status, "Failed")
            assert failed["reason"] == "DuplicateVersion"
            assert failed["message"].startswith("spec.version: 0.2.0 is already exported")
    assert versions == ["0.1.0", "0.2.0", None, "1.0.0", "1.1.0"]


async def test_a_trainingjob_with_spec_export_gets_its_modelexport_when_it_succeeds(
    world: World,
) -> None:
    tj = _trainingjob(
        "ft",
        "Succeeded",
        export={
            "modelName": "support",
            "formats": ["safetensors", "ollama"],
            "quantization": "q8_0",
            "systemPrompt": "Be brief.",
            "output": {"uri": "pvc://exports/support"},
        },
    )
    world.server.objects[TJ, NS, "ft"] = tj
    await world.call(trainingjob_changed, world.context, NS, "ft", tj)
    body = await world.call(world.kube.get_custom, "modelexports", NS, "ft-export")
    assert body["spec"] == {
        "source": {"trainingJob": "ft"},
        "formats": ["safetensors", "ollama"],
        "output": {"uri": "pvc://exports/support"},
        "modelName": "support",
        "quantization": "q8_0",
        "ollama": {"modelName": "support:latest", "systemPrompt": "Be brief."},
    }
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("TrainingJob", "ft")
    status = await world.reconcile("ft-export")
    assert (status["phase"], status["version"]) == ("Running", "0.1.0")


async def test_a_trainingjob_that_succeeds_wakes_the_exports_waiting_for_it(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", "Running")
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x")
    assert (await world.reconcile("ft-x"))["phase"] == "Pending"
    done = _trainingjob("ft", "Succeeded")
    world.server.objects[TJ, NS, "ft"] = done
    await world.call(trainingjob_changed, world.context, NS, "ft", done)
    assert (await world.status("ft-x"))["phase"] == "Running"
    assert await world.child("Job", "ft-x-export") is not None


async def test_the_export_job_run_for_real_reports_files_whose_hashes_match_in_status(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller's config, executed by the real exporter on the tiny model (the
    pod's mounts mapped to directories here), and its termination message read back."""
    import hashlib
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer_fixtures import tiny_model_dir
    from trainwright_trainer.__main__ import main

    pvc = tmp_path / "pvc"
    shutil.copytree(tiny_model_dir(), pvc / "models" / "tiny")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir())),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    model.save_pretrained(str(pvc / "checkpoints" / "out" / "ft"))
    world.server.objects[TJ, NS, "ft"] = _trainingjob(
        "ft", "Succeeded", model={"name": "llama-3.1-8b", "uri": "pvc://models/tiny"}
    )
    world.server.objects[MX, NS, "ft-x"] = _export("ft-x", formats=["safetensors", "gguf"])
    await world.reconcile("ft-x")
    text = (await world.need("ConfigMap", "ft-x-export"))["data"]["export.yaml"]
    config = tmp_path / "export.yaml"
    config.write_text(
        text.replace("/mnt/pvc/", f"{pvc}/").replace("/mnt/export/", f"{tmp_path}/export/")
    )
    message = tmp_path / "termination-log"
    monkeypatch.setenv("TRAINWRIGHT_TERMINATION_LOG", str(message))
    assert await asyncio.to_thread(main, ["export", "--config", str(config)]) == 0
    await world.finish_job("ft-x-export", exit_code=0, message=message.read_text())
    status = await world.reconcile("ft-x")
    assert (status["phase"], status["verified"]) == ("Succeeded", True)
    out = tmp_path / "export" / "exports" / "ft"
    for artifact in status["artifacts"]:
        assert artifact["uri"] == f"pvc://exports/ft/{artifact['format']}"
        data = (out / artifact["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        files = [p for p in (out / artifact["format"]).rglob("*") if p.is_file()]
        assert artifact["sizeBytes"] == sum(p.stat().st_size for p in files)
    assert status["sizeBytes"] == sum(a["sizeBytes"] for a in status["artifacts"])
    card = (out / "safetensors" / "README.md").read_text()
    assert "| TrainingJob | ft |" in card and "| Checkpoint step | 300 |" in card
    assert "| Dataset | pvc://datasets/alpaca.jsonl |" in card
