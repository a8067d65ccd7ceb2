"""What an operator scrapes from a worker: Prometheus text on ``--metrics-port`` and a status file.

The endpoint runs on the standard library's HTTP server in a daemon thread, so it answers
(and reports the worker stalled) even while a hung ClickHouse write blocks the event loop.
It reads only plain numbers (processor counters, :class:`~streams.health.Health`), never
calls into Faust or ClickHouse.

Endpoints: ``/metrics`` (Prometheus text format 0.0.4) and ``/healthz`` (200 ``ok`` when live,
503 with the reason when stalled). Metric names are listed in ``streams/README.md``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from streams.health import Health

PREFIX = "gpumeter_worker_"

#: (metric, processor stats field, help). Counters, read from ``ProcessorStats``; a field the
#: processor does not have yet reads 0 (``conflicts`` arrives with the conflict rule).
PROCESSOR_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("records_total", "records", "Kafka records read from the usage topic"),
    ("samples_total", "samples", "valid GPU-second samples seen (new + duplicate)"),
    ("seconds_counted_total", "new_seconds", "GPU-seconds counted into the ledger (new)"),
    ("duplicate_samples_total", "duplicates", "samples already counted (redelivery, replay)"),
    ("late_samples_total", "late", "samples counted into a minute that had already closed"),
    ("rejected_records_total", "rejected_records", "records rejected whole (bad envelope)"),
    ("rejected_samples_total", "rejected_samples", "single samples rejected inside good records"),
    ("conflicts_total", "conflicts", "GPU-seconds claimed by more than one allocation"),
    ("gap_seconds_total", "gap_seconds", "seconds nodes reported as unmetered gaps"),
    ("parked_samples_total", "parked", "future-dated samples parked until their time comes"),
    ("readmitted_samples_total", "readmitted", "parked samples re-admitted and counted"),
    ("flushes_total", "flushes", "chunks persisted to ClickHouse"),
    ("flush_seconds_total", "flush_seconds", "time spent persisting chunks"),
)


@dataclass
class Sources:
    """Where the numbers come from (plain objects, read without locks)."""

    health: Health
    processor_stats: Callable[[], Any]
    work_counts: Callable[[], tuple[int, int]] = lambda: (0, 0)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(src: Sources) -> str:
    """The Prometheus text exposition of the worker's counters and liveness."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {PREFIX}{name} {help_}")
        out.append(f"# TYPE {PREFIX}{name} {kind}")
        out.extend(
            f"{PREFIX}{name}{labels} {value:g}"
            if isinstance(value, float)
            else f"{PREFIX}{name}{labels} {value}"
            for labels, value in samples
        )

    stats = src.processor_stats()
    for name, attr, help_ in PROCESSOR_COUNTERS:
        metric(name, "counter", help_, [("", getattr(stats, attr, 0))])
    accepted, rejected = src.work_counts()
    metric("work_units_accepted_total", "counter", "work reports stored", [("", accepted)])
    metric("work_units_rejected_total", "counter", "work reports rejected", [("", rejected)])
    h = src.health
    metric(
        "log_rewinds_total",
        "counter",
        "partitions whose broker log went behind the worker's position (lost data); the "
        "worker re-read them from the earliest offset",
        [("", h.log_rewinds)],
    )
    lag = h.lag
    metric(
        "lag_records",
        "gauge",
        "records on assigned partitions not yet processed (-1: not measured yet)",
        [("", -1 if lag is None else lag)],
    )
    metric(
        "partition_lag_records",
        "gauge",
        "lag per assigned partition",
        [
            (f'{{topic="{_escape(t)}",partition="{p}"}}', n)
            for (t, p), n in sorted(h.partition_lag.items())
        ],
    )
    metric(
        "last_progress_age_seconds",
        "gauge",
        "seconds since a chunk completed or the worker had nothing to do",
        [("", round(h.progress_age(), 3))],
    )
    metric(
        "live",
        "gauge",
        "1 while the worker makes progress; 0 when stalled",
        [("", 0 if h.stalled() else 1)],
    )
    metric(
        "uptime_seconds",
        "gauge",
        "seconds since the worker started",
        [("", round(h.clock() - h.started, 3))],
    )
    return "\n".join(out) + "\n"


def status(src: Sources) -> dict[str, Any]:
    """The same numbers as one JSON object (the status file)."""
    h = src.health
    stats = src.processor_stats()
    accepted, rejected = src.work_counts()
    return {
        "time": time.time(),
        "pid": os.getpid(),
        "live": h.stalled() is None,
        "stalled": h.stalled(),
        "lag": h.lag,
        "last_progress_age_s": round(h.progress_age(), 3),
        "log_rewinds": h.log_rewinds,
        **{attr: getattr(stats, attr, 0) for _n, attr, _h in PROCESSOR_COUNTERS},
        "work_accepted": accepted,
        "work_rejected": rejected,
    }


def write_status(path: Path, src: Sources) -> None:
    """Replace the status file atomically (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status(src)) + "\n")
    os.replace(tmp, path)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread."""

    def __init__(self, src: Sources, port: int, host: str = "0.0.0.0") -> None:
        sources = src

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path.split("?")[0] == "/metrics":
                    body, code = render(sources).encode(), 200
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                elif self.path.split("?")[0] == "/healthz":
                    reason = sources.health.stalled()
                    body = (f"stalled: {reason}\n" if reason else "ok\n").encode()
                    code, ctype = (503 if reason else 200), "text/plain; charset=utf-8"
                else:
                    body, code, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # scrapes every few seconds would flood the worker's log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="gpumeter-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
