"""Billing at operator scale: a generated month for 1,000 tenants, every billing command run as
a whole process (``gpumeter invoices run|finalize|export|reconcile``), each beside the floor.

The month (2026-01, 31 days) is generated inside ClickHouse by one ``INSERT ... SELECT FROM
numbers()`` into the ledger (``usage_minutely``): one full-minute row (60 GPU-seconds) per GPU
and minute; each (GPU, 3-hour slot) is allocated to one of the tenants (80 %) or idle (20 %);
20 % of the allocated slots are spot; a job is one tenant's slot on one GPU. A price book with a
contract per tenant is generated beside it (list rates with a price change on 2026-01-16,
negotiated rates, per-minute plans with a minimum, graduated tiers, discounts, tax, energy
pass-through, commitments with overage, minimum spend, credits). After generation the ledger is
merged (``OPTIMIZE ... FINAL``), as a closed month's ledger is in steady state.

The floor is the bare GROUP BY of the rating query (``billing.store.RATING_QUERY``) run as a
process through ``gpumeter sql`` (start-up included), wrapped in ``count()/sum()`` so that only
the aggregation, not the printing of its rows, is measured. The totals check rates the ledger
again in SQL, independently of billing/ (``SQL_RATING``), and compares every tenant's invoice
total with it to the minor unit.

    python bench/bench_billing_scale.py                 # 37 GPUs: 1.65M rows, 99M GPU-seconds
    python bench/bench_billing_scale.py --gpus 2240     # 100M rows, 6.0B GPU-seconds (~15 min)
    python bench/bench_billing_scale.py --gpus 4 --tenants 20 --days 2   # smoke size

Peak memory of each process is its maximum resident set (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

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


# -- the independent rating, in SQL ------------------------------------------------------------

H100, A100 = MODELS[0], MODELS[1]
COMMITTED_SECONDS = 30 * 3600  # every commitment is 30 GPU-h on A100; contracts cover the month
TIER_BOUNDS = ((0, 20 * 3600, 0), (20 * 3600, 60 * 3600, 10), (60 * 3600, 10**15, 20))


def _he(num: str, den: int | str) -> str:
    """Integer division rounded half to even (the README's rule), for num >= 0."""
    return (
        f"(intDiv({num}, {den}) + if(2 * ({num} % {den}) > {den} OR (2 * ({num} % {den}) = "
        f"{den} AND intDiv({num}, {den}) % 2 = 1), 1, 0))"
    )


def _micro(price: str) -> int:
    return int(Decimal(price) * 1_000_000)


#: The ledger per job, read once into a table the SQL rating then reads several times.
LEDGER_JOBS = """CREATE TABLE bench_ledger_jobs ENGINE = Memory AS
    SELECT tenant, job, billing_class, gpu_model AS model, toDate(min(minute)) AS day,
           toInt64(sum(gpu_seconds)) AS s, toInt64(sum(energy_mj)) AS e
    FROM usage_minutely FINAL
    WHERE minute >= toDateTime('2026-01-01 00:00:00', 'UTC')
      AND minute < toDateTime('2026-02-01 00:00:00', 'UTC') AND tenant != '__idle__'
    GROUP BY tenant, job, billing_class, gpu_model"""


def sql_rating(tenants: int) -> str:
    """Every tenant's invoice total in cents, rated from the ledger by SQL alone, following
    billing/README.md's rules for the features this price book uses. It relies on what the
    generator guarantees: a job is one (GPU, 3-hour slot), so it lies inside one UTC day and
    is priced by that day's rate; contracts cover the whole month; no credit was used before."""
    terms = ", ".join(
        f"('t{i:04d}', '{t.plan}', '{t.default_class}', {t.discount_pct}, "
        f"{int(Decimal(t.tax_rate) * 10000)}, {int(Decimal(t.minimum or 0) * 100)}, "
        f"{int(t.energy)}, {int(t.negotiated)}, {int(Decimal(t.credit or 0) * 100)}, "
        f"{t.commitment})"
        for i, t in ((i, contract(i)) for i in range(tenants))
    )
    early = (
        "multiIf("
        + ", ".join(
            f"model = '{m}' AND klass = '{k}', {_micro(a)}" for (m, k), (a, _) in LIST.items()
        )
        + ", -1)"
    )
    late = (
        "multiIf("
        + ", ".join(
            f"model = '{m}' AND klass = '{k}', {_micro(b)}" for (m, k), (_, b) in LIST.items()
        )
        + ", -1)"
    )
    tiers = "[" + ", ".join(f"({lo}, {hi}, {d})" for lo, hi, d in TIER_BOUNDS) + "]"
    return f"""
WITH
terms AS (SELECT * FROM values('tenant String, plan String, default_class String,
    discount UInt8, tax Int64, minimum Int64, energy UInt8, negotiated UInt8, credit Int64,
    commitment UInt32', {terms})),
ledger AS (SELECT * FROM bench_ledger_jobs),
jobs AS (
    SELECT l.tenant AS tenant, l.model AS model, l.e AS e, t.plan AS plan,
           if(l.billing_class = '', t.default_class, l.billing_class) AS klass,
           klass = 'reserved' AND t.commitment > 0 AND model = '{A100}' AS committed,
           klass = 'on_demand' AND t.plan = 'volume' AS tiered,
           multiIf(t.plan = 'second', l.s, t.plan = 'minute',
                   greatest(toInt64(300), intDiv(l.s + 59, 60) * 60), greatest(toInt64(60), l.s))
               AS billable,
           t.negotiated AND model = '{H100}' AND klass = 'on_demand' AS nego,
           if(nego, {_micro("2.70")}, if(l.day >= toDate('2026-01-16'), {late}, {early})) AS price,
           if(nego, toDate('2025-06-01'),
              if(l.day >= toDate('2026-01-16'), toDate('2026-01-16'), toDate('2025-01-01')))
               AS rate_from
    FROM ledger AS l INNER JOIN terms AS t ON t.tenant = l.tenant),
plain AS (
    SELECT tenant, sum({_he("s * price", 36_000_000)}) AS cents FROM (
        SELECT tenant, model, klass, price, rate_from, sum(billable) AS s FROM jobs
        WHERE NOT committed AND NOT tiered GROUP BY tenant, model, klass, price, rate_from)
    GROUP BY tenant),
segments AS (
    SELECT tenant, model, price, s,
           sum(s) OVER (PARTITION BY tenant, model ORDER BY rate_from
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
    FROM (SELECT tenant, model, price, rate_from, sum(billable) AS s FROM jobs WHERE tiered
          GROUP BY tenant, model, price, rate_from)),
tiered AS (
    SELECT tenant, sum({_he("piece * tier_price", 36_000_000)}) AS cents FROM (
        SELECT tenant, greatest(toInt64(0), least(before + s, tier.2) - greatest(before, tier.1))
                   AS piece,
               {_he("price * (100 - tier.3)", 100)} AS tier_price
        FROM segments ARRAY JOIN {tiers} AS tier)
    WHERE piece > 0 GROUP BY tenant),
reserved AS (
    SELECT tenant, sum(billable) AS used FROM jobs WHERE committed GROUP BY tenant),
energy AS (SELECT tenant, sum(e) AS mj FROM jobs GROUP BY tenant),
invoiced AS (
    SELECT t.tenant AS tenant, t.discount AS discount, t.tax AS tax, t.minimum AS minimum,
           t.credit AS credit,
           {_he(f"{COMMITTED_SECONDS} * 1300000", 36_000_000)} * (t.commitment > 0)
               AS commitment_cents,
           if(r.used > {COMMITTED_SECONDS},
              {_he(f"(r.used - {COMMITTED_SECONDS}) * 1500000", 36_000_000)}, 0)
               * (t.commitment > 0) AS overage_cents,
           ifNull(p.cents, 0) + ifNull(ti.cents, 0) + overage_cents AS usage_base,
           if(t.discount > 0 AND usage_base != 0, -{_he("usage_base * t.discount", 100)}, 0)
               AS discount_cents,
           if(t.energy, {_he("ifNull(en.mj, 0)", 240_000_000)}, 0) AS energy_cents,
           usage_base + commitment_cents + discount_cents + energy_cents AS spent,
           if(t.minimum > 0 AND spent < t.minimum, t.minimum - spent, 0) AS minimum_cents,
           spent + minimum_cents AS pre_credit,
           greatest(toInt64(0), least(t.credit, pre_credit)) AS credit_cents,
           pre_credit - credit_cents AS base,
           {_he("base * t.tax", 10_000)} AS tax_cents,
           base + tax_cents AS total_cents
    FROM terms AS t
    LEFT JOIN plain AS p ON p.tenant = t.tenant
    LEFT JOIN tiered AS ti ON ti.tenant = t.tenant
    LEFT JOIN reserved AS r ON r.tenant = t.tenant
    LEFT JOIN energy AS en ON en.tenant = t.tenant
    WHERE t.tenant IN (SELECT tenant FROM ledger) OR t.commitment > 0 OR t.minimum > 0)
SELECT tenant, total_cents FROM invoiced ORDER BY tenant
SETTINGS join_use_nulls = 1"""


# -- running it -------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    seconds: float
    peak_mb: float
    note: str = ""


def gpumeter(data_dir: Path, name: str, *args: str, out: Path | None = None) -> Figure:
    """One CLI command as a whole process: wall time (start-up included) and its peak RSS
    (wait4's maximum resident set: the process and the children it waited for)."""
    env = {**os.environ, "GPUMETER_DATA_DIR": str(data_dir)}
    env.pop("GPUMETER_CLICKHOUSE_DSN", None)
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpumeter.cli", *args], env=env, cwd=ROOT, stdout=so, stderr=se
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode != 0:
        raise SystemExit(
            f"gpumeter {' '.join(args)} exited {proc.returncode}:\n{stderr.decode()[-3000:]}"
        )
    if out is not None:
        out.write_bytes(stdout)
    return Figure(name, seconds, usage.ru_maxrss / 1024)


def floor_query() -> str:
    """The rating query's GROUP BY, its parameters bound, wrapped so that only the aggregation
    runs (no rows printed). The outer query uses every aggregate: an unused one would be pruned
    from the subquery, and energy (the readings merged under FINAL) is the costliest of them."""
    from billing.store import RATING_QUERY

    q = RATING_QUERY.format(where="")
    for k, v in {
        "{start:DateTime('UTC')}": "toDateTime('2026-01-01 00:00:00', 'UTC')",
        "{end:DateTime('UTC')}": "toDateTime('2026-02-01 00:00:00', 'UTC')",
        "{idle:String}": "'__idle__'",
    }.items():
        q = q.replace(k, v)
    q = q[: q.rindex("ORDER BY")]
    return (
        "SELECT count(), sum(`sum(gpu_seconds)`), sum(`sum(energy_mj)`), min(`min(minute)`), "
        f"max(`max(minute)`) FROM ({q})"
    )


def generate(data_dir: Path, gpus: int, days: int, tenants: int, per_second: bool) -> None:
    """Runs in its own process (the embedded engine admits one process per data directory)."""
    from kernel.clickhouse import connect
    from schemas.clickhouse.migrate import migrate

    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    migrate(client)
    layout = dict(ledger_layout(client))
    if per_second:
        layout["energy_map"] = PER_SECOND_ENERGY
    t0 = time.perf_counter()
    # Generated keys are unique, so merging rows of a block on insert would find nothing.
    client.command(ledger_insert(layout, gpus, days, tenants) + " SETTINGS optimize_on_insert = 0")
    rows, seconds, parts = client.query(
        "SELECT sum(rows), sum(rows) * 60, count() FROM system.parts "
        "WHERE table = 'usage_minutely' AND active AND database = currentDatabase()"
    ).result_rows[0]
    print(
        f"generated {rows:,} ledger rows ({seconds:,} GPU-seconds, {parts} parts) in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    (data_dir / "pricebook.toml").write_text(pricebook(tenants))


def check_totals(data_dir: Path, tenants: int) -> None:
    """Runs in its own process: invoices vs the SQL rating, tenant by tenant, to the cent."""
    from kernel.clickhouse import connect

    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    t0 = time.perf_counter()
    client.command("DROP TABLE IF EXISTS bench_ledger_jobs")
    client.command(LEDGER_JOBS)
    want = {t: Decimal(c) / 100 for t, c in client.query(sql_rating(tenants)).result_rows}
    client.command("DROP TABLE bench_ledger_jobs")
    got = {
        t: Decimal(v)
        for t, v in client.query(
            "SELECT tenant, total FROM invoices FINAL WHERE period = {p:String}",
            parameters={"p": PERIOD},
        ).result_rows
    }
    bad = [t for t in sorted(set(want) | set(got)) if want.get(t) != got.get(t)]
    print(
        f"totals: {len(got)} invoices sum to {sum(got.values())} USD; the SQL rating of the "
        f"ledger gives {sum(want.values())} USD over {len(want)} tenants "
        f"({time.perf_counter() - t0:.1f} s); {len(bad)} tenant(s) differ",
        flush=True,
    )
    for t in bad[:10]:
        print(f"  DIFFERENCE {t}: invoice {got.get(t)}, SQL rating {want.get(t)}")
    if bad:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gpus", type=int, default=37, help="GPUs in the fleet (default 37)")
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--days", type=int, default=31, help="days of 2026-01 with usage")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where to generate (default: a temporary directory, removed after)",
    )
    ap.add_argument(
        "--per-second-energy",
        action="store_true",
        help="60 energy readings per ledger row as the worker writes them (the "
        "energy_mj ALIAS then sums 60 readings per row: generation and every read "
        "of energy are several times slower)",
    )
    ap.add_argument("--skip-pdf", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep a month already generated in --data-dir (and not yet invoiced)",
    )
    ap.add_argument("--_generate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._generate:
        return generate(args.data_dir, args.gpus, args.days, args.tenants, args.per_second_energy)
    if args._check:
        return check_totals(args.data_dir, args.tenants)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-billing-"))
    own = [
        sys.executable,
        __file__,
        "--data-dir",
        str(data_dir),
        "--gpus",
        str(args.gpus),
        "--days",
        str(args.days),
        "--tenants",
        str(args.tenants),
    ]
    try:
        if not (args.reuse and (data_dir / "pricebook.toml").exists()):
            subprocess.run(
                [*own, "--_generate"] + (["--per-second-energy"] if args.per_second_energy else []),
                check=True,
            )
        book = str(data_dir / "pricebook.toml")
        floor = gpumeter(data_dir, "floor", "sql", "--format", "csv", floor_query())
        floor.name = "floor: bare GROUP BY of the rating query (gpumeter sql)"
        figures = [
            gpumeter(
                data_dir, "invoices run", "invoices", "run", "--period", PERIOD, "--pricebook", book
            ),
            gpumeter(
                data_dir,
                "invoices finalize",
                "invoices",
                "finalize",
                "--period",
                PERIOD,
                "--force",
                "--reason",
                "benchmark",
            ),
            gpumeter(data_dir, "invoices reconcile", "invoices", "reconcile", "--period", PERIOD),
            gpumeter(
                data_dir,
                "invoices export --format json",
                "invoices",
                "export",
                "--period",
                PERIOD,
                "--format",
                "json",
                "--out",
                str(data_dir / "out" / "json"),
            ),
            gpumeter(
                data_dir,
                "invoices export --format csv",
                "invoices",
                "export",
                "--period",
                PERIOD,
                "--format",
                "csv",
                "--out",
                str(data_dir / "out" / "csv"),
            ),
        ]
        if not args.skip_pdf:
            pdf = gpumeter(
                data_dir,
                "invoices export --format pdf",
                "invoices",
                "export",
                "--period",
                PERIOD,
                "--format",
                "pdf",
                "--out",
                str(data_dir / "out" / "pdf"),
            )
            n = len(list((data_dir / "out" / "pdf").glob("*.pdf")))
            pdf.note = f"{pdf.seconds / n * 10:.2f} s per 10 invoices ({n} PDFs)"
            figures.append(pdf)
        floor2 = gpumeter(data_dir, "floor", "sql", "--format", "csv", floor_query())
        floor.seconds = min(floor.seconds, floor2.seconds)  # the floor at its best
        print(f"\n{'command (whole process)':<58} {'seconds':>8} {'x floor':>8} {'peak MB':>8}")
        print(f"{floor.name:<58} {floor.seconds:8.2f} {1:8.2f} {floor.peak_mb:8.0f}")
        for f in figures:
            print(
                f"gpumeter {f.name:<49} {f.seconds:8.2f} {f.seconds / floor.seconds:8.2f} "
                f"{f.peak_mb:8.0f}  {f.note}"
            )
        print(
            "(peak MB: maximum resident set of the command's process; PDF workers are "
            "separate processes, each holding one invoice at a time)"
        )
        print(flush=True)
        subprocess.run([*own, "--_check"], check=True)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
