"""Probes: NVML mapping (through a fake NVML module built on pynvml's own types), CPU capacity."""

from __future__ import annotations

import math

import pynvml
import pytest

from inference.pool import (
    CPU_CAPACITY_ENV,
    CpuProbe,
    FakeProbe,
    NvmlProbe,
    assess_health,
    decode_clock_event_reasons,
    default_probe,
    parse_cpu_capacity,
)
from inference.pool.probe import CLOCK_EVENT_REASONS

GiB = 2**30


class FakeNvml:
    """The slice of pynvml that NvmlProbe uses, with pynvml's own error class, constants and
    return structures, so a renamed function or a changed shape shows up as a failing test."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_ERROR_FUNCTION_NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED

    def __init__(self, gpus: list[dict], old_driver: bool = False, init_error: int | None = None) -> None:
        self.gpus = gpus
        self.old_driver = old_driver
        self.init_error = init_error
        self.initialised = 0

    def _fail(self, gpu: dict, what: str) -> None:
        if what in gpu.get("errors", {}):
            raise pynvml.NVMLError(gpu["errors"][what])

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: dict) -> str:
        self._fail(handle, "name")
        return handle["name"]

    def nvmlDeviceGetMemoryInfo(self, handle: dict):
        self._fail(handle, "memory")
        return pynvml.c_nvmlMemory_t(total=handle["total"], free=handle["free"], used=handle["total"] - handle["free"])

    def nvmlDeviceGetUtilizationRates(self, handle: dict):
        self._fail(handle, "utilization")
        return pynvml.c_nvmlUtilization_t(gpu=handle["util"], memory=10)

    def nvmlDeviceGetTemperature(self, handle: dict, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._fail(handle, "temperature")
        return handle["temp"]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: dict) -> int:
        if self.old_driver:  # what pynvml raises when the driver lacks the symbol
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        self._fail(handle, "reasons")
        return handle["reasons"]

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: dict) -> int:
        self._fail(handle, "reasons")
        return handle["reasons"]


def gpu(reasons: int = 0, temp: int = 50, **kw) -> dict:
    return {"name": "NVIDIA H100 80GB HBM3", "total": 80 * GiB, "free": 70 * GiB, "util": 35,
            "temp": temp, "reasons": reasons, **kw}


def test_fake_nvml_matches_real_pynvml_names():
    used = [n for n in dir(FakeNvml) if n.startswith("nvml") or n.startswith("NVML")]
    assert used and all(hasattr(pynvml, n) for n in used)


def test_reason_table_matches_pynvml_constants():
    named = {
        "gpu_idle": pynvml.nvmlClocksEventReasonGpuIdle,
        "applications_clocks_setting": pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
        "sw_power_cap": pynvml.nvmlClocksEventReasonSwPowerCap,
        "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
        "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
        "sw_thermal_slowdown": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
        "hw_thermal_slowdown": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
        "hw_power_brake_slowdown": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
        "display_clock_setting": pynvml.nvmlClocksEventReasonDisplayClockSetting,
    }
    assert {v: k for k, v in named.items()} == CLOCK_EVENT_REASONS
    assert sum(CLOCK_EVENT_REASONS) == pynvml.nvmlClocksEventReasonAll
    assert decode_clock_event_reasons(0) == []
    assert decode_clock_event_reasons(0x200 | 0x1) == ["gpu_idle", "unknown_0x200"]


def test_nvml_probe_maps_a_healthy_gpu():
    nvml = FakeNvml([gpu(reasons=pynvml.nvmlClocksEventReasonGpuIdle | pynvml.nvmlClocksEventReasonSwPowerCap)])
    probe = NvmlProbe(nvml)
    [d] = probe.devices()
    assert (d.id, d.kind, d.name, d.capacity) == ("cuda:0", "cuda", "NVIDIA H100 80GB HBM3", 1.0)
    assert (d.memory_total, d.memory_free) == (80 * GiB, 70 * GiB)
    assert d.utilization == pytest.approx(0.35) and d.temperature_c == 50.0
    assert d.throttle_reasons == ["gpu_idle", "sw_power_cap"] and d.healthy
    probe.close()
    probe.close()
    assert nvml.initialised == 0


@pytest.mark.parametrize("bit", [
    pynvml.nvmlClocksEventReasonHwThermalSlowdown, pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown, pynvml.nvmlClocksEventReasonHwSlowdown,
])
def test_nvml_probe_drains_on_slowdown(bit):
    [d] = NvmlProbe(FakeNvml([gpu(reasons=bit)])).devices()
    assert not d.healthy and decode_clock_event_reasons(bit) == d.throttle_reasons


def test_nvml_probe_drains_at_temperature_limit():
    devices = NvmlProbe(FakeNvml([gpu(temp=84), gpu(temp=85)]), max_temperature_c=85).devices()
    assert [d.healthy for d in devices] == [True, False]
    assert [d.id for d in devices] == ["cuda:0", "cuda:1"]


def test_nvml_probe_falls_back_to_throttle_reasons_on_old_drivers():
    nvml = FakeNvml([gpu(reasons=pynvml.nvmlClocksThrottleReasonHwThermalSlowdown)], old_driver=True)
    [d] = NvmlProbe(nvml).devices()
    assert d.throttle_reasons == ["hw_thermal_slowdown"] and not d.healthy


def test_nvml_probe_tolerates_unsupported_queries():
    unsupported = pynvml.NVML_ERROR_NOT_SUPPORTED
    nvml = FakeNvml([gpu(errors={"utilization": unsupported, "temperature": unsupported, "reasons": unsupported})])
    [d] = NvmlProbe(nvml).devices()
    assert d.utilization is None and d.temperature_c is None and d.throttle_reasons == [] and d.healthy


def test_nvml_probe_drains_a_device_it_cannot_read():
    nvml = FakeNvml([gpu(), gpu(errors={"memory": pynvml.NVML_ERROR_GPU_IS_LOST})])
    ok, lost = NvmlProbe(nvml).devices()
    assert ok.healthy and not lost.healthy
    assert lost.throttle_reasons[0].startswith("query_failed")


def test_nvml_probe_raises_when_nvml_cannot_initialise():
    with pytest.raises(pynvml.NVMLError):
        NvmlProbe(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))


@pytest.mark.parametrize("raw,expected", [(None, 1.0), ("", 1.0), ("0", 0.0), ("2.5", 2.5), (" 4 ", 4.0)])
def test_cpu_capacity_parsing(raw, expected):
    assert parse_cpu_capacity(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", "1,5"])
def test_cpu_capacity_rejects_bad_values_clearly(raw):
    with pytest.raises(ValueError, match=CPU_CAPACITY_ENV):
        parse_cpu_capacity(raw)


def test_cpu_probe_reads_the_environment(monkeypatch):
    monkeypatch.setenv(CPU_CAPACITY_ENV, "0.5")
    [d] = CpuProbe().devices()
    assert (d.id, d.kind, d.capacity, d.healthy) == ("cpu", "cpu", 0.5, True)
    assert d.memory_total > 0 and 0 <= d.utilization <= 1
    monkeypatch.setenv(CPU_CAPACITY_ENV, "lots")
    with pytest.raises(ValueError, match="lots"):
        CpuProbe()
    with pytest.raises(ValueError):
        CpuProbe(math.nan)


def test_default_probe_without_gpu_is_the_cpu_device(monkeypatch):
    # This machine has no NVIDIA driver: NVML fails to initialise and the CPU device is used.
    # (On a GPU machine the NVML branch is taken instead; both are valid outcomes.)
    monkeypatch.setenv(CPU_CAPACITY_ENV, "3")
    probe = default_probe()
    if isinstance(probe, NvmlProbe):
        assert probe.device_count() >= 1
        probe.close()
    else:
        assert [d.capacity for d in probe.devices()] == [3.0]


def test_assess_health_and_fake_probe_follow_the_same_rule():
    assert assess_health([], 84.9) and not assess_health([], 85.0) and assess_health(["gpu_idle"], None)
    probe = FakeProbe.gpus(2)
    assert probe.set("cuda:1", throttle_reasons=["hw_slowdown"]).healthy is False
    assert probe.set("cuda:1", throttle_reasons=[]).healthy is True
    assert probe.set("cuda:1", healthy=False).healthy is False  # explicit override
    probe.remove("cuda:0")
    assert [d.id for d in probe.devices()] == ["cuda:1"]
