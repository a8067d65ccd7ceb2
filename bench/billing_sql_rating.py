"""The benchmark's independent rating: every tenant's invoice total rated from the ledger by
SQL alone (no code of billing/), to compare the invoices with to the minor unit.
"""

from __future__ import annotations

from decimal import Decimal

from bench.billing_month import LIST, MODELS, contract

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
