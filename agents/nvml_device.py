"""One NVML device's readings for one second, and the state carried from second to second.

Readings and units (NVIDIA's ``pynvml`` module, package nvidia-ml-py):

=====================================  ==========================  ========================
NVML call                              field                       conversion
=====================================  ==========================  ========================
nvmlDeviceGetUtilizationRates          sm_util / mem_util          percent, as is
nvmlDeviceGetMemoryInfo                mem_used / mem_total        bytes, as is
nvmlDeviceGetPowerUsage                power_w                     mW / 1000
nvmlDeviceGetTotalEnergyConsumption    energy_j                    delta of the mJ counter
                                                                   since the last read / 1000
nvmlDeviceGetTemperature(GPU sensor)   temp_c                      Celsius, as is
nvmlDeviceGetComputeRunningProcesses   pids (for attribution)      as is
nvmlDeviceGetProcessUtilization        each share's sm_util        smUtil % per pid, summed
                                                                   over the share's pids
=====================================  ==========================  ========================

Energy: the counter is cumulative, so a second's energy is the delta since the previous read,
divided by the seconds between them. Where there is no previous read (first second, after a
failed read), no counter (``NotSupported``), or the counter went backwards (driver reload, GPU
reset: flag ``counter_reset``), energy is power x 1 s and flagged ``energy_estimated``.

A failing read zeroes its field (``temp_c``: null, since 0 °C is a real temperature) and flags
the second ``nvml_error``; the other readings go on. Failures are logged on transitions only
(a lost GPU fails every call every second). Per-process utilization is optional: where NVML
answers ``NotSupported`` (MIG slices, some boards) the device stops being asked and shares
carry no measured utilization; it never flags the second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from agents.sampler import GpuInfo
from schemas.usage import ENERGY_POWER_FACTOR, ENERGY_SLACK_J, SampleFlag

log = logging.getLogger("agents.nvml")  # one logger for the sampler and its devices

T = TypeVar("T")


@dataclass
class Device:
    """One sampled device and the state carried from one second to the next."""

    info: GpuInfo
    handle: Any
    energy_mj: int | None = None  # last counter value read
    energy_ts: int | None = None  # the second it was read for
    energy_supported: bool = True  # False after NotSupported: stop asking every second
    failing: dict[str, str] = field(default_factory=dict)  # reading -> error, for transition logs
    process_util_supported: bool = True  # False after NotSupported: stop asking
    process_util_seen_us: int = 0  # newest per-process sample already read (NVML timestamp)

    @property
    def label(self) -> str:
        return f"GPU {self.info.index} {self.info.mig_uuid or self.info.uuid}"

    def carry(self, old: Device) -> None:
        """Keep the counters of the same device across a rescan."""
        self.energy_mj, self.energy_ts = old.energy_mj, old.energy_ts
        self.energy_supported, self.failing = old.energy_supported, old.failing
        self.process_util_supported = old.process_util_supported
        self.process_util_seen_us = old.process_util_seen_us


class Reading(NamedTuple):
    """Raw readings of one device for one second (None: the read failed)."""

    util: Any
    mem: Any
    power_mw: int | None
    temp: int | None
    pids: list[int]
    energy_j: float
    flags: set[SampleFlag]


class DeviceReader:
    """Reads devices through one pynvml module (real or fake)."""

    def __init__(self, nvml: Any) -> None:
        self.nv = nvml

    def read(self, dev: Device, ts: int) -> Reading:
        nv, h = self.nv, dev.handle
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
        power_w = power_mw / 1000.0 if power_mw is not None else 0.0
        energy_j = self.energy(dev, ts, power_w, flags)
        pids = [int(p.pid) for p in procs] if procs is not None else []
        return Reading(util, mem, power_mw, temp, pids, energy_j, flags)

    def process_utilization(self, dev: Device) -> dict[int, float] | None:
        """SM utilization (%) per pid since the last call (each pid's newest sample), or None
        where the device does not report it."""
        nv = self.nv
        if not dev.process_util_supported:
            return None
        call = getattr(nv, "nvmlDeviceGetProcessUtilization", None)
        if call is None:  # a pynvml without it: as good as NotSupported
            dev.process_util_supported = False
            return None
        try:
            samples = call(dev.handle, dev.process_util_seen_us)
        except nv.NVMLError_NotSupported:
            dev.process_util_supported = False
            log.info("%s: no per-process utilization; shares carry none", dev.label)
            return None
        except nv.NVMLError_NotFound:
            return {}  # no sample newer than the last one: nothing ran
        except nv.NVMLError as exc:
            self._failed(dev, "process utilization", exc, "shares carry no utilization")
            return None
        self._recovered(dev, "process utilization")
        newest: dict[int, tuple[int, float]] = {}
        for s in samples:
            pid, stamp = int(s.pid), int(s.timeStamp)
            if pid not in newest or stamp >= newest[pid][0]:
                newest[pid] = (stamp, min(max(float(s.smUtil), 0.0), 100.0))
            dev.process_util_seen_us = max(dev.process_util_seen_us, stamp)
        return {pid: util for pid, (_, util) in newest.items()}

    def energy(self, dev: Device, ts: int, power_w: float, flags: set[SampleFlag]) -> float:
        counter: int | None = None
        if dev.energy_supported:
            try:
                counter = int(self.nv.nvmlDeviceGetTotalEnergyConsumption(dev.handle))
                self._recovered(dev, "energy")
            except self.nv.NVMLError_NotSupported:
                dev.energy_supported = False  # a property of the GPU; stop asking
                log.info("%s: no energy counter; energy estimated from power", dev.label)
            except self.nv.NVMLError as exc:
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
        self, dev: Device, flags: set[SampleFlag], reading: str, call: Callable[[], T]
    ) -> T | None:
        """One NVML read; on failure None and flag ``nvml_error``; the others go on."""
        try:
            value = call()
        except self.nv.NVMLError as exc:
            self._failed(dev, reading, exc)
            flags.add("nvml_error")
            return None
        self._recovered(dev, reading)
        return value

    def _failed(
        self,
        dev: Device,
        reading: str,
        exc: BaseException,
        consequence: str = "zero and flagged nvml_error",
    ) -> None:
        # Log transitions only: a lost GPU fails every call every second.
        error = type(exc).__name__
        if dev.failing.get(reading) != error:
            dev.failing[reading] = error
            level = (
                logging.INFO if isinstance(exc, self.nv.NVMLError_NotSupported) else logging.WARNING
            )
            log.log(
                level,
                "%s: %s read failed (%s: %s); %s",
                dev.label,
                reading,
                error,
                exc,
                consequence,
            )

    def _recovered(self, dev: Device, reading: str) -> None:
        if dev.failing.pop(reading, None) is not None:
            log.info("%s: %s read works again", dev.label, reading)
