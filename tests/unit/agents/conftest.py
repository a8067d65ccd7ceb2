"""Fixtures shared by the agent's unit tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """A fake ``/proc`` for attribution from process environments."""
    root = tmp_path / "proc"
    root.mkdir()
    return root


@pytest.fixture
def add_process(proc_root: Path) -> Callable[[int, Mapping[str, str]], None]:
    """Fake ``/proc/<pid>/environ``: NUL-separated KEY=VALUE, as the kernel writes it."""

    def add(pid: int, env: Mapping[str, str]) -> None:
        d = proc_root / str(pid)
        d.mkdir()
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))

    return add
