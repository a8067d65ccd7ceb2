"""One scheduled device, answered second by second: the sampler side of a scheduled fleet.

A device (GPU or MIG slice) of a :class:`~agents.schedule.ScheduledFleet` has one or more
*tracks*: timelines of allocations, each at a fixed share. A whole GPU or a MIG slice has one
track at 1000 milli-GPU; a shared GPU has several (e.g. 500 + 250 + 250), which together never
exceed 1000. The tracks are merged once into *epochs*: stretches over which the device's
allocation set does not change, so sampling a second in order costs one comparison (a cursor
on the current epoch) and a few attribute loads.

Determinism: every per-second value (utilization jitter, power noise) is a hash of
``(seed, device, ts)``, never a stateful RNG, so a second does not depend on which seconds
were asked before (an agent replaying after a crash gets identical readings).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from agents.sampler import DeviceSecond, GpuInfo, v1_sample
from schemas.frame import WHOLE, Share
from schemas.usage import GpuSecond

if TYPE_CHECKING:
    from agents.schedule import ActivityProfile, GpuModelSpec, Segment

_M64 = (1 << 64) - 1
_MIB = 1024**2
MIX_A = 0x9E3779B97F4A7C15
MIX_B = 0xD1B54A32D192ED03


class Epoch(NamedTuple):
    """[start, end) of one device with one allocation set (empty: idle)."""

    start: int
    end: int
    shares: tuple[Share, ...]
    profiles: tuple[ActivityProfile | None, ...]
    mem_used: int


def merge_tracks(tracks: Sequence[Sequence[Segment]], mem_total: int, label: str) -> list[Epoch]:
    """Filled tracks (each covering the same window, idle gaps included) -> epochs.

    Raises ValueError when the shares active at one second sum above 1000 or name one
    (tenant, job) twice: the schedule is wrong, and the contract would refuse the frame."""
    if len(tracks) == 1:  # the common case: a whole device, one epoch per segment
        cuts = [s.start for s in tracks[0]] + [tracks[0][-1].end]
    else:
        cuts = sorted({s.start for t in tracks for s in t} | {tracks[0][-1].end})
    pos = [0] * len(tracks)
    out: list[Epoch] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        active: list[Segment] = []
        for k, track in enumerate(tracks):
            while track[pos[k]].end <= a:
                pos[k] += 1
            seg = track[pos[k]]
            if seg.tenant is not None and seg.job is not None:
                active.append(seg)
        shares = tuple(Share(s.tenant, s.job, s.milli, s.billing_class) for s in active)  # type: ignore[arg-type]
        if sum(s.milli for s in shares) > WHOLE or len({(s.tenant, s.job) for s in shares}) < len(
            shares
        ):
            raise ValueError(f"{label} at {a}: shares {shares} overlap or exceed 1000 milli")
        mem = sum(
            int(s.profile.mem_fraction * mem_total * (s.milli / WHOLE)) // _MIB * _MIB
            for s in active
            if s.profile is not None
        )
        out.append(Epoch(a, b, shares, tuple(s.profile for s in active), min(mem, mem_total)))
    return out


class Lane:
    """One device's epochs with a cursor; the current epoch's fields cached on the lane."""

    __slots__ = (
        "info", "uuid", "mig", "model", "mem_total", "idle_w", "span_w", "salt", "shared",
        "starts", "epochs", "cur_start", "cur_end", "shares", "profiles", "millis", "mem_used",
        "profile",
    )  # fmt: skip

    def __init__(
        self, info: GpuInfo, spec: GpuModelSpec, key: int, tracks: Sequence[Sequence[Segment]]
    ) -> None:
        self.info = info
        self.uuid, self.mig, self.model = info.uuid, info.mig_uuid, spec.name
        self.mem_total = spec.memory_total
        self.idle_w, self.span_w = spec.idle_w, (spec.max_w - spec.idle_w) * 0.01
        self.salt = key * MIX_A  # the first step of mix64(key, ts), hoisted out of the loop
        self.epochs = merge_tracks(tracks, spec.memory_total, info.mig_uuid or info.uuid)
        #: a shared device reports each share's utilization (as NVML's per-process reading)
        self.shared = len(tracks) > 1 or any(s.milli != WHOLE for t in tracks for s in t)
        self.starts = [e.start for e in self.epochs]
        self.cur_start = self.cur_end = 0

    def seek(self, ts: int) -> None:
        i = bisect_right(self.starts, ts) - 1
        if i < 0 or ts >= self.epochs[-1].end:
            raise ValueError(
                f"second {ts} is outside the schedule "
                f"[{self.epochs[0].start}, {self.epochs[-1].end}) of {self.uuid}"
            )
        e = self.epochs[i]
        self.cur_start, self.cur_end = e.start, e.end
        self.shares, self.profiles, self.mem_used = e.shares, e.profiles, e.mem_used
        self.millis = tuple(s.milli * 0.001 for s in e.shares)
        #: the one profile of a device that is not shared (None: idle)
        self.profile = e.profiles[0] if len(e.profiles) == 1 else None


class ScheduleSampler:
    """A node's :class:`~agents.sampler.Sampler` that answers from a precomputed schedule."""

    def __init__(self, node_id: str, lanes: Sequence[Lane]) -> None:
        self.node_id = node_id
        self._lanes = list(lanes)
        self._gpus = tuple(lane.info for lane in lanes)

    def gpus(self) -> Sequence[GpuInfo]:
        return self._gpus

    def close(self) -> None:
        pass

    def sample(self, ts: int) -> list[GpuSecond]:
        return [v1_sample(d) for d in self.seconds(ts)]

    def seconds(self, ts: int) -> list[DeviceSecond]:
        ts_salt = ts * MIX_B
        make = _new_tuple  # DeviceSecond without its Python-level __new__: this loop is hot
        out: list[DeviceSecond] = []
        for lane in self._lanes:
            if not lane.cur_start <= ts < lane.cur_end:
                lane.seek(ts)
            # mix64(key, ts), inlined: this loop runs millions of times per simulated day
            x = (lane.salt + ts_salt) & _M64
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
            n = x ^ (x >> 31)
            share_util: tuple[float, ...] | None = None
            if lane.shared:
                # each share busy on its slice: its profile scaled by its share of the GPU
                share_util = tuple(
                    0.0 if p is None else round(p.sm_util(ts, n >> (13 * i)) * m, 1)
                    for i, (p, m) in enumerate(zip(lane.profiles, lane.millis, strict=True))
                )
                sm = min(100.0, round(sum(share_util), 1))
            else:
                prof = lane.profile
                sm = 0.0 if prof is None else round(prof.sm_util(ts, n), 1)
            # Power: idle floor + a share proportional to SM load, +-2 W sensor noise.
            power = round(lane.idle_w + lane.span_w * sm + ((n >> 16) & 0xFF) * (4 / 255) - 2.0, 1)
            # Energy over the second differs from the power reading by up to +-2 %: far inside
            # the contract's power/energy consistency rule (factor 3 plus 50 J).
            energy = round(power * (1.0 + (((n >> 24) & 0xFFF) * (1 / 4095) - 0.5) * 0.04), 2)
            out.append(
                make(
                    DeviceSecond,
                    (
                        lane.uuid,
                        lane.mig,
                        lane.model,
                        ts,
                        lane.shares,
                        sm,
                        round(sm * 0.55, 1),
                        lane.mem_used,
                        lane.mem_total,
                        power,
                        energy,
                        round(31.0 + sm * 0.45 + ((n >> 40) & 0xFF) * (2 / 255), 1),
                        (),
                        share_util,
                    ),
                )
            )
        return out


_new_tuple = tuple.__new__
