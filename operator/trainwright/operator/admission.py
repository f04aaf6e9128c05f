"""Gang admission: a trainer Job starts whole or not at all, and ``Queued`` says why not yet.

Every trainer Job is created suspended (:mod:`trainwright.resources.queueing`). Two
ways release it:

* ``spec.queue`` names a Kueue LocalQueue. Kueue's batch/Job integration makes a
  Workload of the Job (one pod set of ``parallelism`` pods), admits all of it or none
  under the ClusterQueue's quota and unsuspends the Job. The flavour Kueue assigns is
  the planned GPU type: the pods already require its product label
  (``nvidia.com/gpu.product``) and Kueue only assigns a ResourceFlavor whose
  ``nodeLabels`` agree with the pods' node selector. While the Workload waits, or after
  Kueue preempted or evicted a running gang (it suspends the Job; the trainer saves on
  SIGTERM), :func:`kueue_verdict` turns the Workload's conditions into the
  ``Admitted=False`` condition of a ``Queued`` TrainingJob. Kueue's suspension is not a
  failure: no restart of ``spec.maxRestarts`` is used, and the gang resumes from its
  checkpoint when admitted again.
* No queue: :class:`GangGate` releases a Job only when all its pods fit on free devices
  of the planned type, strictly first come first served per device type (a wide gang is
  never starved by narrower ones arriving after it). One pass lists nodes and pods once
  for every waiting job, places the pods the scheduler has not bound yet (and those of
  Jobs it released moments ago) before the waiting gangs, and releases what fits.

``spec.suspend`` keeps its meaning: a suspended TrainingJob's Job stays suspended
(with a queue, its Workload is deactivated so that Kueue does not start it), and it
waits for admission again once resumed.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from trainwright.operator.inventory import build_inventory, pod_gpu_request
from trainwright.operator.kube import Kube

# The Admitted condition's reasons (re-exported: the controller names them through here).
from trainwright.operator.transitions import ADMITTED as ADMITTED
from trainwright.operator.transitions import EVICTED as EVICTED
from trainwright.operator.transitions import PREEMPTED as PREEMPTED
from trainwright.operator.transitions import QUEUE_NOT_FOUND as QUEUE_NOT_FOUND
from trainwright.operator.transitions import WAITING_FOR_ADMISSION as WAITING_FOR_ADMISSION
from trainwright.operator.transitions import WAITING_FOR_CAPACITY as WAITING_FOR_CAPACITY
from trainwright.planner.lookup import device_node_keys
from trainwright.resources.queueing import JOB_UID_LABEL

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Kueue's Workload condition types and the eviction reason of a preemption.
WORKLOAD_QUOTA_RESERVED = "QuotaReserved"
WORKLOAD_ADMITTED = "Admitted"
WORKLOAD_EVICTED = "Evicted"
EVICTED_BY_PREEMPTION = "Preempted"
# Evicted because the operator deactivated the Workload (spec.suspend): not news to the user.
EVICTED_BY_DEACTIVATION = "Deactivated"
# A released Job's pods not seen yet are counted as placed for this long.
RELEASE_GRACE_SECONDS = 30.0
# The gate re-checks its waiting jobs at least this often (GPUs freed by other pods).
GATE_INTERVAL_SECONDS = 10.0
# Kicks within this window share one pass: a thousand TrainingJobs applied at once cost a
# pass (a node and a pod listing) a second, not one per job.
GATE_DEBOUNCE_SECONDS = 1.0

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a suspended gang may start, and the Admitted condition that says so."""

    admitted: bool
    reason: str
    message: str


# Kueue ---------------------------------------------------------------------------------------


def _condition(workload: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def _is_true(condition: Mapping[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


def kueue_verdict(workload: Mapping[str, Any] | None, *, queue: str, job_name: str) -> Verdict:
    """The Admitted condition of a Job Kueue holds suspended, from its Workload.

    Kueue writes why a Workload waits in ``QuotaReserved=False`` (the flavour and the
    quota it lacks), and why it stopped a running one in ``Evicted=True`` (reason
    ``Preempted``, ``PodsReadyTimeout``, ``Deactivated``...), kept until quota is
    reserved again.
    """
    if workload is None:
        return Verdict(
            False,
            WAITING_FOR_ADMISSION,
            f"Job {job_name} waits for Kueue to create its Workload in LocalQueue {queue}.",
        )
    if _is_true(_condition(workload, WORKLOAD_ADMITTED)):
        return Verdict(True, ADMITTED, f"Kueue admitted the gang in LocalQueue {queue}.")
    waiting = _condition(workload, WORKLOAD_QUOTA_RESERVED)
    waiting_text = _sentence((waiting or {}).get("message") or "not yet considered")
    evicted = _condition(workload, WORKLOAD_EVICTED)
    if (
        _is_true(evicted)
        and evicted is not None
        and evicted.get("reason") != (EVICTED_BY_DEACTIVATION)
    ):
        preempted = evicted.get("reason") == EVICTED_BY_PREEMPTION
        what = "preempted" if preempted else f"evicted ({evicted.get('reason')})"
        return Verdict(
            False,
            PREEMPTED if preempted else EVICTED,
            f"Kueue {what} the running gang: {_sentence(evicted.get('message') or '')} "
            f"It resumes from its last checkpoint when admitted again (no restart used); "
            f"LocalQueue {queue}: {waiting_text}",
        )
    if _is_true(waiting):
        return Verdict(
            False,
            WAITING_FOR_ADMISSION,
            f"Quota reserved in LocalQueue {queue}; waiting for Kueue's admission checks.",
        )
    return Verdict(
        False, WAITING_FOR_ADMISSION, f"Waiting in Kueue LocalQueue {queue}: {waiting_text}"
    )


def with_queue_position(
    verdict: Verdict, pending: Sequence[Mapping[str, Any]] | None, workload_name: str
) -> Verdict:
    """``verdict`` with the Workload's place in its queues (Kueue's visibility API, 0-based,
    said 1-based), unchanged when the API did not answer or no longer lists it."""
    if verdict.admitted or not pending:
        return verdict
    for item in pending:
        if (item.get("metadata") or {}).get("name") != workload_name:
            continue
        local = item.get("positionInLocalQueue")
        cluster = item.get("positionInClusterQueue")
        if not isinstance(local, int):
            return verdict
        where = f"Position {local + 1} of {len(pending)} in its LocalQueue"
        if isinstance(cluster, int):
            where += f", {cluster + 1} in the ClusterQueue"
        return dataclasses.replace(verdict, message=f"{verdict.message} {where}.")
    return verdict


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if not text or text.endswith(".") else f"{text}."


def workload_is_active(workload: Mapping[str, Any]) -> bool:
    return (workload.get("spec") or {}).get("active") is not False


# Placing gangs on free devices ---------------------------------------------------------------


def place(free_per_node: Sequence[int], pods: int, devices_per_pod: int) -> list[int] | None:
    """``free_per_node`` after placing ``pods`` pods of ``devices_per_pod`` devices each,
    best fit (each pod on the node it fills most), or None when they do not all fit."""
    free = list(free_per_node)
    for _ in range(pods):
        fitting = [i for i, devices in enumerate(free) if devices >= devices_per_pod]
        if not fitting:
            return None
        best = min(fitting, key=lambda i: (free[i], i))
        free[best] -= devices_per_pod
    return free


@dataclasses.dataclass(frozen=True)
class Gang:
    """A suspended trainer Job waiting for free devices (from its TrainingJob's plan)."""

    namespace: str
    name: str  # the TrainingJob
    job_name: str  # its current trainer Job
    gpu_type: str
    pods: int
    devices_per_pod: int
    created: str  # the TrainingJob's creationTimestamp: the queue's order

    @property
    def devices(self) -> int:
        return self.pods * self.devices_per_pod

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


def capacity_verdict(gang: Gang, free_per_node: Sequence[int], ahead: int) -> Verdict:
    """The Admitted condition of a gang the gate holds back (or releases).

    Only the first waiting gang of a type names the free devices; the ones behind it
    say so and nothing that changes with every pass, so that a thousand waiting jobs
    are not rewritten each time one of them starts.
    """
    need = (
        f"the gang needs {gang.pods} pod(s) x {gang.devices_per_pod} {gang.gpu_type} "
        f"({gang.devices} devices) at once"
    )
    if ahead:
        return Verdict(
            False,
            WAITING_FOR_CAPACITY,
            f"Waiting for free {gang.gpu_type}: {need}; earlier jobs waiting for "
            f"{gang.gpu_type} start first (first come, first served).",
        )
    if place(free_per_node, gang.pods, gang.devices_per_pod) is not None:
        return Verdict(
            True, ADMITTED, f"All {gang.pods} trainer pod(s) fit on free {gang.gpu_type}."
        )
    free = sum(free_per_node)
    holding = sum(devices // gang.devices_per_pod for devices in free_per_node)
    return Verdict(
        False,
        WAITING_FOR_CAPACITY,
        f"Waiting for free {gang.gpu_type}: {need}; {free} are free now, room for {holding} "
        f"such pod(s). First in the {gang.gpu_type} queue.",
    )


def _pod_product(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(product label key, product) a pending pod requires, for the devices it requests."""
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    for label, _ in device_node_keys():
        if selector.get(label):
            return label, str(selector[label])
    return None


def free_devices(
    nodes: Iterable[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    reserved: Iterable[Gang] = (),
) -> dict[str, list[int]]:
    """Free devices per node of each device type (catalog key), after the pods bound to
    nodes, the pods not bound yet and the ``reserved`` gangs (released, pods not seen)."""
    inventory = build_inventory(nodes, pods)
    free = {gpu: list(pool.free_per_node) for gpu, pool in inventory.pools.items()}
    by_product = {pool.product: gpu for gpu, pool in inventory.pools.items()}
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName"):
            continue
        devices = pod_gpu_request(pod)
        product = _pod_product(pod)
        gpu = by_product.get(product[1]) if product else None
        if devices <= 0 or gpu is None:
            continue
        free[gpu] = place(free[gpu], 1, devices) or [0] * len(free[gpu])
    for gang in reserved:
        if gang.gpu_type in free:
            free[gang.gpu_type] = place(free[gang.gpu_type], gang.pods, gang.devices_per_pod) or [
                0
            ] * len(free[gang.gpu_type])
    return free


def decide(
    waiting: Iterable[Gang], free: Mapping[str, list[int]]
) -> dict[tuple[str, str], Verdict]:
    """Which waiting gangs start now: first come first served per device type.

    A gang that does not fit blocks the later ones of its type (strict FIFO), so a
    16-GPU job is not starved by 8-GPU jobs submitted after it.
    """
    remaining = {gpu: list(devices) for gpu, devices in free.items()}
    queued: dict[str, int] = {}
    verdicts: dict[tuple[str, str], Verdict] = {}
    for gang in sorted(waiting, key=lambda g: (g.created, g.namespace, g.name)):
        ahead = queued.get(gang.gpu_type, 0)
        pool = remaining.get(gang.gpu_type, [])
        verdict = capacity_verdict(gang, pool, ahead)
        verdicts[gang.key] = verdict
        if verdict.admitted:
            remaining[gang.gpu_type] = place(pool, gang.pods, gang.devices_per_pod) or []
        else:
            queued[gang.gpu_type] = ahead + 1
    return verdicts


# The gate ------------------------------------------------------------------------------------


class GangGate:
    """Releases the suspended trainer Jobs of queue-less TrainingJobs whose gangs fit.

    The reconcile :meth:`wait`\\s a gang (and reads its last :meth:`verdict`); a pass
    (:meth:`run_pass`, on a background thread after a :meth:`kick` or every
    :data:`GATE_INTERVAL_SECONDS`) decides for all of them from one node and pod
    listing, unsuspends the Jobs that fit, and calls ``changed`` for every TrainingJob
    whose verdict changed so that its reconcile writes the new status.
    """

    def __init__(
        self,
        kube: Kube,
        changed: Callable[[str, str], object],
        *,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self._kube = kube
        self._changed = changed
        self._clock = clock
        self._background = background
        self._lock = threading.Lock()
        self._pass_lock = threading.Lock()
        self._waiting: dict[tuple[str, str], Gang] = {}
        self._released: dict[tuple[str, str], tuple[Gang, float]] = {}
        self._verdicts: dict[tuple[str, str], Verdict] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # What the reconcile calls -----------------------------------------------------------------

    def wait(self, gang: Gang) -> Verdict | None:
        """Hold ``gang`` until it fits; its last verdict (None before the first pass)."""
        with self._lock:
            # Seen suspended again (spec.suspend, or a new attempt): no pods are coming.
            self._released.pop(gang.key, None)
            known = self._waiting.get(gang.key)
            if known != gang:
                self._waiting[gang.key] = gang
                if known is None or known.job_name != gang.job_name:
                    self._verdicts.pop(gang.key, None)
            verdict = self._verdicts.get(gang.key)
        if verdict is None:
            self.kick()
        return verdict

    def forget(self, namespace: str, name: str, *, deleted: bool = False) -> None:
        """The TrainingJob no longer waits (released, suspended, finished) or is ``deleted``."""
        with self._lock:
            self._waiting.pop((namespace, name), None)
            if deleted:
                self._released.pop((namespace, name), None)
            if (namespace, name) not in self._released:
                self._verdicts.pop((namespace, name), None)

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def kick(self) -> None:
        """Run a pass soon (devices were freed, or a gang started waiting)."""
        if not self._background:
            return
        self._wake.set()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # The pass reconciles, which posts Events through kopf: its poster lives in
                # context variables of the handler that kicks first, which a bare thread
                # would not see (LookupError: settings_var).
                context = contextvars.copy_context()
                self._thread = threading.Thread(
                    target=context.run,
                    args=(self._loop,),
                    name="trainwright-gang-gate",
                    daemon=True,
                )
                self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    # The pass ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(GATE_INTERVAL_SECONDS)
            if self._stopped.is_set():
                return
            time.sleep(GATE_DEBOUNCE_SECONDS)
            self._wake.clear()
            if not self.waiting():
                continue
            try:
                self.run_pass()
            except Exception:  # the next kick or interval tries again
                logger.exception("gang admission pass failed")

    def run_pass(self) -> dict[tuple[str, str], Verdict]:
        """Decide every waiting gang from one listing; release those that fit."""
        with self._pass_lock:
            nodes, pods = self._kube.nodes_and_pods(max_age_seconds=0.0)
            with self._lock:
                waiting = list(self._waiting.values())
                reserved = self._unseen_released(pods)
            verdicts = decide(waiting, free_devices(nodes, pods, reserved))
            changed: list[tuple[str, str]] = []
            for gang in waiting:
                verdict = verdicts[gang.key]
                with self._lock:
                    if self._waiting.get(gang.key) != gang:
                        continue  # forgotten meanwhile
                    # A released gang's reconcile comes with its Job's event.
                    if self._verdicts.get(gang.key) != verdict and not verdict.admitted:
                        changed.append(gang.key)
                    self._verdicts[gang.key] = verdict
                if verdict.admitted:
                    try:
                        self._release(gang)
                    except Exception:  # its Job deleted meanwhile: the next reconcile says
                        logger.exception("releasing the Job of TrainingJob %s/%s failed", *gang.key)
                        self.forget(*gang.key)
        for namespace, name in changed:
            try:
                self._changed(namespace, name)
            except Exception:
                logger.exception(
                    "TrainingJob %s/%s: reconcile after admission failed", namespace, name
                )
        return verdicts

    def _release(self, gang: Gang) -> None:
        self._kube.set_job_suspend(gang.namespace, gang.job_name, False)
        logger.info(
            "TrainingJob %s/%s: released Job %s: %d pod(s) x %d %s fit on free devices",
            gang.namespace,
            gang.name,
            gang.job_name,
            gang.pods,
            gang.devices_per_pod,
            gang.gpu_type,
        )
        with self._lock:
            self._waiting.pop(gang.key, None)
            self._released[gang.key] = (gang, self._clock())

    def _unseen_released(self, pods: Sequence[Mapping[str, Any]]) -> list[Gang]:
        """Gangs released moments ago whose pods the listing does not show yet."""
        seen: dict[tuple[str, str], int] = {}
        for pod in pods:
            metadata = pod.get("metadata") or {}
            job = (metadata.get("labels") or {}).get(JOB_NAME_LABEL)
            if job:
                key = (str(metadata.get("namespace")), str(job))
                seen[key] = seen.get(key, 0) + 1
        now = self._clock()
        unseen: list[Gang] = []
        for key, (gang, released_at) in list(self._released.items()):
            missing = gang.pods - seen.get((gang.namespace, gang.job_name), 0)
            if missing <= 0 or now - released_at > RELEASE_GRACE_SECONDS:
                del self._released[key]
                continue
            unseen.append(dataclasses.replace(gang, pods=missing))
        return unseen


# Kueue objects -------------------------------------------------------------------------------


def missing_queue_message(kube: Kube, namespace: str, queue: str) -> str | None:
    """One sentence when the LocalQueue ``spec.queue`` names does not exist; None if it does."""
    if kube.get_child("LocalQueue", namespace, queue) is not None:
        return None
    return (
        f"spec.queue names LocalQueue {queue}, which does not exist in namespace {namespace} "
        "(or Kueue is not installed); create it or change spec.queue (docs/queues.md)."
    )


def find_workload(kube: Kube, namespace: str, job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Workload Kueue made for a trainer Job (by its ``kueue.x-k8s.io/job-uid`` label)."""
    uid = (job.get("metadata") or {}).get("uid")
    if not uid:
        return None
    found = kube.list_children("Workload", namespace, f"{JOB_UID_LABEL}={uid}")
    return found[0] if found else None


def set_workload_active(
    kube: Kube, namespace: str, workload: Mapping[str, Any], active: bool
) -> None:
    """Deactivate (spec.suspend) or reactivate a Workload: Kueue's own way to stop an
    admitted job, which suspending its Job directly would fight (Kueue restarts it)."""
    if workload_is_active(workload) != active:
        name = str(workload["metadata"]["name"])
        kube.merge_patch_child("Workload", namespace, name, {"spec": {"active": active}})
