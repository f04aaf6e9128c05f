"""The trainer pods pass Pod Security `restricted` by default; a TrainingJob may loosen them.

The restricted checks (kubernetes.io/docs/concepts/security/pod-security-standards):
runAsNonRoot true and no UID 0, allowPrivilegeEscalation false, capabilities drop ALL
(add at most NET_BIND_SERVICE), seccomp RuntimeDefault or Localhost, no privileged,
no hostPath, host namespaces or host ports. `restricted_violations` applies them to
the pod template the way the admission plugin does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_resources_trainer import make_job, make_plan

from trainwright.api.v1alpha1 import InvalidResourceError, ModelExport
from trainwright.api.v1alpha1.trainingjob import DEFAULT_TRAINER_IMAGE
from trainwright.resources import trainer_job
from trainwright.resources.export import ExportInputs, export_job
from trainwright.resources.security import TRAINER_GID, TRAINER_UID

DOCKERFILE = Path(__file__).resolve().parents[2] / "trainer-image" / "Dockerfile"
_ALLOWED_VOLUMES = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What Pod Security Admission's `restricted` level would reject in this pod spec."""
    found: list[str] = []
    pod_ctx = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    for c in pod["containers"]:
        ctx = c.get("securityContext", {})
        name = c["name"]
        if ctx.get("privileged"):
            found.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation != false")
        if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(ctx.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot != true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        profile = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        if profile.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccomp profile unset or Unconfined")
        if any("hostPort" in port for port in c.get("ports", [])):
            found.append(f"{name}: hostPort")
    return found


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return pod


def test_the_default_trainer_pod_passes_restricted_as_the_images_user() -> None:
    pod = pod_of(trainer_job(make_job(), make_plan(), 0))
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == TRAINER_UID == 1000
    assert pod["securityContext"]["runAsGroup"] == TRAINER_GID == 0
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert pod["containers"][0]["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_trainer_dockerfile_user_is_the_pods_uid_and_gid() -> None:
    assert f"USER {TRAINER_UID}:{TRAINER_GID}" in DOCKERFILE.read_text().splitlines()


def test_a_job_may_add_a_capability_and_keeps_the_other_defaults() -> None:
    job = make_job(securityContext={"capabilities": {"add": ["IPC_LOCK"], "drop": ["ALL"]}})
    pod = pod_of(trainer_job(job, make_plan(), 0))
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["capabilities"] == {"add": ["IPC_LOCK"], "drop": ["ALL"]}
    assert ctx["allowPrivilegeEscalation"] is False
    assert restricted_violations(pod) == ["trainer: capabilities added"]


def test_a_job_may_run_as_another_user_and_group() -> None:
    job = make_job(podSecurityContext={"runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 3000})
    pod = pod_of(trainer_job(job, make_plan(), 0))
    assert pod["securityContext"]["runAsUser"] == 2000
    assert pod["securityContext"]["fsGroup"] == 3000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert restricted_violations(pod) == []


def test_root_or_privileged_lifts_the_guards_that_would_contradict_it() -> None:
    job = make_job(securityContext={"runAsUser": 0, "privileged": True})
    pod = pod_of(trainer_job(job, make_plan(), 0))
    ctx = pod["containers"][0]["securityContext"]
    # The API server rejects privileged with allowPrivilegeEscalation false, and
    # runAsNonRoot true with runAsUser 0 never starts.
    assert ctx["allowPrivilegeEscalation"] is True
    assert ctx["runAsNonRoot"] is False
    assert "trainer: privileged" in restricted_violations(pod)


def test_unknown_security_fields_are_rejected_naming_them() -> None:
    with pytest.raises(
        InvalidResourceError, match=r"spec\.podSecurityContext\.hostNetwork: is not a known field"
    ):
        make_job(podSecurityContext={"hostNetwork": True})
    with pytest.raises(InvalidResourceError, match=r"spec\.securityContext\.runAsUser"):
        make_job(securityContext={"runAsUser": -1})


def test_an_unset_image_runs_the_operators_trainer_image() -> None:
    job = make_job()
    assert job.spec.image is None
    default = pod_of(trainer_job(job, make_plan(), 0))["containers"][0]["image"]
    assert default == DEFAULT_TRAINER_IMAGE == "trainwright/trainer:0.1.0"
    chosen = trainer_job(job, make_plan(), 0, default_image="registry.example/trainer:7")
    assert pod_of(chosen)["containers"][0]["image"] == "registry.example/trainer:7"


def test_spec_image_wins_over_the_operators_trainer_image() -> None:
    job = make_job(image="mine/trainer:1")
    chosen = trainer_job(job, make_plan(), 0, default_image="registry.example/trainer:7")
    assert pod_of(chosen)["containers"][0]["image"] == "mine/trainer:1"


def _export(**spec_changes: Any) -> tuple[ModelExport, ExportInputs]:
    body = yaml.safe_load((DOCKERFILE.parents[1] / "examples" / "modelexport.yaml").read_text())
    body["metadata"]["namespace"] = "ml"
    body["spec"].update(spec_changes)
    inputs = ExportInputs(
        source_uri="pvc://checkpoints/llama8b-lora/output",
        base_uri=None,
        version="0.1.0",
        model_name="llama8b-support",
        params=8_000_000_000,
    )
    return ModelExport.from_body(body), inputs


def test_the_export_pod_passes_restricted_and_runs_the_operators_trainer_image() -> None:
    export, inputs = _export()
    pod = pod_of(export_job(export, inputs, default_image="registry.example/trainer:7"))
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == TRAINER_UID
    assert pod["containers"][0]["image"] == "registry.example/trainer:7"
    export, inputs = _export(image="mine/exporter:1")
    assert pod_of(export_job(export, inputs))["containers"][0]["image"] == "mine/exporter:1"
