"""Building a fleet of node agents in one process: the simulated or trace-replayed fleet, and
one agent (sampler -> spool -> delivery) per node. Used by ``gpumeter agent``, the demo, the
integration tests and the benchmarks; no command-line parsing here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agents.errors import AgentError

if TYPE_CHECKING:
    from agents.agent import NodeAgent
    from agents.openb import OpenbFleet
    from agents.simulator import SimulatedFleet
    from agents.trace import TraceFleet


def make_fleet(
    *,
    trace: bool,
    start: int,
    duration_s: int,
    nodes: int = 4,
    gpus_per_node: int = 8,
    seed: int = 7,
    max_gpus: int = 256,
    trace_dir: Path | None = None,
    shares: bool = False,
    openb: Path | None = None,
    openb_offset_s: int = 0,
) -> SimulatedFleet | TraceFleet | OpenbFleet:
    """A simulated fleet (``nodes`` x ``gpus_per_node``, seeded) or the Alibaba trace replay
    (at most ``max_gpus``), covering ``[start, start + duration_s)``. ``shares``: the
    simulated nodes also have shared GPUs and a MIG GPU (needs contract v2). ``openb``: replay
    that pod list from its second ``openb_offset_s`` instead (shared GPUs; contract v2)."""
    if openb is not None:
        from agents.openb import OpenbFleet

        return OpenbFleet(
            openb,
            start=start,
            duration_s=duration_s,
            window_offset_s=openb_offset_s,
            gpus_per_node=gpus_per_node,
            max_gpus=max_gpus,
        )
    if not trace:
        from agents.simulator import SimulatedFleet

        return SimulatedFleet(
            seed=seed,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            start=start,
            duration_s=duration_s,
            shares=shares,
        )
    from agents.trace import DEFAULT_DATA_DIR, TraceFleet

    return TraceFleet(
        data_dir=trace_dir or DEFAULT_DATA_DIR,
        start=start,
        duration_s=duration_s,
        gpus_per_node=gpus_per_node,
        max_gpus=max_gpus,
    )


def build_agents(
    samplers: Sequence,
    spool_root: Path,
    producer: object,
    topic: str,
    *,
    flush_every: int,
    spool_max_mb: int = 512,
    fsync: bool = True,
    retain_s: float = 3600.0,
    clock_warn_s: float = 2.0,
    schema_version: int | None = None,
) -> list[NodeAgent]:
    """One agent per sampler; ``schema_version`` None: the agent's default."""
    from agents.agent import DEFAULT_SCHEMA_VERSION, NodeAgent
    from agents.kafka import Delivery
    from agents.spool import Spool

    if spool_max_mb < 1:
        raise AgentError(f"spool_max_mb must be at least 1, got {spool_max_mb}")
    agents: list[NodeAgent] = []
    for sampler in samplers:
        # Segments of an eighth of the bound (agents/spool.py): old ones can be dropped early.
        spool = Spool(
            spool_root / sampler.node_id,
            max_bytes=spool_max_mb * 1024**2,
            fsync=fsync,
            retain_s=retain_s,
        )
        delivery = Delivery(
            spool, producer, topic, key=sampler.node_id.encode(), clock_warn_s=clock_warn_s
        )
        agents.append(
            NodeAgent(
                sampler,
                spool,
                delivery,
                flush_every_s=flush_every,
                schema_version=schema_version or DEFAULT_SCHEMA_VERSION,
            )
        )
    return agents
