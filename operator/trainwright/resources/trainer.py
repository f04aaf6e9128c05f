"""The children of a TrainingJob: trainer ConfigMap, headless Service, indexed Job.

Pure functions, spec in, dict out: no API calls and no kopf, so the controller
decides when to create them and adopts them (``kopf.adopt``) for the owner
reference. Each takes the validated :class:`TrainingJob` and the plan the
controller stored in ``status.plan`` (:class:`PlanStatus`), never a live planner
object, so a restarted operator rebuilds exactly the same manifests.

Gang semantics: a multi-node torchrun cannot survive the loss of one pod, so
the Job has ``backoffLimit: 0`` and the operator restarts the whole gang as a
new Job (attempt N+1, a new name) that resumes from the newest checkpoint.
``podFailurePolicy`` turns the trainer's permanent exit codes
(``trainwright_trainer.exitcodes``) into an immediate ``FailJob`` whose
condition message names the rule index (0: permanent config/data error,
1: needs a re-plan).

The container runs torchrun under ``launch.sh`` (:mod:`trainwright.resources.launcher`,
shipped in the ConfigMap), which forwards SIGTERM and exits with the trainer's
own exit code rather than torchrun's blanket 1.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from typing import Any

import yaml

from trainwright.api.profiles import (
    effective_batch_sequences,
    learning_rate,
    profile_of,
    with_profile,
)
from trainwright.api.v1alpha1.trainingjob import (
    DEFAULT_TRAINER_IMAGE,
    CheckpointSpec,
    PlanStatus,
    TrainingJob,
)
from trainwright.planner.errors import PlannerError
from trainwright.planner.lookup import get_gpu, get_model
from trainwright.planner.profiles import Profile
from trainwright.planner.specs import GpuSpec
from trainwright.resources.launcher import EXIT_CODE_FILE, launch_script
from trainwright.resources.names import (
    ATTEMPT_LABEL,
    common_labels,
    config_map_name,
    service_name,
    trainer_job_name,
)
from trainwright.resources.queueing import queue_labels
from trainwright.resources.security import container_security_context, pod_security_context
from trainwright.resources.storage import Mounts
from trainwright.vocabulary import Method, MethodChoice
from trainwright_trainer.config import (
    CheckpointConfig,
    DataConfig,
    DistributedConfig,
    EvalConfig,
    LoraConfig,
    MetricsConfig,
    ModelConfig,
    OutputConfig,
    TrainerConfig,
    TrainingConfig,
)
from trainwright_trainer.exitcodes import PERMANENT_EXIT_CODES, REPLAN_EXIT_CODES

CONFIG_DIR = "/etc/trainwright"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
CHECKPOINT_DIR = "/checkpoints"
LAUNCHER_KEY = "launch.sh"
LAUNCHER_PATH = f"{CONFIG_DIR}/{LAUNCHER_KEY}"
RENDEZVOUS_PORT = 29500
METRICS_PORT = 9464
CONTAINER_NAME = "trainer"
CONFIG_HASH_ANNOTATION = "trainwright.io/config-sha256"

AUTO_INTERVAL = "auto"  # checkpoint.intervalSteps: auto
DEFAULT_CHECKPOINT_INTERVAL_STEPS: int = CheckpointSpec.model_fields["interval_steps"].default

# Index of each podFailurePolicy rule; the Job's Failed condition names it.
FAIL_RULE_PERMANENT = 0
FAIL_RULE_NEEDS_REPLAN = 1


def _layout(job: TrainingJob, mounts: Mounts) -> dict[str, str]:
    """In-pod paths of the model, data, checkpoints and output."""
    spec = job.spec
    if spec.checkpoint is not None and spec.checkpoint.pvc is not None:
        checkpoint_dir = f"{mounts.claim_path(spec.checkpoint.pvc, write=True)}/{job.name}"
    elif spec.checkpoint is not None and spec.checkpoint.uri is not None:
        checkpoint_dir = mounts.resolve(spec.checkpoint.uri, write=True)
    else:
        checkpoint_dir = CHECKPOINT_DIR
    if spec.output is not None:
        output_dir = mounts.resolve(spec.output.uri, write=True)
    else:
        output_dir = f"{checkpoint_dir}/output"
    layout = {
        "model": mounts.resolve(_model_location(job)),
        "data": mounts.resolve(spec.dataset.uri),
        "checkpoint": checkpoint_dir,
        "output": output_dir,
    }
    if spec.dataset.eval_uri is not None:
        layout["eval_data"] = mounts.resolve(spec.dataset.eval_uri)
    return layout


def _model_location(job: TrainingJob) -> str:
    """Weights URI, else the catalog's Hugging Face repository, else the name as given."""
    model = job.spec.model
    if model.uri is not None:
        return model.uri
    if model.name is None:
        # configPath-only models carry no weights location; the config's directory is it.
        path = model.config_path or ""
        return path.rsplit("/", 1)[0] if path.endswith("config.json") else path
    return hugging_face_repo(model.name)


def hugging_face_repo(name: str) -> str:
    """The Hugging Face repository of a catalog model (``llama-3.1-8b`` -> ``meta-llama/Llama-3.1-8B``)."""
    try:
        spec = get_model(name)
    except PlannerError:
        return name
    return next((alias for alias in spec.aliases if "/" in alias), name)


def trainer_config(job: TrainingJob, plan: PlanStatus) -> TrainerConfig:
    """The trainer's configuration for this job and plan (paths as the pod sees them)."""
    paths = _layout(job, Mounts())
    spec = with_profile(job.spec)
    profile = profile_of(spec)
    training = spec.training
    lora = None
    if spec.method != "full":
        options = spec.lora
        lora = (
            LoraConfig()
            if options is None
            else LoraConfig(
                rank=options.rank,
                alpha=options.alpha,
                dropout=options.dropout,
                target_modules=(
                    "all-linear"
                    if options.target_modules == ["all-linear"]
                    else tuple(options.target_modules)
                ),
            )
        )
    checkpoint = spec.checkpoint
    batch = effective_batch_sequences(
        plan.num_gpus, plan.micro_batch_size, plan.gradient_accumulation_steps
    )
    return TrainerConfig(
        model=ModelConfig(path=paths["model"], dtype=training.precision),
        method=_resolved_method(spec.method, plan),
        lora=lora,
        data=DataConfig(
            path=paths["data"],
            format=spec.dataset.format,
            seq_len=training.seq_len,
            eval_fraction=spec.dataset.eval_fraction or 0.0,
            eval_path=paths.get("eval_data"),
            **_profile_data_options(profile),
        ),
        training=TrainingConfig(
            # What was planned: the profile's epochs follow the dataset size the plan saw
            # (the dataset check's measured tokens, which the spec does not hold).
            epochs=plan.epochs or training.epochs,
            max_steps=training.max_steps,
            micro_batch_size=plan.micro_batch_size,
            gradient_accumulation_steps=plan.gradient_accumulation_steps,
            learning_rate=learning_rate(job.spec, batch),
            warmup_steps=training.warmup_steps,
            weight_decay=training.weight_decay,
            seed=training.seed,
            gradient_checkpointing=plan.gradient_checkpointing,
            optimizer=training.optimizer,
        ),
        distributed=DistributedConfig(strategy=plan.strategy),
        checkpoint=CheckpointConfig(
            dir=paths["checkpoint"],
            interval_steps=_checkpoint_interval_steps(job, plan),
            keep_last=checkpoint.keep if checkpoint else 2,
        ),
        metrics=MetricsConfig(port=METRICS_PORT),
        output=OutputConfig(dir=paths["output"]),
        evaluation=_eval_config(job),
    )


def _resolved_method(method: MethodChoice, plan: PlanStatus) -> Method:
    """spec.method, or the method the plan resolved ``auto`` to."""
    if method != "auto":
        return method
    if plan.method is None:
        raise ValueError("spec.method auto needs a plan that names the method (status.plan.method)")
    return plan.method


def _profile_data_options(profile: Profile | None) -> dict[str, bool]:
    """What the profile says about the loss (completions or all text) and packing."""
    if profile is None:
        return {}
    return {"train_on_prompt": profile.train_on_prompt.value, "pack": profile.pack.value}


def _eval_config(job: TrainingJob) -> EvalConfig:
    """``spec.evaluation`` as the trainer's ``evaluation`` section (defaults when unset)."""
    evaluation = job.spec.evaluation
    if evaluation is None:
        return EvalConfig()
    return EvalConfig(
        interval_steps=evaluation.interval_steps,
        early_stopping_patience=evaluation.early_stopping_patience,
        early_stopping_min_delta=evaluation.early_stopping_min_delta,
        overfitting_evaluations=evaluation.overfitting_evaluations,
        sample_prompts=tuple(evaluation.sample_prompts),
    )


def _checkpoint_interval_steps(job: TrainingJob, plan: PlanStatus) -> int:
    """This attempt's interval: the spec's number, or for ``auto`` the one the operator
    chose (``status.plan.checkpointInterval``, see trainwright.operator.checkpoint_interval)."""
    checkpoint = job.spec.checkpoint
    if checkpoint is None:
        return DEFAULT_CHECKPOINT_INTERVAL_STEPS
    if checkpoint.interval_steps == AUTO_INTERVAL:
        chosen = plan.checkpoint_interval
        return chosen.steps if chosen is not None else DEFAULT_CHECKPOINT_INTERVAL_STEPS
    return int(checkpoint.interval_steps)


def render_trainer_config(config: TrainerConfig) -> str:
    """``config`` as the YAML the ConfigMap carries: the same document as ``config.to_yaml()``.

    libyaml's emitter when PyYAML has it: the pure-Python one costs ~15 ms per
    config, paid on every reconcile of every job.
    """
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    data = config.model_dump(mode="json", exclude_none=True)
    return yaml.dump(data, Dumper=dumper, sort_keys=False)


def trainer_configmap(job: TrainingJob, plan: PlanStatus) -> dict[str, Any]:
    """ConfigMap ``<job>-trainer``: ``config.yaml`` and ``launch.sh``, mounted at /etc/trainwright.

    Pass it to :func:`trainer_job` as ``config_map`` so the config is rendered once.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(job.name),
            "namespace": job.namespace,
            "labels": common_labels(job.name, component="trainer-config"),
        },
        "data": {
            CONFIG_KEY: render_trainer_config(trainer_config(job, plan)),
            LAUNCHER_KEY: launch_script(),
        },
    }


def headless_service(job: TrainingJob) -> dict[str, Any]:
    """Headless Service ``<job>-workers``: DNS ``<jobname>-<index>.<service>`` for each pod.

    ``publishNotReadyAddresses`` so rank 0 resolves before any readiness check
    passes (rendezvous happens before the trainer serves anything).
    """
    labels = common_labels(job.name, component="trainer")
    selector = {key: labels[key] for key in ("trainwright.io/job", "app.kubernetes.io/component")}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(job.name),
            "namespace": job.namespace,
            "labels": common_labels(job.name, component="trainer-network"),
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        },
    }


def torchrun_args(job: TrainingJob, plan: PlanStatus, *, job_name: str) -> list[str]:
    """torchrun with a static rendezvous at pod 0; the shell fills in ``${NODE_RANK}``."""
    return [
        "torchrun",
        f"--nnodes={plan.nodes}",
        f"--nproc-per-node={plan.gpus_per_node}",
        "--node-rank=${NODE_RANK}",
        "--rdzv-backend=static",
        f"--master-addr={_master_addr(job, plan, job_name=job_name)}",
        f"--master-port={RENDEZVOUS_PORT}",
        # The operator restarts the whole gang as a new Job; torchrun must not retry alone.
        "--max-restarts=0",
        "-m",
        "trainwright_trainer",
        "train",
        "--config",
        CONFIG_PATH,
    ]


def container_command(job: TrainingJob, plan: PlanStatus, *, job_name: str) -> list[str]:
    """``sh -c 'exec sh launch.sh torchrun ...'``: the launcher becomes PID 1 and gets SIGTERM.

    The whole torchrun line stays readable in the Job; only ``${NODE_RANK}`` is
    left for the shell to expand.
    """
    words = [
        word if word == "--node-rank=${NODE_RANK}" else shlex.quote(word)
        for word in torchrun_args(job, plan, job_name=job_name)
    ]
    return ["/bin/sh", "-c", f"exec /bin/sh {LAUNCHER_PATH} " + " ".join(words)]


def _master_addr(job: TrainingJob, plan: PlanStatus, *, job_name: str) -> str:
    """Pod 0's DNS name under the headless Service; loopback when there is one node."""
    return f"{job_name}-0.{service_name(job.name)}" if needs_service(plan) else "127.0.0.1"


def trainer_job(
    job: TrainingJob,
    plan: PlanStatus,
    attempt: int,
    *,
    default_image: str = DEFAULT_TRAINER_IMAGE,
    config_map: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job of one attempt: one pod per node, completion index = node rank.

    ``default_image`` (the operator's ``--trainer-image``) runs when ``spec.image`` is unset.
    ``config_map``: this job's :func:`trainer_configmap`, whose text the pods' config hash is
    of (rendered here when not given; rendering is most of the CPU of building both).
    """
    mounts = Mounts()
    paths = _layout(job, mounts)
    name = trainer_job_name(job.name, attempt, nodes=plan.nodes)
    labels = common_labels(job.name, component="trainer") | {ATTEMPT_LABEL: str(attempt)}
    job_labels = labels | queue_labels(job.spec)
    data = (config_map or trainer_configmap(job, plan))["data"]
    config_text = data[CONFIG_KEY] + data[LAUNCHER_KEY]
    pod_labels = dict(job.spec.pod_labels) | labels
    pod_annotations = dict(job.spec.pod_annotations) | {
        CONFIG_HASH_ANNOTATION: hashlib.sha256(config_text.encode()).hexdigest()
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": job.namespace,
            "labels": job_labels,
            "annotations": {"trainwright.io/gpu-type": plan.gpu_type},
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": plan.nodes,
            "parallelism": plan.nodes,
            "backoffLimit": 0,
            # Always created suspended: Kueue (spec.queue) or the operator's gang check
            # releases the whole gang at once (trainwright.resources.queueing).
            "suspend": True,
            "podFailurePolicy": _pod_failure_policy(),
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": _pod_spec(
                    job, plan, mounts, paths, job_name=name, image=job.spec.image or default_image
                ),
            },
        },
    }


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [int(code) for code in PERMANENT_EXIT_CODES],
                },
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [int(code) for code in REPLAN_EXIT_CODES],
                },
            },
        ]
    }


def _pod_spec(
    job: TrainingJob,
    plan: PlanStatus,
    mounts: Mounts,
    paths: dict[str, str],
    *,
    job_name: str,
    image: str,
) -> dict[str, Any]:
    spec = job.spec
    device = _device(plan)
    node_selector = dict(spec.node_selector)
    if plan.gpu_product is not None:
        node_selector[device.product_label_key] = plan.gpu_product
    tolerations = [_device_toleration(device.resource_name)] + [
        t.to_manifest() for t in spec.tolerations
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(job.name)}},
        # NCCL and DataLoader workers share tensors through /dev/shm; the container
        # runtime's default (64 MiB) is far too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    volume_mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if paths["checkpoint"] == CHECKPOINT_DIR:
        volumes.append({"name": "checkpoints", "emptyDir": {}})
        volume_mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_DIR})
    volumes += mounts.volumes()
    volume_mounts += mounts.volume_mounts()
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": node_selector,
        "tolerations": tolerations,
        "volumes": volumes,
        "securityContext": pod_security_context(spec.pod_security_context),
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": container_command(job, plan, job_name=job_name),
                "env": _env(job, plan, job_name=job_name),
                "ports": [
                    {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT},
                    {"name": "metrics", "containerPort": METRICS_PORT},
                ],
                "resources": _resources(device, plan.gpus_per_node),
                "volumeMounts": volume_mounts,
                "securityContext": container_security_context(spec.security_context),
            }
        ],
    }
    if spec.service_account_name is not None:
        pod["serviceAccountName"] = spec.service_account_name
    if needs_service(plan):
        pod["subdomain"] = service_name(job.name)  # DNS <pod>.<service> for the rendezvous
    return pod


def needs_service(plan: PlanStatus) -> bool:
    """A headless Service only where pods must find each other: one pod's ranks rendezvous
    on 127.0.0.1, so a single-node job gets none (an object and a write fewer per job)."""
    return plan.nodes > 1


def _device(plan: PlanStatus) -> GpuSpec:
    """The plan's catalog device: its node label, extended resource and, for a CPU, memory."""
    return get_gpu(plan.gpu_type)


def _device_toleration(resource: str) -> dict[str, Any]:
    """Device nodes are tainted with their device's resource name (``nvidia.com/gpu``,
    the real node's ``trainwright.io/cpu-rank``); a trainer tolerates the device it uses."""
    return {"key": resource, "operator": "Exists", "effect": "NoSchedule"}


def _resources(device: GpuSpec, devices: int) -> dict[str, Any]:
    """The devices a pod needs; a CPU device also asks for its memory, so the kubelet
    reserves it and the cgroup enforces the memory the plan was made for. Its core is the
    rank itself (the node offers one rank per core): a cpu request on top would count the
    core twice and leave a two-rank job unschedulable beside any other pod."""
    count = str(devices)
    requests: dict[str, str] = {device.resource_name: count}
    limits: dict[str, str] = {device.resource_name: count}
    if device.vendor == "cpu":
        requests["memory"] = limits["memory"] = str(device.memory_bytes * devices)
    return {"limits": limits, "requests": requests}


def _env(job: TrainingJob, plan: PlanStatus, *, job_name: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                }
            },
        },
        {"name": "MASTER_ADDR", "value": _master_addr(job, plan, job_name=job_name)},
        {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        {"name": "NNODES", "value": str(plan.nodes)},
        {"name": "NPROC_PER_NODE", "value": str(plan.gpus_per_node)},
        {"name": "TRAINWRIGHT_JOB", "value": job.name},
        {"name": "TRAINWRIGHT_CONFIG", "value": CONFIG_PATH},
        {"name": "TRAINWRIGHT_EXIT_CODE_FILE", "value": EXIT_CODE_FILE},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
