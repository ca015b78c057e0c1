"""Versioned migrations (`sluice db migrate|status|init`, adapters/schema.py, migrations/).

The upgrade test runs the real code of the last commit before migrations (``acb7918``, checked
out into a temporary git worktree) to make and fill a store — `db init`, the demo marketplace, a
key, a signed audit checkpoint, a relay pass, an eventsourcing snapshot — on PostgreSQL and on
SQLite, then migrates it with today's `sluice db migrate` and compares every table, row by row.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import migrations
from adapters import schema
from adapters.bootstrap import init_database
from adapters.settings import Settings
from tests.support import drop_postgres_schema

ROOT = Path(__file__).resolve().parents[2]
BEFORE_MIGRATIONS = "acb7918"  # the last commit whose tables came from CREATE TABLE IF NOT EXISTS
COMMAND_TIMEOUT_S = 180  # the old demo books a marketplace: ~15 s here; generous for CI
# Every shipped migration, in order (the same ids for both dialects).
EXPECTED = sorted(path.stem for path in migrations.directory("sqlite").glob("*.sql"))
APPLIED_ALL = f"applied {', '.join(EXPECTED)}"

Tables = dict[str, tuple[list[str], list[tuple[Any, ...]]]]  # table → (columns, sorted rows)


# The old code, run as processes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def old_tree() -> Iterator[Path]:
    """``acb7918`` checked out beside this tree (a worktree: this tree's files stay untouched)."""
    path = Path(f"/tmp/wt-mig-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    git = ["git", "-C", str(ROOT)]
    subprocess.run(
        [*git, "worktree", "add", "--detach", str(path), BEFORE_MIGRATIONS],
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    try:
        yield path
    finally:
        subprocess.run(
            [*git, "worktree", "remove", "--force", str(path)],
            check=False,  # cleanup: a failure here must not hide the test's own
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
        )


def run_in(tree: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``python *args`` with ``tree``'s code first on the path; fails the test on an error."""
    full_env = {**os.environ, "PYTHONPATH": str(tree)}
    full_env.pop("SLUICE_DATABASE_URL", None)  # each command names its store
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, *args],
        check=False,  # the assert below shows the output
        cwd=tree,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def sluice(tree: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run_in(tree, "-m", "adapters.cli", *args, env=env)


def make_old_store(tree: Path, url: str, scratch: Path) -> None:
    """Today's main before migrations: every table made and given rows by the old code."""
    where = str(run_in(tree, "-c", "import adapters; print(adapters.__file__)")).strip()
    assert where.startswith(str(tree)), where  # the old code runs, not this tree's
    sluice(tree, "db", "init", "--database-url", url)
    sluice(tree, "demo", "--database-url", url)
    sluice(tree, "keys", "create", "--role", "admin", "--database-url", url)
    key = scratch / "audit-key.pem"
    sluice(tree, "audit", "generate-key", str(key))
    sluice(
        tree,
        "audit",
        "checkpoint",
        "--database-url",
        url,
        env={"SLUICE_AUDIT_SIGNING_KEY_FILE": str(key)},
    )
    run_in(
        tree,
        "-m",
        "workers.cli",
        "relay",
        "--once",
        env={"SLUICE_DATABASE_URL": url, "SLUICE_BROKER_URL": "stub://"},
    )
    run_in(  # the demo takes no snapshot: take one so that table has a row too
        tree,
        "-c",
        "import sys; from adapters.bootstrap import bootstrap; from adapters.settings import"
        " Settings; ledger = bootstrap(Settings(database_url=sys.argv[1]));"
        " first = ledger.recorder.select_notifications(start=1, limit=1)[0];"
        " ledger.take_snapshot(first.originator_id); ledger.close()",
        url,
    )


# Reading every table ----------------------------------------------------------------------------


def _rows(raw: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in raw), key=repr)


def postgres_tables(
    base_url: str, name: str, columns: dict[str, list[str]] | None = None
) -> Tables:
    """Every table of schema ``name`` with its rows (only ``columns`` of each, when given)."""
    found: Tables = {}
    with psycopg.connect(base_url, autocommit=True) as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                (name,),
            )
        ]
        for table in tables:
            cols = [
                str(r[0])
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (name, table),
                )
            ]
            wanted = (columns or {}).get(table, cols)
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, wanted)), sql.Identifier(name, table)
            )
            found[table] = (cols, _rows(conn.execute(query).fetchall()))
    return found


def sqlite_tables(path: Path, columns: dict[str, list[str]] | None = None) -> Tables:
    found: Tables = {}
    conn = sqlite3.connect(path)
    try:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in names:
            cols = [str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")')]
            wanted = (columns or {}).get(table, cols)
            listed = ", ".join(f'"{c}"' for c in wanted)
            found[table] = (cols, _rows(conn.execute(f'SELECT {listed} FROM "{table}"').fetchall()))
    finally:
        conn.close()
    return found


def assert_nothing_lost(before: Tables, after: Tables) -> None:
    """Every table of before is still there with every column and the very same rows."""
    for table, (columns, rows) in before.items():
        assert table in after, f"{table} disappeared"
        after_columns, after_rows = after[table]
        assert set(columns) <= set(after_columns), (table, columns, after_columns)
        assert after_rows == rows, f"{table}: rows changed"


def assert_every_table_has_rows(tables: Tables) -> None:
    empty = sorted(t for t, (_, rows) in tables.items() if not rows)
    assert not empty, f"the old store has empty tables: {empty}"


def new_sluice(*args: str) -> subprocess.CompletedProcess[str]:
    """Today's `sluice`, as a process."""
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        check=False,  # the callers check the exit code
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def migrate_and_compare(url: str, read: Any) -> None:
    """`db migrate` on a store of the old code: nothing lost, all applied, a second run a no-op."""
    before = read(None)
    assert_every_table_has_rows(before)
    assert schema.status(Settings(database_url=url)).pending == EXPECTED

    first = new_sluice("db", "migrate", "--database-url", url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert APPLIED_ALL in first.stdout
    old_columns = {table: columns for table, (columns, _) in before.items()}
    after = read(old_columns)
    assert_nothing_lost(before, after)
    assert "sl_lock_holders" in after  # version 2 added its table
    assert {"label", "replaced_by"} <= set(after["rm_api_keys"][0])

    shown = new_sluice("db", "status", "--database-url", url)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.count("│ applied │") == len(EXPECTED), shown.stdout
    assert "pending" not in shown.stdout
    assert "present" in shown.stdout and "missing" not in shown.stdout

    second = new_sluice("db", "migrate", "--database-url", url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to apply" in second.stdout
    assert read(None) == read(None) and read(old_columns) == after


def test_a_postgres_store_made_before_migrations_is_adopted_with_nothing_lost(
    postgres_url: str, old_tree: Path, tmp_path: Path
) -> None:
    name = f"mig_old_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}?schema={name}"
    try:
        make_old_store(old_tree, url, tmp_path)
        migrate_and_compare(url, lambda columns: postgres_tables(postgres_url, name, columns))
    finally:
        drop_postgres_schema(postgres_url, name)


def test_a_sqlite_store_made_before_migrations_is_adopted_with_nothing_lost(
    old_tree: Path, tmp_path: Path
) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    make_old_store(old_tree, url, tmp_path)
    migrate_and_compare(url, lambda columns: sqlite_tables(path, columns))


# New migrations on top --------------------------------------------------------------------------

DUMMY = f"""-- A test-only migration: a table with a row, on top of the shipped ones.
-- depends: {EXPECTED[-1]}

CREATE TABLE sl_test_dummy (id TEXT PRIMARY KEY, note TEXT NOT NULL);

INSERT INTO sl_test_dummy (id, note) VALUES ('one', 'applied on top');
"""


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
        return
    base = request.getfixturevalue("postgres_url")
    name = f"mig_new_{uuid.uuid4().hex[:12]}"
    try:
        yield Settings(database_url=f"{base}?schema={name}")
    finally:
        drop_postgres_schema(base, name)


def test_a_new_migration_applies_on_top_once_and_shows_in_status(
    fresh_store: Settings, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    dummy_id = f"0900.test-dummy-{uuid.uuid4().hex[:8]}"  # yoyo keeps ids process-wide
    (extra / f"{dummy_id}.sql").write_text(DUMMY)

    assert init_database(fresh_store) == EXPECTED
    found = schema.status(fresh_store, [extra])
    assert found.pending == [dummy_id]
    assert init_database(fresh_store, extra_migrations=[extra]) == [dummy_id]
    assert init_database(fresh_store, extra_migrations=[extra]) == []
    found = schema.status(fresh_store, [extra])
    assert found.pending == []
    assert [m.id for m in found.migrations] == [*EXPECTED, dummy_id]
    assert all(m.applied_at for m in found.migrations)

    from adapters.bootstrap import read_model

    view = read_model(fresh_store)
    try:
        with view.read() as tx:
            tx.execute("SELECT id, note FROM sl_test_dummy")
            assert tx.all() == [{"id": "one", "note": "applied on top"}]  # once, not twice
    finally:
        view.datastore.close()  # type: ignore[attr-defined]

    # The CLI knows only the shipped files; it still lists what the store recorded.
    shown = new_sluice("db", "status", "--database-url", fresh_store.database_url)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert dummy_id in shown.stdout


def test_two_migrators_at_once_apply_each_migration_once(fresh_store: Settings) -> None:
    url = fresh_store.database_url
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_DATABASE_URL"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "db", "migrate", "--database-url", url],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=COMMAND_TIMEOUT_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(out for out, _ in outputs)
    assert APPLIED_ALL in said[0], said
    assert "nothing to apply" in said[1], said
    assert schema.status(fresh_store).pending == []


def test_status_of_an_empty_store_lists_every_migration_pending_and_exits_1(
    fresh_store: Settings,
) -> None:
    if fresh_store.database_url.startswith("postgres"):
        from adapters.persistence import ensure_postgres_schema

        ensure_postgres_schema(fresh_store.database_url)
    shown = new_sluice("db", "status", "--database-url", fresh_store.database_url)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert shown.stdout.count("pending") >= len(EXPECTED)
    assert "missing" in shown.stdout  # eventsourcing's tables are not there either


def test_migrate_on_an_unreachable_store_is_one_line_and_exit_2() -> None:
    done = new_sluice("db", "migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/x")
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error cannot reach"), done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_migrations_make_the_same_read_model_tables_as_the_projections_ddl(
    tmp_path: Path,
) -> None:
    """``audit verify`` builds scratch read models from the projections' own DDL: it must
    describe the tables the migrations made, column for column."""
    from adapters.keys import KEYS_DDL
    from projections.projections import ALL_DDL

    migrated = tmp_path / "migrated.db"
    init_database(Settings(database_url=f"sqlite:///{migrated}"))
    scratch = tmp_path / "scratch.db"
    conn = sqlite3.connect(scratch)
    for ddl in (*ALL_DDL, *KEYS_DDL):
        conn.execute(ddl)
    conn.close()

    def shape(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        db = sqlite3.connect(path)
        try:
            names = [
                str(r[0])
                for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if str(r[0]).startswith("rm_")
            ]
            return {n: list(db.execute(f'PRAGMA table_info("{n}")')) for n in sorted(names)}
        finally:
            db.close()

    assert shape(migrated) == shape(scratch)


def _open_sockets() -> int:
    """Sockets this process holds (Linux): every PostgreSQL connection is one."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:  # closed between listing and reading
            continue
    return count


def test_init_database_closes_every_connection_it_opens(postgres_url: str) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("counting sockets needs Linux's /proc")
    name = f"mig_leak_{uuid.uuid4().hex[:12]}"
    settings = Settings(database_url=f"{postgres_url}?schema={name}")
    try:
        init_database(settings)  # imports and first-time setup happen here
        before = _open_sockets()
        for _ in range(3):
            init_database(settings)
        assert _open_sockets() == before
    finally:
        drop_postgres_schema(postgres_url, name)


@pytest.mark.postgres
def test_processes_creating_the_schema_at_once_all_succeed(postgres_url: str) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` is not atomic: of several creators racing, all but one
    used to fail on the catalog's unique key (29 of 30 rounds of six, measured), which made two
    `sluice db migrate` at once fail now and then. Each must find the schema there instead."""
    import threading

    from adapters.persistence import ensure_postgres_schema

    for _ in range(10):
        name = f"race_{uuid.uuid4().hex[:12]}"
        errors: list[BaseException] = []

        def create(
            url: str = f"{postgres_url}?schema={name}", errors: list[BaseException] = errors
        ) -> None:
            try:
                ensure_postgres_schema(url)
            except Exception as error:  # collected: the assertion below names it
                errors.append(error)

        threads = [threading.Thread(target=create) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert errors == []
        finally:
            drop_postgres_schema(postgres_url, name)
