"""The report as one offline HTML file: tables and plotly charts, plotly.js embedded (it opens
without a network). Chart div ids are stable (:data:`CHART_IDS`) so tests and links find them."""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime

from analytics.metrics import Metrics, Report
from analytics.preemptions import PREEMPTION_COLUMNS, PREEMPTIONS_TITLE, preemption_rows
from analytics.summary import (
    COLUMNS,
    SHARING_COLUMNS,
    SHOWBACK_COLUMNS,
    SHOWBACK_TITLE,
    SPLIT_COLUMNS,
    SPLIT_TITLE,
    money,
    pct,
    row,
    sharing_row,
    showback_rows,
    split_row,
    split_tables,
)
from analytics.usage_split import SplitReport, split_by_model

CHART_IDS = (
    "chart-utilization",
    "chart-heatmap",
    "chart-revenue-cost",
    "chart-idle",
    "chart-tenants",
)


def render_html(report: Report) -> str:
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs
    from plotly.subplots import make_subplots

    figs: list[tuple[str, str, go.Figure]] = []

    # Fleet utilization per hour: allocated and active share of available GPU-seconds.
    per_hour: dict[datetime, list[int]] = defaultdict(lambda: [0, 0, 0])
    for h in report.gpu_hours:
        a = per_hour[h.hour]
        a[0] += h.available_milli
        a[1] += h.allocated_milli
        a[2] += h.active_milli
    xs = sorted(per_hour)
    fig = go.Figure()
    fig.add_scatter(
        x=xs,
        y=[100 * per_hour[x][1] / per_hour[x][0] for x in xs],
        name="allocated %",
        mode="lines",
    )
    fig.add_scatter(
        x=xs, y=[100 * per_hour[x][2] / per_hour[x][0] for x in xs], name="active %", mode="lines"
    )
    fig.update_layout(yaxis_title="% of available GPU-seconds", yaxis_range=[0, 105])
    figs.append(("chart-utilization", "Fleet utilization over time", fig))

    # GPU x hour heatmaps: allocation (share of the hour allocated) and activity (active share).
    gpus = sorted({(h.node_id, h.gpu_uuid) for h in report.gpu_hours})
    labels = [f"{node}/{uuid[-8:]}" for node, uuid in gpus]
    idx = {g: i for i, g in enumerate(gpus)}
    col = {x: i for i, x in enumerate(xs)}
    alloc: list[list[float | None]] = [[None] * len(xs) for _ in gpus]
    active: list[list[float | None]] = [[None] * len(xs) for _ in gpus]
    for h in report.gpu_hours:
        r, c = idx[(h.node_id, h.gpu_uuid)], col[h.hour]
        alloc[r][c] = (
            round(100 * h.allocated_milli / h.available_milli, 1) if h.available_milli else None
        )
        active[r][c] = (
            round(100 * h.active_milli / h.available_milli, 1) if h.available_milli else None
        )
    heat = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.03,
        subplot_titles=("Allocation %", "Activity (SM > 0) %"),
    )
    heat.add_heatmap(
        x=xs,
        y=labels,
        z=alloc,
        zmin=0,
        zmax=100,
        colorscale="Blues",
        name="allocation",
        showscale=False,
        row=1,
        col=1,
    )
    heat.add_heatmap(
        x=xs,
        y=labels,
        z=active,
        zmin=0,
        zmax=100,
        colorscale="Greens",
        name="activity",
        row=1,
        col=2,
    )
    heat.update_layout(height=max(320, 18 * len(labels) + 140))
    figs.append(("chart-heatmap", "GPU x time: allocation and activity", heat))

    # Revenue vs cost by day (cost stacked by component).
    days = [m.key for m in report.by_day]
    rc = go.Figure()
    rc.add_bar(
        x=days,
        y=[float(m.depreciation) for m in report.by_day],
        name="depreciation",
        offsetgroup="cost",
    )
    rc.add_bar(
        x=days,
        y=[float(m.energy_cost) for m in report.by_day],
        name="energy",
        offsetgroup="cost",
        base=[float(m.depreciation) for m in report.by_day],
    )
    rc.add_bar(
        x=days,
        y=[float(m.other_opex) for m in report.by_day],
        name="other opex",
        offsetgroup="cost",
        base=[float(m.depreciation + m.energy_cost) for m in report.by_day],
    )
    rc.add_bar(
        x=days, y=[float(m.revenue) for m in report.by_day], name="revenue", offsetgroup="revenue"
    )
    rc.update_layout(barmode="group", yaxis_title=report.currency)
    figs.append(("chart-revenue-cost", "Revenue vs cost by day", rc))

    # Idle capacity by model, with what it could have earned at spot.
    idle = go.Figure()
    idle.add_bar(
        x=[m.key for m in report.by_model],
        y=[float(m.idle_h) for m in report.by_model],
        name="idle GPU-hours",
        text=[f"{report.currency} {money(m.idle_value)} at spot" for m in report.by_model],
    )
    idle.update_layout(yaxis_title="idle GPU-hours")
    figs.append(("chart-idle", "Idle capacity by GPU model", idle))

    # Shared GPUs: the capacity split into shares, packed part and idle remainder per model.
    if report.sharing:
        models = [p for p in report.sharing if p.key != "fleet"]
        sh = go.Figure()
        sh.add_bar(
            x=[p.key for p in models],
            y=[float(p.packed_h) for p in models],
            name="packed GPU-hours",
            text=[f"{pct(p.packed)} packed" for p in models],
        )
        sh.add_bar(
            x=[p.key for p in models],
            y=[float(p.remainder_h) for p in models],
            name="idle remainder GPU-hours",
        )
        sh.update_layout(barmode="stack", yaxis_title="shared GPU-hours")
        figs.append(("chart-sharing", "Shared GPUs: how full they are packed", sh))

    # Capacity per model and day: internal use, external sales and idle stacked (GPU-hours),
    # the revenue external sales earned on a second axis.
    split, _ = split_tables(report)
    by_model = split_by_model(split)
    if by_model:
        cats = [
            [m for m, rows in by_model.items() for _ in rows],
            [r.day for rs in by_model.values() for r in rs],
        ]
        flat = [r for rs in by_model.values() for r in rs]
        sp = make_subplots(specs=[[{"secondary_y": True}]])
        for name, values in (
            ("internal use", [float(r.internal_h) for r in flat]),
            ("external sales", [float(r.external_h) for r in flat]),
            ("idle", [float(r.idle_h) for r in flat]),
        ):
            sp.add_bar(x=cats, y=values, name=f"{name} GPU-hours", secondary_y=False)
        sp.add_scatter(
            x=cats,
            y=[float(r.external_revenue) for r in flat],
            name=f"external revenue ({report.currency})",
            mode="markers",
            secondary_y=True,
        )
        sp.update_layout(barmode="stack")
        sp.update_yaxes(title_text="GPU-hours", secondary_y=False)
        sp.update_yaxes(title_text=report.currency, secondary_y=True, rangemode="tozero")
        figs.append(("chart-split", f"{SPLIT_TITLE}, per GPU model and day", sp))

    top = report.tenants[:10][::-1]
    ten = go.Figure()
    ten.add_bar(
        y=[t.tenant for t in top],
        x=[float(t.allocated_h) for t in top],
        orientation="h",
        name="allocated GPU-hours",
        text=[f"{report.currency} {money(t.revenue)}" for t in top],
    )
    ten.update_layout(xaxis_title="allocated GPU-hours", height=max(300, 40 * len(top) + 120))
    figs.append(("chart-tenants", "Top tenants by GPU-hours (label: revenue)", ten))

    body = []
    for div_id, title, f in figs:
        f.update_layout(
            title=title, margin={"l": 60, "r": 20, "t": 60, "b": 40}, template="plotly_white"
        )
        body.append(f.to_html(full_html=False, include_plotlyjs=False, div_id=div_id))
    return _page(report, get_plotlyjs(), body)


def _page(report: Report, plotlyjs: str, charts: list[str]) -> str:
    e = html.escape
    f = report.fleet

    def table(rows: tuple[Metrics, ...]) -> str:
        head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row(m)) + "</tr>" for m in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    work = ""
    if report.work:
        rows = "".join(
            f"<tr><td>{e(w.tenant)}</td><td>{e(w.job)}</td><td>{e(w.gpu_model)}</td>"
            f"<td>{e(w.unit)}</td><td>{w.quantity:,.0f}</td><td>{money(w.cost_per_million, '0.0001')}</td>"
            f"<td>{money(w.revenue_per_million, '0.0001')}</td></tr>"
            for w in report.work
        )
        work = (
            "<h2>Work units</h2><table><tr><th>tenant</th><th>job</th><th>GPU model</th>"
            "<th>unit</th><th>quantity</th><th>cost / million</th><th>revenue / million</th>"
            f"</tr>{rows}</table>"
        )
    sharing = ""
    if report.sharing:
        head = "".join(f"<th>{e(c)}</th>" for c in SHARING_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(v)}</td>" for v in sharing_row(p)) + "</tr>"
            for p in report.sharing
        )
        sharing = f"<h2>Shared GPUs</h2><table><tr>{head}</tr>{body}</table>"
    split, showback = split_tables(report)
    split_html = ""
    if split:
        head = "".join(f"<th>{e(c)}</th>" for c in SPLIT_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(v)}</td>" for v in split_row(s)) + "</tr>" for s in split
        )
        split_html = (
            f"<h2>{e(SPLIT_TITLE)}</h2><p>GPU-hours, share-weighted; internal: tenants the price "
            "book marks internal; sold of left: external sales / (external + idle); revenue: "
            f"external sales, {e(report.revenue_source)}.</p>"
            f"<table><tr>{head}</tr>{body}</table>"
        )
    showback_html = ""
    if showback:
        head = "".join(f"<th>{e(c)}</th>" for c in SHOWBACK_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>"
            for r in showback_rows(showback)
        )
        showback_html = (
            f"<h2>{e(SHOWBACK_TITLE)}</h2><p>Internal tenants are not invoiced: their use is "
            "shown back at the model's full cost per GPU-hour of the period (depreciation, "
            f"energy at the facility's PUE, other opex). Amounts in {e(report.currency)}.</p>"
            f"<table><tr>{head}</tr>{body}</table>"
        )
    preempted_html = ""
    if isinstance(report, SplitReport) and report.preemptions:
        head = "".join(f"<th>{e(c)}</th>" for c in PREEMPTION_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>"
            for r in preemption_rows(report.preemptions)
        )
        preempted_html = (
            f"<h2 id='preemptions'>{e(PREEMPTIONS_TITLE)}</h2><p>Per GPU model and preempted "
            "tenant: preemption records (one per device an allocation lost) and the GPU-hours "
            "they lost (held from the job's last checkpoint, or its first second, up to the "
            "preemption; share-weighted), counted from the ledger.</p>"
            f"<table><tr>{head}</tr>{body}</table>"
        )
    warn = "".join(f"<p class='warn'>warning: {e(w)}</p>" for w in report.warnings)
    cards = "".join(
        f"<div class='card'><div class='v'>{e(v)}</div><div class='k'>{e(k)}</div></div>"
        for k, v in (
            ("utilization", pct(f.utilization)),
            ("efficiency (SM)", "-" if f.efficiency_pct is None else f"{f.efficiency_pct:.1f}%"),
            ("revenue", f"{report.currency} {money(f.revenue)}"),
            ("cost", f"{report.currency} {money(f.cost)}"),
            ("ROA (annualized)", pct(f.roa_annualized)),
            ("break-even utilization", pct(f.break_even_utilization)),
            ("idle value at spot", f"{report.currency} {money(f.idle_value)}"),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>gpumeter report {e(report.period.label)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; margin-bottom: 16px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.card {{ display: inline-block; border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px;
         margin: 0 8px 8px 0; }}
.card .v {{ font-size: 20px; font-weight: 600; }} .card .k {{ font-size: 12px; color: #666; }}
.warn {{ color: #a60; }}
</style>
<script type="text/javascript">{plotlyjs}</script>
</head><body>
<h1>GPU fleet report {e(report.period.label)}</h1>
<p>Revenue source: <b>{e(report.revenue_source)}</b> ({e(report.revenue_note)}).
Amounts in {e(report.currency)}.</p>
{cards}{warn}
{"".join(charts)}
<h2>Fleet</h2>{table((f,))}
<h2>By GPU model</h2>{table(report.by_model)}
<h2>By node</h2>{table(report.by_node)}
{sharing}
{split_html}
{showback_html}
{preempted_html}
{work}
</body></html>
"""
