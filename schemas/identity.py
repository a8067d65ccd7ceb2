"""The identity of a GPU-second: ``(gpu_uuid, mig_uuid, ts)``, and its deterministic event id
(a UUIDv5), the same in every version of the contract: a replayed second is recognised
anywhere downstream, whichever record carried it."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

#: Namespace of sample event ids. Never change it: ids already stored would stop matching.
SAMPLE_NAMESPACE = uuid.UUID("6f1c7a52-3b0e-5d2a-9a51-7c7e0c2a9d11")


def sample_event_id(gpu_uuid: str, mig_uuid: str | None, ts: int) -> uuid.UUID:
    """The deterministic id of a sample: the same GPU-second always gets the same id.

    Equal to ``uuid.uuid5(SAMPLE_NAMESPACE, f"{gpu_uuid}|{mig_uuid or ''}|{ts}")``."""
    return uuid.UUID(int=sample_event_int(gpu_uuid, mig_uuid, ts))


_NAMESPACE_BYTES = SAMPLE_NAMESPACE.bytes
#: RFC 4122 version (5) and variant bits, as :func:`uuid.uuid5` sets them on the SHA-1 prefix.
_UUID5_KEEP = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID5_SET = (0x8000 << 48) | (5 << 76)


def sample_event_int(
    gpu_uuid: str,
    mig_uuid: str | None,
    ts: int,
    _sha1: Any = hashlib.sha1,
    _from_bytes: Any = int.from_bytes,
) -> int:
    """:func:`sample_event_id` as a 128-bit integer (``.int``), without building a UUID object:
    UUIDv5 computed with hashlib directly, several times cheaper than :func:`uuid.uuid5`, for
    the worker archiving every sample (clickhouse-connect writes UUID columns from ints)."""
    digest = _sha1(_NAMESPACE_BYTES + f"{gpu_uuid}|{mig_uuid or ''}|{ts}".encode()).digest()
    return _from_bytes(digest[:16], "big") & _UUID5_KEEP | _UUID5_SET
