"""How often to checkpoint (``checkpoint.intervalSteps: auto``): Young/Daly.

A checkpoint every ``tau`` seconds of training costs ``C / tau`` of the time in saves
and, on a failure, half an interval of lost work on average (``tau / 2M``). The
first-order optimum (Young 1974; Daly 2006, "A higher order estimate of the optimum
checkpoint interval for restart dumps") is::

    tau = sqrt(2 * C * M)        C: seconds to save one checkpoint
                                 M: mean time between failures of the job, seconds

and in optimizer steps ``round(tau / step_seconds)``, at least 1.

The job's MTBF: a node or GPU failure stops the whole gang, so with failures
independent per GPU a job on ``n`` GPUs fails ``n`` times as often as one GPU. The
per-GPU rate starts from a prior and is updated with the failures observed (a
Gamma-Poisson update with the prior worth one failure)::

    rate per GPU-second = (1 + failures) / (prior GPU-seconds + observed GPU-seconds)
    M = 1 / (n * rate)

The prior is Meta's Llama 3 pre-training (Dubey et al. 2024, section 3.3.4): 419
unexpected interruptions in a 54-day snapshot on 16,384 H100 GPUs, that is one per
16,384 x 54 x 24 / 419 = 50,677 GPU-hours.

Pure functions: no I/O.
"""

from __future__ import annotations

import dataclasses
import math

# Llama 3 (Dubey et al. 2024, 3.3.4): 419 unexpected interruptions, 54 days, 16,384 GPUs.
PRIOR_GPU_MTBF_HOURS = 16_384 * 54 * 24 / 419


def young_daly_seconds(save_seconds: float, mtbf_seconds: float) -> float:
    """The optimal seconds of training between two checkpoints: sqrt(2 C M)."""
    if save_seconds < 0 or mtbf_seconds <= 0:
        raise ValueError("save_seconds must be >= 0 and mtbf_seconds > 0")
    return math.sqrt(2.0 * save_seconds * mtbf_seconds)


def interval_steps(save_seconds: float, mtbf_seconds: float, step_seconds: float) -> int:
    """Young/Daly's interval in optimizer steps (at least one)."""
    if step_seconds <= 0:
        raise ValueError("step_seconds must be > 0")
    return max(1, round(young_daly_seconds(save_seconds, mtbf_seconds) / step_seconds))


def job_mtbf_seconds(
    num_gpus: int,
    *,
    failures: int = 0,
    observed_gpu_seconds: float = 0.0,
    prior_gpu_mtbf_hours: float = PRIOR_GPU_MTBF_HOURS,
) -> float:
    """The job's mean time between failures: the prior per-GPU rate updated with the
    failures seen over ``observed_gpu_seconds`` (GPU-seconds of running), over ``num_gpus``."""
    if num_gpus <= 0 or failures < 0 or observed_gpu_seconds < 0:
        raise ValueError("num_gpus must be > 0; failures and observed_gpu_seconds >= 0")
    rate = (1 + failures) / (prior_gpu_mtbf_hours * 3600.0 + observed_gpu_seconds)
    return 1.0 / (num_gpus * rate)


@dataclasses.dataclass(frozen=True)
class AutoInterval:
    """The interval chosen for ``intervalSteps: auto`` and what it came from."""

    steps: int
    save_seconds: float
    step_seconds: float
    mtbf_seconds: float

    @property
    def message(self) -> str:
        return (
            f"Checkpoint every {self.steps} step(s): sqrt(2 x {self.save_seconds:.3g} s save x "
            f"{self.mtbf_seconds / 3600:.4g} h MTBF) / {self.step_seconds:.3g} s per step "
            "(Young/Daly)."
        )


def auto_interval(
    *,
    save_seconds: float,
    step_seconds: float,
    num_gpus: int,
    failures: int = 0,
    observed_gpu_seconds: float = 0.0,
) -> AutoInterval:
    """Young/Daly from a measured save time and step time and the job's MTBF."""
    mtbf = job_mtbf_seconds(num_gpus, failures=failures, observed_gpu_seconds=observed_gpu_seconds)
    steps = interval_steps(save_seconds, mtbf, step_seconds)
    return AutoInterval(steps, save_seconds, step_seconds, mtbf)
