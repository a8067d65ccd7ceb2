"""The node agent: sample every second, batch, spool, deliver.

One :class:`NodeAgent` per node. Per second it asks its sampler for the node's device seconds;
every ``flush_every_s`` seconds of *sample time* it seals a record, appends it to the spool
(durable) and lets delivery send it. A record is contract v2 by default (each device's seconds
grouped into frames with their shares, :mod:`agents.framer`), or v1 samples for a worker not
yet upgraded (``schema_version=1``, one release). Time comes from a clock object so the same
code runs at 1 Hz on real GPUs and in accelerated time on a simulated fleet:

- :func:`run_realtime`: wakes at each wall-clock second boundary and samples the second that
  just ended. If it wakes late (stalled), the seconds it missed are reported as a gap, never
  invented.
- :func:`run_accelerated`: steps sample time as fast as allowed (``speed`` simulated seconds
  per wall second, or unbounded) over [start, end) for samplers that can answer for any second
  (simulated fleet, trace replay). On restart it resumes after the last spooled second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agents.errors import AgentError
from agents.framer import Framer
from agents.kafka import Delivery
from agents.sampler import Sampler
from agents.spool import Spool
from schemas.frame import FRAMES_SCHEMA_VERSION, encode_frames
from schemas.usage import SCHEMA_VERSION as V1
from schemas.usage import Gap, GpuSecond, encode_batch

#: The contract versions the agent can emit.
EMITTED_VERSIONS = (V1, FRAMES_SCHEMA_VERSION)
#: What the agent emits unless told otherwise: contract v2 (the worker reads both).
DEFAULT_SCHEMA_VERSION = FRAMES_SCHEMA_VERSION

log = logging.getLogger(__name__)


@dataclass
class AgentStats:
    samples: int = 0  # samples spooled
    batches: int = 0  # batches spooled
    gap_seconds: int = 0  # seconds reported missed (stalls, restarts)
    dropped_samples: int = 0  # samples the full disk kept out of the spool (reported as gaps)


@dataclass
class NodeAgent:
    sampler: Sampler
    spool: Spool
    delivery: Delivery
    flush_every_s: int = 10
    schema_version: int = DEFAULT_SCHEMA_VERSION
    stats: AgentStats = field(default_factory=AgentStats)
    _samples: list[GpuSecond] = field(default_factory=list)
    _framer: Framer = field(default_factory=Framer)
    _gaps: list[Gap] = field(default_factory=list)
    _batch_start: int | None = None

    def __post_init__(self) -> None:
        if self.schema_version not in EMITTED_VERSIONS:
            raise AgentError(
                f"schema_version {self.schema_version} is not one the agent emits "
                f"{list(EMITTED_VERSIONS)}"
            )

    @property
    def node_id(self) -> str:
        return self.sampler.node_id

    def record_second(self, ts: int) -> None:
        """Sample second ``ts`` and seal a batch when the flush interval is complete."""
        if self._batch_start is None:
            self._batch_start = ts
        if self.schema_version == V1:
            self._samples.extend(self.sampler.sample(ts))
        else:
            self._framer.add(self.sampler.seconds(ts))
        if ts + 1 - self._batch_start >= self.flush_every_s:
            self.seal(last_ts=ts)

    def record_gap(self, start: int, end: int, reason: str) -> None:
        self._gaps.append(Gap(start=start, end=end, reason=reason))  # type: ignore[arg-type]
        self.stats.gap_seconds += end - start

    def seal(self, last_ts: int) -> None:
        """Append the open batch to the spool (durable from here on).

        The batch also reports the seconds the spool had to drop (disk full, size bound) as
        ``spool_full`` gaps. If the disk is so full that even this batch cannot be stored, its
        seconds join those gaps (reported by the next batch that fits) and sampling goes on."""
        owed = list(self.spool.unreported_gaps)
        n_seconds = len(self._samples) if self.schema_version == V1 else self._framer.seconds
        if not n_seconds and not self._gaps and not owed:
            return
        first_ts = min(
            [self._batch_start if self._batch_start is not None else last_ts]
            + [g.start for g in self._gaps]
        )
        gaps = self._gaps + [Gap(start=s, end=e, reason="spool_full") for s, e in owed]
        seq = self.spool.next_seq
        if self.schema_version == V1:
            payload = encode_batch(self.node_id, self.spool.agent_id, seq, self._samples, gaps)
        else:
            frames = self._framer.take()
            payload = encode_frames(self.node_id, self.spool.agent_id, seq, frames, gaps)
        stored = self.spool.append(
            seq,
            payload,
            n_samples=n_seconds,
            last_ts=last_ts,
            first_ts=first_ts,
            reports=owed,
        )
        if stored:
            self.stats.samples += n_seconds
            self.stats.batches += 1
        else:
            self.stats.dropped_samples += n_seconds
        self._samples = []
        self._gaps = []
        self._batch_start = None

    def resume_after(self) -> int | None:
        """The last second already spooled before a restart, if any."""
        return self.spool.last_ts


#: After a stop request (SIGTERM), how long delivery may still send before the agent exits;
#: what is not acknowledged by then stays in the spool for the next start.
STOP_GRACE_S = 3.0

Progress = Callable[[int, int], None]  # (seconds done, seconds total)


def run_accelerated(
    agents: Sequence[NodeAgent],
    start: int,
    end: int,
    *,
    speed: float | None = None,
    progress: Progress | None = None,
    drain_timeout: float = 120.0,
    should_stop: Callable[[], bool] = lambda: False,
    stop_grace_s: float = STOP_GRACE_S,
) -> bool:
    """Sample [start, end) for every node as fast as ``speed`` allows; drain; True if drained.

    When ``should_stop()`` turns true (SIGTERM), sampling ends at once and delivery gets
    ``stop_grace_s`` more to send what it can; the rest stays in the spool for the next start."""
    resume = [a.resume_after() for a in agents]
    first = min((r + 1 if r is not None else start) for r in resume)
    first = max(first, start)
    wall0 = time.monotonic()
    done = first - 1  # the last second sampled for every node
    for ts in range(first, end):
        if should_stop():
            break
        for agent, done_through in zip(agents, resume, strict=True):
            if done_through is None or ts > done_through:
                agent.record_second(ts)
        done = ts
        if ts % 10 == 0:
            for agent in agents:
                agent.delivery.pump()
            if progress:
                progress(ts + 1 - start, end - start)
            if speed:
                ahead = (ts + 1 - first) / speed - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
    for agent in agents:
        agent.seal(last_ts=done)  # a stopped run resumes after `done`, not after `end`
    if progress:
        progress(end - start, end - start)
    deadline = time.monotonic() + drain_timeout
    for agent in agents:
        if should_stop():
            break
        agent.delivery.flush(timeout=max(0.0, deadline - time.monotonic()), should_stop=should_stop)
    if should_stop():  # asked to stop: a short grace, then what is unacknowledged stays spooled
        _flush_all(agents, stop_grace_s)
    return all(a.delivery.drained() for a in agents)


def _flush_all(agents: Sequence[NodeAgent], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for agent in agents:
        agent.delivery.flush(timeout=max(0.0, deadline - time.monotonic()))


def run_realtime(
    agent: NodeAgent,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    max_restart_gap_s: int = 86_400,
    on_second: Callable[[int], None] | None = None,
    stop_grace_s: float = STOP_GRACE_S,
) -> None:
    """Sample at 1 Hz aligned to wall-clock seconds until ``should_stop()``."""
    last = agent.resume_after()
    now = int(time.time())
    if last is not None and 0 < now - 1 - last <= max_restart_gap_s:
        agent.record_gap(last + 1, now, "agent_restarted")  # the first second sampled is `now`
    expected: int | None = None
    while not should_stop():
        time.sleep(max(0.0, (int(time.time()) + 1) - time.time()))
        ts = int(time.time()) - 1  # the second that just ended
        if expected is not None and ts > expected:
            agent.record_gap(
                expected, ts, "agent_stalled"
            )  # missed seconds: reported, not invented
        elif expected is not None and ts < expected:
            continue  # the clock went backwards: never sample a second twice
        agent.record_second(ts)
        agent.delivery.pump()
        expected = ts + 1
        if on_second:
            on_second(ts)
    if expected is not None:
        agent.seal(last_ts=expected - 1)
    agent.delivery.flush(timeout=stop_grace_s)
