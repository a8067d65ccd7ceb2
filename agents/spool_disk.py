"""The spool's directory and the disk under it: the one-owner lock, the agent id, the small
state files (``acked``, ``dropped.json``), and the file-system seam (:class:`SpoolFS`) that
fault-injection tests replace with a small or lying disk.

The layout of a spool directory is described in :mod:`agents.spool`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

from agents.errors import AgentError

#: The errors that mean "no room": a full file system or an exhausted quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

#: Free space kept on the spool's file system after every write: the small state files
#: (``acked``, ``dropped.json``) must still be writable when the spool itself is full.
DEFAULT_RESERVE_BYTES = 64 * 1024


class SpoolError(AgentError, RuntimeError):
    pass


class SpoolFS(Protocol):
    """The file-system calls that can fail for lack of space; a seam for fault injection."""

    def write(self, fd: int, data: bytes) -> int: ...

    def free_bytes(self, directory: Path) -> int: ...


class OsFS:
    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def free_bytes(self, directory: Path) -> int:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize


def write_all(fs: SpoolFS, fd: int, data: bytes) -> None:
    """Write all of ``data`` (``write`` may take part of it, as ``os.write`` may)."""
    view = memoryview(data)
    while view:
        n = fs.write(fd, view.tobytes())
        view = view[n:]


def lock_directory(directory: Path) -> int:
    """Take the spool's lock (the file ``lock``); the descriptor holds it until closed."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    # A POSIX record lock: it excludes other processes (a second agent, ``agent resend``)
    # and is released when the owner dies, kill -9 included.
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise SpoolError(
            f"the spool {directory} is in use by another agent process; one spool "
            "directory per running agent"
        ) from None
    return fd


def load_agent_id(directory: Path) -> str:
    """The agent instance id kept in ``agent_id``, created once (atomically) if missing."""
    path = directory / "agent_id"
    if path.exists():
        return path.read_text().strip()
    agent_id = str(uuid.uuid4())
    tmp = directory / ".agent_id.tmp"
    tmp.write_text(agent_id)
    os.replace(tmp, path)
    return agent_id


def read_int(directory: Path, name: str, default: int) -> int:
    try:
        return int((directory / name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return default


def read_json(directory: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads((directory / name).read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def write_state(directory: Path, name: str, text: str) -> bool:
    """Replace a small state file atomically. False if the disk is full (nothing was replaced:
    the caller keeps the value in memory and writes it later); any other failure raises."""
    tmp = directory / f".{name}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, directory / name)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise SpoolError(f"writing {directory / name} failed: {exc}") from exc
        tmp.unlink(missing_ok=True)
        return False
    return True
