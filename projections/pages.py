"""Set-based writes of a page of events: a rebuild's hot tables written with one statement each
per page, not one per event.

A projection writes its hot rows through a sink instead of ``tx.execute``. Row by row (the
follower's batches) a sink executes each write at once, as the projection always did. Set-based
(``Projector.apply_all``: a rebuild's pages and ``sluice audit verify``) it holds them in memory
and ``write`` sends them at the end of the page, after the page's other statements:

- ``Inserts``: rows inserted, in order; ``unnest`` of one array per column on PostgreSQL.
- ``Upserts``: additive upserts (``balance = balance + delta``, ``position = latest``), summed
  per key in Python first, so a key touched 50 times in a page is one row of the statement.

Both give the very tables the row-by-row writes give, as long as nothing else in the page reads
or changes a held row before it is written: projections keep that (see each sink's users), and
the property tests compare the two ways on SQLite and PostgreSQL. SQLite has no arrays: there
the held rows go as one ``executemany`` per table (still after the summing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from projections.store import Tx

# Column types for PostgreSQL's unnest arrays (the portable DDL uses only these two). A column
# goes as an array literal written here when it can (see ``_array``), else as a list psycopg
# dumps in binary (``%b``; a 2,000-row text column 0.38 ms, 2.3 ms in psycopg's text format).
TEXT, BIGINT = "text", "bigint"
Columns = Sequence[tuple[str, str]]  # (name, TEXT | BIGINT), in the table's insert order


class Inserts:
    """Rows inserted into ``table``; held and sent as one statement when set-based."""

    def __init__(self, table: str, columns: Columns) -> None:
        self.table = table
        self.names = tuple(name for name, _ in columns)
        self.types = tuple(kind for _, kind in columns)
        names = ", ".join(self.names)
        self.row_sql = (
            f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(self.names))})"
        )
        arrays = ", ".join(f"%b::{kind}[]" for kind in self.types)
        self.set_sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays})"
        self.held: list[list[Any]] = []
        self.tx: Tx | None = None  # row by row: the transaction; set-based: None (held)

    def begin(self, tx: Tx, set_based: bool) -> None:
        self.held = []
        self.tx = None if set_based else tx

    def insert(self, row: list[Any]) -> None:
        """A row of the columns' values, in order (set-based: kept, and may still be changed
        in place by its projection until the page is written)."""
        if self.tx is not None:
            self.tx.execute(self.row_sql, row)
        else:
            self.held.append(row)

    def write(self, tx: Tx, dialect: str) -> None:
        rows, self.held = self.held, []
        _send(tx, dialect, (self.set_sql, self.row_sql), self.types, rows)


class Upserts:
    """Additive upserts into ``table``: per key, ``sums`` are added to the row's and ``sets``
    replace it (the latest write's). Set-based, a page's writes to one key are folded first."""

    def __init__(self, table: str, keys: Columns, sums: Columns, sets: Columns = ()) -> None:
        self.table = table
        columns = (*keys, *sums, *sets)
        self.width = (len(keys), len(sums))
        names = ", ".join(name for name, _ in columns)
        updates = ", ".join(
            [f"{n} = t.{n} + excluded.{n}" for n, _ in sums]
            + [f"{n} = excluded.{n}" for n, _ in sets]
        )
        conflict = f" ON CONFLICT ({', '.join(name for name, _ in keys)}) DO UPDATE SET {updates}"
        marks = ", ".join(["%s"] * len(columns))
        self.row_sql = f"INSERT INTO {table} AS t ({names}) VALUES ({marks}){conflict}"
        arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
        self.set_sql = (
            f"INSERT INTO {table} AS t ({names}) SELECT * FROM unnest({arrays}){conflict}"
        )
        self.types = tuple(kind for _, kind in columns)
        self.held: dict[tuple[Any, ...], list[Any]] = {}
        self.tx: Tx | None = None

    def begin(self, tx: Tx, set_based: bool) -> None:
        self.held = {}
        self.tx = None if set_based else tx

    def add(self, key: tuple[Any, ...], sums: Sequence[int], sets: Sequence[Any] = ()) -> None:
        if self.tx is not None:
            self.tx.execute(self.row_sql, (*key, *sums, *sets))
            return
        row = self.held.get(key)
        if row is None:
            self.held[key] = [*key, *sums, *sets]
            return
        start = self.width[0]
        for i, amount in enumerate(sums, start):
            row[i] += amount
        row[start + self.width[1] :] = sets

    def write(self, tx: Tx, dialect: str) -> None:
        rows, self.held = list(self.held.values()), {}
        _send(tx, dialect, (self.set_sql, self.row_sql), self.types, rows)


Sink = Inserts | Upserts


def _array(column: Sequence[Any], kind: str) -> str | list[Any]:
    """A column of a page as PostgreSQL's array literal, or as the list when it holds a value
    the literal here cannot carry (a None, a non-int in a bigint column, a text with a quote or
    a backslash): psycopg then dumps it in binary, as before.

    Why: psycopg's binary list dumper runs in Python per element (``struct.pack``): in a
    rebuild's writer thread it was 1.4 of 4.7 s per 100k events, holding the GIL the thread
    that decodes and projects needs. A join of the column is one C call: 2,000 ids 0.04 ms,
    2,000 bigints 0.16 ms (0.38 and 0.51 ms dumped). Every text element is double-quoted, so
    an empty string or one spelled NULL stays a string; the server casts the literal
    (``%b::text[]``: a text parameter cast to the array type)."""
    try:
        if kind == BIGINT:
            return "{" + ",".join(map(int.__repr__, column)) + "}"  # int.__repr__: ints only
        body = '","'.join(column)  # a TypeError for a None
    except TypeError:
        return list(column)
    # Only the separators' quotes, and no backslash: no element needs escaping.
    if "\\" in body or body.count('"') != 2 * (len(column) - 1):
        return list(column)
    return '{"' + body + '"}'


def _send(
    tx: Tx, dialect: str, sql: tuple[str, str], kinds: Sequence[str], rows: list[list[Any]]
) -> None:
    """A sink's held rows: one statement of column arrays on PostgreSQL, else row by row
    (``sql``: the set statement, the row statement; ``kinds``: the columns' types)."""
    if not rows:
        return
    if dialect == "postgres":
        columns = zip(*rows, strict=True)
        tx.execute(sql[0], [_array(c, k) for c, k in zip(columns, kinds, strict=True)])
    else:
        for row in rows:
            tx.execute(sql[1], row)


class PageWriter:
    """A projection's page: ``begin_page`` before its events, ``end_page`` after them (writes
    what its sinks hold). ``set_based`` False writes every row as its event comes."""

    tables: ClassVar[tuple[str, ...]] = ()
    # The event classes ``process_event`` does anything with: the runner hands it no others
    # (most of a page is nothing to most read models, and each call cost a Tracking and a
    # chain of isinstance checks). ``object``: every event.
    handles: ClassVar[tuple[type, ...]] = (object,)
    # Whether ``process_event`` reads rows back (``tx.one``/``tx.all``): such a projection runs
    # inside the page's transaction; one that only writes is run ahead, in memory, by a rebuild.
    reads: ClassVar[bool] = True
    # Indexes (their names in ``ddl``) that a rebuild drops before its first page and creates
    # again after its last (PostgreSQL): one sort at the end instead of an index insert per row.
    # Only indexes no write of the rebuild itself reads (not a release's lookup, not a key).
    deferred_indexes: ClassVar[tuple[str, ...]] = ()
    ddl: ClassVar[tuple[str, ...]] = ()
    tx: Tx
    set_based: bool = False

    @classmethod
    def deferred_index_ddl(cls) -> list[tuple[str, str]]:
        """(name, its CREATE INDEX IF NOT EXISTS statement from ``ddl``) per deferred index."""
        found = []
        for name in cls.deferred_indexes:
            statements = [d for d in cls.ddl if d.startswith(f"CREATE INDEX IF NOT EXISTS {name} ")]
            if len(statements) != 1:
                raise ValueError(f"{cls.__name__}: no single CREATE INDEX for {name!r} in ddl")
            found.append((name, statements[0]))
        return found

    def clear(self, tx: Tx, dialect: str = "") -> None:
        """Every row of its tables. On PostgreSQL a TRUNCATE: a DELETE leaves every row dead in
        the table and its indexes until a vacuum, and a rebuild's releases then wade through
        them (measured: 0.8 ms per release UPDATE after one rebuild, on 100k events)."""
        if dialect == "postgres":
            tx.execute(f"TRUNCATE {', '.join(self.tables)}")
            return
        for table in self.tables:
            tx.execute(f"DELETE FROM {table}")

    def sinks(self) -> tuple[Sink, ...]:
        return ()

    def begin_page(self, tx: Tx, set_based: bool) -> None:
        self.tx, self.set_based = tx, set_based
        for sink in self.sinks():
            sink.begin(tx, set_based)

    def end_page(self, dialect: str) -> None:
        for sink in self.sinks():
            sink.write(self.tx, dialect)
