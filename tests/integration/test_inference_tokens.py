"""The inference companion end to end: a local HTTP server plays vLLM, TGI and SGLang with the
recorded /metrics fixtures; the companion scrapes it (counters increase, two servers restart, one
is down for a scrape), attributes through the allocation file and publishes to the embedded
broker; the records read back validate against the contract and add up to the counters' deltas,
and re-sent windows give the same rows in ``work_units``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents.attribution import Attributor, write_allocation_file
from agents.inference_config import parse_config
from agents.inference_scrape import TokenCompanion
from agents.kafka import make_producer
from schemas.work import WORK_UNITS_COLUMNS, WorkUnitsReported

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inference"
T0 = int(time.time()) - 600  # windows in the recent past: the contract refuses future ones


class MetricsServer:
    """Serves ``pages[path]``; a path mapped to None answers 503 (a server that is down)."""

    def __init__(self) -> None:
        self.pages: dict[str, str | None] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = pages.get(self.path)
                if body is None:
                    self.send_error(503, "starting up")
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MetricsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metrics_server() -> Iterator[MetricsServer]:
    with MetricsServer() as s:
        yield s


def page(name: str) -> str:
    return (FIXTURES / name).read_text()


def read_reports(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        # Read to the expected count, not to the end offset: the embedded broker's end offset can
        # trail the log while a producer batches (DESIGN.md).
        while len(values) < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in recs)
        time.sleep(0.5)
        for recs in consumer.poll(timeout_ms=500).values():  # nothing more than expected
            values.extend(r.value for r in recs)
        return values
    finally:
        consumer.close()


def test_companion_scrapes_three_servers_and_publishes_exact_token_windows(
    broker, topic_factory, metrics_server: MetricsServer, tmp_path: Path
) -> None:
    # given three servers on GPUs of two allocations (the scheduler's allocation file)
    allocations = tmp_path / "allocations.json"
    write_allocation_file(
        allocations,
        [
            {"gpu_uuid": "GPU-0", "tenant": "acme", "job": "chat-1"},
            {"gpu_uuid": "GPU-1", "tenant": "acme", "job": "chat-1"},
            {"gpu_uuid": "GPU-2", "tenant": "globex", "job": "code-9"},
            {"gpu_uuid": "GPU-3", "tenant": "globex", "job": "rag-2"},
        ],
    )
    url = metrics_server.url
    config = parse_config(
        {
            "endpoint": [
                {
                    "name": "vllm-0",
                    "kind": "vllm",
                    "url": f"{url}/vllm",
                    "gpus": ["GPU-0", "GPU-1"],
                },
                {
                    "name": "tgi-0",
                    "kind": "tgi",
                    "url": f"{url}/tgi",
                    "gpus": ["GPU-2"],
                    "model": "bigcode/starcoder2-15b",
                },
                {"name": "sglang-0", "kind": "sglang", "url": f"{url}/sglang", "gpus": ["GPU-3"]},
            ]
        }
    )
    topic = topic_factory("work")
    producer = make_producer(broker.bootstrap, client_id="tokens-test")
    c = TokenCompanion(
        config.endpoints,
        Attributor(allocations, proc_root=tmp_path / "noproc"),
        producer,
        topic,
        tmp_path / "state",
        "node-7",
    )
    pages = metrics_server.pages
    sglang_later = (
        page("sglang_2.txt")
        .replace("8.229902e+06", "8.230902e+06")
        .replace("7.600572e+06", "7.601072e+06")
    )
    try:
        # when: baseline, an increase, two restarts and a failed scrape, then a late recovery
        pages.update(
            {
                "/vllm": page("vllm_1.txt"),
                "/tgi": page("tgi_1.txt"),
                "/sglang": page("sglang_1.txt"),
            }
        )
        assert c.scrape_once(T0) == []
        pages.update(
            {
                "/vllm": page("vllm_2.txt"),
                "/tgi": page("tgi_2.txt"),
                "/sglang": page("sglang_2.txt"),
            }
        )
        assert len(c.scrape_once(T0 + 15)) == 6
        pages.update(
            {
                "/vllm": page("vllm_3_restarted.txt"),
                "/tgi": page("tgi_3_restarted.txt"),
                "/sglang": None,
            }
        )
        assert len(c.scrape_once(T0 + 30)) == 4
        pages["/sglang"] = sglang_later
        assert len(c.scrape_once(T0 + 45)) == 2
        assert c.flush(timeout=30), c.stats
        assert c.stats.scrape_failures == {"sglang-0": 1} and c.stats.resets == 4
    finally:
        c.close()
        producer.close(timeout=5)

    # then every record is a valid report, once, with the counters' deltas in exact windows
    values = read_reports(broker.bootstrap, topic, expected=12)
    reports = [
        WorkUnitsReported.model_validate_json(v, context={"now": time.time()}) for v in values
    ]
    assert len(reports) == 12 == len({r.event_id for r in reports})
    got = {(r.source, r.window_start, r.window_end): (r.tenant, r.job, r.quantity) for r in reports}
    llama, qwen = "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"
    assert got == {
        (f"node-7/vllm-0/{llama}/prompt", T0, T0 + 15): ("acme", "chat-1", 1_351_289 - 1_283_704),
        (f"node-7/vllm-0/{llama}/generated", T0, T0 + 15): ("acme", "chat-1", 419_876 - 402_211),
        # restarted (process_start_time_seconds changed, counters lower): the new values
        (f"node-7/vllm-0/{llama}/prompt", T0 + 15, T0 + 30): ("acme", "chat-1", 5120),
        (f"node-7/vllm-0/{llama}/generated", T0 + 15, T0 + 30): ("acme", "chat-1", 1788),
        ("node-7/tgi-0/bigcode/starcoder2-15b/prompt", T0, T0 + 15): (
            "globex",
            "code-9",
            845_100 - 812_734,
        ),
        ("node-7/tgi-0/bigcode/starcoder2-15b/generated", T0, T0 + 15): (
            "globex",
            "code-9",
            230_990 - 219_043,
        ),
        ("node-7/tgi-0/bigcode/starcoder2-15b/prompt", T0 + 15, T0 + 30): (
            "globex",
            "code-9",
            2210,
        ),
        ("node-7/tgi-0/bigcode/starcoder2-15b/generated", T0 + 15, T0 + 30): (
            "globex",
            "code-9",
            415,
        ),
        (f"node-7/sglang-0/{qwen}/prompt", T0, T0 + 15): ("globex", "rag-2", 8_229_902 - 8_128_902),
        (f"node-7/sglang-0/{qwen}/generated", T0, T0 + 15): (
            "globex",
            "rag-2",
            7_600_572 - 7_557_572,
        ),
        # the failed scrape at T0+30 made this window twice as long; nothing lost
        (f"node-7/sglang-0/{qwen}/prompt", T0 + 15, T0 + 45): ("globex", "rag-2", 1000),
        (f"node-7/sglang-0/{qwen}/generated", T0 + 15, T0 + 45): ("globex", "rag-2", 500),
    }


def test_resent_windows_give_the_same_rows(clickhouse) -> None:
    # given reports delivered twice (an at-least-once redelivery)
    reports = [
        WorkUnitsReported(
            tenant="acme",
            job="chat-1",
            source=f"node-7/vllm-0/m/{k}",
            unit="tokens",
            quantity=q,
            window_start=T0,
            window_end=T0 + 15,
        )
        for k, q in (("prompt", 67_585), ("generated", 17_665))
    ]
    for _ in range(2):
        clickhouse.insert(
            "work_units", [r.row() for r in reports], column_names=list(WORK_UNITS_COLUMNS)
        )
    # then the ledger of work has one row per window
    rows = clickhouse.query("SELECT count(), sum(quantity) FROM work_units FINAL").result_rows
    assert rows == [(2, 67_585 + 17_665)]


def test_the_command_scrapes_once_and_publishes(
    broker, topic_factory, metrics_server: MetricsServer, tmp_path: Path
) -> None:
    import subprocess
    import sys

    # given a config file naming one vLLM endpoint, and a state from a previous scrape
    config = tmp_path / "inference.toml"
    config.write_text(
        f'node_id = "node-9"\nallocation_file = "{tmp_path / "allocations.json"}"\n'
        f'[[endpoint]]\nname = "vllm-0"\nkind = "vllm"\nurl = "{metrics_server.url}/vllm"\n'
        'gpus = ["GPU-0"]\n'
    )
    write_allocation_file(
        tmp_path / "allocations.json", [{"gpu_uuid": "GPU-0", "tenant": "acme", "job": "chat-1"}]
    )
    topic = topic_factory("work")
    cmd = [
        sys.executable,
        "-m",
        "gpumeter.cli",
        "agent",
        "tokens",
        "--config",
        str(config),
        "--once",
        "--bootstrap",
        broker.bootstrap,
        "--topic",
        topic,
        "--state-dir",
        str(tmp_path / "state"),
    ]
    metrics_server.pages["/vllm"] = page("vllm_1.txt")
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    # when the counters grew and the command runs again (a new process: the baseline was saved)
    metrics_server.pages["/vllm"] = page("vllm_2.txt")
    time.sleep(1.1)  # the next window must start a second later
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "all acknowledged" in second.stdout
    # then the two reports of the grown counters are on the topic
    reports = [
        WorkUnitsReported.model_validate_json(v) for v in read_reports(broker.bootstrap, topic, 2)
    ]
    assert sorted((r.source.rsplit("/", 1)[1], r.quantity) for r in reports) == [
        ("generated", 419_876 - 402_211),
        ("prompt", 1_351_289 - 1_283_704),
    ]
    # and a server that is down makes a one-shot run fail visibly
    metrics_server.pages["/vllm"] = None
    time.sleep(1.1)
    down = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert down.returncode == 1 and "failed scrapes 1" in down.stdout
