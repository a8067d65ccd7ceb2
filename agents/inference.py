"""Tokens served by inference servers on a node: their Prometheus counters, read as windows.

vLLM, Text Generation Inference and SGLang count the prompt and generated tokens they process
in Prometheus metrics on ``/metrics``. This module is the pure part of the companion that turns
them into work units (:mod:`agents.inference_scrape` does the HTTP, the state file and Kafka):

- :func:`parse_metrics`: the Prometheus text exposition format, just the samples.
- :class:`ServerKind`: which metric holds prompt / generated tokens and which label names the
  model, per server kind. Built-in defaults below; any of them can be overridden in the config.
- :class:`CounterWindow`: the previous scrape's values per series and the deltas since, with
  counter resets handled like the NVML energy counter (``agents/nvml.py``): a value lower than
  the previous one means the server restarted, and the delta is the new value. A failed scrape
  does not move the baseline, so the next window is longer: tokens are neither lost nor invented.

Built-in metric names and where they come from:

- vLLM: ``vllm:prompt_tokens_total`` and ``vllm:generation_tokens_total`` (counters, label
  ``model_name``; vLLM's V1 engine adds ``engine``, summed over here).
- SGLang: ``sglang:prompt_tokens_total`` and ``sglang:generation_tokens_total`` (counters, label
  ``model_name``; SGLang's docs/references/production_metrics.md).
- TGI: no token counter is exported; the histograms ``tgi_request_input_length`` and
  ``tgi_request_generated_tokens`` (TGI's docs/source/reference/metrics.md) have a ``_sum``
  series that only grows, which is a counter of input and generated tokens. TGI has no model
  label: the endpoint's ``model`` setting names it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from agents.errors import AgentError

TokenKind = Literal["prompt", "generated"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("prompt", "generated")

#: Model name used when a server has no model label and the endpoint names none.
DEFAULT_MODEL = "default"
#: prometheus_client exports it by default; when it changes, the server restarted, even if its
#: counters have already climbed past their previous values.
PROCESS_START = "process_start_time_seconds"


class InferenceConfigError(AgentError, ValueError):
    """The inference companion's configuration cannot be used; the message says where."""


class MetricsParseError(AgentError, ValueError):
    """A ``/metrics`` text that is not the Prometheus text format."""


@dataclass(frozen=True, slots=True)
class ServerKind:
    """Where one kind of inference server keeps its token counters."""

    name: str
    prompt_metric: str
    generated_metric: str
    model_label: str | None  # None: the server has no model label (the endpoint names it)

    def metric(self, kind: TokenKind) -> str:
        return self.prompt_metric if kind == "prompt" else self.generated_metric


BUILTIN_KINDS: dict[str, ServerKind] = {
    k.name: k
    for k in (
        ServerKind(
            "vllm", "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "model_name"
        ),
        ServerKind(
            "sglang", "sglang:prompt_tokens_total", "sglang:generation_tokens_total", "model_name"
        ),
        ServerKind("tgi", "tgi_request_input_length_sum", "tgi_request_generated_tokens_sum", None),
    )
}


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_metrics(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (version 0.0.4; OpenMetrics' samples parse
    the same way). Comments, HELP and TYPE lines are skipped; a malformed line is an error,
    since a half-understood page could silently drop a counter."""
    out: list[Sample] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise MetricsParseError(f"line {n}: not a metric sample: {line[:120]!r}")
        name, label_text, value_text = m.group(1), m.group(2), m.group(3)
        try:
            value = float(value_text)
        except ValueError:
            raise MetricsParseError(f"line {n}: {value_text!r} is not a number") from None
        out.append(Sample(name, _parse_labels(label_text or "", n), value))
    return out


def _parse_labels(text: str, line: int) -> Labels:
    labels: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _LABEL.match(text, pos)
        if m is None:
            raise MetricsParseError(f"line {line}: bad labels {text[:120]!r}")
        value = re.sub(r"\\.", lambda e: _UNESCAPE.get(e.group(0), e.group(0)), m.group(2))
        labels.append((m.group(1), value))
        pos = m.end()
    return tuple(sorted(labels))


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Tokens of one kind for one model, counted in ``[window_start, window_end)``."""

    model: str
    kind: TokenKind
    quantity: int
    window_start: int
    window_end: int
    reset: bool  # a counter of this model and kind restarted within the window


@dataclass
class CounterWindow:
    """One endpoint's baseline: the series values of the last successful scrape and its second.

    ``series`` maps ``(kind, labels)`` to the counter value; ``process_start`` is the server's
    ``process_start_time_seconds`` when it exports one."""

    ts: int | None = None
    series: dict[tuple[TokenKind, Labels], int] = field(default_factory=dict)
    process_start: float | None = None

    def advance(
        self, ts: int, samples: Iterable[Sample], kind: ServerKind, model: str | None
    ) -> list[TokenDelta]:
        """Take a successful scrape at second ``ts``; return the tokens since the baseline per
        (model, kind). The first scrape only sets the baseline (what was counted before it is
        not this window's). A scrape at or before the baseline's second is ignored."""
        if self.ts is not None and ts <= self.ts:
            return []
        current, start = _token_series(samples, kind)
        restarted = (
            start is not None and self.process_start is not None and start != self.process_start
        )
        deltas: dict[tuple[str, TokenKind], list[int]] = {}
        if self.ts is not None:
            for key, value in current.items():
                prev = self.series.get(key)
                # A series absent from the baseline started at zero after it (a model's first
                # request, a restarted server); lower than before: the counter was reset.
                reset = restarted or (prev is not None and value < prev)
                delta = value if reset or prev is None else value - prev
                name = _model_of(key[1], kind, model)
                acc = deltas.setdefault((name, key[0]), [0, 0])
                acc[0] += delta
                acc[1] |= reset
        window_start = self.ts
        self.ts, self.series, self.process_start = ts, current, start
        if window_start is None:
            return []
        return [
            TokenDelta(name, k, q, window_start, ts, bool(r))
            for (name, k), (q, r) in sorted(deltas.items())
        ]


def _token_series(
    samples: Iterable[Sample], kind: ServerKind
) -> tuple[dict[tuple[TokenKind, Labels], int], float | None]:
    wanted = {kind.prompt_metric: "prompt", kind.generated_metric: "generated"}
    out: dict[tuple[TokenKind, Labels], int] = {}
    start: float | None = None
    for s in samples:
        if s.name == PROCESS_START and not s.labels:
            start = s.value
            continue
        k = wanted.get(s.name)
        if k is None:
            continue
        if not math.isfinite(s.value) or s.value < 0:
            raise MetricsParseError(f"{s.name}{dict(s.labels)} = {s.value}: not a token count")
        out[(k, s.labels)] = round(s.value)  # type: ignore[index]
    return out, start


def _model_of(labels: Labels, kind: ServerKind, model: str | None) -> str:
    if kind.model_label is not None:
        found = dict(labels).get(kind.model_label)
        if found:
            return found
    return model or DEFAULT_MODEL


def server_kinds(
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, ServerKind]:
    """The built-in kinds with ``overrides`` applied: ``{kind: {prompt_metric, generated_metric,
    model_label}}``; a kind not built in must give both metrics."""
    kinds = dict(BUILTIN_KINDS)
    allowed = {"prompt_metric", "generated_metric", "model_label"}
    for name, spec in (overrides or {}).items():
        if not isinstance(spec, Mapping):
            raise InferenceConfigError(f"counters.{name}: expected a table of metric names")
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise InferenceConfigError(
                f"counters.{name}: unknown keys {unknown}; allowed {sorted(allowed)}"
            )
        base = kinds.get(name)
        values: dict[str, object] = {
            "prompt_metric": base.prompt_metric if base else None,
            "generated_metric": base.generated_metric if base else None,
            "model_label": base.model_label if base else None,
        }
        values.update(spec)
        for key in ("prompt_metric", "generated_metric"):
            v = values[key]
            if not isinstance(v, str) or not re.fullmatch(_NAME, v):
                raise InferenceConfigError(
                    f"counters.{name}.{key}: a metric name is required, got {v!r}"
                )
        label = values["model_label"]
        if label == "":
            label = None
        if label is not None and (
            not isinstance(label, str) or not re.fullmatch(r"[a-zA-Z_]\w*", label)
        ):
            raise InferenceConfigError(f"counters.{name}.model_label: not a label name: {label!r}")
        kinds[name] = ServerKind(
            name, str(values["prompt_metric"]), str(values["generated_metric"]), label
        )
    return kinds
