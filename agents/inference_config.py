"""The inference companion's configuration: which endpoints to scrape, on which GPUs they run.

TOML (or JSON, same keys)::

    node_id = "gpu-a100-007"            # optional; default the host name
    interval_s = 15                     # seconds between scrapes, 1..3600
    allocation_file = "/run/gpumeter/allocations.json"   # the NVML sampler's attribution
    state_dir = "/var/lib/gpumeter/tokens"               # baselines and unsent reports

    [[endpoint]]
    name = "vllm-0"                     # optional; part of the report's source
    kind = "vllm"                       # vllm | tgi | sglang | a kind defined under [counters]
    url = "http://127.0.0.1:8000/metrics"
    gpus = ["GPU-5e2f0c1a-...", "GPU-77aa01b3-..."]      # the GPUs the server runs on
    model = "meta-llama/Llama-3.1-8B-Instruct"           # only for servers without a model label

    [counters.tgi]                      # optional: other metric names for a kind
    prompt_metric = "tgi_request_input_length_sum"
    generated_metric = "tgi_request_generated_tokens_sum"
    model_label = ""                    # "" or absent: no model label

Every problem is reported at once (one :class:`InferenceConfigError` listing them).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from agents.attribution import DEFAULT_ALLOCATION_FILE
from agents.inference import InferenceConfigError, ServerKind, server_kinds

_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_TOP_KEYS = {"node_id", "interval_s", "allocation_file", "state_dir", "endpoint", "counters"}
_ENDPOINT_KEYS = {"name", "kind", "url", "gpus", "model", "timeout_s"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    kind: ServerKind
    url: str
    gpus: tuple[str, ...]
    model: str | None = None
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class CompanionConfig:
    endpoints: tuple[Endpoint, ...]
    node_id: str | None = None
    interval_s: int = 15
    allocation_file: Path | None = DEFAULT_ALLOCATION_FILE
    state_dir: Path | None = None


def load_config(path: Path) -> CompanionConfig:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise InferenceConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InferenceConfigError(f"{path}: {exc}") from exc
    return parse_config(doc, str(path))


def parse_config(doc: Mapping[str, Any], source: str = "<config>") -> CompanionConfig:
    problems: list[str] = []
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown}; allowed {sorted(_TOP_KEYS)}")
    try:
        kinds = server_kinds(doc.get("counters"))
    except InferenceConfigError as exc:
        problems.append(str(exc))
        kinds = server_kinds()
    node_id = doc.get("node_id")
    if node_id is not None and not _is_identifier(node_id):
        problems.append(f"node_id: 1..128 printable characters, got {node_id!r}")
    interval = doc.get("interval_s", 15)
    if not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 3600:
        problems.append(f"interval_s: a whole number of seconds 1..3600, got {interval!r}")
    endpoints: list[Endpoint] = []
    raw_endpoints = doc.get("endpoint", [])
    if not isinstance(raw_endpoints, list) or not raw_endpoints:
        problems.append("endpoint: at least one [[endpoint]] is required")
        raw_endpoints = []
    for i, raw in enumerate(raw_endpoints):
        ep = _endpoint(raw, f"endpoint[{i}]", kinds, problems)
        if ep is not None:
            if any(e.name == ep.name for e in endpoints):
                problems.append(f"endpoint[{i}]: name {ep.name!r} is used twice")
            endpoints.append(ep)
    if problems:
        raise InferenceConfigError(f"{source}: " + "; ".join(problems))
    alloc = doc.get("allocation_file", str(DEFAULT_ALLOCATION_FILE))
    state = doc.get("state_dir")
    return CompanionConfig(
        endpoints=tuple(endpoints),
        node_id=node_id,
        interval_s=interval,
        allocation_file=Path(alloc) if alloc else None,
        state_dir=Path(state) if state else None,
    )


def _endpoint(
    raw: Any, where: str, kinds: dict[str, ServerKind], problems: list[str]
) -> Endpoint | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a table")
        return None
    n = len(problems)
    unknown = sorted(set(raw) - _ENDPOINT_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}; allowed {sorted(_ENDPOINT_KEYS)}")
    kind = kinds.get(raw.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        problems.append(f"{where}: kind {raw.get('kind')!r} is not one of {sorted(kinds)}")
    url = raw.get("url")
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(f"{where}: url must be http(s)://host:port/metrics, got {url!r}")
    gpus = raw.get("gpus")
    if not isinstance(gpus, list) or not gpus or not all(_is_identifier(g) for g in gpus):
        problems.append(f"{where}: gpus must list the GPU uuids the server runs on, got {gpus!r}")
    model = raw.get("model")
    if model is not None and not _is_identifier(model):
        problems.append(f"{where}: model must be 1..128 printable characters, got {model!r}")
    timeout = raw.get("timeout_s", 5.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 60:
        problems.append(f"{where}: timeout_s must be in (0, 60], got {timeout!r}")
    name = raw.get("name")
    if name is None and parsed is not None and parsed.netloc:
        name = f"{raw.get('kind')}@{parsed.netloc}"
    # No name and no usable url: the url problem is reported; a derived name would repeat it.
    if name is not None and (not _is_identifier(name) or "/" in str(name)):
        problems.append(
            f"{where}: name must be 1..128 printable characters without '/', got {name!r}"
        )
    if len(problems) > n or kind is None:
        return None
    return Endpoint(str(name), kind, str(url), tuple(gpus), model, float(timeout))  # type: ignore[arg-type]


def _is_identifier(value: object) -> bool:
    return isinstance(value, str) and _PRINTABLE.match(value) is not None
