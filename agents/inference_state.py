"""The token companion's state directory: one companion per directory (a lock), and the state
file holding each endpoint's baseline and every report not yet acknowledged.

The file is replaced atomically (write, fsync, rename) *before* anything of a cycle is sent:
see step 3 in :mod:`agents.inference_scrape` for why that order.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agents.errors import AgentError
from agents.inference import CounterWindow

STATE_FILE = "inference-state.json"
STATE_VERSION = 1

#: Reports not yet acknowledged: event id -> (tenant, record), in the order they were made.
Outbox = dict[str, tuple[str, bytes]]


@dataclass
class CompanionState:
    """What survives a restart."""

    windows: dict[str, CounterWindow] = field(default_factory=dict)  # endpoint -> baseline
    outbox: Outbox = field(default_factory=dict)
    dropped_reports: int = 0


def lock_state_dir(directory: Path) -> int:
    """Take the directory's lock; the descriptor holds it until closed."""
    path = directory / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: also within one process
    except OSError:
        os.close(fd)
        raise AgentError(
            f"another token companion uses {path.parent}; one per state directory"
        ) from None
    return fd


def save_state(
    directory: Path, windows: Mapping[str, CounterWindow], outbox: Outbox, dropped_reports: int
) -> None:
    doc = {
        "version": STATE_VERSION,
        "endpoints": {
            name: {
                "ts": w.ts,
                "process_start": w.process_start,
                "series": [
                    [k, [list(p) for p in labels], v] for (k, labels), v in w.series.items()
                ],
            }
            for name, w in windows.items()
        },
        "outbox": [[e, t, p.decode()] for e, (t, p) in outbox.items()],
        "dropped_reports": dropped_reports,
    }
    path = directory / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise AgentError(
            f"cannot save the token state {path}: {exc.strerror or exc}; free some space "
            "(nothing of this cycle was sent)"
        ) from exc


def load_state(directory: Path, endpoints: Collection[str]) -> CompanionState | None:
    """The saved state (None if there is none yet). Baselines of endpoints not in ``endpoints``
    (removed from the config) are forgotten."""
    path = directory / STATE_FILE
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AgentError(
            f"the token state {path} is unreadable ({exc}); move it away to "
            "start over (tokens since its last scrape will not be reported)"
        ) from exc
    if doc.get("version") != STATE_VERSION:
        raise AgentError(f"{path}: state version {doc.get('version')!r}, expected {STATE_VERSION}")
    return CompanionState(
        windows={
            name: CounterWindow(
                w["ts"],
                {(k, tuple(tuple(p) for p in labels)): int(v) for k, labels, v in w["series"]},
                w["process_start"],
            )
            for name, w in doc.get("endpoints", {}).items()
            if name in endpoints
        },
        outbox={e: (t, p.encode()) for e, t, p in doc.get("outbox", [])},
        dropped_reports=int(doc.get("dropped_reports", 0)),
    )
