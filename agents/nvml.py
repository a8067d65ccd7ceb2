"""The NVML sampler: this node's real GPUs (and MIG slices), one attributed sample per second.

Readings and units (NVIDIA's ``pynvml`` module, package nvidia-ml-py):

=====================================  ==========================  ========================
NVML call                              GpuSecond field             conversion
=====================================  ==========================  ========================
nvmlDeviceGetUtilizationRates          sm_util / mem_util          percent, as is
nvmlDeviceGetMemoryInfo                mem_used / mem_total        bytes, as is
nvmlDeviceGetPowerUsage                power_w                     mW / 1000
nvmlDeviceGetTotalEnergyConsumption    energy_j                    delta of the mJ counter
                                                                   since the last read / 1000
nvmlDeviceGetTemperature(GPU sensor)   temp_c                      Celsius, as is
nvmlDeviceGetComputeRunningProcesses   tenant / job / billing_cls  via :class:`Attributor`
=====================================  ==========================  ========================

Energy: the counter is cumulative, so a second's energy is the delta since the previous read,
divided by the seconds between them. Where there is no previous read (first second, after a
failed read), no counter (``NotSupported``), or the counter went backwards (driver reload, GPU
reset: flag ``counter_reset``), energy is power x 1 s and flagged ``energy_estimated``.

Failure policy (never stop the node for one GPU):

- A failing read zeroes its field (``temp_c``: null, since 0 °C is a real temperature) and
  flags the sample ``nvml_error``; the other readings of that GPU and the other GPUs go on.
- A lost GPU (every call fails, e.g. ``NVMLError_GpuIsLost``) keeps producing samples, all
  readings zero and flagged ``nvml_error``, still attributed from the allocation file. Its
  seconds were allocated, and they are part of the inventory: dropping them would hide both.
  Whether a tenant is credited for them is a billing decision made on the flag, downstream.
  The transition is logged once, not every second.
- MIG: with MIG enabled, each slice is sampled as its own sample (``gpu_uuid`` = parent,
  ``mig_uuid`` = slice) and the parent itself is not, since its seconds *are* its slices'
  seconds and sampling both would double-count. Slices usually answer ``NotSupported`` for
  utilization, power, energy and temperature: those fields are zero (null) and flagged.
  A MIG-enabled GPU without any slice is sampled as a whole, so its idle capacity shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from pydantic import ValidationError

from agents.attribution import Attributor
from agents.errors import AgentError
from agents.sampler import GpuInfo
from schemas.usage import (
    ENERGY_POWER_FACTOR,
    ENERGY_SLACK_J,
    MAX_MEMORY_BYTES,
    MAX_POWER_W,
    GpuSecond,
    SampleFlag,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class NvmlUnavailableError(AgentError, RuntimeError):
    """NVML cannot be used on this machine (no package, no driver, no permission)."""


@dataclass
class _Device:
    """One sampled device and the state carried from one second to the next."""

    info: GpuInfo
    handle: Any
    energy_mj: int | None = None  # last counter value read
    energy_ts: int | None = None  # the second it was read for
    energy_supported: bool = True  # False after NotSupported: stop asking every second
    failing: dict[str, str] = field(default_factory=dict)  # reading -> error, for transition logs

    @property
    def label(self) -> str:
        return f"GPU {self.info.index} {self.info.mig_uuid or self.info.uuid}"


def _import_pynvml() -> ModuleType:
    # Lazy: this module must import (and the simulator run) on machines without a driver.
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailableError(
            "the pynvml module is missing: pip install nvidia-ml-py"
        ) from exc
    return pynvml


def _text(value: str | bytes) -> str:
    # Old nvidia-ml-py releases return bytes; current ones str.
    return value.decode() if isinstance(value, bytes) else value


class NvmlSampler:
    """The :class:`~agents.sampler.Sampler` of a real NVIDIA node.

    ``nvml`` is the pynvml module, injectable for tests (``tests.fakes.pynvml.FakeNvml``).
    ``rescan_interval_s``: how often (in sampled seconds) devices are re-enumerated, so MIG
    slices created or destroyed while the agent runs are picked up; 0 disables it.
    """

    def __init__(
        self,
        node_id: str,
        attributor: Attributor | None = None,
        *,
        nvml: ModuleType | None = None,
        rescan_interval_s: int = 60,
    ) -> None:
        self.node_id = node_id
        self._nvml: Any = nvml if nvml is not None else _import_pynvml()
        self._attributor = attributor if attributor is not None else Attributor()
        self._rescan_interval_s = rescan_interval_s
        self._seconds_since_scan = 0
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            raise NvmlUnavailableError(
                f"NVML did not initialise ({exc}): is the NVIDIA driver loaded and the device "
                "visible to this container? On a machine without GPUs use --simulate."
            ) from exc
        self._open = True
        self._devices: list[_Device] = []
        self.rescan()

    # --- Sampler protocol ----------------------------------------------------------------

    def gpus(self) -> Sequence[GpuInfo]:
        return tuple(d.info for d in self._devices)

    def sample(self, ts: int) -> list[GpuSecond]:
        if self._rescan_interval_s:
            self._seconds_since_scan += 1
            if self._seconds_since_scan >= self._rescan_interval_s:
                self.rescan()
        return [self._sample_device(d, ts) for d in self._devices]

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", exc)

    def __enter__(self) -> NvmlSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- enumeration ---------------------------------------------------------------------

    def rescan(self) -> None:
        """Enumerate GPUs and MIG slices; keeps the energy state of devices that remain."""
        self._seconds_since_scan = 0
        nv = self._nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as exc:
            # Keep sampling what we had: a failed rescan must not make GPUs disappear.
            log.error("nvmlDeviceGetCount failed (%s); keeping the previous device list", exc)
            return
        previous = {(d.info.uuid, d.info.mig_uuid): d for d in self._devices}
        devices: list[_Device] = []
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nv.nvmlDeviceGetUUID(handle))
                name = _text(nv.nvmlDeviceGetName(handle))
            except nv.NVMLError as exc:
                # Without a UUID there is no sample identity; report and sample the others.
                kept = [d for d in self._devices if d.info.index == index]
                log.error(
                    "GPU %d cannot be identified (%s); %s",
                    index,
                    exc,
                    "keeping its previous identity" if kept else "it is not sampled",
                )
                devices.extend(kept)
                continue
            slices = self._mig_slices(handle, uuid, name, index)
            fresh = slices or [
                _Device(GpuInfo(uuid, name, index, None, self._mem_total(handle)), handle)
            ]
            for dev in fresh:
                old = previous.get((dev.info.uuid, dev.info.mig_uuid))
                if old is not None:  # carry the energy counter across a rescan
                    dev.energy_mj, dev.energy_ts = old.energy_mj, old.energy_ts
                    dev.energy_supported, dev.failing = old.energy_supported, old.failing
                devices.append(dev)
        if [d.info for d in devices] != [d.info for d in self._devices]:
            log.info("NVML devices: %s", ", ".join(d.label for d in devices) or "none")
        self._devices = devices

    def _mig_slices(self, handle: Any, uuid: str, name: str, index: int) -> list[_Device]:
        nv = self._nvml
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
        except nv.NVMLError:
            return []  # NotSupported: not a MIG-capable GPU
        if current != nv.NVML_DEVICE_MIG_ENABLE:
            return []
        try:
            slots = nv.nvmlDeviceGetMaxMigDeviceCount(handle)
        except nv.NVMLError as exc:
            log.warning("GPU %d: MIG enabled but slices cannot be counted (%s)", index, exc)
            return []
        slices: list[_Device] = []
        for j in range(slots):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
                mig_uuid = _text(nv.nvmlDeviceGetUUID(mig))
            except nv.NVMLError:
                continue  # NotFound: an empty slot
            try:
                # A slice's name carries its profile ("... MIG 1g.10gb"), which pricing needs.
                mig_name = _text(nv.nvmlDeviceGetName(mig))
            except nv.NVMLError:
                mig_name = name
            info = GpuInfo(uuid, mig_name, index, mig_uuid, self._mem_total(mig))
            slices.append(_Device(info, mig))
        return slices

    def _mem_total(self, handle: Any) -> int:
        try:
            return int(self._nvml.nvmlDeviceGetMemoryInfo(handle).total)
        except self._nvml.NVMLError:
            return 0

    # --- one second of one device --------------------------------------------------------

    def _sample_device(self, dev: _Device, ts: int) -> GpuSecond:
        nv, h = self._nvml, dev.handle
        flags: set[SampleFlag] = set()
        util = self._read(dev, flags, "utilization", lambda: nv.nvmlDeviceGetUtilizationRates(h))
        mem = self._read(dev, flags, "memory", lambda: nv.nvmlDeviceGetMemoryInfo(h))
        power_mw = self._read(dev, flags, "power", lambda: nv.nvmlDeviceGetPowerUsage(h))
        temp = self._read(
            dev,
            flags,
            "temperature",
            lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
        )
        procs = self._read(
            dev, flags, "processes", lambda: nv.nvmlDeviceGetComputeRunningProcesses(h)
        )

        sm_util = _percent(util.gpu) if util is not None else 0.0
        mem_util = _percent(util.memory) if util is not None else 0.0
        mem_total = int(mem.total) if mem is not None else 0
        mem_used = int(mem.used) if mem is not None else 0
        if not (0 <= mem_used <= MAX_MEMORY_BYTES and 0 <= mem_total <= MAX_MEMORY_BYTES):
            flags.add("nvml_error")  # a garbage reading, not a real GPU
            mem_used = mem_total = 0
        mem_used = min(mem_used, mem_total)  # NVML never reports more; guard the contract
        power_w = power_mw / 1000.0 if power_mw is not None else 0.0
        if not 0 <= power_w <= MAX_POWER_W:
            flags.add("nvml_error")
            power_w = 0.0
        temp_c = float(temp) if temp is not None and -40 <= temp <= 150 else None
        energy_j = self._energy(dev, ts, power_w, flags)

        pids = [int(p.pid) for p in procs] if procs is not None else []
        allocation = self._attributor.allocation_for(dev.info.uuid, dev.info.mig_uuid, pids, at=ts)
        fields: dict[str, Any] = {
            "gpu_uuid": dev.info.uuid,
            "mig_uuid": dev.info.mig_uuid,
            "gpu_model": dev.info.model,
            "ts": ts,
            "tenant": allocation.tenant if allocation else None,
            "job": allocation.job if allocation else None,
            "billing_class": allocation.billing_class if allocation else None,
            "sm_util": sm_util,
            "mem_util": mem_util,
            "mem_used": mem_used,
            "mem_total": mem_total,
            "power_w": power_w,
            "energy_j": energy_j,
            "temp_c": temp_c,
        }
        try:
            return GpuSecond(**fields, flags=tuple(sorted(flags)))
        except ValidationError as exc:
            # Should not happen after the checks above; if a driver still produces something
            # the contract rejects, keep the second (allocation intact) with zeroed readings
            # rather than lose it. A bad `ts` is the caller's bug and raises below.
            log.error("%s: sample for %d rejected (%s); sending it zeroed", dev.label, ts, exc)
            fields.update(
                sm_util=0.0,
                mem_util=0.0,
                mem_used=0,
                mem_total=0,
                power_w=0.0,
                energy_j=0.0,
                temp_c=None,
            )
            return GpuSecond(**fields, flags=("energy_estimated", "nvml_error"))

    def _energy(self, dev: _Device, ts: int, power_w: float, flags: set[SampleFlag]) -> float:
        counter: int | None = None
        if dev.energy_supported:
            try:
                counter = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(dev.handle))
                self._recovered(dev, "energy")
            except self._nvml.NVMLError_NotSupported:
                dev.energy_supported = False  # a property of the GPU; stop asking
                log.info("%s: no energy counter; energy estimated from power", dev.label)
            except self._nvml.NVMLError as exc:
                self._failed(dev, "energy", exc)
                flags.add("nvml_error")
        prev, prev_ts = dev.energy_mj, dev.energy_ts
        if counter is not None:
            dev.energy_mj, dev.energy_ts = counter, ts
        if counter is None or prev is None or prev_ts is None or ts <= prev_ts:
            flags.add("energy_estimated")
            return power_w
        if counter < prev:
            log.warning(
                "%s: energy counter went backwards (%d -> %d mJ): reset", dev.label, prev, counter
            )
            flags.update(("counter_reset", "energy_estimated"))
            return power_w
        # Over a gap of several seconds the delta is their total: spread it evenly.
        energy_j = (counter - prev) / 1000.0 / (ts - prev_ts)
        if ts - prev_ts > 1:
            flags.add("energy_estimated")
        high = power_w * ENERGY_POWER_FACTOR + ENERGY_SLACK_J
        low = power_w / ENERGY_POWER_FACTOR - ENERGY_SLACK_J
        if not low <= energy_j <= high:
            # Counter and power disagree beyond what the contract accepts (a counter glitch,
            # a failed power read): the contract would reject the sample, so fall back to
            # the bounded estimate and say so.
            flags.add("energy_estimated")
            return power_w
        return energy_j

    def _read(
        self, dev: _Device, flags: set[SampleFlag], reading: str, call: Callable[[], T]
    ) -> T | None:
        """One NVML read; on failure None and flag ``nvml_error``; the others go on."""
        try:
            value = call()
        except self._nvml.NVMLError as exc:
            self._failed(dev, reading, exc)
            flags.add("nvml_error")
            return None
        self._recovered(dev, reading)
        return value

    def _failed(self, dev: _Device, reading: str, exc: BaseException) -> None:
        # Log transitions only: a lost GPU fails every call every second.
        error = type(exc).__name__
        if dev.failing.get(reading) != error:
            dev.failing[reading] = error
            level = (
                logging.INFO
                if isinstance(exc, self._nvml.NVMLError_NotSupported)
                else logging.WARNING
            )
            log.log(
                level,
                "%s: %s read failed (%s: %s); zero and flagged nvml_error",
                dev.label,
                reading,
                error,
                exc,
            )

    def _recovered(self, dev: _Device, reading: str) -> None:
        if dev.failing.pop(reading, None) is not None:
            log.info("%s: %s read works again", dev.label, reading)


def _percent(value: int | float) -> float:
    return min(max(float(value), 0.0), 100.0)
