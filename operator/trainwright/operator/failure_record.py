"""The cluster's node-failure record, kept across operator restarts.

``checkpoint.intervalSteps: auto`` sizes the checkpoint interval from the GPU nodes' MTBF
the operator observed (node_failures.ClusterFailures). That record lived in memory, so
every operator restart (an upgrade, a rescheduled pod) went back to the prior. It is saved
in the ConfigMap ``trainwright-node-failures`` (key ``record.json``: failures, GPU-seconds
watched while Ready, when) in the operator's calibration namespace: loaded once at
start-up, then written when a failure is observed (checked every ``CHECK_SECONDS``) and
every ``SAVE_SECONDS`` otherwise. One writer: a standby replica (peering) sees no node
events and writes nothing.
A store that cannot be read or written (RBAC, the API server away) is logged and the
record stays in memory, as before.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from trainwright.operator.kube import Kube
from trainwright.operator.node_failures import ClusterFailures, FailureRecord

STORE_NAME = "trainwright-node-failures"
STORE_KEY = "record.json"
SAVE_SECONDS = 600.0
CHECK_SECONDS = 10.0

logger = logging.getLogger(__name__)


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class FailureRecordStore:
    """Loads and saves one :class:`ClusterFailures` in a ConfigMap."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        failures: ClusterFailures,
        *,
        now: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self.kube, self.namespace, self.failures, self.now = kube, namespace, failures, now
        self._saved_failures: int | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{STORE_NAME}"

    def load(self) -> FailureRecord | None:
        """Add the saved record to the in-memory one; the record, or None when none is saved
        (or it cannot be read: then the prior applies until failures are seen)."""
        try:
            body = self.kube.request("GET", self._path)
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("node-failure record %s not read: %s", STORE_NAME, exc.reason)
            return None
        try:
            document: Any = json.loads(((body.get("data") or {}).get(STORE_KEY)) or "{}")
            earlier = FailureRecord(int(document["failures"]), float(document["gpuSeconds"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("node-failure record %s is malformed; starting afresh", STORE_NAME)
            return None
        self.failures.restore(earlier)
        logger.info(
            "node-failure record: %d failure(s) in %.0f GPU-hours from earlier runs",
            earlier.failures,
            earlier.gpu_seconds / 3600,
        )
        return earlier

    def save(self) -> bool:
        """Write the current record (create or replace). True if written. A process that has
        seen no node event (a standby replica, paused by peering) writes nothing: it would
        put back what it loaded over what the active replica has seen since."""
        if not self.failures.watching():
            return False
        now = self.now()
        record = self.failures.record(now)
        data = {
            STORE_KEY: json.dumps(
                {
                    "failures": record.failures,
                    "gpuSeconds": round(record.gpu_seconds, 1),
                    "updated": now.isoformat(),
                }
            )
        }
        try:
            try:
                self.kube.request(
                    "PATCH",
                    self._path,
                    body={"data": data},
                    content_type="application/merge-patch+json",
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self.kube.request(
                    "POST",
                    self._path.rsplit("/", 1)[0],
                    body={
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": STORE_NAME,
                            "labels": {"app.kubernetes.io/part-of": "trainwright"},
                        },
                        "data": data,
                    },
                )
        except ApiException as exc:
            logger.warning("node-failure record %s not written: %s", STORE_NAME, exc.reason)
            return False
        self._saved_failures = record.failures
        return True

    def start(self) -> None:
        """Load, then save on a new failure and every ``SAVE_SECONDS``, until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="trainwright-mtbf", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        self.load()
        since_save = 0.0
        while not self._stopped.wait(CHECK_SECONDS):
            since_save += CHECK_SECONDS
            failures = self.failures.record(self.now()).failures
            due = since_save >= SAVE_SECONDS or failures != self._saved_failures
            if due and self.save():
                since_save = 0.0
        self.save()
