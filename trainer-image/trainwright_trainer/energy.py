"""The energy this rank's GPU has drawn, from NVML's cumulative energy counter.

Every rank meters its own device (``nvmlDeviceGetTotalEnergyConsumption``: millijoules
since the driver loaded, Volta and newer), so a run's energy is the sum over ranks; the
training step's existing all-reduce carries each rank's reading to rank 0, which
reports it in the progress (``gpu_energy_joules``) for the operator's
``status.usage``. The meter counts from its own start (model loading included), per
process: the operator adds up the attempts. Without a GPU, a driver or the counter
(CPU ranks, pre-Volta GPUs) it reads None and the operator estimates the energy from
the GPU's TDP instead (:mod:`trainwright.planner.carbon`); never a made-up figure.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["GpuEnergyMeter"]


class GpuEnergyMeter:
    """Joules one CUDA device has drawn since the meter was created."""

    def __init__(self, device: Any) -> None:
        self._handle: Any = None
        self._start_millijoules = 0
        if getattr(device, "type", None) != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = _nvml_handle(pynvml, device)
            self._start_millijoules = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception as exc:  # no driver, or a GPU without the counter: not measured
            log.info("GPU energy not measured on %s: %s", device, exc)
            self._handle = None

    @property
    def measuring(self) -> bool:
        return self._handle is not None

    def joules(self) -> float | None:
        """Energy since the start, in joules; None when this device is not metered."""
        if self._handle is None:
            return None
        import pynvml

        try:
            now = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except pynvml.NVMLError:
            return None
        return (now - self._start_millijoules) / 1000.0


def _nvml_handle(pynvml: Any, device: Any) -> Any:
    """The NVML handle of torch's device: by UUID (NVML ignores CUDA_VISIBLE_DEVICES), else
    by index."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
    if uuid:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(
                uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
            )
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)
