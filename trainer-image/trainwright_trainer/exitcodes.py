"""Exit codes of the trainer: the contract between a trainer pod and the operator.

The operator reads a failed pod's exit code to decide what to do next:

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
(other)            a crash (segfault, kill -9, 137 = OOM-killed by the
                   kernel): treated as retryable up to the restart limit
==========  =====  =========================================================

The numbers follow BSD ``sysexits.h`` where one fits (EX_USAGE=64,
EX_DATAERR=65, EX_TEMPFAIL=75) so shells and logs read them naturally.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    SUCCESS = 0
    CONFIG_ERROR = 64
    DATA_ERROR = 65
    RETRYABLE = 75
    NEEDS_REPLAN = 76

    @property
    def permanent(self) -> bool:
        return self in (ExitCode.CONFIG_ERROR, ExitCode.DATA_ERROR)


PERMANENT_EXIT_CODES: tuple[int, ...] = (ExitCode.CONFIG_ERROR, ExitCode.DATA_ERROR)
