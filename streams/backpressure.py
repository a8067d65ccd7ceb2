"""Back-pressure as an explicit, bounded, logged decision of the persist path.

The sink raises :class:`streams.errors.SinkBackpressure` when the store cannot take a write
now. The processor is safe to retry with the same chunk (it drops its state on a failed write
and reloads the ledger), so the persist path waits the time the sink asked for and retries the
chunk, up to ``max_wait_s`` in all; then the error propagates and the worker exits non-zero
without acking the chunk (its supervisor restarts it; the chunk is redelivered). The wait
blocks the event loop on purpose (nothing may be acked meanwhile); keep ``max_wait_s`` well
under the consumer group's session timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from streams.errors import SinkBackpressure
from streams.records import SourceRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Total time a chunk may wait on back-pressure before the worker gives up and exits.
MAX_WAIT_S = 5.0


def process_with_backpressure(
    process: Callable[[list[SourceRecord]], T],
    records: Sequence[SourceRecord],
    *,
    max_wait_s: float = MAX_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    waited = 0.0
    while True:
        try:
            return process(list(records))
        except SinkBackpressure as bp:
            if waited + bp.retry_after > max_wait_s:
                raise
            log.warning(
                "ClickHouse pushed back on %s (%s); retrying the chunk in %.1f s",
                bp.op,
                bp,
                bp.retry_after,
            )
            sleep(bp.retry_after)
            waited += bp.retry_after
