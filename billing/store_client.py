"""The ClickHouse access billing's stores share: the client protocol, queries (whole or streamed
in blocks) and the conversion of driver errors into :class:`BillingStoreError` with the
server's code kept."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from clickhouse_connect.driver.exceptions import Error as DriverError

from billing.errors import BillingStoreError


class QueryClient(Protocol):
    """The part of clickhouse-connect's Client billing uses (so fakes type-check)."""

    def query(self, query: str, parameters: dict[str, Any] | None = ...) -> Any: ...
    def insert(
        self, table: str, data: Sequence[Sequence[Any]], column_names: Sequence[str] = ...
    ) -> Any: ...
    def command(self, cmd: str, parameters: dict[str, Any] | None = ...) -> Any: ...


#: What a ClickHouse call can raise: the driver's errors, chDB's RuntimeError, the socket's
#: OSError. Anything else is a bug and is left to propagate as itself.
_DRIVER_ERRORS = (DriverError, OSError, RuntimeError)


class StoreClient:
    """Queries through ``client``; driver errors become :class:`BillingStoreError`."""

    def __init__(self, client: QueryClient) -> None:
        self.client = client

    def _query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql, parameters=params).result_rows)
        except _DRIVER_ERRORS as exc:  # surface the server's code and message, keep the cause
            raise _store_error("ClickHouse query failed", exc) from exc

    def _stream(self, sql: str, **params: Any) -> Iterator[tuple[Any, ...]]:
        """Rows of a query block by block (clickhouse-connect's row block stream when the client
        has one, so memory holds one block, not the result)."""
        stream = getattr(self.client, "query_row_block_stream", None)
        if stream is None:
            yield from self._query(sql, **params)
            return
        try:
            with stream(sql, parameters=params) as blocks:
                for block in blocks:
                    yield from block
        except _DRIVER_ERRORS as exc:  # surface the server's code and message, keep the cause
            raise _store_error("ClickHouse query failed", exc) from exc


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _store_error(what: str, exc: BaseException) -> BillingStoreError:
    from kernel.clickhouse import ClickHouseError

    err = ClickHouseError.from_driver(exc if isinstance(exc, Exception) else Exception(exc))
    return BillingStoreError(f"{what}: {err.render()}", code=err.code, name=err.name)
