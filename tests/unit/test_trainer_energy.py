"""Each rank's GPU energy from NVML's cumulative counter (trainwright_trainer.energy)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from trainwright_trainer import energy
from trainwright_trainer.energy import GpuEnergyMeter


class _FakeNvml(types.ModuleType):
    """NVML as pynvml exposes it: a counter in millijoules since the driver loaded."""

    class NVMLError(Exception):
        pass

    def __init__(self, readings: list[int]) -> None:
        super().__init__("pynvml")
        self.readings = readings

    def nvmlInit(self) -> None:
        return None

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if not self.readings:
            raise self.NVMLError("GPU is lost")
        return self.readings.pop(0)


def test_the_meter_reports_joules_drawn_since_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    # The driver has counted 5,000 J before the trainer starts; then 1,250.5 J more.
    fake = _FakeNvml([5_000_000, 6_250_500])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(energy, "_nvml_handle", lambda pynvml, device: "gpu-0")
    meter = GpuEnergyMeter(types.SimpleNamespace(type="cuda", index=0))
    assert meter.measuring
    assert meter.joules() == pytest.approx(1250.5)
    assert meter.joules() is None  # a read that fails is not measured, never a guess


def test_no_gpu_or_no_counter_measures_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GpuEnergyMeter(types.SimpleNamespace(type="cpu", index=None)).joules() is None
    fake = _FakeNvml([])  # a GPU without the counter (pre-Volta) fails the first read
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(energy, "_nvml_handle", lambda pynvml, device: "gpu-0")
    meter = GpuEnergyMeter(types.SimpleNamespace(type="cuda", index=0))
    assert not meter.measuring and meter.joules() is None
