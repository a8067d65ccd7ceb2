"""What flows through the processors: a record as read from Kafka, and a rejection of one
(or of one sample in it), kept with its source position."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceRecord:
    value: bytes
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    topic: str
    partition: int
    offset: int
    sample_index: int  # -1: the whole record
    code: str
    reason: str
    node_id: str
    raw: bytes  # the offending bytes, exactly
