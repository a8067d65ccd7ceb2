"""Ordered, idempotent ClickHouse migrations, tracked in ``gpumeter_migrations``.

A migration is ``migrations/NNNN_name.sql``: statements separated by a ``;`` at the end of a
line. Each applies once, in number order; re-running is a no-op. An applied migration whose
file has changed since is refused (fix forward with a new migration instead).
Numbering: 0001-0009 usage, 0010-0019 billing, 0020-0029 analytics.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number: {versions}")
    return found


def migrate(client: Client, *, raw_ttl_days: int | None = None) -> list[Migration]:
    """Apply pending migrations in order; return those applied now."""
    client.command(
        "CREATE TABLE IF NOT EXISTS gpumeter_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    applied = {
        int(v): c
        for v, c in client.query("SELECT version, checksum FROM gpumeter_migrations").result_rows
    }
    done = []
    for m in discover():
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(
                    f"migration {m.version:04d}_{m.name} was changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for stmt in m.statements():
            client.command(stmt)
        client.insert(
            "gpumeter_migrations", [[m.version, m.name, m.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(m)
    if raw_ttl_days is not None:
        # Re-applied every time so the setting, not the migration, decides retention.
        client.command(
            f"ALTER TABLE usage_seconds MODIFY TTL ts + INTERVAL {int(raw_ttl_days)} DAY"
        )
    return done
