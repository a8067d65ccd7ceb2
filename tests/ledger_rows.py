"""Ledger rows written straight into ``usage_minutely`` by tests that need a ledger without
running the pipeline. The ledger stores union state (0003_ledger_union.sql): masks and
per-second readings; the sums readers use are computed from them. A test gives the sums it
wants and this puts them on the first counted second, so every reader sees exactly them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.clickhouse.columns import LEDGER_COLUMNS as COLUMNS  # one column list, the sink's


@dataclass(frozen=True)
class LedgerRow:
    minute: datetime
    tenant: str
    job: str
    gpu_uuid: str
    gpu_model: str
    seconds_mask: int
    active_mask: int = 0
    sm_util_sum: float = 0.0
    mem_util_sum: float = 0.0
    energy_mj: int = 0
    billing_class: str = ""
    mig_uuid: str = ""
    node_id: str = "n1"
    peak_mem_used: int = 0
    share_milli: int = 1000  # stored as shared_milli, 0 for a whole GPU (0030)

    def values(self) -> list[Any]:
        assert self.seconds_mask, "a ledger row counts at least one second"
        first = (self.seconds_mask & -self.seconds_mask).bit_length() - 1
        return [
            self.minute.replace(tzinfo=None),
            self.tenant,
            self.job,
            self.billing_class,
            self.gpu_uuid,
            self.mig_uuid,
            0 if self.share_milli == 1000 else self.share_milli,
            self.gpu_model,
            self.node_id,
            self.seconds_mask,
            0,
            self.active_mask,
            ([first], [self.sm_util_sum]),
            ([first], [self.mem_util_sum]),
            ([first], [self.energy_mj]),
            self.peak_mem_used,
            1,
        ]


def insert_ledger(client: Any, rows: list[LedgerRow]) -> None:
    client.insert("usage_minutely", [r.values() for r in rows], column_names=COLUMNS)
