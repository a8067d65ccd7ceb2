"""A small harness for end-to-end tests: agent -> embedded broker -> worker -> embedded ClickHouse.

The worker runs as a real ``gpumeter worker`` subprocess with a data directory of its own (chDB
allows one data directory per process), and results are read back through ``gpumeter sql`` in
another subprocess, after the worker has exited (one process per data directory at a time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from agents.agent import run_accelerated
from agents.fleet import build_agents
from agents.kafka import make_producer
from gpumeter.demo import embedded_worker_env
from gpumeter.demo_pipeline import wait_for_metadata
from streams.group_lag import GroupLag


class Pipeline:
    def __init__(self, bootstrap: str, topic: str, data_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.data_dir = data_dir
        self.app_id = f"test-worker-{uuid.uuid4().hex[:8]}"
        self.work_topic: str | None = None
        self.minutely_topic: str | None = None
        self.env = {
            **os.environ,
            "GPUMETER_DATA_DIR": str(data_dir),
            "GPUMETER_GRACE_SECONDS": "60",
            **embedded_worker_env(),
        }

    # -- agent side --------------------------------------------------------------------------
    def publish_fleet(self, fleet: Any, start: int, end: int, spool: str = "spool") -> int:
        producer = make_producer(self.bootstrap)
        agents = build_agents(
            fleet.samplers(),
            self.data_dir / spool,
            producer,
            self.topic,
            flush_every=60,
            fsync=False,
        )
        assert run_accelerated(agents, start, end), "the agent could not deliver everything"
        producer.close(timeout=10)
        for a in agents:
            a.spool.close()
        return sum(a.stats.samples for a in agents)

    def publish_raw(
        self, values: list[bytes], key: bytes = b"raw", topic: str | None = None
    ) -> None:
        producer = make_producer(self.bootstrap)
        # the producer blocks at most 100 ms on metadata: wait for it once, as the demo does
        wait_for_metadata(producer, (topic or self.topic,))
        for v in values:
            producer.send(topic or self.topic, key=key, value=v)
        producer.flush(timeout=30)
        producer.close(timeout=10)

    def read_raw(self, topic: str | None = None) -> list[bytes]:
        from kafka import KafkaConsumer, TopicPartition

        topic = topic or self.topic
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[bytes] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                out.extend(r.value for r in records)
        consumer.close()
        return out

    # -- worker side -------------------------------------------------------------------------
    def start_worker(self, *extra: str, prelude: str | None = None) -> subprocess.Popen[str]:
        """Start ``gpumeter worker``; ``extra`` arguments override the defaults (the last
        occurrence of an option wins). ``prelude``: Python run in the worker process before the
        CLI (tests inject faults this way; the product has no such hook)."""
        work = ["--work-topic", self.work_topic] if self.work_topic else []
        if self.minutely_topic:
            work += ["--minutely-topic", self.minutely_topic]
        entry = (
            ["-m", "gpumeter.cli"]
            if prelude is None
            else [
                "-c",
                prelude
                + "\nimport sys\nfrom gpumeter.cli import main\nsys.exit(main(sys.argv[1:]))",
            ]
        )
        return subprocess.Popen(
            [
                sys.executable,
                *entry,
                "worker",
                "--bootstrap",
                self.bootstrap,
                "--topic",
                self.topic,
                "--app-id",
                self.app_id,
                "--exit-when-idle",
                "3",
                "--stop-timeout-s",
                "60",
                # the tests' crash and kill points are placed by chunks of fewer than 150
                # records (the product's default is larger)
                "--chunk-records",
                "100",
                *work,
                *extra,
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_worker(self, timeout: float = 240) -> dict[str, Any]:
        """Run a worker until it has been idle for a few seconds; return its stats."""
        proc = self.start_worker()
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"worker did not finish in {timeout} s:\n{out[-3000:]}") from None
        assert proc.returncode == 0, out[-3000:]
        for line in out.splitlines():
            if line.startswith("WORKER-STATS "):
                return dict(json.loads(line.removeprefix("WORKER-STATS ")))
        raise AssertionError(f"no stats from the worker:\n{out[-3000:]}")

    def kill_worker_midway(self, fraction: float = 0.3, timeout: float = 120) -> int:
        """Start a worker and SIGKILL it once it has committed part of the topic."""
        proc = self.start_worker()
        lag = GroupLag(self.bootstrap, self.app_id, self.topic)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                committed, end = lag.read()
                if end and committed >= end * fraction:
                    assert committed < end, "the worker finished before it could be killed"
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return committed
                if proc.poll() is not None:
                    raise AssertionError("worker exited before it was killed")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise AssertionError("worker made no progress")

    # -- reading results ---------------------------------------------------------------------
    def sql(self, query: str) -> list[dict[str, Any]]:
        r = subprocess.run(
            [sys.executable, "-m", "gpumeter.cli", "sql", query, "--format", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return list(json.loads(r.stdout))

    def ledger_cells(self) -> tuple[Counter[tuple[str, str, str, int]], int]:
        """Allocated GPU-seconds per (tenant, job, gpu model, hour) and idle seconds."""
        rows = self.sql(
            "SELECT tenant, job, gpu_model, toUnixTimestamp(toStartOfHour(minute)) AS hour, "
            "sum(gpu_seconds) AS s FROM usage_minutely FINAL GROUP BY tenant, job, gpu_model, hour"
        )
        cells: Counter[tuple[str, str, str, int]] = Counter()
        idle = 0
        for r in rows:
            if r["tenant"] == "__idle__":
                idle += int(r["s"])
            else:
                cells[(r["tenant"], r["job"], r["gpu_model"], int(r["hour"]))] += int(r["s"])
        return cells, idle
