"""An independent reference rating model, written from billing/README.md's rules only.

It deliberately shares no code with ``billing.rating`` / ``billing.pricing`` / the parser: it
reads the raw price-book dict (as TOML would give it) and plain row tuples, and computes the
lines an invoice must have. ``test_reference.py`` rates random ledgers and books with both and
compares every line. Keep it small and literal; clarity over speed.

Shares (contract v2, billing/README.md "Shares"): a row holds ``seconds`` at ``share``
milli-GPUs (1000: a whole GPU); everything is counted in milli-GPU-seconds = seconds x share,
a GPU-hour is 3,600,000 of them, and a line's seconds are the whole part of milli / 1000.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

D = Decimal
CENT = D("0.01")
MICRO = D("0.000001")
H = 3_600_000  # milli-GPU-seconds in a GPU-hour
CLASS_ORDER = {"on_demand": 0, "reserved": 1, "spot": 2}


@dataclass(frozen=True)
class Row:
    tenant: str
    job: str
    klass: str
    model: str
    minute: datetime
    seconds: int
    energy_mj: int
    share: int = 1000  # milli-GPUs held


def money(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_EVEN)


def price6(x: Decimal) -> Decimal:
    return x.quantize(MICRO, rounding=ROUND_HALF_EVEN)


def day(v: Any) -> date:
    return v if isinstance(v, date) else date.fromisoformat(v)


def in_force(entries: list[dict[str, Any]], model: str, klass: str, d: date) -> dict | None:
    ok = [
        e
        for e in entries
        if e["gpu_model"] == model
        and e["billing_class"] == klass
        and day(e["effective_from"]) <= d
        and ("effective_until" not in e or d < day(e["effective_until"]))
    ]
    return max(ok, key=lambda e: day(e["effective_from"])) if ok else None


def price_of(book: dict, c: dict, model: str, klass: str, d: date) -> tuple[Decimal, date]:
    """(price per GPU-hour, its start date): negotiated, then list, then a MIG share."""
    for entries in (c.get("rates", []), book["rates"]):
        e = in_force(entries, model, klass, d)
        if e:
            return D(e["price_per_gpu_hour"]), day(e["effective_from"])
    if " MIG " in model:
        parent, profile = model.split(" MIG ")
        p, start = price_of(book, c, parent, klass, d)
        return price6(p * int(profile[0]) / 7), start
    raise KeyError((model, klass, d))


def rate(book: dict, tenant: str, year: int, month: int, rows: list[Row]) -> list[tuple]:
    """Lines as (kind, gpu_model, billing_class, unit_price, seconds, amount); seconds are the
    whole part (toward zero) of the line's milli-GPU-seconds / 1000."""
    return [
        (k, m, c, p, int(D(milli) / 1000), a)
        for k, m, c, p, milli, a in rate_milli(book, tenant, year, month, rows)
    ]


def rate_milli(book: dict, tenant: str, year: int, month: int, rows: list[Row]) -> list[tuple]:
    """Lines as (kind, gpu_model, billing_class, unit_price, milli-GPU-seconds, amount)."""
    with localcontext() as ctx:
        ctx.prec = 50
        return _rate(book, tenant, year, month, rows)


def _rate(book: dict, tenant: str, year: int, month: int, rows: list[Row]) -> list[tuple]:
    c = book["tenants"][tenant]
    plan = book["plans"][c["plan"]]
    dim = calendar.monthrange(year, month)[1]
    first, last = date(year, month, 1), date(year, month, dim)
    lo = max(first, day(c["starts_on"])) if "starts_on" in c else first
    hi = min(last, day(c["ends_on"])) if "ends_on" in c else last
    days = max((hi - lo).days + 1, 0)
    commits = {x["gpu_model"]: x for x in c.get("commitments", [])} if days else {}
    mine = [
        r
        for r in rows
        if r.tenant == tenant
        and r.minute.year == year
        and r.minute.month == month
        and r.seconds > 0
    ]
    # jobs: seconds per (price, start) and the price of the job's last minute
    jobs: dict[tuple, dict] = {}
    for r in sorted(mine, key=lambda r: r.minute):
        k = r.klass or c.get("default_class", "on_demand")
        key = (r.job, r.model, k)
        j = jobs.setdefault(key, {"by": {}, "last": None})
        p = (
            None
            if (k == "reserved" and r.model in commits)
            else price_of(book, c, r.model, k, r.minute.date())
        )
        j["by"][p] = j["by"].get(p, 0) + r.seconds * r.share
        j["last"] = p
    groups: dict[tuple, dict] = {}
    for (_, model, k), j in jobs.items():
        raw = sum(j["by"].values())
        mn, inc = plan.get("minimum_seconds", 0), plan.get("increment_seconds", 1)
        # the plan's minimum and increment are whole GPU-seconds of share-weighted usage
        billable = 1000 * max(mn, -(-raw // (inc * 1000)) * inc)
        j["by"][j["last"]] += billable - raw
        g = groups.setdefault((model, k), {})
        for p, s in j["by"].items():
            g[p] = g.get(p, 0) + s
    for model in commits:
        groups.setdefault((model, "reserved"), {})
    out: list[tuple] = []
    for (model, k), g in groups.items():
        used = sum(g.values())
        if k == "reserved" and model in commits:
            cm = commits[model]
            committed = int(D(cm["gpu_hours_per_month"]) * 3600 * days // dim)
            out.append(
                (
                    "commitment",
                    model,
                    k,
                    D(cm["rate"]),
                    committed * 1000,
                    money(committed * D(cm["rate"]) / 3600),
                )
            )
            if used > committed * 1000:
                over = used - committed * 1000
                out.append(
                    (
                        "overage",
                        model,
                        k,
                        D(cm["overage_rate"]),
                        over,
                        money(over * D(cm["overage_rate"]) / H),
                    )
                )
        elif k == "on_demand" and plan.get("tiers"):
            filled = 0
            for (p, _start), s in sorted(g.items(), key=lambda kv: kv[0][1]):
                for t in plan["tiers"]:
                    cap = None if "up_to_gpu_hours" not in t else int(D(t["up_to_gpu_hours"]) * H)
                    take = s if cap is None else max(min(s, cap - filled), 0)
                    if take:
                        up = price6(p * (100 - D(t["discount_pct"])) / 100)
                        out.append(("usage", model, k, up, take, money(take * up / H)))
                        filled, s = filled + take, s - take
        else:
            for (p, _start), s in g.items():
                out.append(("usage", model, k, p, s, money(s * p / H)))
    base = sum((x[5] for x in out if x[0] in ("usage", "overage")), D(0))
    pct = D(c.get("discount_pct", 0))
    if pct and base:
        out.append(("discount", "", "", -pct / 100, 0, money(-base * pct / 100)))
    if "energy" in c:
        kwh = D(sum(r.energy_mj for r in mine)) / 3_600_000_000 * D(c["energy"]["pue"])
        p = D(c["energy"]["price_per_kwh"])
        out.append(("energy", "", "", p, 0, money(kwh * p)))
    need = money(D(c.get("minimum_monthly_spend", 0)) * days / dim)
    spent = sum((x[5] for x in out), D(0))
    if days and need > spent:
        out.append(("minimum", "", "", need - spent, 0, need - spent))
    out += _credits(c, out, first, last)
    rate_ = D(c.get("tax_rate", 0))
    for t in sorted(c.get("tax_rates", []), key=lambda t: day(t["effective_from"])):
        if day(t["effective_from"]) <= last:
            rate_ = D(t["rate"])
    if rate_:
        out.append(("tax", "", "", rate_, 0, money(sum((x[5] for x in out), D(0)) * rate_)))
    return out


def _credits(c: dict, lines: list[tuple], first: date, last: date) -> list[tuple]:
    total = sum((x[5] for x in lines), D(0))
    left = {
        i: x[5]
        for i, x in enumerate(lines)
        if x[0] in ("usage", "commitment", "overage") and x[5] > 0
    }
    usable = [
        x
        for x in c.get("credits", [])
        if day(x["valid_from"]) <= last
        and ("valid_until" not in x or day(x["valid_until"]) >= first)
    ]
    usable.sort(key=lambda x: (day(x.get("valid_until", date.max)), day(x["valid_from"]), x["id"]))
    out = []
    for cr in usable:
        m, k = cr.get("gpu_model", ""), cr.get("billing_class", "")
        scope = [i for i in left if (m in ("", lines[i][1])) and (k in ("", lines[i][2]))]
        avail = sum((left[i] for i in scope), D(0)) if (m or k) else total
        use = min(D(cr["amount"]), avail, total)
        if use <= 0:
            continue
        rest = use
        # in invoice line order: GPU model, then class (on_demand, reserved, spot)
        for i in (
            sorted(scope, key=lambda i: (lines[i][1], CLASS_ORDER[lines[i][2]])) if (m or k) else []
        ):
            take = min(left[i], rest)
            left[i] -= take
            rest -= take
        total -= use
        out.append(("credit", m, k, -use, 0, -use))
    return out
