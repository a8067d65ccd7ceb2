"""The demo's proof: the ClickHouse ledger compared with the simulator's (or trace's) ground
truth in milli-GPU-seconds, per (tenant, job, GPU model, hour) cell, per tenant and for idle."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kernel.names import IDLE_TENANT, MILLI_PER_GPU_HOUR, MJ_PER_KWH

#: Tenants shown one per row; the rest are summed in one row (a trace has over a hundred).
MAX_TENANT_ROWS = 15


@dataclass
class Check:
    name: str
    expected: int
    measured: int

    @property
    def ok(self) -> bool:
        return self.expected == self.measured


def compare_with_ground_truth(
    console: Any, client: Any, fleet: Any, start: int, end: int
) -> list[Check]:
    """Compare the ledger over ``[start, end)`` with the fleet's ground truth in milli-GPU-seconds
    (the ledger's ``gpu_milli_seconds``: seconds held x share, so a shared GPU's tenants and
    its idle remainder add up to 1000 per GPU-second), cell by cell (tenant, job, GPU model,
    hour), per tenant and for idle; print a table; one check per figure."""
    from rich.table import Table

    truth = fleet.ground_truth(start, end)
    rows = client.query(
        "SELECT tenant, job, gpu_model, toUnixTimestamp(toStartOfHour(minute)) AS hour, "
        "sum(gpu_seconds), sum(gpu_milli_seconds), sum(active_seconds), sum(energy_mj) "
        "FROM usage_minutely FINAL WHERE minute >= {s:DateTime} AND minute < {e:DateTime} "
        "GROUP BY tenant, job, gpu_model, hour",
        parameters={"s": datetime.fromtimestamp(start, UTC), "e": datetime.fromtimestamp(end, UTC)},
    ).result_rows
    measured: Counter[tuple[str, str, str, int]] = Counter()  # milli-GPU-seconds per cell
    held: Counter[str] = Counter()  # seconds held per tenant, whatever the share
    active: Counter[str] = Counter()
    energy: Counter[str] = Counter()
    idle = 0
    for tenant, job, model, hour, secs, milli, act, mj in rows:
        if tenant == IDLE_TENANT:
            idle += int(milli)
            continue
        measured[(tenant, job, model, int(hour))] += int(milli)
        held[tenant] += int(secs)
        active[tenant] += int(act)
        energy[tenant] += int(mj)
    expected = {tuple(k): v for k, v in truth.allocated_milli.items()}
    keys_ok = sum(
        1 for k in set(expected) | set(measured) if expected.get(k, 0) == measured.get(k, 0)
    )
    keys_all = len(set(expected) | set(measured))
    per_tenant_m: Counter[str] = Counter()
    for (tenant, *_), milli in measured.items():
        per_tenant_m[tenant] += milli
    per_tenant_t = truth.per_tenant_milli()
    table = Table(title="usage by tenant (from the ClickHouse ledger)", title_justify="left")
    for col in (
        "tenant",
        "GPU-hours (x share)",
        "active %",
        "energy kWh",
        "ground truth GPU-hours",
        "exact",
    ):
        table.add_column(col, justify="left" if col == "tenant" else "right")
    checks = []
    tenants = sorted(set(per_tenant_t) | set(per_tenant_m), key=lambda t: (-per_tenant_m[t], t))
    shown = tenants if len(tenants) <= MAX_TENANT_ROWS else tenants[: MAX_TENANT_ROWS - 1]
    for tenant in tenants:
        m, t = per_tenant_m.get(tenant, 0), per_tenant_t.get(tenant, 0)
        checks.append(Check(f"tenant {tenant} milli-GPU-seconds", t, m))
        if tenant in shown:
            table.add_row(*_row(tenant, m, t, active[tenant], held[tenant], energy[tenant]))
    rest = [t for t in tenants if t not in shown]
    if rest:  # a trace has over a hundred services: the biggest, then the rest in one row
        table.add_row(
            *_row(
                f"({len(rest)} more)",
                sum(per_tenant_m[t] for t in rest),
                sum(per_tenant_t[t] for t in rest),
                sum(active[x] for x in rest),
                sum(held[x] for x in rest),
                sum(energy[x] for x in rest),
                exact=all(per_tenant_m[x] == per_tenant_t[x] for x in rest),
            )
        )
    console.print(table)
    checks.append(Check("idle milli-GPU-seconds", truth.idle_milli, idle))
    checks.append(Check("(tenant, job, GPU model, hour) cells matching", keys_all, keys_ok))
    available = truth.allocated_milli_seconds + truth.idle_milli
    allocated = sum(per_tenant_m.values())
    console.print(
        f"idle: {idle / MILLI_PER_GPU_HOUR:,.2f} GPU-hours (ground truth "
        f"{truth.idle_milli / MILLI_PER_GPU_HOUR:,.2f}); fleet {allocated / max(available, 1):.1%} "
        f"allocated (share-weighted); {keys_ok:,}/{keys_all:,} (tenant, job, model, hour) cells "
        "equal ground truth in milli-GPU-seconds"
    )
    return checks


def _row(
    label: str, m: int, t: int, active: int, held: int, energy_mj: int, *, exact: bool | None = None
) -> tuple[str, ...]:
    """One table row: share-weighted GPU-hours, active seconds over seconds held, energy."""
    ok = m == t if exact is None else exact
    return (
        label,
        f"{m / MILLI_PER_GPU_HOUR:,.2f}",
        f"{(active / held if held else 0):.0%}",
        f"{energy_mj / MJ_PER_KWH:,.1f}",
        f"{t / MILLI_PER_GPU_HOUR:,.2f}",
        "yes" if ok else "[red]NO",
    )


def compare_tokens_with_ground_truth(
    console: Any, client: Any, fleet: Any, start: int, end: int
) -> list[Check]:
    """Tokens in ``work_units`` vs the simulator's token truth, per (tenant, job)."""
    from agents.simulated_work import token_truth

    truth = token_truth(fleet, start=start, end=end)
    rows = client.query(
        "SELECT tenant, job, sum(quantity) FROM work_units FINAL WHERE unit = 'tokens' "
        "AND window_start >= {s:DateTime} AND window_start < {e:DateTime} GROUP BY tenant, job",
        parameters={"s": datetime.fromtimestamp(start, UTC), "e": datetime.fromtimestamp(end, UTC)},
    ).result_rows
    measured = {(tenant, job): int(q) for tenant, job, q in rows}
    per_tenant_t: Counter[str] = Counter()
    per_tenant_m: Counter[str] = Counter()
    for (tenant, _job), q in truth.items():
        per_tenant_t[tenant] += q
    for (tenant, _job), q in measured.items():
        per_tenant_m[tenant] += q
    tenants = sorted(set(per_tenant_t) | set(per_tenant_m))
    console.print(
        "tokens (work_units): "
        + ", ".join(
            f"{t} {per_tenant_m[t] / 1e6:,.1f} M (ground truth {per_tenant_t[t] / 1e6:,.1f} M)"
            for t in tenants
        )
    )
    checks = [Check(f"tenant {t} tokens", per_tenant_t[t], per_tenant_m[t]) for t in tenants]
    keys = set(truth) | set(measured)
    checks.append(
        Check(
            "(tenant, job) token totals matching",
            len(keys),
            sum(1 for k in keys if truth.get(k) == measured.get(k)),
        )
    )
    return checks
