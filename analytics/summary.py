"""The report in a terminal (rich tables), and the number formats the HTML page shares."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from rich.console import Console
from rich.table import Table

from analytics.metrics import Metrics, Report
from analytics.preemptions import PREEMPTION_COLUMNS, PREEMPTIONS_TITLE, preemption_rows
from analytics.sharing import Packing
from analytics.showback import SHOWBACK_NOTE, ShowbackLine, tenant_totals
from analytics.usage_split import ALL_DAYS, CapacitySplit, SplitReport


def money(v: Decimal | None, places: str = "0.01") -> str:
    if v is None:
        return "-"
    return f"{v.quantize(Decimal(places), rounding=ROUND_HALF_EVEN):,}"


def pct(v: Decimal | float | None) -> str:
    return "-" if v is None else f"{float(v) * 100:.1f}%"


def hours(v: Decimal) -> str:
    return f"{v.quantize(Decimal('0.01')):,}"


COLUMNS = (
    "",
    "GPUs",
    "avail h",
    "alloc h",
    "active h",
    "idle h",
    "util",
    "eff (SM)",
    "kWh",
    "fac. kWh",
    "revenue",
    "cost",
    "margin",
    "cost/GPU-h",
    "ROA/yr",
    "break-even",
    "idle value",
)
#: The terminal shows usage and economics as two tables so each fits a normal terminal.
USAGE_COLS = 10

#: Shared GPUs (``analytics.sharing``): per GPU model, then the fleet.
SHARING_COLUMNS = (
    "",
    "GPUs shared",
    "shared GPU-h",
    "of capacity",
    "packed GPU-h",
    "mean packed share",
    "idle remainder GPU-h",
)


def sharing_row(p: Packing) -> list[str]:
    return [
        p.key,
        str(p.gpus),
        hours(p.shared_h),
        pct(p.shared_fraction),
        hours(p.packed_h),
        pct(p.packed),
        hours(p.remainder_h),
    ]


#: Capacity split (``analytics.usage_split``): per GPU model and day, the model, the fleet.
SPLIT_COLUMNS = (
    "GPU model",
    "day",
    "capacity GPU-h",
    "internal GPU-h",
    "external GPU-h",
    "idle GPU-h",
    "internal",
    "external",
    "idle",
    "sold of left",
    "external revenue",
    "revenue / ext. GPU-h",
)
SPLIT_TITLE = "Capacity: internal use, external sales and idle"

#: Showback (``analytics.showback``): internal tenants' use at cost, not invoiced.
SHOWBACK_COLUMNS = ("tenant", "GPU model", "GPU-h", "cost / GPU-h", "at cost")
SHOWBACK_TITLE = f"Internal use at cost ({SHOWBACK_NOTE})"


def split_row(s: CapacitySplit) -> list[str]:
    return [
        s.gpu_model,
        "all" if s.day == ALL_DAYS else s.day,
        hours(s.capacity_h),
        hours(s.internal_h),
        hours(s.external_h),
        hours(s.idle_h),
        pct(s.share(s.internal_milli)),
        pct(s.share(s.external_milli)),
        pct(s.share(s.idle_milli)),
        pct(s.sold_of_left),
        money(s.external_revenue),
        money(s.revenue_per_external_hour, "0.001"),
    ]


def showback_rows(lines: tuple[ShowbackLine, ...]) -> list[list[str]]:
    """One row per (tenant, model), then each tenant's total (the sum of its rounded lines)."""
    out = [
        [
            ln.tenant,
            ln.gpu_model,
            f"{ln.gpu_hours.quantize(Decimal('0.000001'), rounding=ROUND_HALF_EVEN):,}",
            "-" if ln.cost_per_gpu_hour is None else f"{ln.cost_per_gpu_hour:,}",
            money(ln.amount),
        ]
        for ln in lines
    ]
    for tenant, total in sorted(tenant_totals(lines).items()):
        out.append([tenant, "total", "", "", money(total)])
    return out


def split_tables(report: Report) -> tuple[tuple[CapacitySplit, ...], tuple[ShowbackLine, ...]]:
    """The split and showback of a report that has them (() otherwise)."""
    if isinstance(report, SplitReport):
        return report.split, report.showback
    return (), ()


def row(m: Metrics) -> list[str]:
    eff = m.efficiency_pct
    return [
        m.key,
        str(m.gpus),
        hours(m.available_h),
        hours(m.allocated_h),
        hours(m.active_h),
        hours(m.idle_h),
        pct(m.utilization),
        "-" if eff is None else f"{eff:.1f}%",
        money(m.energy_kwh, "0.1"),
        money(m.facility_kwh, "0.1"),
        money(m.revenue),
        money(m.cost),
        money(m.margin),
        money(m.cost_per_gpu_hour, "0.001"),
        pct(m.roa_annualized),
        pct(m.break_even_utilization),
        money(m.idle_value),
    ]


def print_summary(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    f = report.fleet
    console.print(f"[bold]Fleet report {report.period.label}[/bold]  ({report.currency})")
    console.print(f"revenue source: [bold]{report.revenue_source}[/bold] - {report.revenue_note}")
    for title, rows in (
        ("Fleet", (f,)),
        ("By GPU model", report.by_model),
        ("By node", report.by_node),
    ):
        for part, cols in (
            ("usage", range(USAGE_COLS)),
            ("economics", [0, *range(USAGE_COLS, len(COLUMNS))]),
        ):
            t = Table(title=f"{title}: {part}", title_justify="left")
            for i in cols:
                t.add_column(COLUMNS[i], justify="left" if i == 0 else "right")
            for m in rows:
                values = row(m)
                t.add_row(*(values[i] for i in cols))
            console.print(t)
    internal = set(report.internal_tenants) if isinstance(report, SplitReport) else set()
    t = Table(title="Top tenants", title_justify="left")
    for c in ("tenant", "alloc GPU-h", "eff (SM)", "revenue", "cost of hours", "margin"):
        t.add_column(c, justify="left" if c == "tenant" else "right")
    for tm in report.tenants[:10]:
        eff = tm.efficiency_pct
        t.add_row(
            f"{tm.tenant} (internal)" if tm.tenant in internal else tm.tenant,
            hours(tm.allocated_h),
            "-" if eff is None else f"{eff:.1f}%",
            money(tm.revenue),
            money(tm.cost),
            money(tm.revenue - tm.cost),
        )
    console.print(t)
    if report.sharing:
        t = Table(title="Shared GPUs: how full they are packed", title_justify="left")
        for i, c in enumerate(SHARING_COLUMNS):
            t.add_column(c, justify="left" if i == 0 else "right")
        for p in report.sharing:
            t.add_row(*sharing_row(p))
        console.print(t)
    split, showback = split_tables(report)
    if split:
        t = Table(title=SPLIT_TITLE, title_justify="left")
        for i, c in enumerate(SPLIT_COLUMNS):
            t.add_column(c, justify="left" if i < 2 else "right")
        for s in split:
            t.add_row(*split_row(s))
        console.print(t)
    if showback:
        t = Table(title=SHOWBACK_TITLE, title_justify="left")
        for i, c in enumerate(SHOWBACK_COLUMNS):
            t.add_column(c, justify="left" if i < 2 else "right")
        for r in showback_rows(showback):
            t.add_row(*r)
        console.print(t)
    if isinstance(report, SplitReport) and report.preemptions:
        t = Table(title=PREEMPTIONS_TITLE, title_justify="left")
        for i, c in enumerate(PREEMPTION_COLUMNS):
            t.add_column(c, justify="left" if i < 2 else "right")
        for r in preemption_rows(report.preemptions):
            t.add_row(*r)
        console.print(t)
    if report.work:
        t = Table(title="Work units", title_justify="left")
        for c in (
            "tenant",
            "job",
            "GPU model",
            "unit",
            "quantity",
            "GPU-h",
            "cost / M",
            "revenue / M",
        ):
            t.add_column(c, justify="right" if c in ("quantity", "GPU-h") or "/" in c else "left")
        for w in report.work:
            t.add_row(
                w.tenant,
                w.job,
                w.gpu_model,
                w.unit,
                f"{w.quantity:,.0f}",
                hours(w.gpu_hours),
                money(w.cost_per_million, "0.0001"),
                money(w.revenue_per_million, "0.0001"),
            )
        console.print(t)
    for warning in report.warnings:
        console.print(f"[yellow]warning: {warning}[/yellow]")


# -- HTML -------------------------------------------------------------------------------------
