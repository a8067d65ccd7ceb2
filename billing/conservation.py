"""Conservation per GPU, reconcile's check 4: billed + idle = observed, in milli-GPU-seconds.

For every GPU (or MIG slice, ``gpu/mig``) with ledger rows in the period: the allocations'
and the idle remainder's shares of a GPU-second sum to 1000, so billed milli-GPU-seconds +
idle milli-GPU-seconds = 1000 x GPU-seconds observed. Observed is the number of distinct
seconds in the raw archive when the archive holds the GPU's first ledger minute of the period
(:data:`RAW`), otherwise the distinct seconds of the ledger's own masks (:data:`LEDGER`):
per GPU-minute the bitCount of the OR of every row's ``seconds_mask``, summed over the
minutes. The OR is what catches a second that two rows both count (two conflicting claims that
two workers each counted without seeing the other's): their milli-GPU-seconds add up, the
second is observed once.

Cost: one read of the ledger (``usage_minutely FINAL``, the columns minute, gpu_uuid,
mig_uuid, tenant, shared_milli and the masks) in consecutive time chunks that tile the period.
Each chunk is one hash ``GROUP BY minute, gpu_uuid, mig_uuid`` bounded to about
:data:`CHUNK_ROWS` ledger rows (so to at most that many GPU-minutes held at once, about 100
bytes each), then per GPU; a GPU-minute never spans two chunks, so the sums per GPU add up
exactly. (One ``GROUP BY`` of the whole month aggregated in key order instead was several
times slower; a whole-month hash table holds every GPU-minute of the month.) The raw archive is
read only when it holds a second of the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from billing.period import Period
from billing.pricebook import IDLE_TENANT
from billing.store import BillingStore
from billing.store_client import _utc

RAW = "raw archive (usage_raw_seconds, or usage_seconds FINAL before migration 0031)"
LEDGER = "ledger masks (raw archive expired or not covering the period)"

#: Ledger rows (every stored version, so at least the GPU-minutes) per conservation query.
CHUNK_ROWS = 2_000_000

_SPAN = "minute >= {start:DateTime('UTC')} AND minute < {end:DateTime('UTC')}"
_GPU = "if(mig_uuid = '', gpu_uuid, concat(gpu_uuid, '/', mig_uuid))"
#: One chunk: per GPU-minute the billed and idle milli-GPU-seconds and the OR of the masks, then
#: per GPU. A hash GROUP BY (optimize_aggregation_in_order = 0): in key order it was slower.
_CHUNK_QUERY = f"""SELECT gpu_uuid, mig_uuid, any(g), sum(b), sum(i), min(minute), sum(bitCount(m))
FROM (SELECT minute, gpu_uuid, mig_uuid, any({_GPU}) AS g,
             sumIf(gpu_milli_seconds, tenant != {{idle:String}}) AS b,
             sumIf(gpu_milli_seconds, tenant = {{idle:String}}) AS i,
             groupBitOr(seconds_mask) AS m
      FROM usage_minutely FINAL WHERE {_SPAN}
      GROUP BY minute, gpu_uuid, mig_uuid)
GROUP BY gpu_uuid, mig_uuid
SETTINGS optimize_aggregation_in_order = 0"""


@dataclass
class GpuBalance:
    gpu: str
    billed: int  # milli-GPU-seconds allocated (seconds x share)
    idle: int  # milli-GPU-seconds idle (the unallocated remainder included)
    observed: int  # GPU-seconds observed
    source: str

    @property
    def ok(self) -> bool:
        return self.billed + self.idle == self.observed * 1000


def gpu_seconds_text(milli: int) -> str:
    """milli-GPU-seconds as GPU-seconds, exact: 120000 -> '120', 120500 -> '120.5'."""
    return format((Decimal(milli) / 1000).normalize(), "f")


@dataclass
class _Ledger:
    gpu: str
    billed: int
    idle: int
    first_minute: datetime
    masks: int  # distinct seconds of the masks


def conservation(
    store: BillingStore, period: Period, *, chunk_rows: int = CHUNK_ROWS
) -> list[GpuBalance]:
    """Every GPU's balance for the period, in GPU order."""
    ledger = ledger_balances(store, period, chunk_rows=chunk_rows)
    raw = raw_seconds(store, period) if ledger else {}
    out = []
    for led in sorted(ledger.values(), key=lambda x: (x.gpu, x.billed, x.idle, x.first_minute)):
        # The raw archive is authoritative only if it still holds this GPU's first ledger minute.
        r = raw.get(led.gpu)
        if r is not None and r[1] <= led.first_minute.replace(second=59):
            out.append(GpuBalance(led.gpu, led.billed, led.idle, r[0], RAW))
        else:
            out.append(GpuBalance(led.gpu, led.billed, led.idle, led.masks, LEDGER))
    return out


def ledger_balances(
    store: BillingStore, period: Period, *, chunk_rows: int = CHUNK_ROWS
) -> dict[tuple[str, str], _Ledger]:
    """Per (gpu_uuid, mig_uuid): billed, idle, first minute and the masks' distinct seconds."""
    out: dict[tuple[str, str], _Ledger] = {}
    for start, end in chunks(store, period, chunk_rows):
        for gpu, mig, g, billed, idle, first, masks in store._query(
            _CHUNK_QUERY, start=start, end=end, idle=IDLE_TENANT
        ):
            first = _utc(first)
            led = out.get((gpu, mig))
            if led is None:
                out[(gpu, mig)] = _Ledger(str(g), int(billed), int(idle), first, int(masks))
            else:
                led.billed += int(billed)
                led.idle += int(idle)
                led.first_minute = min(led.first_minute, first)
                led.masks += int(masks)
    return out


def chunks(store: BillingStore, period: Period, chunk_rows: int) -> list[tuple[datetime, datetime]]:
    """Consecutive [start, end) ranges that tile the period, each of whole minutes and about
    ``chunk_rows`` ledger rows at most (counted per hour, without FINAL: every stored version
    counts, so it bounds the GPU-minutes). An hour holding more is cut into equal runs of
    whole minutes, each with at most ``chunk_rows`` if the hour's rows are spread evenly (one
    minute, the finest cut, holds what it holds); a row written after the count still falls in
    a chunk, since the chunks cover the whole period."""
    per_hour = {
        _utc(h): int(n)
        for h, n in store._query(
            f"SELECT toStartOfHour(minute) AS h, count() FROM usage_minutely WHERE {_SPAN} "
            "GROUP BY h",
            start=period.start,
            end=period.end,
        )
    }
    out: list[tuple[datetime, datetime]] = []
    start, rows = period.start, 0
    hour = period.start
    while hour < period.end:
        n = per_hour.get(hour, 0)
        nxt = min(hour + timedelta(hours=1), period.end)
        if n > chunk_rows:  # this hour alone: runs of minutes
            if hour > start:
                out.append((start, hour))
            # floor: each run holds at most chunk_rows (a minute at least, whatever it holds)
            step = timedelta(minutes=max(1, 60 // -(-n // chunk_rows)))
            t = hour
            while t < nxt:
                out.append((t, min(t + step, nxt)))
                t += step
            start, rows = nxt, 0
        elif rows + n > chunk_rows and hour > start:
            out.append((start, hour))
            start, rows = hour, n
        else:
            rows += n
        hour = nxt
    if start < period.end:
        out.append((start, period.end))
    return out


def raw_seconds(store: BillingStore, period: Period) -> dict[str, tuple[int, datetime]]:
    """Per GPU: distinct seconds in the raw archive within the period, and the first of them;
    {} without a query over the archive when its tables hold no second of the period."""
    params = {"start": period.start, "end": period.end}
    tables = {
        str(n)
        for (n,) in store._query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND name IN ('usage_raw_seconds', 'usage_seconds', 'usage_frames')"
        )
    }
    # The archive's base tables, probed cheaply (no FINAL: any stored version is a second).
    probes = []
    if "usage_seconds" in tables:
        probes.append(
            "SELECT 1 FROM usage_seconds WHERE ts >= {start:DateTime('UTC')} AND "
            "ts < {end:DateTime('UTC')} LIMIT 1"
        )
    if "usage_frames" in tables:
        probes.append(f"SELECT 1 FROM usage_frames WHERE {_SPAN} LIMIT 1")
    if not any(store._query(p, **params) for p in probes):
        return {}
    # usage_raw_seconds (both archives: v1 usage_seconds and v2 usage_frames, migration 0031)
    # where it exists, else usage_seconds FINAL. Either is read as distinct seconds, never rows.
    archive = "usage_raw_seconds" if "usage_raw_seconds" in tables else "usage_seconds FINAL"
    return {
        str(g): (int(n), _utc(first))
        for g, n, first in store._query(
            f"""SELECT if(mig_uuid = '', gpu_uuid, concat(gpu_uuid, '/', mig_uuid)) AS gpu,
                  uniqExact(ts), min(ts)
           FROM {archive}
           WHERE ts >= {{start:DateTime('UTC')}} AND ts < {{end:DateTime('UTC')}} GROUP BY gpu""",
            **params,
        )
    }
