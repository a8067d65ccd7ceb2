"""The NVML sampler: this node's real GPUs (and MIG slices), one attributed second per device.

The readings of one device and their units are in :mod:`agents.nvml_device`; attribution
(who holds the device, at what share) in :mod:`agents.attribution`. Each share's measured
SM utilization comes from ``nvmlDeviceGetProcessUtilization``: the sum over the processes of
that share (matched by their environment's tenant and job; on a device held by one
allocation, every process is its). Where NVML does not report per-process utilization, the
shares carry none.

Failure policy (never stop the node for one GPU):

- A failing read zeroes its field and flags the second ``nvml_error``; the other readings of
  that GPU and the other GPUs go on.
- A lost GPU (every call fails, e.g. ``NVMLError_GpuIsLost``) keeps producing seconds, all
  readings zero and flagged ``nvml_error``, still attributed from the allocation file. Its
  seconds were allocated, and they are part of the inventory: dropping them would hide both.
  Whether a tenant is credited for them is a billing decision made on the flag, downstream.
  The transition is logged once, not every second.
- MIG: with MIG enabled, each slice is sampled as its own device (``gpu_uuid`` = parent,
  ``mig_uuid`` = slice) and the parent itself is not, since its seconds *are* its slices'
  seconds and sampling both would double-count. Slices usually answer ``NotSupported`` for
  utilization, power, energy and temperature: those fields are zero (null) and flagged.
  A MIG-enabled GPU without any slice is sampled as a whole, so its idle capacity shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from agents.attribution import Allocation, Attributor
from agents.errors import AgentError
from agents.nvml_device import Device, DeviceReader, Reading
from agents.sampler import DeviceSecond, GpuInfo, v1_sample
from schemas.frame import Share
from schemas.usage import MAX_MEMORY_BYTES, MAX_POWER_W, GpuSecond

log = logging.getLogger(__name__)


class NvmlUnavailableError(AgentError, RuntimeError):
    """NVML cannot be used on this machine (no package, no driver, no permission)."""


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
        self._reader = DeviceReader(self._nvml)
        self._open = True
        self._devices: list[Device] = []
        self.rescan()

    # --- Sampler protocol ----------------------------------------------------------------

    def gpus(self) -> Sequence[GpuInfo]:
        return tuple(d.info for d in self._devices)

    def seconds(self, ts: int) -> list[DeviceSecond]:
        if self._rescan_interval_s:
            self._seconds_since_scan += 1
            if self._seconds_since_scan >= self._rescan_interval_s:
                self.rescan()
        return [self._second(d, ts) for d in self._devices]

    def sample(self, ts: int) -> list[GpuSecond]:
        return [v1_sample(d) for d in self.seconds(ts)]

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
        devices: list[Device] = []
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
                Device(GpuInfo(uuid, name, index, None, self._mem_total(handle)), handle)
            ]
            for dev in fresh:
                old = previous.get((dev.info.uuid, dev.info.mig_uuid))
                if old is not None:  # carry the energy counter across a rescan
                    dev.carry(old)
                devices.append(dev)
        if [d.info for d in devices] != [d.info for d in self._devices]:
            log.info("NVML devices: %s", ", ".join(d.label for d in devices) or "none")
        self._devices = devices

    def _mig_slices(self, handle: Any, uuid: str, name: str, index: int) -> list[Device]:
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
        slices: list[Device] = []
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
            slices.append(Device(info, mig))
        return slices

    def _mem_total(self, handle: Any) -> int:
        try:
            return int(self._nvml.nvmlDeviceGetMemoryInfo(handle).total)
        except self._nvml.NVMLError:
            return 0

    # --- one second of one device --------------------------------------------------------

    def _second(self, dev: Device, ts: int) -> DeviceSecond:
        r = self._reader.read(dev, ts)
        fields = _checked_fields(dev, ts, r)
        allocations = self._attributor.shares_for(dev.info.uuid, dev.info.mig_uuid, r.pids, at=ts)
        shares = tuple(Share(a.tenant, a.job, a.milli, a.billing_class) for a in allocations)
        return DeviceSecond(
            dev.info.uuid,
            dev.info.mig_uuid,
            dev.info.model,
            ts,
            shares,
            fields["sm_util"],
            fields["mem_util"],
            fields["mem_used"],
            fields["mem_total"],
            fields["power_w"],
            fields["energy_j"],
            fields["temp_c"],
            tuple(fields["flags"]),
            self._share_util(dev, allocations) if allocations else None,
        )

    def _share_util(self, dev: Device, shares: tuple[Allocation, ...]) -> tuple[float, ...] | None:
        """Each share's SM utilization: its processes' sum (capped at 100), or None."""
        per_pid = self._reader.process_utilization(dev)
        if per_pid is None:
            return None
        if len(shares) == 1:
            return (min(100.0, round(sum(per_pid.values()), 1)),)
        owners = self._attributor.owners(list(per_pid))
        return tuple(
            min(
                100.0,
                round(sum(u for p, u in per_pid.items() if owners.get(p) == (a.tenant, a.job)), 1),
            )
            for a in shares
        )


def _checked_fields(dev: Device, ts: int, r: Reading) -> dict[str, Any]:
    """The second's readings within the contract: out-of-range values zeroed and flagged;
    checked by the contract's own model (as an idle second) before they leave the sampler."""
    flags = set(r.flags)
    mem_total = int(r.mem.total) if r.mem is not None else 0
    mem_used = int(r.mem.used) if r.mem is not None else 0
    if not (0 <= mem_used <= MAX_MEMORY_BYTES and 0 <= mem_total <= MAX_MEMORY_BYTES):
        flags.add("nvml_error")  # a garbage reading, not a real GPU
        mem_used = mem_total = 0
    power_w = r.power_mw / 1000.0 if r.power_mw is not None else 0.0
    energy_j = r.energy_j
    if not 0 <= power_w <= MAX_POWER_W:
        flags.add("nvml_error")
        power_w = 0.0
    fields: dict[str, Any] = {
        "gpu_uuid": dev.info.uuid,
        "mig_uuid": dev.info.mig_uuid,
        "gpu_model": dev.info.model,
        "ts": ts,
        "sm_util": _percent(r.util.gpu) if r.util is not None else 0.0,
        "mem_util": _percent(r.util.memory) if r.util is not None else 0.0,
        "mem_used": min(mem_used, mem_total),  # NVML never reports more; guard the contract
        "mem_total": mem_total,
        "power_w": power_w,
        "energy_j": energy_j,
        "temp_c": float(r.temp) if r.temp is not None and -40 <= r.temp <= 150 else None,
    }
    try:
        GpuSecond(**fields, flags=tuple(sorted(flags)))
    except ValidationError as exc:
        # Should not happen after the checks above; if a driver still produces something
        # the contract rejects, keep the second (allocation intact) with zeroed readings
        # rather than lose it. A bad `ts` is the caller's bug and raises below.
        log.error("%s: sample for %d rejected (%s); sending it zeroed", dev.label, ts, exc)
        fields.update(
            sm_util=0.0, mem_util=0.0, mem_used=0, mem_total=0, power_w=0.0, energy_j=0.0,
            temp_c=None,
        )  # fmt: skip
        GpuSecond(**fields, flags=("energy_estimated", "nvml_error"))
        flags = {"energy_estimated", "nvml_error"}
    fields["flags"] = tuple(sorted(flags))
    return fields


def _percent(value: int | float) -> float:
    return min(max(float(value), 0.0), 100.0)
