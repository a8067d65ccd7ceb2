"""The generated month of the billing scale benchmark: the ledger of 2026-01 written by one
``INSERT ... SELECT FROM numbers()`` into ``usage_minutely``, and a price book with a contract
per tenant (:func:`contract`, deterministic, which the SQL rating mirrors).

What the generator guarantees (the SQL rating relies on it): one full-minute row (60
GPU-seconds) per GPU and minute; each (GPU, 3-hour slot) is allocated to one tenant (80 %) or
idle (20 %); 20 % of the allocated slots are spot; a job is one tenant's slot on one GPU, so it
lies inside one UTC day; contracts cover the whole month.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PERIOD = "2026-01"
MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S")
#: List prices per GPU-hour: (model, class) -> (from 2026-01-01, from 2026-01-16).
LIST = {
    (MODELS[0], "on_demand"): ("3.20", "2.95"),
    (MODELS[0], "spot"): ("1.10", "1.05"),
    (MODELS[0], "reserved"): ("2.40", "2.40"),
    (MODELS[1], "on_demand"): ("1.80", "1.75"),
    (MODELS[1], "spot"): ("0.65", "0.60"),
    (MODELS[1], "reserved"): ("1.40", "1.40"),
    (MODELS[2], "on_demand"): ("1.05", "0.99"),
    (MODELS[2], "spot"): ("0.40", "0.40"),
    (MODELS[2], "reserved"): ("0.80", "0.80"),
}

# -- the ledger ------------------------------------------------------------------------------

#: The ledger's stored columns and how each is generated from ``number`` (one row per
#: GPU-minute), for the layout the migrations create. Kept in one place: if the ledger's engine
#: or columns change (check ``git log -- schemas/clickhouse/migrations``), adapt these only.
#: Aliases: g = GPU index, m = minute index, slot = 3-hour slot, h = the slot's allocation hash.
ALLOCATION: dict[str, str] = {
    "minute": "toDateTime('2026-01-01 00:00:00', 'UTC') + toIntervalMinute(m)",
    "tenant": "if(h % 10 < 2, '__idle__', concat('t', leftPad(toString(intDiv(h, 10) % {tenants}),"
    " 4, '0')))",
    "job": "if(h % 10 < 2, '', concat('job-', toString(g), '-', toString(slot)))",
    "billing_class": "if(h % 10 >= 2 AND intDiv(h, 100000) % 5 = 0, 'spot', '')",
    "gpu_uuid": "concat('GPU-', leftPad(toString(g), 5, '0'))",
    "mig_uuid": "''",
    "gpu_model": "[{models}][g % 3 + 1]",
    "node_id": "concat('node-', toString(intDiv(g, 8)))",
    "peak_mem_used": "toUInt64(40) * 1024 * 1024 * 1024",
    "version": "60",
}
#: Energy per counted second, mJ (300-450 W by GPU).
WATTS_MJ = "(300000 + (g % 7) * 25000)"
FULL_MASK = "toUInt64(1152921504606846975)"  # all 60 seconds of the minute
#: 0003_ledger_union.sql: masks merged by OR, readings by maxMap; gpu_seconds and energy_mj are
#: ALIAS columns computed from them. Readings are stored at the minute's first second (the form
#: 0003 gives rows it migrates; totals are exact); ``--per-second-energy`` stores 60 energy
#: readings per row as the worker writes them (much slower to generate and to read, see --help).
UNION_LEDGER: dict[str, str] = {
    **ALLOCATION,
    "claimed_mask": FULL_MASK,
    "released_mask": "toUInt64(0)",
    "claimed_active": FULL_MASK,
    "energy_map": f"([toUInt8(0)], [toUInt64(60 * {WATTS_MJ})])",
    "sm_util_map": "([toUInt8(0)], [60 * 80.0])",
    "mem_util_map": "([toUInt8(0)], [60 * 50.0])",
}
PER_SECOND_ENERGY = (
    f"(CAST(range(60), 'Array(UInt8)'), arrayWithConstant(60, toUInt64({WATTS_MJ})))"
)
#: 0001_usage.sql (ReplacingMergeTree(version) with stored sums), before 0003.
REPLACING_LEDGER: dict[str, str] = {
    **ALLOCATION,
    "seconds_mask": FULL_MASK,
    "active_mask": FULL_MASK,
    "gpu_seconds": "60",
    "active_seconds": "60",
    "sm_util_sum": "60 * 80.0",
    "mem_util_sum": "60 * 50.0",
    "energy_mj": f"60 * {WATTS_MJ}",
}


def ledger_insert(columns: dict[str, str], gpus: int, days: int, tenants: int) -> str:
    """The one INSERT ... SELECT that generates the month."""
    names = ", ".join(columns)
    exprs = ",\n       ".join(
        f"{e.format(tenants=tenants, models=', '.join(repr(x) for x in MODELS))} AS {c}"
        for c, e in columns.items()
    )
    return f"""INSERT INTO usage_minutely ({names})
SELECT {exprs}
FROM (SELECT number % {gpus} AS g, intDiv(number, {gpus}) AS m, intDiv(m, 180) AS slot,
             cityHash64(g, slot) AS h
      FROM numbers({gpus * days * 1440}))"""


def ledger_layout(client: Any) -> dict[str, str]:
    stored = {
        r[0]
        for r in client.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND "
            "table = 'usage_minutely' AND default_kind != 'ALIAS'"
        ).result_rows
    }
    for layout in (UNION_LEDGER, REPLACING_LEDGER):
        if set(layout) <= stored:
            return layout
    raise SystemExit(
        f"usage_minutely has columns {sorted(stored)}: adapt LEDGER layouts in {__file__} to them"
    )


# -- the price book ---------------------------------------------------------------------------


def pricebook(tenants: int) -> str:
    out = [
        "schema_version = 1",
        'currency = "USD"',
        "",
        "[issuer]",
        'name = "Bench GPU Cloud"',
        'address = ["1 Bench Way"]',
        'number_prefix = "BN"',
        "payment_terms_days = 30",
        "",
    ]
    for (model, klass), (a, b) in LIST.items():
        out += [
            "[[rates]]",
            f'gpu_model = "{model}"',
            f'billing_class = "{klass}"',
            f'price_per_gpu_hour = "{a}"',
            "effective_from = 2025-01-01",
            "",
            "[[rates]]",
            f'gpu_model = "{model}"',
            f'billing_class = "{klass}"',
            f'price_per_gpu_hour = "{b}"',
            "effective_from = 2026-01-16",
            "",
        ]
    out += [
        "[plans.second]",
        "minimum_seconds = 0",
        "increment_seconds = 1",
        "",
        "[plans.minute]",
        "minimum_seconds = 300",
        "increment_seconds = 60",
        "",
        "[plans.volume]",
        "minimum_seconds = 60",
        "increment_seconds = 1",
        "tiers = [ { up_to_gpu_hours = 20, discount_pct = 0 },",
        "          { up_to_gpu_hours = 60, discount_pct = 10 },",
        "          { discount_pct = 20 } ]",
        "",
    ]
    for i in range(tenants):
        t = contract(i)
        out += [
            f"[tenants.t{i:04d}]",
            f'name = "Tenant {i:04d} Ltd"',
            f'address = ["{i} Customer Street"]',
            f'plan = "{t.plan}"',
            f'default_class = "{t.default_class}"',
            f"discount_pct = {t.discount_pct}",
            f"tax_rate = {t.tax_rate}",
            'tax_label = "VAT"',
            "starts_on = 2025-06-01",
        ]
        if t.minimum:
            out.append(f"minimum_monthly_spend = {t.minimum}")
        if t.energy:
            out += [f"[tenants.t{i:04d}.energy]", "pue = 1.25", "price_per_kwh = 0.12"]
        if t.negotiated:
            out += [
                f"[[tenants.t{i:04d}.rates]]",
                f'gpu_model = "{MODELS[0]}"',
                'billing_class = "on_demand"',
                'price_per_gpu_hour = "2.70"',
                "effective_from = 2025-06-01",
            ]
        if t.credit:
            out += [
                f"[[tenants.t{i:04d}.credits]]",
                f'id = "PROMO-{i:04d}"',
                'kind = "promotional"',
                f"amount = {t.credit}",
                "valid_from = 2026-01-01",
                "valid_until = 2026-12-31",
            ]
        if t.commitment:
            out += [
                f"[[tenants.t{i:04d}.commitments]]",
                f'gpu_model = "{MODELS[1]}"',
                f"gpu_hours_per_month = {t.commitment}",
                "rate = 1.30",
                "overage_rate = 1.50",
            ]
        out.append("")
    return "\n".join(out)


@dataclass(frozen=True)
class Terms:
    """The contract of tenant ``i`` (deterministic), mirrored by the SQL rating below."""

    plan: str
    default_class: str
    discount_pct: int
    tax_rate: str
    minimum: str
    energy: bool
    negotiated: bool
    credit: str
    commitment: int


def contract(i: int) -> Terms:
    return Terms(
        plan=("second", "minute", "volume")[i % 3],
        default_class="reserved" if i % 10 == 7 else "on_demand",
        discount_pct=5 if i % 4 == 1 else 0,
        tax_rate=("0.0825", "0.2", "0")[i % 3],
        minimum="250.00" if i % 9 == 4 else "",
        energy=i % 5 == 2,
        negotiated=i % 6 == 0,
        credit="40.00" if i % 8 == 3 else "",
        commitment=30 if i % 10 == 7 else 0,
    )
