"""Hand-built ledger scenarios and the invoice tables, shared by the analytics tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from analytics.assets import AssetRegister, parse_assets
from tests.ledger_rows import LedgerRow, insert_ledger

MODEL = "NVIDIA H100 80GB HBM3"
START = datetime(2025, 3, 1, tzinfo=UTC)


def register(**site: Any) -> AssetRegister:
    """One asset class: 43 800 over 5 years, no residual = exactly 1.00 per GPU-hour
    (43 800 / 5 = 8 760 a year; 8 760 / 8 760 h = 1.00)."""
    return parse_assets(
        {
            "currency": "USD",
            "site": {
                "pue": "1.5",
                "energy_price_per_kwh": "0.10",
                "energy_bands": [{"start_hour": 0, "end_hour": 1, "price_per_kwh": "0.05"}],
                **site,
            },
            "models": {MODEL: {"on_demand_per_gpu_hour": "2.00", "spot_per_gpu_hour": "1.00"}},
            "assets": [
                {
                    "name": "h100",
                    "gpu_model": MODEL,
                    "node_id": "n*",
                    "purchase_price": "43800",
                    "in_service": "2025-01-01",
                    "life_years": 5,
                    "residual_value": "0",
                    "other_opex_per_gpu_hour": "0.25",
                }
            ],
        }
    )


@dataclass(frozen=True)
class Minute:
    minute: datetime
    tenant: str
    job: str
    gpu_uuid: str
    active_seconds: int
    sm_util_sum: float
    energy_mj: int
    node_id: str = "n1"
    gpu_model: str = MODEL
    gpu_seconds: int = 60


def minutes(start: datetime, n: int, **kw: Any) -> list[Minute]:
    return [Minute(start + timedelta(minutes=i), **kw) for i in range(n)]


def insert_minutes(client: Any, rows: list[Minute]) -> None:
    mask = (1 << 60) - 1
    insert_ledger(
        client,
        [
            LedgerRow(
                r.minute,
                r.tenant,
                r.job,
                r.gpu_uuid,
                r.gpu_model,
                mask if r.gpu_seconds == 60 else (1 << r.gpu_seconds) - 1,
                active_mask=(1 << r.active_seconds) - 1,
                sm_util_sum=r.sm_util_sum,
                energy_mj=r.energy_mj,
                node_id=r.node_id,
            )
            for r in rows
        ],
    )


def two_gpu_scenario() -> list[Minute]:
    """2025-03-01 00:00-02:00, node n1, two H100s (4 available GPU-hours):

    - g1: tenant A, job j1, allocated both hours; active 60 s/min in hour 0, 30 s/min in hour 1;
      SM 50 % (sum 3 000 per minute); 300 W = 18 000 000 mJ per minute.
    - g2: tenant B, job j2, allocated hour 0 (active all of it, SM 100 %: 6 000 per minute,
      600 W = 36 000 000 mJ per minute); idle in hour 1 (100 W = 6 000 000 mJ per minute).
    """
    h1 = START + timedelta(hours=1)
    return [
        *minutes(
            START,
            60,
            tenant="A",
            job="j1",
            gpu_uuid="g1",
            active_seconds=60,
            sm_util_sum=3000.0,
            energy_mj=18_000_000,
        ),
        *minutes(
            h1,
            60,
            tenant="A",
            job="j1",
            gpu_uuid="g1",
            active_seconds=30,
            sm_util_sum=3000.0,
            energy_mj=18_000_000,
        ),
        *minutes(
            START,
            60,
            tenant="B",
            job="j2",
            gpu_uuid="g2",
            active_seconds=60,
            sm_util_sum=6000.0,
            energy_mj=36_000_000,
        ),
        *minutes(
            h1,
            60,
            tenant="__idle__",
            job="",
            gpu_uuid="g2",
            active_seconds=0,
            sm_util_sum=0.0,
            energy_mj=6_000_000,
        ),
    ]


NOW = START + timedelta(hours=2)  # costs accrue over exactly the two observed hours

D = Decimal
