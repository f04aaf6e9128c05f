"""Exit codes of the trainer: the contract between a trainer pod and the operator.

This module is their one home: the trainer's errors (``errors.py``), the pod's
launcher (``trainwright.resources.launcher``), the Job's ``podFailurePolicy``
(``trainwright.resources.trainer``), the operator's decisions after a failure
(``trainwright.operator.transitions``) and the docs all read them from here.

==========  =====  =========================================================
name        code   operator's action
==========  =====  =========================================================
SUCCESS        0   the rank finished; the job succeeds when all ranks do
CONFIG_ERROR  64   permanent: the configuration is invalid; fail, no retry
DATA_ERROR    65   permanent: the dataset is missing or unusable; fail
RETRYABLE     75   transient (preempted, SIGTERM after a checkpoint, lost
                   peer); restart all ranks, resume from the checkpoint
NEEDS_REPLAN  76   out of memory even after the OOM ladder; re-plan with
                   more memory per sample (more GPUs or another strategy)
DIVERGED      79   permanent: the loss kept spiking after every rollback
                   (guards.max_rollbacks); a lower learning rate or cleaner
                   data is needed, not a retry
(other)            a crash (segfault, kill -9, 137 = OOM-killed by the
                   kernel): treated as retryable up to the restart limit
==========  =====  =========================================================

The numbers follow BSD ``sysexits.h`` where one fits (EX_USAGE=64,
EX_DATAERR=65, EX_TEMPFAIL=75) so shells and logs read them naturally; 76 and
79 have no sysexits meaning that fits (79 is just past the sysexits range, so
it cannot be read as EX_NOPERM or EX_CONFIG).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    SUCCESS = 0
    CONFIG_ERROR = 64
    DATA_ERROR = 65
    RETRYABLE = 75
    NEEDS_REPLAN = 76
    DIVERGED = 79

    @property
    def permanent(self) -> bool:
        return self in PERMANENT_EXIT_CODES


# Fail the Job at once, no restart: retrying the same spec ends the same way.
PERMANENT_EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode.CONFIG_ERROR,
    ExitCode.DATA_ERROR,
    ExitCode.DIVERGED,
)
# Fail the Job at once; the operator re-plans with more memory per sample.
REPLAN_EXIT_CODES: tuple[ExitCode, ...] = (ExitCode.NEEDS_REPLAN,)
# Every code the trainer exits with on purpose (the launcher passes these through).
TRAINER_EXIT_CODES: tuple[ExitCode, ...] = tuple(c for c in ExitCode if c is not ExitCode.SUCCESS)
