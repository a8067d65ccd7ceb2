"""The worker and its broker: a broker that lost its log, one that is not there, one that hangs.

Each test starts a broker of its own (the session broker is shared and must not be restarted
or frozen) and runs the real ``gpumeter worker``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpumeter.demo import embedded_worker_env
from infra.embedded.broker import EmbeddedBroker, free_port
from schemas.topics import TopicSpec
from streams.group_lag import GroupLag
from tests.integration.pipeline import Pipeline
from tests.integration.test_worker_failures import (
    counted_seconds,
    finish,
    good_records,
    worker_stats,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = [TopicSpec("usage.restart", 1), TopicSpec("minutely.restart", 1)]


def status(pipeline: Pipeline) -> dict[str, object]:
    path = pipeline.data_dir / "worker" / f"{pipeline.app_id}.status.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):  # not written yet
        return {}


class WorkerExited(AssertionError):
    def __init__(self, code: int, out: str, what: str) -> None:
        super().__init__(f"worker exited ({code}) while waiting for {what}:\n{out[-3000:]}")
        self.code = code
        self.out = out


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise WorkerExited(proc.returncode, proc.communicate()[0], what)
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {timeout} s:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.3)


@pytest.mark.parametrize("after", [50, 200], ids=["shorter-log", "refilled-past-position"])
def test_a_restarted_broker_that_lost_its_log_is_re_read_from_the_start(
    tmp_path: Path, after: int
) -> None:
    # given a worker that has counted 120 records (1,200 GPU-seconds) from a broker
    broker = EmbeddedBroker().start()
    try:
        broker.create_topics(TOPICS)
        pipeline = Pipeline(broker.bootstrap, "usage.restart", tmp_path)
        pipeline.minutely_topic = "minutely.restart"
        pipeline.publish_raw(good_records(120, gpu="GPU-before"), key=b"node-w")
        proc = pipeline.start_worker("--exit-when-idle", "120", "--stall-exit-s", "20")
        lag = GroupLag(broker.bootstrap, pipeline.app_id, pipeline.topic)
        wait_for(lag.caught_up, 90, "commit of the first 120 records", proc)
        lag.close()

        # when the broker restarts empty on the same port (memory only), the topics are
        # recreated and new records arrive: 50 (fewer than the worker's position, 120) or 200
        # (more: a log refilled past the position before the worker could see it shorter)
        broker.stop()
        broker = EmbeddedBroker(port=broker.port).start()
        broker.create_topics(TOPICS)
        # (as measured in issue 9: the running worker commits its old position, 120, to the
        # new broker, so its group resumes there; done here so that it surely happens)
        commit_offset(broker.bootstrap, pipeline.app_id, pipeline.topic, 120)
        pipeline.publish_raw(good_records(after, gpu="GPU-after"), key=b"node-w")

        # then the worker notices the log went behind it and reads the new log from offset 0,
        # or, should it get stuck doing so, says so by exiting 75 and its restart (what a
        # supervisor does) reads it: never a silent skip
        total = 1200 + 10 * after
        try:
            wait_for(
                lambda: status(pipeline).get("new_seconds") == total,
                90,
                "the new GPU-seconds counted",
                proc,
            )
            proc.send_signal(signal.SIGTERM)
            code, out = finish(proc, 30)
            restarted = False
        except WorkerExited as exc:
            assert exc.code == 75, exc.out[-3000:]
            code, again = finish(pipeline.start_worker("--exit-when-idle", "5"), 120)
            out, restarted = exc.out + again, True
    finally:
        broker.stop()
    assert code == 0, out[-3000:]
    # (which check sees it first depends on timing: offsets while the new log is still
    # shorter than 120 records, content once it is longer)
    assert "is not the one this worker read" in out
    assert restarted or worker_stats(out)["log_rewinds"] >= 1
    assert counted_seconds(pipeline) == total


def commit_offset(bootstrap: str, group: str, topic: str, offset: int) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
    consumer.close()


def worker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpumeter.cli", "worker", *args]


def test_an_unreachable_broker_ends_the_worker_with_69_and_one_line(tmp_path: Path) -> None:
    # given a bootstrap nobody listens on
    env = {"PATH": "/usr/bin:/bin", "GPUMETER_DATA_DIR": str(tmp_path), **embedded_worker_env()}
    t0 = time.monotonic()
    r = subprocess.run(
        worker_cmd("--bootstrap", f"127.0.0.1:{free_port()}", "--broker-wait-s", "2"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then it gives up after the stated wait, non-zero, with a message and no traceback
    assert r.returncode == 69, r.stderr
    assert time.monotonic() - t0 < 30
    assert "cannot reach the Kafka broker" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    # and a bootstrap that is not host:port at all is a configuration error (exit 2)
    for bad in (["--bootstrap", "not a host"], []):
        env_bad = {**env, "GPUMETER_KAFKA_BOOTSTRAP": "not a host"} if not bad else env
        r = subprocess.run(
            worker_cmd(*bad), env=env_bad, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 2, r.stderr
        assert "not a host" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("frozen", [False, True], ids=["broker-up", "broker-frozen"])
def test_sigterm_is_honoured_within_the_stop_timeout(tmp_path: Path, frozen: bool) -> None:
    # given a worker that has counted everything on its topic
    with EmbeddedBroker() as broker:
        broker.create_topics(TOPICS)
        pipeline = Pipeline(broker.bootstrap, "usage.restart", tmp_path)
        pipeline.minutely_topic = "minutely.restart"
        pipeline.publish_raw(good_records(30, gpu="GPU-term"), key=b"node-w")
        proc = pipeline.start_worker("--exit-when-idle", "120", "--stop-timeout-s", "5")
        wait_for(lambda: status(pipeline).get("new_seconds") == 300, 90, "records counted", proc)
        time.sleep(1.5)  # let the commit interval pass

        # when the broker is frozen (or not) and the worker gets SIGTERM
        if frozen:
            broker.pause()
        try:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, out = finish(proc, 30)
            took = time.monotonic() - t0
        finally:
            broker.resume()

    # then it is gone within the stop timeout (5 s) plus the watchdog's period
    assert took < 8, (took, out[-3000:])
    if frozen:
        assert code in (0, 76), out[-3000:]
    else:
        assert code == 0, out[-3000:]
    assert counted_seconds(pipeline) == 300
    # and Faust's state went under the data directory, not into the current directory
    assert (tmp_path / "worker" / "faust").is_dir()
    assert not (Path.cwd() / f"{pipeline.app_id}-data").exists()
