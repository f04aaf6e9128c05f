"""Kueue's names for a queued trainer Job: its labels and the API the Workload lives in.

A trainer Job is always created suspended (``spec.suspend: true``). With
``spec.queue`` it carries Kueue's queue-name label (and the priority-class label for
``spec.priorityClass``), and Kueue's batch/Job integration creates a Workload for it,
admits the whole gang (one pod set of ``parallelism`` pods) or none of it under the
ClusterQueue's quota, and unsuspends it. Without a queue the operator releases it
itself once all its pods fit on free GPUs (:mod:`trainwright.operator.admission`).
The names are Kueue's (``sigs.k8s.io/kueue/pkg/controller/constants``).
"""

from __future__ import annotations

from trainwright.api.v1alpha1.trainingjob import TrainingJobSpec

QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
# On a Workload: the UID of the Job it was made for.
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
KUEUE_GROUP = "kueue.x-k8s.io"
# Kueue v0.17 serves v1beta1 and v1beta2 (the storage version).
KUEUE_VERSION = "v1beta2"
# Kueue's visibility API (an aggregated API server inside Kueue): a LocalQueue's pending
# Workloads in admission order, with their positions.
VISIBILITY_GROUP = f"visibility.{KUEUE_GROUP}"


def pending_workloads_path(namespace: str, local_queue: str) -> str:
    """The visibility API's list of a LocalQueue's pending Workloads, first first."""
    return (
        f"/apis/{VISIBILITY_GROUP}/{KUEUE_VERSION}/namespaces/{namespace}"
        f"/localqueues/{local_queue}/pendingworkloads"
    )


def queue_labels(spec: TrainingJobSpec) -> dict[str, str]:
    """The labels that hand a trainer Job to Kueue; none without ``spec.queue``."""
    if spec.queue is None:
        return {}
    labels = {QUEUE_NAME_LABEL: spec.queue}
    if spec.priority_class is not None:
        labels[PRIORITY_CLASS_LABEL] = spec.priority_class
    return labels
