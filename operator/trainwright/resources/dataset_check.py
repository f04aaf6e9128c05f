"""The dataset check's Job: the trainer image reads the dataset on a CPU before any GPU.

``python -m trainwright_trainer dataset-check`` (:mod:`trainwright_trainer.data.check`)
runs in one pod that mounts the dataset exactly as the trainer pods do
(:class:`~trainwright.resources.storage.Mounts`, read-only) and writes its report as the
container's termination message. The pod requests a little CPU and memory and no
device: it carries the TrainingJob's own ``nodeSelector`` and ``tolerations`` (where the
user's storage is reachable) but not the device toleration the trainer adds, so it never
takes a GPU node's place.

Pure functions, spec in, dict out, like :mod:`trainwright.resources.trainer`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trainwright.api.profiles import with_profile
from trainwright.api.v1alpha1.trainingjob import DEFAULT_TRAINER_IMAGE, TrainingJob
from trainwright.resources.names import JOB_LABEL, common_labels, dns_label, label_value
from trainwright.resources.security import container_security_context, pod_security_context
from trainwright.resources.storage import PVC_SCHEME, Mounts
from trainwright.resources.trainer import _model_location

# The check Job's label: the TrainingJob it belongs to (not trainwright.io/job, so the
# trainer Job's handlers and stale-attempt clean-up never see it).
CHECK_LABEL = "trainwright.io/dataset-check"
CONTAINER_NAME = "dataset-check"
TERMINATION_LOG = "/dev/termination-log"
# How long the check pod may take to start (scheduling, image pull) before the operator
# skips the check (trainwright operator --dataset-check-start).
DEFAULT_START_SECONDS = 300.0
# A check that has not finished in this long is stopped by the Job controller.
DEADLINE_SECONDS = 1800
# The operator deletes a check's Job once it read the report; this only cleans up
# after an operator that went away in between.
TTL_SECONDS = 3600
# Reading and tokenizing a file is one core's work; the memory holds a tokenizer and
# one batch of rows (parquet files are read whole by pyarrow, hence the limit).
RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "1", "memory": "4Gi"},
}


def is_local(uri: str) -> bool:
    """Whether the check pod can read ``uri``: a claim it mounts or a path in the image."""
    return uri.startswith(PVC_SCHEME) or uri.startswith("/")


def check_inputs(job: TrainingJob) -> dict[str, Any]:
    """What the report depends on; a change to any of it runs the check again."""
    spec = with_profile(job.spec)
    return {
        "uri": spec.dataset.uri,
        "format": spec.dataset.format,
        "seqLen": spec.training.seq_len,
        "model": _model_location(job),
    }


def inputs_digest(job: TrainingJob) -> str:
    encoded = json.dumps(check_inputs(job), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def dataset_check_job_name(job_name: str, digest: str) -> str:
    """``<job>-dataset-<digest>``: one Job per set of inputs, so an edit never reuses one."""
    return dns_label(job_name, suffix=f"-dataset-{digest[:6]}")


def dataset_check_job(
    job: TrainingJob, *, digest: str, default_image: str = DEFAULT_TRAINER_IMAGE
) -> dict[str, Any]:
    """The batch/v1 Job that checks ``job``'s dataset (``digest``: :func:`inputs_digest`)."""
    mounts = Mounts()
    inputs = check_inputs(job)
    args = [
        "--data",
        mounts.resolve(inputs["uri"]),
        "--format",
        inputs["format"],
        "--seq-len",
        str(inputs["seqLen"]),
        "--report",
        TERMINATION_LOG,
    ]
    if is_local(inputs["model"]):  # the model's own tokenizer; else counts are estimated
        args += ["--tokenizer", mounts.resolve(inputs["model"])]
    labels = {k: v for k, v in common_labels(job.name, component="dataset-check").items()}
    labels.pop(JOB_LABEL)
    labels[CHECK_LABEL] = label_value(job.name)
    spec = job.spec
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": dict(spec.node_selector),
        "tolerations": [t.to_manifest() for t in spec.tolerations],
        "securityContext": pod_security_context(spec.pod_security_context),
        "volumes": mounts.volumes(),
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": spec.image or default_image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["python", "-m", "trainwright_trainer", "dataset-check"],
                "args": args,
                "env": [
                    {"name": "HF_HUB_OFFLINE", "value": "1"},
                    {"name": "TRAINWRIGHT_LOG_FORMAT", "value": "json"},
                ],
                "resources": RESOURCES,
                "volumeMounts": mounts.volume_mounts(),
                "terminationMessagePath": TERMINATION_LOG,
                # A crash leaves its last log lines where the report would be.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": container_security_context(spec.security_context),
            }
        ],
    }
    if spec.service_account_name is not None:
        pod["serviceAccountName"] = spec.service_account_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": dataset_check_job_name(job.name, digest),
            "namespace": job.namespace,
            "labels": labels,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
