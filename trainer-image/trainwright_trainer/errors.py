"""The trainer's errors: each one carries the exit code the operator acts on.

A ``TrainerError`` reaching ``__main__`` becomes one line on stderr and the
process exits with its ``exit_code`` (see :mod:`trainwright_trainer.exitcodes`).
Anything else is a crash, which the operator treats as retryable.

::

    TrainerError                 (message, exit_code)
    ├── ConfigError              64  permanent: the configuration is invalid
    ├── DataError                65  permanent: the dataset is missing or unusable
    ├── RetryableError           75  transient: preempted, lost peer; resume from a checkpoint
    ├── NeedsReplanError         76  out of memory after the OOM ladder; re-plan the job
    └── DivergedError            79  permanent: the loss kept spiking after every rollback

Messages are one sentence that names the field or file at fault and says
what is accepted, e.g. ``data.format: 'tsv' is not one of auto, text, ...``.
"""

from __future__ import annotations

from trainwright_trainer.exitcodes import ExitCode

__all__ = [
    "ConfigError",
    "DataError",
    "DivergedError",
    "NeedsReplanError",
    "RetryableError",
    "TrainerError",
]


class TrainerError(Exception):
    """An error the trainer reports as one line and an exit code."""

    default_exit_code: ExitCode = ExitCode.RETRYABLE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code if exit_code is not None else self.default_exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(TrainerError):
    """The configuration is invalid; retrying cannot help."""

    default_exit_code = ExitCode.CONFIG_ERROR


class DataError(TrainerError):
    """The dataset is missing, unreadable or has too many bad rows."""

    default_exit_code = ExitCode.DATA_ERROR


class RetryableError(TrainerError):
    """A transient failure: restart every rank and resume from the last checkpoint."""

    default_exit_code = ExitCode.RETRYABLE


class NeedsReplanError(TrainerError):
    """Out of memory even after the OOM ladder: the operator must re-plan the job."""

    default_exit_code = ExitCode.NEEDS_REPLAN


class DivergedError(TrainerError):
    """The loss kept spiking after ``guards.max_rollbacks`` rollbacks: the run diverges.

    Not a configuration error (the spec is valid) and not transient (a restart resumes
    from the same checkpoint at the same learning rate): the operator fails the run
    with its own reason and advice.
    """

    default_exit_code = ExitCode.DIVERGED
