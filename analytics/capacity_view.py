"""How ``gpumeter capacity`` shows its figures: a table for people, feed records for machines."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from analytics.capacity import Capacity
from schemas.capacity import CapacityRecord, HourOutlook

_Q = Decimal("0.001")


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(_Q))


def feed_records(cap: Capacity, currency: str, generated_at: int) -> list[CapacityRecord]:
    """One ``gpu.capacity.v1`` record per GPU model (GPU counts to the milli-GPU)."""
    out = []
    for m in cap.models:
        out.append(
            CapacityRecord(
                minute=int(cap.minute.timestamp()),
                gpu_model=m.now.gpu_model,
                idle_gpus=str(m.now.idle_gpus.quantize(_Q)),
                whole_idle_devices=m.now.whole_idle,
                observed_devices=m.now.observed,
                spot_price_per_gpu_hour=None
                if m.spot_per_gpu_hour is None
                else str(m.spot_per_gpu_hour),
                currency=currency if m.spot_per_gpu_hour is not None else None,
                outlook=[
                    HourOutlook(
                        hour_start=int(f.hour.timestamp()),
                        expected_idle_gpus=_dec(f.expected),
                        likely_idle_gpus=_dec(f.likely),
                        weeks_of_history=f.weeks,
                    )
                    for f in m.forecast
                ],
                forecast_mae_gpus=_dec(m.backtest.mae),
                forecast_oversold_rate=_dec(m.backtest.oversold),
                generated_at=generated_at,
            )
        )
    return out


def print_table(cap: Capacity, currency: str, args: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    now = Table(
        title=f"idle now: minute {cap.minute:%Y-%m-%d %H:%M} UTC (closed)", title_justify="left"
    )
    for col in ("GPU model", "idle GPUs", "whole idle", "reporting", "spot / GPU-h", "idle / h"):
        now.add_column(col, justify="left" if col == "GPU model" else "right")
    for m in cap.models:
        price = m.spot_per_gpu_hour
        now.add_row(
            m.now.gpu_model,
            f"{m.now.idle_gpus:,.3f}",
            f"{m.now.whole_idle:,}",
            f"{m.now.observed:,}",
            "-" if price is None else f"{price:,.2f} {currency}",
            "-" if price is None else f"{m.now.idle_gpus * price:,.2f} {currency}",
        )
    console.print(now)
    outlook = Table(
        title=f"likely idle GPUs, next {args.hours} h (q={args.quantile:g} over {args.weeks} "
        f"past weeks; expected in brackets)",
        title_justify="left",
    )
    outlook.add_column("GPU model")
    hours = [f.hour for f in cap.models[0].forecast] if cap.models else []
    for h in hours:
        outlook.add_column(f"{h:%a %H}h", justify="right")
    outlook.add_column("error (MAE)", justify="right")
    outlook.add_column("oversold", justify="right")
    for m in cap.models:
        cells = [
            "no history"
            if f.likely is None or f.expected is None
            else f"{f.likely:,.1f} ({f.expected:,.1f})"
            for f in m.forecast
        ]
        bt = m.backtest
        outlook.add_row(
            m.now.gpu_model,
            *cells,
            "-" if bt.mae is None else f"{bt.mae:,.2f} GPUs",
            "-" if bt.oversold is None else f"{bt.oversold:.0%} of {bt.hours} h",
        )
    console.print(outlook)
