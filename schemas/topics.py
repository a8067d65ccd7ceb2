"""Kafka topic names and their partitioning: the contract between agents, workers and sinks."""

from __future__ import annotations

from dataclasses import dataclass, field

# Reserved tenant names live in the kernel; re-exported here for the worker (streams/).
from kernel.names import IDLE_TENANT as IDLE_TENANT
from kernel.names import RESERVED_TENANTS as RESERVED_TENANTS

#: Batches of GPU-second samples, keyed by node id (so one node's batches stay in order).
USAGE = "gpu.usage.v1"
#: Records (or samples) the worker refused, with the reason; keyed like their source.
REJECTED = "gpu.usage.rejected.v1"
#: Closed (tenant, job, gpu, minute) ledger rows; a later row for the same key and a higher
#: version supersedes the earlier one (late-sample corrections).
MINUTELY = "usage.minutely.v1"
#: Work units reported by jobs (tokens served, ...), keyed by tenant.
WORK = "gpu.work.v1"
#: Preemptions of allocations (schemas/preemption.py), keyed by tenant; published by the
#: scheduler's integration (`gpumeter preemption report`), not by the node agent.
PREEMPTIONS = "gpu.preemptions.v1"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


#: The usage topic stamps records with the broker's clock (LogAppendTime): each agent compares
#: the stamp with its own clock and reports its offset (agents/kafka.py). Nothing reads the
#: producer's timestamp. (The embedded broker ignores topic configs.)
USAGE_CONFIGS = {"message.timestamp.type": "LogAppendTime"}


def default_topics(partitions: int = 4) -> list[TopicSpec]:
    return [
        TopicSpec(USAGE, partitions, dict(USAGE_CONFIGS)),
        TopicSpec(REJECTED, 1),
        TopicSpec(MINUTELY, partitions),
        TopicSpec(WORK, 1),
        TopicSpec(PREEMPTIONS, 1),
    ]
