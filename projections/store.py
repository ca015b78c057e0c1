"""What the read side needs of a SQL store: a transaction with one SQL dialect, and a read model
that writes rows together with its tracking position.

The implementations (PostgreSQL and SQLite, on eventsourcing's tracking recorders) live at the
edge, in ``adapters.sql_store``: the read side never imports a database driver.

SQL is written once, portable between PostgreSQL and SQLite: ``%s`` placeholders and table
names starting with ``rm_`` (read models) or ``sl_`` (Sluice's other tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from eventsourcing.persistence import Tracking


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def all(self) -> list[dict[str, Any]]: ...
    def one(self) -> dict[str, Any] | None: ...


class ReadModel(Protocol):
    dialect: str

    def create_table(self) -> None: ...
    def add_ddl(self, statements: Sequence[str]) -> None: ...
    def max_tracking_id(self, application_name: str) -> int | None: ...
    def write(self, tracking: Tracking | None) -> Any: ...
    def read(self) -> Any: ...
    def sql(self, statement: str) -> str: ...
    def reset_tracking(self, tx: Tx, application_name: str) -> None: ...
