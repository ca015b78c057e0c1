"""Maps a database URL onto the eventsourcing environment of the Ledger application."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse
from uuid import UUID

from adapters.settings import Settings


class DatabaseUrlError(ValueError):
    pass


def describe(url: str) -> str:
    """The URL without its password, for logs and banners."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def ledger_env(settings: Settings, *, create_tables: bool) -> dict[str, str]:
    url = settings.database_url
    parsed = urlparse(url)
    env: dict[str, str] = {
        # Tables are created by `sluice db init`, not by every process at start-up: concurrent
        # start-up DDL fails with "tuple concurrently updated".
        "CREATE_TABLE": "y" if create_tables else "n",
        # eventsourcing reads "0" as an unbounded cache; an empty value turns it off.
        "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_maxsize or ""),
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    if parsed.scheme == "memory":
        env["PERSISTENCE_MODULE"] = "eventsourcing.popo"
    elif parsed.scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
        if not path:
            raise DatabaseUrlError(f"expected sqlite:///path, got {url!r}")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": str(settings.sqlite_lock_timeout_s),
        }
    elif parsed.scheme in ("postgres", "postgresql"):
        if not parsed.path.strip("/"):
            raise DatabaseUrlError(f"the PostgreSQL URL names no database: {describe(url)}")
        query = parse_qs(parsed.query)
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parsed.path.strip("/")),
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_SCHEMA": query.get("schema", ["public"])[0],
            "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(settings.postgres_max_overflow),
            "POSTGRES_CONNECT_TIMEOUT": str(settings.postgres_connect_timeout_s),
            "POSTGRES_LOCK_TIMEOUT": str(settings.postgres_lock_timeout_s),
            # Broken in eventsourcing 9.5.6 (drops the table lock, misroutes events): keep off.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
    else:
        raise DatabaseUrlError(
            f"unsupported database URL {describe(url)!r}: use sqlite:///path, "
            "postgresql://user@host:port/db or memory://"
        )
    return env


def ensure_postgres_schema(url: str) -> None:
    """Creates the URL's ``?schema=`` if missing (eventsourcing creates tables, not schemas)."""
    import psycopg

    parsed = urlparse(url)
    schema = parse_qs(parsed.query).get("schema", ["public"])[0]
    conninfo = url.split("?", 1)[0]
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(schema))
        )


def postgres_absence_probe(recorder: Any) -> Callable[[Sequence[UUID]], set[UUID]]:
    """One query for a whole batch: which of these aggregate ids have no events yet."""
    from psycopg.sql import SQL, Identifier

    schema, table = recorder.datastore.schema, recorder.events_table_name
    statement = SQL(
        "SELECT DISTINCT originator_id FROM {}.{} WHERE originator_id = ANY(%s)"
    ).format(Identifier(schema), Identifier(table))

    def probe(ids: Sequence[UUID]) -> set[UUID]:
        if not ids:
            return set()
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(ids)], prepare=True)
            present = {row["originator_id"] for row in curs.fetchall()}
        return set(ids) - present

    return probe
