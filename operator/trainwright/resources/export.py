"""The children of a ModelExport and the decisions around them, as pure functions.

An export runs as one batch/v1 Job of the trainer image running
``python -m trainwright_trainer export --config /etc/trainwright-export/export.yaml``
(the config in a ConfigMap beside it). The training output is mounted
read-only at the path the trainer used (``/mnt/pvc/CLAIM``, so the adapter's
recorded base path still resolves); the destination is mounted read-write at
``/mnt/export/CLAIM``, a second mount when it is on the same claim. No GPU: a
merge is memory-bound; memory is sized from the model (see
:func:`export_memory_bytes`).

How the operator learns what was written: the exporter writes a JSON summary
(artifacts with format, main file, size, sha256; the checkpoint step; whether
verification passed) to the container's termination message
(``/dev/termination-log``, at most 4 KiB); the controller reads it from the
finished pod's ``state.terminated.message``. On failure the policy
``FallbackToLogsOnError`` puts the exporter's last log lines there instead,
whose last line is the one-sentence error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from trainwright.api.v1alpha1 import ModelExport, TrainingJob
from trainwright.api.v1alpha1.trainingjob import DEFAULT_TRAINER_IMAGE, ModelRef
from trainwright.planner.errors import PlannerError
from trainwright.planner.lookup import get_model
from trainwright.resources.names import MANAGED_BY, dns_label, label_value
from trainwright.resources.security import container_security_context, pod_security_context
from trainwright.resources.storage import PVC_SCHEME, Mounts
from trainwright.resources.trainer import hugging_face_repo
from trainwright.vocabulary import TRAIN_LOG_NAME
from trainwright_trainer.exitcodes import PERMANENT_EXIT_CODES
from trainwright_trainer.export.config import TERMINATION_LOG_ENV, ExportConfig

__all__ = [
    "EXPORT_LABEL",
    "ExportInputs",
    "artifacts_from_summary",
    "export_config",
    "export_configmap",
    "export_job",
    "export_job_name",
    "export_memory_bytes",
    "next_version",
    "parse_summary",
    "training_checkpoint_uri",
    "training_output_uri",
]

EXPORT_LABEL = "trainwright.io/export"
CONTAINER_NAME = "exporter"
CONFIG_DIR = "/etc/trainwright-export"
CONFIG_KEY = "export.yaml"
OUTPUT_MOUNT_ROOT = "/mnt/export"
TERMINATION_LOG = "/dev/termination-log"
# A merge and a GGUF conversion run on one core at a time, mostly (a request is a
# reservation: two would leave the export Pending on a 2-core node with the operator).
EXPORT_CPU = "1"
GIB = 1024**3
# The merge holds about one 2 GiB output shard plus the adapter; verification loads
# the model once in fp32 (4 bytes a parameter); 1 GiB for Python, torch and tokenizers.
SHARD_BYTES = 2 * GIB
OVERHEAD_BYTES = 1 * GIB
UNKNOWN_MODEL_BYTES = 8 * GIB
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def export_job_name(name: str) -> str:
    """The export Job (and its ConfigMap) of a ModelExport."""
    return dns_label(name, suffix="-export")


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "trainwright-exporter",
        "app.kubernetes.io/instance": label_value(name),
        "app.kubernetes.io/component": "exporter",
        "app.kubernetes.io/part-of": "trainwright",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        EXPORT_LABEL: label_value(name),
    }


def training_output_uri(job: TrainingJob) -> str | None:
    """Where a TrainingJob's trainer writes its final model or adapter, as a URI.

    The same layout as the trainer pod's (``spec.output.uri``, else ``output/``
    under the checkpoint location); None when it lives only in the pod's emptyDir.
    """
    spec = job.spec
    if spec.output is not None:
        return spec.output.uri
    if spec.checkpoint is not None and spec.checkpoint.pvc is not None:
        return f"{PVC_SCHEME}{spec.checkpoint.pvc}/{job.name}/output"
    if spec.checkpoint is not None and spec.checkpoint.uri is not None:
        return f"{spec.checkpoint.uri.rstrip('/')}/output"
    return None


def training_checkpoint_uri(job: TrainingJob) -> str | None:
    """A TrainingJob's checkpoint directory (its ``train_log.jsonl``), as the trainer pod
    lays it out (:func:`trainwright.resources.trainer.trainer_config`); None when it lives
    only in the pod's emptyDir."""
    spec = job.spec
    if spec.checkpoint is not None and spec.checkpoint.pvc is not None:
        return f"{PVC_SCHEME}{spec.checkpoint.pvc}/{job.name}"
    if spec.checkpoint is not None and spec.checkpoint.uri is not None:
        return spec.checkpoint.uri.rstrip("/")
    return None


def model_location(model: ModelRef) -> str:
    """A model's weights: its URI, the directory of its config.json, or its hub repository."""
    if model.uri is not None:
        return model.uri
    if model.config_path is not None:
        path = model.config_path
        return path.rsplit("/", 1)[0] if path.endswith("config.json") else path
    return hugging_face_repo(model.name or "")


def model_params(model: ModelRef | None) -> int | None:
    """Parameters of a catalog model (None for models the catalog does not know)."""
    if model is None or model.name is None:
        return None
    try:
        return int(get_model(model.name).total_params)
    except PlannerError:
        return None


def export_memory_bytes(params: int | None) -> int:
    """Memory for the export pod: fp32 verification of the model, one shard, overhead."""
    if params is None:
        return UNKNOWN_MODEL_BYTES
    return 4 * params + SHARD_BYTES + OVERHEAD_BYTES


@dataclass(frozen=True)
class ExportInputs:
    """What the controller resolved for one export (URIs, not in-pod paths)."""

    source_uri: str
    base_uri: str | None
    version: str
    model_name: str
    extra_sources: tuple[tuple[str, float], ...] = ()
    source_weight: float = 1.0
    params: int | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    # The run's checkpoint directory: its train_log.jsonl gives the card its losses.
    checkpoint_uri: str | None = None


def _output_path(uri: str) -> tuple[str | None, str]:
    if not uri.startswith(PVC_SCHEME):
        return None, uri
    claim, _, path = uri[len(PVC_SCHEME) :].partition("/")
    return claim, f"{OUTPUT_MOUNT_ROOT}/{claim}/{path}".rstrip("/")


def export_config(export: ModelExport, inputs: ExportInputs) -> ExportConfig:
    """The exporter's config with in-pod paths (inputs read-only, output read-write)."""
    mounts = Mounts()
    spec = export.spec
    source = mounts.resolve(inputs.source_uri)
    data: dict[str, Any] = {
        "formats": list(spec.formats),
        "output": _output_path(spec.output.uri)[1],
        "combination": spec.combination,
        "lineage": {
            **inputs.lineage,
            "modelName": inputs.model_name,
            "version": inputs.version,
        },
    }
    if spec.quantization is not None:
        data["quantization"] = spec.quantization
    if inputs.extra_sources:
        data["sources"] = [{"path": source, "weight": inputs.source_weight}] + [
            {"path": mounts.resolve(uri), "weight": weight} for uri, weight in inputs.extra_sources
        ]
    else:
        data["source"] = source
    if inputs.base_uri is not None:
        data["base"] = mounts.resolve(inputs.base_uri)
    if inputs.checkpoint_uri is not None:
        data["trainLog"] = f"{mounts.resolve(inputs.checkpoint_uri)}/{TRAIN_LOG_NAME}"
    if spec.ollama is not None and spec.ollama.system_prompt is not None:
        data["ollama"] = {"systemPrompt": spec.ollama.system_prompt}
    return ExportConfig.model_validate(data)


def render_export_config(config: ExportConfig) -> str:
    dumped = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return str(yaml.safe_dump(dumped, sort_keys=False))


def export_configmap(export: ModelExport, inputs: ExportInputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": export_job_name(export.name),
            "namespace": export.namespace,
            "labels": labels(export.name),
        },
        "data": {CONFIG_KEY: render_export_config(export_config(export, inputs))},
    }


def _volumes(export: ModelExport, inputs: ExportInputs) -> tuple[list[Any], list[Any]]:
    mounts = Mounts()
    extra = (u for u, _ in inputs.extra_sources)
    for uri in (inputs.source_uri, inputs.base_uri, inputs.checkpoint_uri, *extra):
        if uri is not None:
            mounts.resolve(uri)
    volumes = mounts.volumes()
    volume_mounts = mounts.volume_mounts()
    claim, _ = _output_path(export.spec.output.uri)
    if claim is not None:
        shared = next(
            (v for v in volumes if v["persistentVolumeClaim"]["claimName"] == claim), None
        )
        if shared is None:
            shared = {
                "name": dns_label(f"out-{claim}"),
                "persistentVolumeClaim": {"claimName": claim, "readOnly": False},
            }
            volumes.append(shared)
        else:  # the input mount stays read-only; the claim itself must allow writes
            shared["persistentVolumeClaim"]["readOnly"] = False
        volume_mounts.append(
            {"name": shared["name"], "mountPath": f"{OUTPUT_MOUNT_ROOT}/{claim}", "readOnly": False}
        )
    volumes.append({"name": "config", "configMap": {"name": export_job_name(export.name)}})
    volume_mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    return volumes, volume_mounts


def export_job(
    export: ModelExport, inputs: ExportInputs, *, default_image: str = DEFAULT_TRAINER_IMAGE
) -> dict[str, Any]:
    """The batch/v1 Job that runs the export: one pod, no GPU, no retry of bad input.

    ``default_image`` (the operator's ``--trainer-image``) runs when ``spec.image`` is unset;
    the pod passes Pod Security ``restricted`` as the trainer image's user.
    """
    memory = str(export_memory_bytes(inputs.params))
    volumes, volume_mounts = _volumes(export, inputs)
    config_text = render_export_config(export_config(export, inputs))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": export_job_name(export.name),
            "namespace": export.namespace,
            "labels": labels(export.name),
        },
        "spec": {
            "backoffLimit": 1,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER_NAME,
                            "operator": "In",
                            "values": [int(code) for code in PERMANENT_EXIT_CODES],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {
                    "labels": labels(export.name),
                    "annotations": {"trainwright.io/config-sha256": _sha256(config_text)},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": volumes,
                    "securityContext": pod_security_context(None),
                    **_placement(export),
                    "containers": [
                        {
                            "name": CONTAINER_NAME,
                            "image": export.spec.image or default_image,
                            "securityContext": container_security_context(None),
                            "command": ["python", "-m", "trainwright_trainer", "export"],
                            "args": ["--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
                            "env": [
                                {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
                                {"name": "TRAINWRIGHT_LOG_FORMAT", "value": "text"},
                            ],
                            "resources": {
                                "requests": {"cpu": EXPORT_CPU, "memory": memory},
                                "limits": {"memory": memory},
                            },
                            "terminationMessagePath": TERMINATION_LOG,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "volumeMounts": volume_mounts,
                        }
                    ],
                },
            },
        },
    }


def _placement(export: ModelExport) -> dict[str, Any]:
    """The user's tolerations and node selector, when given: an export needs no GPU node,
    only one that mounts the volumes (on the local cluster, the real node)."""
    placement: dict[str, Any] = {}
    if export.spec.tolerations:
        placement["tolerations"] = [t.to_manifest() for t in export.spec.tolerations]
    if export.spec.node_selector:
        placement["nodeSelector"] = dict(export.spec.node_selector)
    return placement


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def next_version(taken: Iterable[str], requested: str | None) -> str:
    """The version of a new export: the one requested, or the next minor after the highest.

    Raises ValueError (one sentence naming spec.version) when the requested one is taken.
    """
    versions = {v for v in taken if _SEMVER.match(v)}
    if requested is not None:
        if requested in versions:
            raise ValueError(
                f"spec.version: {requested} is already exported under this modelName; "
                "choose another version or leave it unset for the next one"
            )
        return requested
    if not versions:
        return "0.1.0"
    major, minor, _ = max(tuple(int(x) for x in v.split(".")) for v in versions)
    return f"{major}.{minor + 1}.0"


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """The exporter's termination message (its JSON summary), or None if it is not one."""
    if not message:
        return None
    try:
        summary = json.loads(message)
    except ValueError:
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("artifacts"), list):
        return None
    return summary


def last_line(message: str | None) -> str:
    """The exporter's error sentence: the last non-empty line of its log tail."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def artifacts_from_summary(summary: Mapping[str, Any], output_uri: str) -> list[dict[str, Any]]:
    """``status.artifacts`` entries (camelCase) from the exporter's summary."""
    base = output_uri.rstrip("/")
    artifacts = []
    for item in summary["artifacts"]:
        fmt = str(item["format"])
        artifacts.append(
            {
                "format": fmt,
                "uri": f"{base}/{fmt}",
                "path": str(item["path"]),
                "sizeBytes": int(item["size_bytes"]),
                "sha256": str(item["sha256"]),
            }
        )
    return artifacts
