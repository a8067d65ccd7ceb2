"""The facts the metrics are computed from: the period, and what ClickHouse holds for it.

:func:`load_facts` reads the exact ledger (``usage_minutely FINAL``), invoices and work units
for a period into plain :class:`Facts`; :func:`analytics.economics.compute` turns them into
economics without I/O. :func:`sync_asset_rates` is the one write: the register's per-model
rates into ``asset_rates``, so SQL and Grafana can value idle capacity.

Invoiced revenue is invoice lines except tax for the period: a tenant's finalized invoices if
it has any, else its drafts. Revenue recognition: usage-driven lines follow allocated
GPU-seconds (a day gets its month's amount pro-rated by them); time-driven lines (commitments,
minimum spend) are recognized evenly over the contract days they cover (``RevenueLine.covers``),
so a month's commitment does not land on the one day the tenant happened to run a job.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from analytics.assets import AssetRegister
from analytics.errors import PeriodError
from kernel.names import IDLE_TENANT
from kernel.period import Period
from kernel.period import PeriodError as KernelPeriodError

# -- facts ------------------------------------------------------------------------------------


#: What a report covers: a UTC month or one UTC day (the kernel's one period type).
ReportPeriod = Period


def parse_period(text: str) -> ReportPeriod:
    """``YYYY-MM`` (a month) or ``YYYY-MM-DD`` (a day); anything else is a :class:`PeriodError`."""
    try:
        return Period.parse_span(text)
    except KernelPeriodError as exc:
        raise PeriodError(str(exc)) from None


@dataclass(frozen=True)
class GpuHour:
    """One GPU for one hour, MIG slices summed (a row of ``gpu_utilization_hourly``), in
    milli-GPU-seconds (a GPU-second is 1000: allocated shares + the idle rest)."""

    hour: datetime
    gpu_model: str
    node_id: str
    gpu_uuid: str
    available_milli: int
    allocated_milli: int
    active_milli: int
    idle_milli: int
    sm_sum: float  # SM utilization (percent) summed over allocated seconds, share-weighted
    energy_mj: int
    shared_milli: int = 0  # capacity of the seconds the GPU was split into shares
    shared_allocated_milli: int = 0  # the allocated part of it (the rest: idle remainder)


@dataclass(frozen=True)
class JobTotal:
    """Allocated usage of one (tenant, job) on one GPU model in the period, in
    milli-GPU-seconds (seconds x share)."""

    tenant: str
    job: str
    gpu_model: str
    allocated_milli: int
    active_milli: int
    sm_sum: float
    energy_mj: int


#: Invoice line kinds whose revenue is earned by time, not by allocated seconds.
TIMED_KINDS = ("commitment", "minimum")


@dataclass(frozen=True)
class RevenueLine:
    """Invoiced amount (tax excluded) of one tenant for one GPU model; ``''`` = not per model."""

    tenant: str
    gpu_model: str
    amount: Decimal
    #: time-driven revenue: recognized evenly over [start, end); None: follows allocation.
    covers: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class WorkTotal:
    tenant: str
    job: str
    unit: str
    quantity: int


@dataclass(frozen=True)
class Facts:
    period: ReportPeriod
    gpu_hours: tuple[GpuHour, ...]
    jobs: tuple[JobTotal, ...]
    #: None: no invoices for the period, so revenue is rated at on-demand rates.
    invoiced: tuple[RevenueLine, ...] | None = None
    invoice_note: str = ""
    work: tuple[WorkTotal, ...] = ()


# -- load (ClickHouse) ------------------------------------------------------------------------

#: Per GPU and hour from the ``gpu_utilization_hourly`` view (migration 0020, the one definition
#: of available / allocated / active / idle), its MIG slices summed. Periods start and end on
#: hour boundaries, so filtering the view's hours is filtering the ledger's minutes.
_GPU_HOURS = """
SELECT hour, gpu_model, node_id, gpu_uuid,
       sum(available_milli_seconds), sum(allocated_milli_seconds), sum(active_milli_seconds),
       sum(idle_milli_seconds), sum(allocated_sm_util_sum), sum(energy_mj),
       sum(shared_milli_seconds), sum(shared_allocated_milli_seconds)
FROM gpu_utilization_hourly
WHERE hour >= {start:DateTime('UTC')} AND hour < {end:DateTime('UTC')}
GROUP BY hour, gpu_model, node_id, gpu_uuid
ORDER BY hour, gpu_uuid
"""

_JOBS = """
SELECT tenant, job, gpu_model, sum(gpu_milli_seconds),
       sum(toUInt64(active_seconds) * share_milli), sum(sm_util_sum * share_milli) / 1000,
       sum(energy_mj)
FROM usage_minutely FINAL
WHERE minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')} AND tenant != {idle:String}
GROUP BY tenant, job, gpu_model
ORDER BY tenant, job, gpu_model
"""

_INVOICED = """
SELECT i.invoice_id, i.tenant, i.status, l.gpu_model, l.kind IN {timed:Array(String)} AS timed,
       JSONExtractString(i.document, 'pricing', 'contract', 'starts_on') AS starts_on,
       JSONExtractString(i.document, 'pricing', 'contract', 'ends_on') AS ends_on, sum(l.amount)
FROM invoice_lines AS l FINAL
INNER JOIN (SELECT * FROM invoices FINAL) AS i ON i.invoice_id = l.invoice_id
WHERE i.period = {period:String} AND l.kind != 'tax' AND l.is_deleted = 0
GROUP BY i.invoice_id, i.tenant, i.status, l.gpu_model, timed, starts_on, ends_on
"""

_WORK = """
SELECT tenant, job, unit, sum(quantity)
FROM work_units FINAL
WHERE window_start >= {start:DateTime('UTC')} AND window_start < {end:DateTime('UTC')}
GROUP BY tenant, job, unit
ORDER BY tenant, job, unit
"""


def load_facts(client: Client, period: ReportPeriod) -> Facts:
    params = {
        "start": period.start.replace(tzinfo=None),
        "end": period.end.replace(tzinfo=None),
        "idle": IDLE_TENANT,
    }
    hours = tuple(
        GpuHour(
            _utc(r[0]),
            r[1],
            r[2],
            r[3],
            int(r[4]),
            int(r[5]),
            int(r[6]),
            int(r[7]),
            float(r[8]),
            int(r[9]),
            int(r[10]),
            int(r[11]),
        )
        for r in client.query(_GPU_HOURS, parameters=params).result_rows
    )
    jobs = tuple(
        JobTotal(r[0], r[1], r[2], int(r[3]), int(r[4]), float(r[5]), int(r[6]))
        for r in client.query(_JOBS, parameters=params).result_rows
    )
    invoiced, note = _load_invoiced(client, period, jobs, params)
    work: tuple[WorkTotal, ...] = ()
    if _has_tables(client, "work_units"):
        work = tuple(
            WorkTotal(r[0], r[1], r[2], int(r[3]))
            for r in client.query(_WORK, parameters=params).result_rows
        )
    return Facts(period, hours, jobs, invoiced, note, work)


def _load_invoiced(
    client: Client, period: ReportPeriod, jobs: tuple[JobTotal, ...], params: dict[str, Any]
) -> tuple[tuple[RevenueLine, ...] | None, str]:
    if not _has_tables(client, "invoices", "invoice_lines"):
        return None, ""
    rows = client.query(
        _INVOICED, parameters={"period": period.month_label, "timed": list(TIMED_KINDS)}
    ).result_rows
    if not rows:
        return None, ""
    month = period.month_period
    # A tenant's finalized invoices are the truth; its drafts count only when it has none.
    finalized = {r[1] for r in rows if r[2] == "finalized"}
    chosen = [r for r in rows if r[2] == "finalized" or r[1] not in finalized]
    n_final = len({r[0] for r in chosen if r[2] == "finalized"})
    n_draft = len({r[0] for r in chosen if r[2] != "finalized"})
    amounts: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    timed: dict[tuple[str, str, tuple[datetime, datetime]], Decimal] = defaultdict(Decimal)
    for _inv, tenant, _status, model, is_timed, starts, ends, amount in chosen:
        if is_timed:
            timed[(tenant, model or "", _covered(month, starts, ends))] += Decimal(amount)
        else:
            amounts[(tenant, model or "")] += Decimal(amount)
    note = (
        f"{n_final} finalized and {n_draft} draft invoice(s) for {period.month_label}, tax excluded"
    )
    if not period.is_month:
        # A day gets the month's invoiced amount in proportion to its allocated GPU-seconds.
        mparams = {
            "start": month.start.replace(tzinfo=None),
            "end": month.end.replace(tzinfo=None),
            "idle": IDLE_TENANT,
        }
        month_alloc: dict[tuple[str, str], int] = defaultdict(int)
        for r in client.query(_JOBS, parameters=mparams).result_rows:
            month_alloc[(r[0], r[2])] += int(r[3])
            month_alloc[(r[0], "")] += int(r[3])
        day_alloc: dict[tuple[str, str], int] = defaultdict(int)
        for j in jobs:
            day_alloc[(j.tenant, j.gpu_model)] += j.allocated_milli
            day_alloc[(j.tenant, "")] += j.allocated_milli
        amounts = {
            k: v * day_alloc.get(k, 0) / month_alloc[k] if month_alloc.get(k) else Decimal(0)
            for k, v in amounts.items()
        }
        note += f", pro-rated to {period.label} by allocated GPU-seconds"
        timed = {
            (t, m, (period.start, period.end)): a * _overlap(c, period) / _span(c)
            for (t, m, c), a in timed.items()
            if _overlap(c, period)
        }
    lines = [RevenueLine(t, m, a) for (t, m), a in sorted(amounts.items())]
    lines += [RevenueLine(t, m, a, c) for (t, m, c), a in sorted(timed.items())]
    if timed:
        note += "; commitments and minimum spend recognized evenly over the days they cover"
    return tuple(lines), note


def _covered(month: ReportPeriod, starts: str, ends: str) -> tuple[datetime, datetime]:
    """The contract's days within the month, as [start, end) instants (UTC)."""
    start = month.start
    if starts:
        start = max(start, datetime.fromisoformat(starts).replace(tzinfo=UTC))
    end = month.end
    if ends:
        end = min(end, datetime.fromisoformat(ends).replace(tzinfo=UTC) + timedelta(days=1))
    return (start, max(start, end))


def _span(c: tuple[datetime, datetime]) -> Decimal:
    return Decimal(max(int((c[1] - c[0]).total_seconds()), 1))


def _overlap(c: tuple[datetime, datetime], p: ReportPeriod) -> Decimal:
    return Decimal(max(int((min(c[1], p.end) - max(c[0], p.start)).total_seconds()), 0))


def _has_tables(client: Client, *names: str) -> bool:
    found = client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name IN {names:Array(String)}",
        parameters={"names": list(names)},
    ).result_rows[0][0]
    return int(found) == len(names)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sync_asset_rates(client: Client, register: AssetRegister) -> None:
    """Copy per-model rates into ``asset_rates`` so SQL and Grafana can value idle capacity."""
    now = datetime.now(UTC)
    rows = [
        [m, register.currency, r.on_demand_per_gpu_hour, r.spot_per_gpu_hour, now]
        for m, r in sorted(register.models.items())
    ]
    if rows:
        client.insert(
            "asset_rates",
            rows,
            column_names=[
                "gpu_model",
                "currency",
                "on_demand_per_gpu_hour",
                "spot_per_gpu_hour",
                "updated_at",
            ],
        )
