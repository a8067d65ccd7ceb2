"""Version 2 records as a producer writes them, for the schema tests (plain dicts: nothing here
comes from the code under test)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

NOW = 1_700_000_000  # the validator's clock in these tests (2023-11-14T22:13:20Z)
SCHEMA_V2_FILE = (
    Path(__file__).resolve().parents[3] / "schemas" / "json" / "gpu.usage.v2.schema.json"
)
GIB = 1024**3


def frame(n: int = 4, **overrides: Any) -> dict[str, Any]:
    """A plausible H100 shared by two jobs (500 + 250 milli-GPUs, 250 idle) for ``n`` seconds
    ending 10 s before NOW."""
    doc: dict[str, Any] = {
        "gpu_uuid": "GPU-0001",
        "mig_uuid": None,
        "gpu_model": "H100-SXM5-80GB",
        "start": NOW - 10 - n,
        "allocations": [
            {"tenant": "acme", "job": "train-1", "share_milli": 500, "billing_class": "spot"},
            {"tenant": "beta", "job": "infer-2", "share_milli": 250},
        ],
        "sm_util": [float(40 + i % 50) for i in range(n)],
        "mem_util": [20.0] * n,
        "mem_used": [(10 + i % 50) * GIB for i in range(n)],
        "mem_total": 80 * GIB,
        "power_w": [300.0 + i % 300 for i in range(n)],
        "energy_j": [299.5 + i % 300 for i in range(n)],
        "temp_c": [60.0] * n,
    }
    doc.update(overrides)
    return doc


def record(frames: list[Any] | None = None, /, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 2,
        "node_id": "node-a",
        "agent_id": "agent-1",
        "seq": 7,
        "frames": [frame()] if frames is None else frames,
        "gaps": [],
    }
    doc.update(overrides)
    return doc


def raw(doc: Any) -> bytes:
    return orjson.dumps(doc)


def with_second(f: dict[str, Any], column: str, index: int, value: Any) -> dict[str, Any]:
    """The frame with one second of one column replaced."""
    f = copy.deepcopy(f)
    f[column][index] = value
    return f


def expanded(f: dict[str, Any]) -> list[dict[str, Any]]:
    """A frame as one dict per second (for comparing with v1 samples, computed here)."""
    flags = {e["index"]: e["flags"] for e in f.get("flags", ())}
    temps = f.get("temp_c") or [None] * len(f["sm_util"])
    return [
        {
            "ts": f["start"] + i,
            "sm_util": f["sm_util"][i],
            "mem_util": f["mem_util"][i],
            "mem_used": f["mem_used"][i],
            "power_w": f["power_w"][i],
            "energy_j": f["energy_j"][i],
            "temp_c": temps[i],
            "flags": list(flags.get(i, ())),
        }
        for i in range(len(f["sm_util"]))
    ]
