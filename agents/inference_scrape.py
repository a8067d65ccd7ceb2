"""The inference companion: scrape each endpoint, attribute its tokens, publish work units.

One cycle (:meth:`TokenCompanion.scrape_once`), in this order:

1. Scrape every endpoint. A failure (connection refused, timeout, HTTP error, a page that is
   not the Prometheus format) is logged and counted per endpoint, and that endpoint's baseline
   stays where it was: the next successful scrape covers the missed interval in one longer
   window. Tokens are never lost to a gap, and none are invented.
2. Turn each endpoint's counter deltas (:class:`agents.inference.CounterWindow`) into
   ``WorkUnitsReported`` records, one per (model, prompt|generated), attributed to the
   allocation of the endpoint's GPUs at the window's last second.
3. Save the state file (baselines and every report not yet acknowledged, see
   :mod:`agents.inference_state`) atomically, *before* sending. A crash after this step
   re-sends the same reports (same identity, same values: the worker's ReplacingMergeTree keeps
   one row); a crash before it re-scrapes from the old baseline, and nothing of the lost cycle
   was sent. Sending first would let a restarted companion publish a second, longer window
   with the same ``window_start`` and a different quantity: two rows competing for one
   identity.
4. Send the unacknowledged reports (key: tenant); acknowledged ones leave the state file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kafka.errors import KafkaError
from pydantic import ValidationError

from agents.attribution import Allocation
from agents.errors import AgentError
from agents.inference import CounterWindow, MetricsParseError, TokenDelta, parse_metrics
from agents.inference_config import Endpoint
from agents.inference_state import Outbox, load_state, lock_state_dir, save_state
from schemas.work import MAX_WINDOW_S, WorkUnitsReported

log = logging.getLogger(__name__)


class AllocationSource(Protocol):
    """What :class:`agents.attribution.Attributor` answers: whose is this GPU at second ``at``."""

    def allocation_for(
        self, gpu_uuid: str, mig_uuid: str | None, pids: Sequence[int], *, at: int | None = None
    ) -> Allocation | None: ...


@dataclass(frozen=True)
class StaticAllocations:
    """A fixed GPU -> allocation map (tests, or a node given to one tenant for good)."""

    by_gpu: dict[str, Allocation]

    def allocation_for(
        self, gpu_uuid: str, mig_uuid: str | None, pids: Sequence[int], *, at: int | None = None
    ) -> Allocation | None:
        return self.by_gpu.get(gpu_uuid)


@dataclass
class CompanionStats:
    scrapes: int = 0
    scrape_failures: dict[str, int] = field(default_factory=dict)  # endpoint -> failed scrapes
    last_error: str = ""
    reports: int = 0  # reports made (each once, whatever the re-sends)
    tokens: int = 0  # tokens in those reports
    resets: int = 0  # windows in which a counter was reset (server restart)
    unattributed_tokens: int = 0  # tokens on GPUs allocated to nobody: no tenant to report
    invalid_reports: int = 0  # reports the contract refused (logged with the reason)
    dropped_reports: int = 0  # unsent reports given up by the outbox bound
    acked: int = 0
    send_failures: int = 0


Fetch = Callable[[Endpoint], str]


def http_fetch(endpoint: Endpoint) -> str:
    with urllib.request.urlopen(endpoint.url, timeout=endpoint.timeout_s) as resp:  # noqa: S310
        return resp.read().decode("utf-8")


class TokenCompanion:
    """Scrapes ``endpoints`` and publishes their tokens to ``topic`` via ``producer`` (a
    :class:`agents.kafka.ResettableProducer` or anything with the same ``send``)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        allocations: AllocationSource,
        producer: Any,
        topic: str,
        state_dir: Path,
        node_id: str,
        *,
        fetch: Fetch = http_fetch,
        max_outbox: int = 100_000,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.allocations = allocations
        self.producer = producer
        self.topic = topic
        self.node_id = node_id
        self.fetch = fetch
        self.max_outbox = max_outbox
        self.stats = CompanionStats()
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_state_dir(self.state_dir)
        except OSError as exc:
            raise AgentError(f"cannot open the state directory {self.state_dir}: {exc}") from exc
        self.windows: dict[str, CounterWindow] = {e.name: CounterWindow() for e in endpoints}
        self.outbox: Outbox = {}  # event id -> (tenant, record), in order
        self._in_flight: set[str] = set()
        self._results: queue.SimpleQueue[tuple[str, BaseException | None]] = queue.SimpleQueue()
        self._warned: set[tuple[str, str]] = set()
        self._load()

    # -- one cycle -----------------------------------------------------------------------------
    def scrape_once(self, now: int | None = None) -> list[WorkUnitsReported]:
        ts = int(time.time()) if now is None else now
        made: list[WorkUnitsReported] = []
        for ep in self.endpoints:
            try:
                samples = parse_metrics(self.fetch(ep))
                deltas = self.windows[ep.name].advance(ts, samples, ep.kind, ep.model)
            except (OSError, urllib.error.URLError, UnicodeDecodeError, MetricsParseError) as exc:
                # The baseline stays: the next good scrape's window covers this one too.
                self.stats.scrape_failures[ep.name] = self.stats.scrape_failures.get(ep.name, 0) + 1
                self.stats.last_error = f"{ep.name}: {exc}"
                log.warning(
                    "scrape of %s (%s) failed: %s; its next window is longer", ep.name, ep.url, exc
                )
                continue
            self.stats.scrapes += 1
            if not self.windows[ep.name].series:
                # Usually a wrong kind or metric name (or a TGI without requests yet): say so,
                # since it would otherwise look like a server that serves nothing.
                self._warn_once(
                    ep.name,
                    "no-series",
                    "%s: no %s or %s series on %s; check its kind and [counters]",
                    ep.name,
                    ep.kind.prompt_metric,
                    ep.kind.generated_metric,
                    ep.url,
                )
            made.extend(self._reports(ep, deltas))
        for report in made:
            self.outbox[str(report.event_id)] = (report.tenant, report.to_json())
        self._bound_outbox()
        self._save()  # step 3: durable before anything of this cycle is sent
        self.pump()
        return made

    def _reports(self, ep: Endpoint, deltas: Sequence[TokenDelta]) -> list[WorkUnitsReported]:
        out: list[WorkUnitsReported] = []
        for d in deltas:
            self.stats.resets += d.reset
            if d.quantity == 0:
                continue
            allocation = self._allocation(ep, d.window_end - 1)
            if allocation is None:
                self.stats.unattributed_tokens += d.quantity
                self._warn_once(
                    ep.name,
                    "idle",
                    "%s: %d %s tokens of %s on GPUs allocated to nobody "
                    "(no tenant to report them for)",
                    ep.name,
                    d.quantity,
                    d.kind,
                    d.model,
                )
                continue
            start = d.window_start
            if d.window_end - start > MAX_WINDOW_S:
                # A gap longer than the contract's longest window: keep every token, in the
                # last day before the scrape (later than the previous window's end, so no overlap).
                log.warning(
                    "%s: %d s since the last good scrape; reporting it as the last %d s",
                    ep.name,
                    d.window_end - start,
                    MAX_WINDOW_S,
                )
                start = d.window_end - MAX_WINDOW_S
            try:
                report = WorkUnitsReported(
                    tenant=allocation.tenant,
                    job=allocation.job,
                    source=token_source(self.node_id, ep.name, d.model, d.kind),
                    unit="tokens",
                    quantity=d.quantity,
                    window_start=start,
                    window_end=d.window_end,
                )
            except ValidationError as exc:
                self.stats.invalid_reports += 1
                log.error(
                    "%s: %d %s tokens of %s not reportable: %s",
                    ep.name,
                    d.quantity,
                    d.kind,
                    d.model,
                    exc,
                )
                continue
            self.stats.reports += 1
            self.stats.tokens += d.quantity
            out.append(report)
        return out

    def _allocation(self, ep: Endpoint, at: int) -> Allocation | None:
        found = [a for g in ep.gpus if (a := self.allocations.allocation_for(g, None, (), at=at))]
        if len(set(found)) > 1:
            # A server spanning GPUs of different jobs is a scheduler problem; the first listed
            # GPU decides, deterministically, and the operator is told.
            self._warn_once(
                ep.name,
                "conflict",
                "%s: its GPUs belong to different allocations %s; attributing to the first GPU's",
                ep.name,
                sorted(set(found), key=str),
            )
        return found[0] if found else None

    def _warn_once(self, endpoint: str, what: str, msg: str, *args: object) -> None:
        if (endpoint, what) not in self._warned:
            self._warned.add((endpoint, what))
            log.warning(msg, *args)

    # -- delivery ------------------------------------------------------------------------------
    def pump(self) -> None:
        """Take the broker's answers, then send every unacknowledged report not in flight."""
        changed = False
        while True:
            try:
                event_id, error = self._results.get_nowait()
            except queue.Empty:
                break
            self._in_flight.discard(event_id)
            if error is None:
                changed |= self.outbox.pop(event_id, None) is not None
                self.stats.acked += 1
                if hasattr(self.producer, "healthy"):
                    self.producer.healthy()
            else:
                self.stats.send_failures += 1
                self.stats.last_error = f"send: {error}"
                log.warning("sending a token report failed (%s); it stays queued", error)
                if hasattr(self.producer, "reset"):
                    self.producer.reset(f"send failed: {error}")
        if changed:
            self._save()
        for event_id, (tenant, payload) in list(self.outbox.items()):
            if event_id in self._in_flight:
                continue
            try:
                future = self.producer.send(self.topic, key=tenant.encode(), value=payload)
            except KafkaError as exc:  # KafkaTimeoutError while the broker is away, buffer full
                self.stats.send_failures += 1
                self.stats.last_error = f"send: {exc}"
                log.warning("cannot hand token reports to the producer (%s); retrying later", exc)
                break
            self._in_flight.add(event_id)
            future.add_callback(lambda _md, e=event_id: self._results.put((e, None)))
            future.add_errback(lambda err, e=event_id: self._results.put((e, err)))

    def flush(self, timeout: float = 30.0) -> bool:
        """Send and wait until every report is acknowledged, or ``timeout``; True if none is left."""
        deadline = time.monotonic() + timeout
        while self.outbox and time.monotonic() < deadline:
            self.pump()
            self.producer.flush(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            time.sleep(0.01)
        self.pump()
        return not self.outbox

    def close(self) -> None:
        self._save()
        os.close(self._lock_fd)

    # -- state ---------------------------------------------------------------------------------
    def _bound_outbox(self) -> None:
        while len(self.outbox) > self.max_outbox:
            event_id = next(iter(self.outbox))
            del self.outbox[event_id]
            self._in_flight.discard(event_id)
            self.stats.dropped_reports += 1
            log.error(
                "token outbox over %d reports (broker away too long): dropped the oldest "
                "(%d dropped so far)",
                self.max_outbox,
                self.stats.dropped_reports,
            )

    def _save(self) -> None:
        save_state(self.state_dir, self.windows, self.outbox, self.stats.dropped_reports)

    def _load(self) -> None:
        saved = load_state(self.state_dir, self.windows)
        if saved is None:
            return
        self.windows.update(saved.windows)
        self.outbox = saved.outbox
        self.stats.dropped_reports = saved.dropped_reports


def token_source(node_id: str, endpoint: str, model: str, kind: str) -> str:
    """The report's ``source``: ``node/endpoint/model/kind``, at most 128 characters (a long
    model name is shortened with a hash, so distinct models never share a source)."""
    source = f"{node_id}/{endpoint}/{model}/{kind}"
    if len(source) <= 128:
        return source
    digest = hashlib.blake2b(source.encode(), digest_size=8).hexdigest()
    return f"{source[: 128 - len(kind) - 18]}~{digest}/{kind}"
