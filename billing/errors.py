"""The billing context's errors: one root, small subclasses that carry the ids involved."""

from __future__ import annotations


class BillingError(Exception):
    """Root of every billing failure; the CLI prints its message and exits non-zero."""


class BillingStoreError(BillingError):
    """Reading or writing billing's tables failed; keeps the ClickHouse server's error code
    and name (``code`` 60, ``name`` ``UNKNOWN_TABLE``) when the server gave them."""

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


class PriceBookError(BillingError):
    """The price book is invalid. ``problems`` lists every problem found, each naming its entry."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"price book {source} has {len(problems)} problem(s):\n{listing}")


class MissingRateError(BillingError):
    """Usage exists for a GPU model / billing class that has no rate in force."""

    def __init__(self, tenant: str, gpu_model: str, billing_class: str, at: str) -> None:
        self.tenant, self.gpu_model, self.billing_class, self.at = (
            tenant,
            gpu_model,
            billing_class,
            at,
        )
        super().__init__(
            f"no {billing_class} rate for GPU model {gpu_model!r} in force at {at} "
            f"(tenant {tenant!r}): add a [[rates]] entry for it to the price book"
        )


class InvoiceFinalizedError(BillingError):
    """A finalized invoice was about to be changed; finalized invoices are immutable."""

    def __init__(self, tenant: str, period: str, number: str) -> None:
        self.tenant, self.period, self.number = tenant, period, number
        super().__init__(
            f"invoice {number} ({tenant}, {period}) is finalized and immutable; it is never "
            "re-run or rewritten. Usage that arrives late for that period is billed as "
            "adjustment lines on the tenant's next invoice (run the next period)."
        )
