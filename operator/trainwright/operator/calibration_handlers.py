"""Records a Succeeded TrainingJob in the calibration store (operator.calibration_store).

A Running one is recorded from its progress reads (trainingjob.refresh_progress) once
its tokens/s is steady; this handler records the final figure when it has Succeeded,
also for runs too short to have been recorded while running. The store skips a job
whose figure it already holds, so the handler firing again (a restart, a later event)
writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from trainwright.api.v1alpha1 import GROUP, VERSION
from trainwright.operator.calibration_store import record_from_status
from trainwright.operator.context import context_from_memo
from trainwright.operator.status import Phase

PLURAL = "trainingjobs"
logger = logging.getLogger(__name__)


def _succeeded(status: Any, **_: Any) -> bool:
    return bool(status.get("phase") == Phase.SUCCEEDED)


@kopf.on.event(GROUP, VERSION, PLURAL, when=_succeeded)
def record_succeeded(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Record a Succeeded TrainingJob's observed tokens/s and peak memory, once."""
    context = context_from_memo(memo)
    key = (str(body.metadata.namespace), str(body.metadata.name), str(body.metadata.uid))
    if context.calibration_store is None or key in context.calibration_recorded:
        return
    raw = dict(body)
    if record_from_status(context.calibration_store, raw, now=context.now(), finished=True):
        logger.info("calibration store: recorded %s/%s", key[0], key[1])
    context.calibration_recorded.add(key)
