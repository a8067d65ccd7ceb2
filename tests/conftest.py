"""Shared fixtures: real services, started here, never mocks.

- ``broker``: the embedded Tansu broker on a free loopback port, one per test session.
- ``clickhouse``: the embedded chDB engine. chDB allows one data directory per process for its
  lifetime, so the session has one directory and each test gets a fresh *database* in it.
  Tests that run a worker in a subprocess give it a directory of its own and read the results
  back through ``gpumeter sql`` in another subprocess.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def broker() -> Iterator[object]:
    from infra.embedded.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def topic_factory(broker: object) -> Callable[..., str]:
    """A unique topic per call: ``topic_factory('usage', partitions=2)``."""
    from schemas.topics import TopicSpec

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        broker.create_topics([TopicSpec(name, partitions)])  # type: ignore[attr-defined]
        return name

    return make


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb-session")


@pytest.fixture
def clickhouse(chdb_path: Path) -> Iterator[object]:
    """A client on a fresh, migrated database in the session's embedded engine."""
    from kernel.clickhouse import connect
    from schemas.clickhouse.migrate import migrate

    db = f"t_{uuid.uuid4().hex[:12]}"
    client = connect(f"chdb://{chdb_path}", database=db)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {db}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the GPU-cluster traces are not present at {SHARED_DATA}")
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line over the fault suite's scenarios (tests/integration/test_faults.py)."""
    from tests.integration.faults import summary_line

    line = summary_line()
    if line:
        terminalreporter.write_line(line)
