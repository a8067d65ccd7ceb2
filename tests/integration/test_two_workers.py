"""Two real worker processes in one consumer group, on the embedded broker, with a rebalance
forced by killing one of them mid-stream.

Two processes cannot open one embedded ClickHouse (chDB locks its data directory per process),
so each worker writes its own store, and the stores are then merged by inserting one's ledger
rows into the other: exactly what a shared ClickHouse server does with the two workers' inserts
(the ledger merges by union, so the order of the inserts does not matter). What this cannot
show is a worker *reading* the other's writes when it reloads state; the many-writers
simulation (tests/unit/streams/test_many_writers.py) covers that with real processors over one
store. The merged ledger must equal the simulator's schedule per (GPU, minute, tenant, job).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.embedded.broker import EmbeddedBroker
from tests.integration.faults import Scenario, fleet, truth_cells

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPORT = """
import clickhouse_connect, sys
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
client.command("SELECT * FROM usage_minutely INTO OUTFILE '" + sys.argv[2] + "' FORMAT Native")
"""
IMPORT = """
import clickhouse_connect, sys
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
client.command("INSERT INTO usage_minutely SELECT * FROM file('" + sys.argv[2] + "', Native)")
"""


def test_two_workers_of_one_group_and_a_rebalance_give_the_exact_ledger(
    broker: EmbeddedBroker, topic_factory, tmp_path: Path
) -> None:
    topic = topic_factory("two-workers", partitions=4)
    f = fleet(minutes=60, nodes=4, gpus=8)
    a = Scenario("two workers", broker.bootstrap, topic, tmp_path / "a")
    b = Scenario("two workers", broker.bootstrap, topic, tmp_path / "b")
    b.name = a.name  # one consumer group: the app id is derived from the name
    # given an hour of 4 nodes x 8 GPUs on a 4-partition topic
    a.wait(a.agent(f, 60))
    # when two workers with stores of their own share the group, one is killed mid-stream
    # and started again (two rebalances), and both run until the topic is drained
    wa, wb = a.worker(idle_s=8), b.worker(idle_s=8)
    time.sleep(6)
    if wb.poll() is None:
        b.kill(wb)
    # B starts again at once: the killed member keeps its partitions until its session times
    # out, and meanwhile nobody reads them. `--exit-when-idle` must wait for the whole group
    # (committed offsets at the end of every partition), not only for the worker's own
    # partitions, or both live workers end with a partition never read.
    wb = b.worker(idle_s=8)
    out_a, out_b = a.wait(wa), b.wait(wb)
    counted = [a.stats(out_a).get("new_seconds", 0), b.stats(out_b).get("new_seconds", 0)]
    # and the second store's ledger rows are inserted into the first, as a shared server would
    # have received them
    per_store = [s.ledger_totals_by_node() for s in (a, b)]  # for the failure message
    native = tmp_path / "b-ledger.native"
    for script, args in (
        (EXPORT, [str(tmp_path / "b" / "data" / "clickhouse"), str(native)]),
        (IMPORT, [str(tmp_path / "a" / "data" / "clickhouse"), str(native)]),
    ):
        subprocess.run([sys.executable, "-c", script, *args], check=True, timeout=120)
    # then the merged ledger is the schedule, cell by cell: nothing lost, nothing doubled
    a.faults += b.faults
    r = a.check(f)
    assert (r.lost, r.doubled) == (0, 0), (r, per_store, counted)
    assert r.checked == sum(truth_cells(f).values())
    assert all(counted), f"both workers must have counted part of the topic: {counted}"
