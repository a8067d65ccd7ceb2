"""The demo's proof for preemptions: every preemption the simulator made is stored once, and
the lost milli-GPU-seconds the ``preemption_losses`` view counts from the ledger equal the
simulator's ground truth (seconds held from the checkpoint, or the job's first second in the
window, up to ``at``, times the share)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gpumeter.ground_truth import Check


def compare_preemptions_with_ground_truth(console: Any, client: Any, fleet: Any) -> list[Check]:
    """One check per figure: records stored, preemptions whose loss matches, total lost."""
    truth = {
        (p.tenant, p.job, p.gpu_uuid, p.at): p.lost_seconds * p.share_milli
        for p in getattr(fleet, "preemptions", [])
    }
    rows = client.query(
        "SELECT tenant, job, gpu_uuid, toUnixTimestamp(at), lost_milli_seconds "
        "FROM preemption_losses"
    ).result_rows
    measured = {(t, j, g, int(at)): int(lost) for t, j, g, at, lost in rows}
    if not truth and not measured:
        console.print("preemptions: none in this window")
        return []
    lost_t, lost_m = sum(truth.values()), sum(measured.values())
    console.print(
        f"preemptions: {len(measured)} stored ({len(truth)} made by internal demand), "
        f"{lost_m / 3_600_000:,.2f} GPU-hours lost (ground truth {lost_t / 3_600_000:,.2f})"
    )
    for key in sorted(set(truth) ^ set(measured))[:5]:
        side = "only in the simulator" if key in truth else "only in ClickHouse"
        at = datetime.fromtimestamp(key[3], UTC).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"  [red]{key[0]} {key[1]} on {key[2]} at {at}: {side}")
    keys = set(truth) | set(measured)
    return [
        Check("preemption records stored", len(truth), len(measured)),
        Check(
            "preemptions whose lost milli-GPU-seconds match",
            len(keys),
            sum(1 for k in keys if truth.get(k) == measured.get(k)),
        ),
        Check("lost milli-GPU-seconds (all preemptions)", lost_t, lost_m),
    ]
