"""Device probes: what compute this node has, and whether each device may take new work.

A probe answers one question, `devices()`, with a list of `DeviceInfo`. Three kinds exist:

- `NvmlProbe` reads NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py). The NVML module
  is injectable so the bitmask mapping and error handling are tested without a GPU.
- `CpuProbe` is the GPU-less fallback: one CPU device whose capacity (in device-equivalents) comes
  from NEXTFRAME_CPU_CAPACITY (default 1.0; 0 admits nothing).
- `FakeProbe` is scriptable for tests: devices, temperatures and throttle reasons are set at will.
- `FileProbe` reads the same from a JSON file at every call: a FakeProbe for another process (a real
  node started by a test, NEXTFRAME_DEVICES_FILE), driven by rewriting the file.

`healthy` is the probe's verdict: False when the device is being slowed down by heat or a power
brake (its frame deadlines would be missed), when it is at or above the temperature limit, or when
it could not be queried. The pool drains unhealthy devices: no new sessions, existing ones go on.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Literal, Protocol

CPU_CAPACITY_ENV = "NEXTFRAME_CPU_CAPACITY"
DEFAULT_MAX_TEMPERATURE_C = 85.0

# NVML clock-event (formerly "throttle") reason bits. The layout is the same for
# nvmlDeviceGetCurrentClocksEventReasons and the older nvmlDeviceGetCurrentClocksThrottleReasons.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

# Reasons that mean "this device is being slowed down against our will": new sessions would miss
# their frame deadlines. Idle, application clock settings, sync boost and the software power cap
# are normal operation (a busy GPU sits at its power cap all day), so they do not drain.
DRAINING_REASONS = frozenset(
    {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)


@dataclass(frozen=True)
class DeviceInfo:
    """One device as the probe sees it right now."""

    id: str  # unique on this node: "cuda:0", "cpu"
    kind: Literal["cuda", "cpu"]
    name: str
    capacity: float  # device-equivalents this device offers to the pool
    memory_total: int  # bytes
    memory_free: int  # bytes
    utilization: float | None  # 0..1, None when unknown
    temperature_c: float | None
    throttle_reasons: list[str] = field(default_factory=list)
    healthy: bool = True


def assess_health(
    throttle_reasons: list[str],
    temperature_c: float | None,
    max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C,
) -> bool:
    """The drain rule: no slowdown reason and below the temperature limit."""
    if any(r in DRAINING_REASONS or r.startswith("query_failed") for r in throttle_reasons):
        return False
    if temperature_c is not None and temperature_c >= max_temperature_c:
        return False
    return True


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event bitmask (unknown bits as 'unknown_0x...')."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_{unknown:#x}")
    return names


class Probe(Protocol):
    """Anything that can list this node's devices."""

    def devices(self) -> list[DeviceInfo]: ...


def _nvml_error_value(nvml: Any, exc: BaseException) -> int | None:
    return getattr(exc, "value", None) if isinstance(exc, nvml.NVMLError) else None


class NvmlProbe:
    """NVIDIA GPUs through NVML. Raises (at construction) when NVML cannot initialise."""

    def __init__(
        self,
        nvml: ModuleType | Any | None = None,
        max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C,
        capacity_per_gpu: float = 1.0,
    ) -> None:
        if nvml is None:
            import pynvml  # imported lazily: nodes without a GPU never load libnvidia-ml

            nvml = pynvml
        # The NVML binding (or a test's fake of it) is a dynamic module: its calls are typed Any.
        self._nvml: Any = nvml
        self._max_temperature_c = max_temperature_c
        self._capacity = capacity_per_gpu
        # NVML calls are thread-safe, but init/shutdown are reference counted; one lock keeps
        # close() from racing a devices() call on another thread.
        self._lock = threading.Lock()
        self._nvml.nvmlInit()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._nvml.nvmlShutdown()

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount())

    def devices(self) -> list[DeviceInfo]:
        with self._lock:
            if self._closed:
                raise RuntimeError("NvmlProbe is closed")
            return [self._read(i) for i in range(self.device_count())]

    def _clock_event_mask(self, handle: Any) -> int:
        nvml = self._nvml
        current = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if current is not None:
            try:
                return int(current(handle))
            except nvml.NVMLError as exc:
                # Drivers older than the "clocks event" rename lack the symbol: fall back.
                if _nvml_error_value(nvml, exc) != nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                    raise
        return int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))

    def _read(self, index: int) -> DeviceInfo:
        nvml = self._nvml
        device_id = f"cuda:{index}"
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):  # older bindings return bytes
                name = name.decode(errors="replace")
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError as exc:
            # A device we cannot even read (fell off the bus, driver reset) takes no new work.
            return DeviceInfo(device_id, "cuda", "unknown", self._capacity, 0, 0, None, None,
                              [f"query_failed: {exc}"], healthy=False)
        reasons: list[str] = []
        utilization = temperature = None
        try:
            utilization = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        except nvml.NVMLError as exc:
            if _nvml_error_value(nvml, exc) != nvml.NVML_ERROR_NOT_SUPPORTED:
                reasons.append(f"query_failed: utilization: {exc}")
        try:
            temperature = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        except nvml.NVMLError as exc:
            if _nvml_error_value(nvml, exc) != nvml.NVML_ERROR_NOT_SUPPORTED:
                reasons.append(f"query_failed: temperature: {exc}")
        try:
            reasons = decode_clock_event_reasons(self._clock_event_mask(handle)) + reasons
        except nvml.NVMLError as exc:
            # Not supported (some virtualised GPUs): no throttle information, not a failure.
            if _nvml_error_value(nvml, exc) != nvml.NVML_ERROR_NOT_SUPPORTED:
                reasons.append(f"query_failed: clock events: {exc}")
        return DeviceInfo(
            id=device_id,
            kind="cuda",
            name=str(name),
            capacity=self._capacity,
            memory_total=int(mem.total),
            memory_free=int(mem.free),
            utilization=utilization,
            temperature_c=temperature,
            throttle_reasons=reasons,
            healthy=assess_health(reasons, temperature, self._max_temperature_c),
        )


def parse_cpu_capacity(raw: str | None) -> float:
    """NEXTFRAME_CPU_CAPACITY -> device-equivalents. Unset/empty means 1.0; bad values raise."""
    if raw is None or raw.strip() == "":
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{CPU_CAPACITY_ENV} must be a finite number >= 0 of device-equivalents "
            f"(e.g. 1.0; 0 admits nothing), got {raw!r}"
        )
    return value


class CpuProbe:
    """The GPU-less node: one CPU device of configured capacity."""

    def __init__(self, capacity: float | None = None) -> None:
        if capacity is None:
            capacity = parse_cpu_capacity(os.environ.get(CPU_CAPACITY_ENV))
        elif not math.isfinite(capacity) or capacity < 0:
            raise ValueError(f"CPU capacity must be a finite number >= 0, got {capacity!r}")
        self.capacity = float(capacity)

    def devices(self) -> list[DeviceInfo]:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        free = page * os.sysconf("SC_AVPHYS_PAGES")
        cores = os.cpu_count() or 1
        load = min(1.0, os.getloadavg()[0] / cores)
        return [DeviceInfo("cpu", "cpu", f"cpu x{cores}", self.capacity, total, free, load, None)]


class FakeProbe:
    """A scriptable probe for tests: set devices and their condition at will."""

    def __init__(
        self, devices: list[DeviceInfo] | None = None, max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C
    ) -> None:
        self._devices = {d.id: d for d in devices or []}
        self._max_temperature_c = max_temperature_c

    @classmethod
    def gpus(cls, count: int, capacity: float = 1.0, memory_total: int = 80 * 2**30) -> FakeProbe:
        return cls([
            DeviceInfo(f"cuda:{i}", "cuda", "Fake GPU", capacity, memory_total, memory_total, 0.0, 40.0)
            for i in range(count)
        ])

    def devices(self) -> list[DeviceInfo]:
        return list(self._devices.values())

    def set_devices(self, devices: list[DeviceInfo]) -> None:
        self._devices = {d.id: d for d in devices}

    def set(self, device_id: str, **changes: Any) -> DeviceInfo:
        """Change fields of one device; `healthy` follows the drain rule unless given explicitly."""
        device = replace(self._devices[device_id], **changes)
        if "healthy" not in changes:
            device = replace(device, healthy=assess_health(
                device.throttle_reasons, device.temperature_c, self._max_temperature_c))
        self._devices[device_id] = device
        return device

    def remove(self, device_id: str) -> None:
        del self._devices[device_id]


class FileProbe:
    """Devices described in a JSON file, re-read at every `devices()` call: simulated GPUs for a real
    node process where none exists (the multi-node tests, a local cluster). The drain rule is the
    real one (`assess_health`), so writing a slowdown reason or a temperature into the file drains
    the device at the node's next refresh exactly as NVML reporting it would.

    The file: ``{"devices": [{"id": "gpu0", "kind": "cpu", "name": "...", "capacity": 1.0,
    "memory_total": 0, "temperature_c": 40, "throttle_reasons": []}]}`` (only `id` is required;
    `kind` is "cpu" by default: the engines run on the CPU whatever the label says). A missing or
    malformed file raises ValueError naming it (the refresh fails and is logged; the node's last
    registration then expires within its TTL).
    """

    def __init__(self, path: str | os.PathLike[str], max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C) -> None:
        self.path = os.fspath(path)
        self._max_temperature_c = max_temperature_c

    def devices(self) -> list[DeviceInfo]:
        import json

        try:
            with open(self.path, encoding="utf-8") as f:
                entries = json.load(f)["devices"]
            return [self._device(entry) for entry in entries]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"device file {self.path}: {exc}") from exc

    def _device(self, entry: dict[str, Any]) -> DeviceInfo:
        reasons = [str(r) for r in entry.get("throttle_reasons", [])]
        temperature = entry.get("temperature_c")
        temperature = None if temperature is None else float(temperature)
        capacity = float(entry.get("capacity", 1.0))
        if not math.isfinite(capacity) or capacity < 0:
            raise ValueError(f"capacity of {entry['id']!r} must be a finite number >= 0")
        kind = entry.get("kind", "cpu")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"kind of {entry['id']!r} must be 'cpu' or 'cuda'")
        memory = int(entry.get("memory_total", 0))
        return DeviceInfo(
            id=str(entry["id"]), kind=kind, name=str(entry.get("name", entry["id"])), capacity=capacity,
            memory_total=memory, memory_free=int(entry.get("memory_free", memory)),
            utilization=entry.get("utilization"), temperature_c=temperature, throttle_reasons=reasons,
            healthy=assess_health(reasons, temperature, self._max_temperature_c),
        )


def default_probe() -> Probe:
    """NVML when it initialises and finds at least one GPU; otherwise the CPU device."""
    try:
        probe = NvmlProbe()
        if probe.device_count() >= 1:
            return probe
        probe.close()
    except Exception:  # no library, no driver, no device: all mean "no GPU here"
        pass
    return CpuProbe()
