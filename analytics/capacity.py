"""Sellable capacity: the GPUs idle now, per model, and how many are likely to stay idle.

What a sales channel needs to sell idle capacity *now*: per GPU model, the idle capacity in
the latest closed minute, and a forecast for each of the next hours, with the error that
forecast had on past weeks, so a buyer of "8 H100 for 6 hours" can be told how sure it is.

- **Idle now** (per model, one minute): ``idle_gpus`` is the idle capacity in GPU-equivalents,
  milli-GPU-seconds of the ledger's idle rows / 60,000, so the unallocated remainder of a
  shared GPU counts by its share; ``whole_idle`` counts devices (GPUs or MIG slices) idle for
  the whole minute at full share: what can be sold as whole devices. ``observed`` counts the
  devices that reported that minute (a device with no samples is not sellable: unknown).
- **Forecast** by hour of week: the idle capacity of the target hour (mean GPU-equivalents over
  the hour) in each of the last ``weeks`` weeks at the same hour of week. ``expected`` is their
  mean; ``likely`` a low quantile (``quantile``, default 0.2, lower nearest rank), the figure to
  sell against: in most past weeks at least that much was idle. An hour with no ledger rows for
  the model counts as 0 idle (conservative: unknown capacity is not for sale).
- **Measured error** (a backtest): for every hour of the last ``backtest_weeks`` weeks, the same
  forecast from the weeks before it, against what happened: the mean absolute error of
  ``expected`` (GPUs) and the *oversold* rate, the share of hours in which fewer GPUs were idle
  than ``likely`` promised.

Everything is read from ``usage_minutely FINAL`` (exact), hour by hour, once per call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from kernel.names import IDLE_TENANT, MIG_SLICES, mig_parent

HOUR = 3600
WEEK = 7 * 24 * HOUR


@dataclass(frozen=True)
class IdleNow:
    gpu_model: str
    idle_gpus: Decimal  # GPU-equivalents (milli-GPU-seconds / 60,000)
    whole_idle: int  # devices idle at full share for the whole minute
    observed: int  # devices that reported in the minute


@dataclass(frozen=True)
class HourForecast:
    hour: datetime  # start of the forecast hour, UTC
    expected: Decimal | None  # mean over past weeks; None without history
    likely: Decimal | None  # the low quantile over past weeks
    weeks: int  # how many past weeks had data for it


@dataclass(frozen=True)
class Backtest:
    hours: int  # hours scored
    mae: Decimal | None  # mean absolute error of `expected`, in GPUs
    oversold: Decimal | None  # share of hours with fewer idle GPUs than `likely`


@dataclass
class ModelCapacity:
    now: IdleNow
    forecast: list[HourForecast] = field(default_factory=list)
    backtest: Backtest = Backtest(0, None, None)
    spot_per_gpu_hour: Decimal | None = None


@dataclass(frozen=True)
class Capacity:
    minute: datetime  # the minute "now" describes (closed: older than the worker's grace)
    models: list[ModelCapacity]


def latest_closed_minute(at: datetime, grace_s: int) -> datetime:
    """The newest minute the worker has closed at ``at``: it ended at least ``grace_s`` ago."""
    ts = int(at.timestamp()) - grace_s - 60
    return datetime.fromtimestamp(ts - ts % 60, UTC)


def idle_now(client: Any, minute: datetime) -> list[IdleNow]:
    rows = client.query(
        f"""
        SELECT gpu_model,
               sumIf(gpu_milli_seconds, tenant = '{IDLE_TENANT}') AS idle_ms,
               uniqExactIf((gpu_uuid, mig_uuid),
                           tenant = '{IDLE_TENANT}' AND share_milli = 1000
                           AND gpu_seconds = 60) AS whole,
               uniqExact((gpu_uuid, mig_uuid)) AS observed
        FROM usage_minutely FINAL
        WHERE minute = {{m:DateTime('UTC')}} AND gpu_seconds > 0
        GROUP BY gpu_model ORDER BY gpu_model
        """,
        parameters={"m": minute.replace(tzinfo=None)},
    ).result_rows
    return [IdleNow(m, Decimal(int(ms)) / 60_000, int(w), int(o)) for m, ms, w, o in rows]


def idle_history(client: Any, start: datetime, end: datetime) -> dict[str, dict[int, Decimal]]:
    """Per model, per hour (epoch of its start) in ``[start, end)``: mean idle GPU-equivalents."""
    rows = client.query(
        f"""
        SELECT gpu_model, toUnixTimestamp(toStartOfHour(minute)) AS hour,
               sum(gpu_milli_seconds) AS idle_ms
        FROM usage_minutely FINAL
        WHERE tenant = '{IDLE_TENANT}'
          AND minute >= {{s:DateTime('UTC')}} AND minute < {{e:DateTime('UTC')}}
        GROUP BY gpu_model, hour
        """,
        parameters={"s": start.replace(tzinfo=None), "e": end.replace(tzinfo=None)},
    ).result_rows
    out: dict[str, dict[int, Decimal]] = defaultdict(dict)
    for model, hour, ms in rows:
        out[model][int(hour)] = Decimal(int(ms)) / (HOUR * 1000)
    return out


def forecast_hour(
    history: dict[int, Decimal], hour: int, weeks: int, quantile: float, since: int
) -> tuple[Decimal | None, Decimal | None, int]:
    """(expected, likely, weeks used) for the hour starting at epoch ``hour`` from the same
    hour of week in the ``weeks`` weeks before it; weeks before ``since`` (no history read)
    are left out, a week inside the history with no idle rows counts as 0."""
    values = [
        history.get(h, Decimal(0))
        for h in (hour - w * WEEK for w in range(1, weeks + 1))
        if h >= since
    ]
    if not values:
        return None, None, 0
    values.sort()
    expected = sum(values, Decimal(0)) / len(values)
    likely = values[int(quantile * (len(values) - 1))]
    return expected, likely, len(values)


def backtest(
    history: dict[int, Decimal],
    end_hour: int,
    weeks: int,
    backtest_weeks: int,
    quantile: float,
    since: int,
) -> Backtest:
    errors: list[Decimal] = []
    oversold = 0
    for hour in range(end_hour - backtest_weeks * WEEK, end_hour, HOUR):
        if hour < since:
            continue
        expected, likely, _ = forecast_hour(history, hour, weeks, quantile, since)
        if expected is None or likely is None:
            continue
        actual = history.get(hour, Decimal(0))
        errors.append(abs(actual - expected))
        oversold += actual < likely
    if not errors:
        return Backtest(0, None, None)
    n = len(errors)
    return Backtest(n, sum(errors, Decimal(0)) / n, Decimal(oversold) / n)


def capacity(
    client: Any,
    at: datetime,
    *,
    grace_s: int = 120,
    horizon_h: int = 6,
    weeks: int = 4,
    backtest_weeks: int = 2,
    quantile: float = 0.2,
    spot: dict[str, Decimal] | None = None,
) -> Capacity:
    """Idle now, the forecast for the next ``horizon_h`` hours and its measured error."""
    minute = latest_closed_minute(at, grace_s)
    now_hour = int(minute.timestamp()) // HOUR * HOUR
    since = now_hour - (weeks + backtest_weeks) * WEEK
    history = idle_history(
        client, datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(now_hour, UTC)
    )
    models = []
    for now in idle_now(client, minute):
        h = history.get(now.gpu_model, {})
        forecast = [
            HourForecast(
                datetime.fromtimestamp(t, UTC), *forecast_hour(h, t, weeks, quantile, since)
            )
            for t in (now_hour + k * HOUR for k in range(1, horizon_h + 1))
        ]
        models.append(
            ModelCapacity(
                now,
                forecast,
                backtest(h, now_hour, weeks, backtest_weeks, quantile, since),
                spot_rate(spot or {}, now.gpu_model),
            )
        )
    return Capacity(minute, models)


def spot_rate(spot: dict[str, Decimal], gpu_model: str) -> Decimal | None:
    """The model's spot rate; a MIG slice without one of its own: its parent's x g/7, rounded
    half-even to 6 decimals (as billing prices a slice, billing/README.md)."""
    if gpu_model in spot:
        return spot[gpu_model]
    mig = mig_parent(gpu_model)
    if mig is None or mig[0] not in spot:
        return None
    return (spot[mig[0]] * mig[1] / MIG_SLICES).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)


def latest_minute_with_data(client: Any) -> datetime | None:
    rows = client.query("SELECT max(minute) FROM usage_minutely").result_rows
    if not rows or rows[0][0] is None or int(rows[0][0].timestamp()) <= 0:
        return None
    value: datetime = rows[0][0]
    return value if value.tzinfo else value.replace(tzinfo=UTC)
