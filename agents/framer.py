"""Grouping device seconds into contract-v2 frames: one device, contiguous seconds, one
allocation set.

The agent feeds every second's :class:`~agents.sampler.DeviceSecond` of a node into a
:class:`Framer` and takes the frames when it seals a record. A device's open frame goes on
while the next second is the one after it, with the same model, memory size and allocation
set (tenant, job, share and billing class of every allocation, and whether each share's
utilization is measured); anything else closes it and opens a new one. Sealing closes every
open frame, so a frame never spans two records (the flush window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.sampler import DeviceSecond
from schemas.frame import Frame, Share


@dataclass
class _Open:
    """A frame being built: the first second's identity, readings appended column-wise."""

    first: DeviceSecond
    next_ts: int
    sm_util: list[float] = field(default_factory=list)
    mem_util: list[float] = field(default_factory=list)
    mem_used: list[int] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    temp_c: list[float | None] = field(default_factory=list)
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)
    share_util: list[tuple[float, ...]] | None = None

    def fits(self, d: DeviceSecond) -> bool:
        f = self.first
        return (
            d.ts == self.next_ts
            and (d.allocations is f.allocations or d.allocations == f.allocations)
            and d.gpu_model == f.gpu_model
            and d.mem_total == f.mem_total
            and (d.share_util is None) == (f.share_util is None)
        )

    def add(self, d: DeviceSecond) -> None:
        if d.flags:
            self.flags[len(self.sm_util)] = d.flags
        self.sm_util.append(d.sm_util)
        self.mem_util.append(d.mem_util)
        self.mem_used.append(d.mem_used)
        self.power_w.append(d.power_w)
        self.energy_j.append(d.energy_j)
        self.temp_c.append(d.temp_c)
        if d.share_util is not None:
            if self.share_util is None:
                self.share_util = []
            self.share_util.append(d.share_util)
        self.next_ts = d.ts + 1

    def frame(self) -> Frame:
        f = self.first
        shares = f.allocations
        if self.share_util is not None:
            per_share = list(zip(*self.share_util, strict=True)) if shares else []
            shares = tuple(
                Share(s.tenant, s.job, s.milli, s.billing_class, tuple(u))
                for s, u in zip(shares, per_share, strict=True)
            )
        temps = self.temp_c
        return Frame(
            gpu_uuid=f.gpu_uuid,
            mig_uuid=f.mig_uuid,
            gpu_model=f.gpu_model,
            start=f.ts,
            allocations=shares,
            sm_util=self.sm_util,
            mem_util=self.mem_util,
            mem_used=self.mem_used,
            mem_total=f.mem_total,
            power_w=self.power_w,
            energy_j=self.energy_j,
            temp_c=None if all(t is None for t in temps) else temps,
            flags=self.flags,
        )


class Framer:
    """Device seconds in, frames out (per device in time order, devices in first-seen order)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str | None], _Open] = {}
        self._closed: list[Frame] = []
        self.seconds = 0  # device seconds taken since the last take()

    def add(self, seconds: list[DeviceSecond]) -> None:
        for d in seconds:
            key = (d.gpu_uuid, d.mig_uuid)
            run = self._open.get(key)
            if run is None or not run.fits(d):
                if run is not None:
                    self._closed.append(run.frame())
                run = self._open[key] = _Open(d, d.ts)
            run.add(d)
        self.seconds += len(seconds)

    def take(self) -> list[Frame]:
        """Every frame, the open ones closed; the framer is empty afterwards."""
        out = self._closed + [run.frame() for run in self._open.values()]
        self._open, self._closed, self.seconds = {}, [], 0
        return out
