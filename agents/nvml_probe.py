"""Print what :class:`~agents.nvml.NvmlSampler` sees on this machine for a few seconds.

Run on a GPU node to check the driver path end to end, without Kafka::

    python -m agents.nvml_probe [--seconds 3] [--allocation-file /run/gpumeter/allocations.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agents.attribution import Attributor
from agents.nvml import NvmlSampler, NvmlUnavailableError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="how many seconds to sample")
    parser.add_argument(
        "--allocation-file",
        type=Path,
        default=None,
        help="the scheduler's allocation file (default: none, process env only)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sampler = NvmlSampler(socket.gethostname(), Attributor(args.allocation_file))
    except NvmlUnavailableError as exc:
        print(f"nvml_probe: {exc}", file=sys.stderr)
        return 1
    with sampler:
        print(f"node {sampler.node_id}: {len(sampler.gpus())} device(s)")
        for info in sampler.gpus():
            print(
                f"  [{info.index}] {info.uuid} {info.mig_uuid or ''} {info.model} "
                f"{info.memory_total / 1024**3:.1f} GiB"
            )
        for _ in range(args.seconds):
            # Sample on whole-second boundaries, as the agent does, so energy deltas are 1 s.
            time.sleep(1 - time.time() % 1)
            ts = int(time.time())
            for d in sampler.seconds(ts):
                doc = d._asdict()
                doc["allocations"] = [dataclasses.asdict(a) for a in d.allocations]
                print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
