"""`sluice audit verify`: rebuild every projection in a scratch store; diff it with the live one."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from adapters.keys import KEYS_DDL
from adapters.persistence import ensure_postgres_schema, ledger_env
from adapters.settings import Settings
from adapters.sql_store import open_read_model
from ledger.application import Ledger
from projections.projections import ALL_DDL, PROJECTIONS
from projections.runner import Projector
from projections.store import ReadModel

# Primary keys per table, to pair rows; projection_meta holds wall-clock times and is skipped.
TABLE_KEYS = {
    "rm_balances": ("account_id", "currency"),
    "rm_balance_transactions": ("id",),
    "rm_payouts": ("id",),
    "rm_revenue": ("day", "currency"),
}
DIFFERENCES_SHOWN_MAX = 1_000


@dataclass(frozen=True)
class Difference:
    projection: str
    table: str
    key: tuple[Any, ...]
    live: dict[str, Any] | None
    rebuilt: dict[str, Any] | None

    def describe(self) -> str:
        if self.live is None:
            return f"{self.table} {self.key}: missing from the live read model: {self.rebuilt}"
        if self.rebuilt is None:
            return (
                f"{self.table} {self.key}: in the live read model but not in a replay: {self.live}"
            )
        changed = {
            k: (self.live[k], self.rebuilt.get(k))
            for k in self.live
            if self.live[k] != self.rebuilt.get(k)
        }
        return f"{self.table} {self.key}: live vs replay differ: {changed}"


@contextmanager
def scratch_read_model(settings: Settings) -> Iterator[ReadModel]:
    """A throwaway read model beside the live one: a new schema, or a temporary SQLite file."""
    env = ledger_env(settings, create_tables=True)
    if env["PERSISTENCE_MODULE"].endswith("postgres"):
        schema = f"{env['POSTGRES_SCHEMA']}_verify_{secrets.token_hex(4)}"
        base = settings.database_url.split("?", 1)[0]
        ensure_postgres_schema(f"{base}?schema={schema}")
        view = open_read_model({**env, "POSTGRES_SCHEMA": schema}, (*ALL_DDL, *KEYS_DDL))
        try:
            yield view
        finally:
            import psycopg
            from psycopg.sql import SQL, Identifier

            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(schema)))
    else:
        fd, path = tempfile.mkstemp(prefix="sluice-verify-", suffix=".db")
        os.close(fd)
        try:
            yield open_read_model({**env, "SQLITE_DBNAME": path}, ALL_DDL)
        finally:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)


def _rows(view: ReadModel, table: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    keys = TABLE_KEYS[table]
    with view.read() as tx:
        tx.execute(f"SELECT * FROM {table}")
        return {tuple(row[k] for k in keys): row for row in tx.all()}


def verify(
    ledger: Ledger, live: ReadModel, settings: Settings
) -> tuple[dict[str, int], list[Difference]]:
    """Rebuilds each projection up to the live one's position; returns positions and differences."""
    live_projector = Projector(ledger, live)
    positions = {name: live_projector.position(name) for name in PROJECTIONS}
    differences: list[Difference] = []
    with scratch_read_model(settings) as scratch:
        rebuilt = Projector(ledger, scratch)
        for name, projection in PROJECTIONS.items():
            if positions[name]:
                rebuilt.catch_up(name, stop=positions[name])
            for table in projection.tables:
                want, got = _rows(live, table), _rows(scratch, table)
                for key in sorted(set(want) | set(got), key=repr):
                    if want.get(key) != got.get(key):
                        differences.append(
                            Difference(name, table, key, want.get(key), got.get(key))
                        )
    return positions, differences
