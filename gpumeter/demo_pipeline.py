"""The running part of ``gpumeter demo``: the data directory, the worker subprocess, and the
simulated fleet publishing while the worker consumes, until the worker's consumer group has
committed everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kernel.settings import Settings

MARKER = ".gpumeter-demo"
GROUP = "gpumeter-demo-worker"


def prepare_data_dir(data_dir: Path) -> None:
    ch = data_dir / "clickhouse"
    if ch.exists() and any(ch.iterdir()):
        if not (data_dir / MARKER).exists():
            raise SystemExit(
                f"gpumeter demo: {ch} holds data that the demo did not write; refusing to replace "
                "it. Point the demo elsewhere: GPUMETER_DATA_DIR=/tmp/gpumeter-demo gpumeter demo"
            )
        shutil.rmtree(ch)
    for sub in ("spool", "invoices", "report"):
        shutil.rmtree(data_dir / "demo" / sub, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("this data directory holds gpumeter demo data\n")


def start_worker(
    bootstrap: str, settings: Settings, database: str | None, log_path: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "gpumeter.cli",
        "worker",
        "--bootstrap",
        bootstrap,
        "--app-id",
        GROUP,
    ]
    if database:
        cmd += ["--database", database]
    env = {
        **os.environ,
        "GPUMETER_DATA_DIR": str(settings.data_dir.resolve()),
        **embedded_worker_env(),
    }
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def embedded_worker_env() -> dict[str, str]:
    """Environment for a worker on the embedded broker: its short group timeouts (a group join
    there waits about half the rebalance timeout; the production defaults make it 30 s)."""
    from kernel.settings import EMBEDDED_GROUP_TIMEOUTS, env_name

    return {env_name(k): str(v) for k, v in EMBEDDED_GROUP_TIMEOUTS.items()}


def wait_for_metadata(producer: Any, topics: tuple[str, ...], timeout_s: float = 60.0) -> None:
    """Wait until the broker has told the producer each topic's partitions."""
    from kafka.errors import KafkaTimeoutError

    deadline = time.monotonic() + timeout_s
    for topic in topics:
        while True:
            try:
                if producer.partitions_for(topic):
                    break
            except KafkaTimeoutError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"gpumeter demo: the embedded broker gave no metadata for {topic} "
                    f"within {timeout_s:.0f} s"
                )
            time.sleep(0.2)


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def publish_and_process(
    console: Any,
    fleet: Any,
    bootstrap: str,
    data_dir: Path,
    start: int,
    duration: int,
    worker: subprocess.Popen[bytes],
) -> tuple[int, float]:
    """Publish the simulated window while the worker consumes; wait until it committed all."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from agents.agent import run_accelerated
    from agents.fleet import build_agents
    from agents.kafka import make_producer
    from agents.simulator import simulated_work
    from schemas.topics import PREEMPTIONS, USAGE, WORK

    producer = make_producer(bootstrap)
    # What the inference tenants' servers count (the simulator's token rates): work units on
    # gpu.work.v1, so the report has cost and revenue per million tokens. A trace has none.
    work = simulated_work(fleet, start=start, end=start + duration)
    # The agent's producer never blocks more than 100 ms on metadata (a node must keep
    # sampling); on a busy machine the first metadata answer for a topic can take longer.
    wait_for_metadata(producer, (WORK, USAGE, PREEMPTIONS))
    pending = [producer.send(WORK, key=r.tenant.encode(), value=r.to_json()) for r in work]
    # What the scheduler's integration reports when internal demand takes a spot allocation's
    # GPUs (`gpumeter preemption report`): one record per device lost.
    preemptions = [p.record(now=time.time()) for p in getattr(fleet, "preemptions", [])]
    pending += [
        producer.send(PREEMPTIONS, key=r.tenant.encode(), value=r.to_json()) for r in preemptions
    ]
    producer.flush(timeout=60)
    for future in pending:
        future.get(timeout=60)  # raises if the broker refused one: the check below would fail
    agents = build_agents(
        fleet.samplers(), data_dir / "demo" / "spool", producer, USAGE, flush_every=60, fsync=False
    )
    total = duration
    state: dict[str, Any] = {"done": 0, "ok": None, "error": None}

    def publish() -> None:
        try:
            state["ok"] = run_accelerated(
                agents,
                start,
                start + duration,
                progress=lambda done, _total: state.update(done=done),
            )
        except BaseException as exc:  # reported below
            state["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=publish, name="agents", daemon=True)
    thread.start()
    from streams.group_lag import GroupLag

    lag = GroupLag(bootstrap, GROUP, USAGE)
    work_lag = GroupLag(bootstrap, GROUP, WORK)
    preemption_lag = GroupLag(bootstrap, GROUP, PREEMPTIONS)
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        pub = progress.add_task("agents: sample + publish", total=total, info="")
        proc = progress.add_task("worker: count + store", total=None, info="")
        last_progress = (0, time.monotonic())
        while True:
            if worker.poll() is not None:
                raise SystemExit(
                    f"gpumeter demo: the worker exited ({worker.returncode}); "
                    f"see {data_dir / 'demo-worker.log'}"
                )
            samples = sum(a.stats.samples for a in agents)
            progress.update(pub, completed=state["done"], info=f"{samples:,} samples")
            committed, end = lag.read()
            progress.update(
                proc, total=max(end, 1), completed=committed, info=f"{committed:,}/{end:,} records"
            )
            # Done only when the agents have delivered everything (the thread ends after
            # their spools drained) and the worker committed the true log end, twice.
            if (
                not thread.is_alive()
                and lag.caught_up()
                and (not work or work_lag.caught_up())
                and (not preemptions or preemption_lag.caught_up())
            ):
                break
            if committed != last_progress[0]:
                last_progress = (committed, time.monotonic())
            elif not thread.is_alive() and time.monotonic() - last_progress[1] > 180:
                raise SystemExit(
                    "gpumeter demo: the worker made no progress for 180 s; see "
                    f"{data_dir / 'demo-worker.log'}"
                )
            time.sleep(0.5)
    thread.join()
    lag.close()
    work_lag.close()
    preemption_lag.close()
    if state["error"] is not None:
        raise state["error"]
    producer.close(timeout=5)
    for a in agents:
        a.spool.close()
    return sum(a.stats.samples for a in agents), time.monotonic() - t0
