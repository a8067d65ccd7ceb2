"""The inference companion's pure parts: /metrics parsing per server, counter windows (resets,
gaps), configuration, and the companion cycle against a fake producer."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest

from agents.attribution import Allocation
from agents.errors import AgentError
from agents.inference import (
    BUILTIN_KINDS,
    CounterWindow,
    InferenceConfigError,
    MetricsParseError,
    parse_metrics,
)
from agents.inference_config import Endpoint, parse_config
from agents.inference_scrape import StaticAllocations, TokenCompanion, token_source
from schemas.work import WorkUnitsReported

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "inference"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
T0 = 1_764_320_000  # 2025-11-28T08:53:20Z


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def tokens(text: str, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in parse_metrics(text) if s.name == metric}


# -- parsing: one test per server ----------------------------------------------------------------


def test_vllm_metrics_parse_with_model_and_engine_labels() -> None:
    text = fixture("vllm_1.txt")
    labels = (("engine", "0"), ("model_name", LLAMA))
    assert tokens(text, "vllm:prompt_tokens_total") == {labels: 1_283_704.0}
    assert tokens(text, "vllm:generation_tokens_total") == {labels: 402_211.0}
    assert tokens(text, "process_start_time_seconds") == {(): 1_764_324_185.44}


def test_sglang_metrics_parse() -> None:
    text = fixture("sglang_1.txt")
    assert tokens(text, "sglang:prompt_tokens_total") == {(("model_name", QWEN),): 8_128_902.0}
    assert tokens(text, "sglang:generation_tokens_total") == {(("model_name", QWEN),): 7_557_572.0}


def test_tgi_histogram_sums_are_the_token_counters() -> None:
    text = fixture("tgi_1.txt")
    assert tokens(text, "tgi_request_input_length_sum") == {(): 812_734.0}
    assert tokens(text, "tgi_request_generated_tokens_sum") == {(): 219_043.0}
    # the buckets are not mistaken for the sum
    assert len(tokens(text, "tgi_request_input_length_bucket")) == 4


def test_label_escapes_and_timestamps() -> None:
    (s,) = parse_metrics('m{a="x\\"y",b="back\\\\slash",c="l\\n2"} 3 1700000000000\n')
    assert dict(s.labels) == {"a": 'x"y', "b": "back\\slash", "c": "l\n2"}
    assert s.value == 3.0


@pytest.mark.parametrize(
    "line", ["vllm:prompt_tokens_total{model_name=} 1", "x 1.2.3", '{a="b"} 1']
)
def test_a_malformed_page_is_an_error_not_a_silent_gap(line: str) -> None:
    with pytest.raises(MetricsParseError):
        parse_metrics(line)


# -- counter windows --------------------------------------------------------------------------


def test_first_scrape_is_the_baseline_then_deltas_per_model_and_kind() -> None:
    w = CounterWindow()
    vllm = BUILTIN_KINDS["vllm"]
    assert w.advance(T0, parse_metrics(fixture("vllm_1.txt")), vllm, None) == []
    deltas = w.advance(T0 + 15, parse_metrics(fixture("vllm_2.txt")), vllm, None)
    assert [
        (d.model, d.kind, d.quantity, d.window_start, d.window_end, d.reset) for d in deltas
    ] == [
        (LLAMA, "generated", 419_876 - 402_211, T0, T0 + 15, False),
        (LLAMA, "prompt", 1_351_289 - 1_283_704, T0, T0 + 15, False),
    ]


def test_a_lower_counter_is_a_reset_and_the_delta_is_the_new_value() -> None:
    # given TGI (no process start time exported) scraped before and after a restart
    w = CounterWindow()
    tgi = BUILTIN_KINDS["tgi"]
    w.advance(T0, parse_metrics(fixture("tgi_1.txt")), tgi, "bigcode/starcoder2-15b")
    w.advance(T0 + 15, parse_metrics(fixture("tgi_2.txt")), tgi, "bigcode/starcoder2-15b")
    # when the counters come back lower
    deltas = w.advance(
        T0 + 30, parse_metrics(fixture("tgi_3_restarted.txt")), tgi, "bigcode/starcoder2-15b"
    )
    # then the window counts what the new process counted, and says it saw a reset
    assert {d.kind: (d.quantity, d.reset) for d in deltas} == {
        "prompt": (2210, True),
        "generated": (415, True),
    }
    assert {d.model for d in deltas} == {"bigcode/starcoder2-15b"}


def test_a_new_process_start_time_is_a_reset_even_when_counters_climbed_past() -> None:
    vllm = BUILTIN_KINDS["vllm"]
    w = CounterWindow()
    w.advance(T0, parse_metrics(fixture("vllm_3_restarted.txt")), vllm, None)  # 5120 prompt tokens
    # the server restarts and has already counted more than before: 9000 > 5120
    restarted = (
        fixture("vllm_3_restarted.txt")
        .replace("5120.0", "9000.0")
        .replace("1.76433003127e+09", "1.76433009999e+09")
    )
    deltas = w.advance(T0 + 60, parse_metrics(restarted), vllm, None)
    assert {d.kind: (d.quantity, d.reset) for d in deltas}["prompt"] == (9000, True)


def test_a_series_that_appears_after_the_baseline_counts_from_zero() -> None:
    sglang = BUILTIN_KINDS["sglang"]
    w = CounterWindow()
    w.advance(T0, parse_metrics(fixture("sglang_1.txt")), sglang, None)
    text = fixture("sglang_2.txt") + 'sglang:prompt_tokens_total{model_name="other"} 77.0\n'
    deltas = {
        (d.model, d.kind): d.quantity for d in w.advance(T0 + 10, parse_metrics(text), sglang, None)
    }
    assert deltas[("other", "prompt")] == 77
    assert deltas[(QWEN, "prompt")] == 8_229_902 - 8_128_902


def test_a_scrape_in_the_same_second_is_ignored() -> None:
    w = CounterWindow()
    kind = BUILTIN_KINDS["sglang"]
    w.advance(T0, parse_metrics(fixture("sglang_1.txt")), kind, None)
    assert w.advance(T0, parse_metrics(fixture("sglang_2.txt")), kind, None) == []
    assert (
        sum(
            d.quantity
            for d in w.advance(T0 + 1, parse_metrics(fixture("sglang_2.txt")), kind, None)
        )
        > 0
    )


# -- configuration ----------------------------------------------------------------------------


def test_config_with_an_overridden_kind_and_every_problem_reported_at_once() -> None:
    cfg = parse_config(
        {
            "interval_s": 10,
            "counters": {
                "mysrv": {"prompt_metric": "my_in_total", "generated_metric": "my_out_total"}
            },
            "endpoint": [
                {"kind": "mysrv", "url": "http://127.0.0.1:9000/metrics", "gpus": ["GPU-a"]}
            ],
        }
    )
    (ep,) = cfg.endpoints
    assert (ep.name, ep.kind.prompt_metric, ep.kind.model_label) == (
        "mysrv@127.0.0.1:9000",
        "my_in_total",
        None,
    )
    with pytest.raises(InferenceConfigError) as err:
        parse_config(
            {
                "interval_s": 0,
                "endpoint": [
                    {"kind": "vllm", "url": "ftp://x", "gpus": []},
                    {"kind": "nope", "url": "http://h:1/m", "gpus": ["g"]},
                ],
            }
        )
    message = str(err.value)
    for part in ("interval_s", "endpoint[0]: url", "endpoint[0]: gpus", "endpoint[1]: kind 'nope'"):
        assert part in message


def test_token_source_stays_within_the_contract() -> None:
    long = token_source("n" * 60, "e" * 40, "m" * 100, "generated")
    assert len(long) == 128 and long.endswith("/generated")
    assert long != token_source("n" * 60, "e" * 40, "m" * 99 + "x", "generated")
    assert token_source("node", "vllm-0", LLAMA, "prompt") == f"node/vllm-0/{LLAMA}/prompt"


# -- the companion cycle ----------------------------------------------------------------------


class _Future:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def add_callback(self, fn: Any) -> None:
        if self.ok:
            fn(None)

    def add_errback(self, fn: Any) -> None:
        if not self.ok:
            fn(RuntimeError("broker away"))


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.up = True

    def send(self, topic: str, key: bytes, value: bytes) -> _Future:
        self.sent.append((topic, key, value))
        return _Future(self.up)

    def flush(self, timeout: float | None = None) -> None:
        pass


class Pages:
    """What each endpoint answers next; an exception instance is raised (a failed scrape)."""

    def __init__(self) -> None:
        self.next: dict[str, str | Exception] = {}

    def __call__(self, ep: Endpoint) -> str:
        page = self.next[ep.name]
        if isinstance(page, Exception):
            raise page
        return page


ACME = Allocation("acme", "infer-7")


def companion(
    tmp_path: Path, pages: Pages, producer: FakeProducer, gpus_alloc: dict | None = None
) -> TokenCompanion:
    cfg = parse_config(
        {
            "endpoint": [
                {
                    "name": "tgi-0",
                    "kind": "tgi",
                    "url": "http://127.0.0.1:1/metrics",
                    "gpus": ["GPU-a", "GPU-b"],
                    "model": "bigcode/starcoder2-15b",
                },
            ]
        }
    )
    alloc = StaticAllocations(
        gpus_alloc if gpus_alloc is not None else {"GPU-a": ACME, "GPU-b": ACME}
    )
    return TokenCompanion(
        cfg.endpoints, alloc, producer, "gpu.work.v1", tmp_path, "node-1", fetch=pages
    )


def reports(producer: FakeProducer) -> list[WorkUnitsReported]:
    return [WorkUnitsReported.model_validate_json(v) for _, _, v in producer.sent]


def test_a_missed_scrape_makes_the_next_window_longer_and_loses_nothing(tmp_path: Path) -> None:
    pages, producer = Pages(), FakeProducer()
    c = companion(tmp_path, pages, producer)
    pages.next["tgi-0"] = fixture("tgi_1.txt")
    c.scrape_once(T0)
    # when the scrape at T0+15 fails
    pages.next["tgi-0"] = urllib.error.URLError("connection refused")
    assert c.scrape_once(T0 + 15) == []
    assert c.stats.scrape_failures == {"tgi-0": 1}
    # then the one at T0+30 covers [T0, T0+30) with every token since T0
    pages.next["tgi-0"] = fixture("tgi_2.txt")
    c.scrape_once(T0 + 30)
    got = {r.source.rsplit("/", 1)[1]: r for r in reports(producer)}
    assert {k: (r.window_start, r.window_end, r.quantity) for k, r in got.items()} == {
        "prompt": (T0, T0 + 30, 845_100 - 812_734),
        "generated": (T0, T0 + 30, 230_990 - 219_043),
    }
    assert {(r.tenant, r.job, r.unit) for r in got.values()} == {("acme", "infer-7", "tokens")}
    assert got["prompt"].source == "node-1/tgi-0/bigcode/starcoder2-15b/prompt"
    assert c.flush(timeout=1) and not c.outbox  # acknowledged
    c.close()


def test_unsent_reports_and_baselines_survive_a_restart_and_are_resent_identically(
    tmp_path: Path,
) -> None:
    pages, producer = Pages(), FakeProducer()
    c = companion(tmp_path, pages, producer)
    pages.next["tgi-0"] = fixture("tgi_1.txt")
    c.scrape_once(T0)
    producer.up = False  # the broker is away: the reports stay in the outbox
    pages.next["tgi-0"] = fixture("tgi_2.txt")
    made = c.scrape_once(T0 + 15)
    c.pump()
    assert len(made) == 2 and len(c.outbox) == 2 and c.stats.send_failures == 2
    c.close()
    # a new process on the same state directory
    producer2 = FakeProducer()
    c2 = companion(tmp_path, pages, producer2)
    assert c2.flush(timeout=1)
    assert sorted(r.to_json() for r in reports(producer2)) == sorted(r.to_json() for r in made)
    # and the baseline was kept: the next window starts where the last one ended
    pages.next["tgi-0"] = fixture("tgi_3_restarted.txt")
    (r1, r2) = c2.scrape_once(T0 + 30)
    assert (r1.window_start, r1.window_end) == (T0 + 15, T0 + 30)
    c2.close()


def test_a_second_companion_on_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    c = companion(tmp_path, Pages(), FakeProducer())
    with pytest.raises(AgentError, match="another token companion"):
        companion(tmp_path, Pages(), FakeProducer())
    c.close()


def test_tokens_on_idle_gpus_are_counted_not_reported(tmp_path: Path) -> None:
    pages, producer = Pages(), FakeProducer()
    c = companion(tmp_path, pages, producer, gpus_alloc={})
    pages.next["tgi-0"] = fixture("tgi_1.txt")
    c.scrape_once(T0)
    pages.next["tgi-0"] = fixture("tgi_2.txt")
    assert c.scrape_once(T0 + 15) == []
    assert c.stats.unattributed_tokens == (845_100 - 812_734) + (230_990 - 219_043)
    assert producer.sent == []
    c.close()


def test_gpus_of_different_allocations_use_the_first_listed_gpu(tmp_path: Path) -> None:
    pages, producer = Pages(), FakeProducer()
    c = companion(
        tmp_path, pages, producer, gpus_alloc={"GPU-b": Allocation("beta", "j2"), "GPU-a": ACME}
    )
    pages.next["tgi-0"] = fixture("tgi_1.txt")
    c.scrape_once(T0)
    pages.next["tgi-0"] = fixture("tgi_2.txt")
    assert {(r.tenant, r.job) for r in c.scrape_once(T0 + 15)} == {("acme", "infer-7")}
    c.close()
