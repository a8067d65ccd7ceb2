"""Reserved names and closed sets of the contract, each defined here once.

Every context reads them from here (the usage schema, the agent's attribution, the worker,
billing, analytics, the SQL shell), so a new billing class or reserved tenant is one edit.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

#: The tenant under which the ledger stores GPU-seconds allocated to nobody (idle capacity).
#: Billing never invoices it; analytics counts it as idle; producers may not send it.
IDLE_TENANT = "__idle__"
#: Tenant names no producer may send: the ledger gives them a meaning of its own. The usage
#: contract refuses them at ingest (the schema states them as ``not: {enum: [...]}``).
RESERVED_TENANTS = frozenset({IDLE_TENANT})

#: How an allocation is billed: the price book has a rate per GPU model and class.
BillingClass = Literal["on_demand", "reserved", "spot"]
#: The classes in their fixed order (rating sorts invoice lines by it).
BILLING_CLASSES: tuple[BillingClass, ...] = get_args(BillingClass)

#: Energy is carried as integer millijoules (exact); 1 kWh = 3.6e9 mJ.
MJ_PER_KWH = 3_600_000_000

#: Usage is counted in milli-GPU-seconds (seconds held x share in milli-GPUs, 1000 for a whole
#: GPU; ledger migration 0030): one GPU-hour is this many. Billing and analytics both convert
#: with it.
MILLI_PER_GPU_HOUR = 3_600_000

#: A MIG slice's NVML name is its parent's followed by the profile: "... MIG 3g.40gb".
MIG_NAME = re.compile(r"^(?P<parent>.+) MIG (?P<g>[1-7])g\.(?P<mem>\d+)gb$")
#: Compute slices of a whole MIG-capable GPU (A100, H100, H200, B200): a <g>g profile is g/7.
MIG_SLICES = 7


def mig_parent(gpu_model: str) -> tuple[str, int] | None:
    """(parent model, compute slices) of a MIG profile name, or None for a whole GPU."""
    m = MIG_NAME.match(gpu_model)
    return (m.group("parent"), int(m.group("g"))) if m else None
