"""The CLI as a finance analyst meets it: `sluice accounts` and `sluice tax-report` find and sum
what the ledger holds; dates are ISO 8601 or unix seconds and anything else is refused; unknown
accounts, statuses and read models, a database without Sluice's schema or no database at all
each end in one line (with the fix) and a non-zero exit, never a traceback or an empty table.

Each command runs as a real `python -m adapters.cli` process on a SQLite store made here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.bootstrap import bootstrap, init_database
from adapters.settings import Settings
from ledger import commands as c

CLI_TIMEOUT_S = 120
MAR_2025 = datetime(2025, 3, 3, tzinfo=UTC)


def sluice(*args: str, url: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SLUICE_DATABASE_URL": url, "COLUMNS": "100"} | env_extra
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    out = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("error"), out
    for word in words:
        assert word in out, (word, out)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'sluice.db'}"
    settings = Settings(database_url=url)
    init_database(settings)
    ledger = bootstrap(settings)
    try:
        at = {"effective_at": MAR_2025}
        for command in (
            c.OpenAccount(idempotency_key="p", **at, account_id="acct_platform", kind="platform"),
            c.OpenAccount(idempotency_key="o", **at, account_id="acct_kiln"),
            c.UpdateAccount(
                idempotency_key="u", **at, account_id="acct_kiln", charges_enabled=True
            ),
            c.SetAccountProfile(
                idempotency_key="n",
                **at,
                account_id="acct_kiln",
                display_name="Kiln & Clay",
                email="hello@kiln.example",
                metadata=(("tier", "gold"),),
            ),
            c.OpenAccount(idempotency_key="o2", **at, account_id="acct_loom"),
            c.RecordPayment(
                idempotency_key="pay",
                **at,
                charge_type="direct",
                currency="usd",
                amount_minor=4_200,
                account_id="acct_kiln",
            ),
        ):
            assert ledger.execute(command).error is None, command
    finally:
        ledger.close()
    assert sluice("project", "run", "--once", url=url).returncode == 0
    return url


def test_accounts_are_found_by_name_and_metadata(store: str) -> None:
    table = sluice("accounts", url=store)
    assert table.returncode == 0, table.stderr
    assert "Kiln & Clay" in table.stdout and "acct_loom" in table.stdout
    found = sluice("accounts", "--search", "KILN", "--format", "json", url=store)
    assert [a["id"] for a in json.loads(found.stdout)] == ["acct_kiln"]
    gold = sluice("accounts", "--metadata", "tier=gold", "--format", "json", url=store)
    assert [a["name"] for a in json.loads(gold.stdout)] == ["Kiln & Clay"]
    off = sluice("accounts", "--charges-disabled", "--format", "json", url=store)
    assert {a["id"] for a in json.loads(off.stdout)} == {"acct_loom", "acct_platform"}


def test_the_tax_report_sums_the_year_in_csv_and_json(store: str, tmp_path: Path) -> None:
    out = tmp_path / "tax.csv"
    done = sluice("tax-report", "--year", "2025", "--format", "csv", "-o", str(out), url=store)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "account,name,year,currency,month,gross_volume,refunds,payments"
    assert "acct_kiln,Kiln & Clay,2025,usd,3,4200,0,1" in lines
    assert lines[-1] == "acct_kiln,Kiln & Clay,2025,usd,year,4200,0,1"
    reports = json.loads(
        sluice("tax-report", "--year", "2025", "--format", "json", url=store).stdout
    )
    assert [(r["account"], r["gross_volume"], r["payments"]) for r in reports] == [
        ("acct_kiln", 4_200, 1)
    ]


def test_dates_are_iso_8601_or_unix_seconds_and_nothing_else(store: str) -> None:
    ok = sluice("revenue", "--from", "1735689600", "--to", "2026-01-01T00:00:00Z", url=store)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    one_line_error(sluice("revenue", "--from", "2025-01-01", "--to", "nov", url=store), "--to")
    one_line_error(sluice("transactions", "acct_kiln", "--from", "yesterday", url=store))
    one_line_error(sluice("revenue", "--from", "2025-02-01", "--to", "2025-01-01", url=store))


def test_unknown_accounts_statuses_and_read_models_exit_with_one_line(store: str) -> None:
    for args in (
        ("balance", "acct_nosuch"),
        ("transactions", "acct_nosuch"),
        ("payouts", "--account", "acct_nosuch"),
        ("tax-report", "--year", "2025", "--account", "acct_nosuch"),
    ):
        one_line_error(sluice(*args, url=store), "acct_nosuch")
    one_line_error(sluice("payouts", "--status", "lost", url=store), "--status")
    one_line_error(sluice("project", "rebuild", "nosuch", url=store), "nosuch")
    one_line_error(sluice("accounts", "--metadata", "tier", url=store), "key=value")
    one_line_error(sluice("nosuch-command", url=store))


def test_a_store_without_the_schema_says_to_migrate(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    one_line_error(sluice("balance", "acct_kiln", url=empty), "sluice db migrate")
    one_line_error(sluice("accounts", url=empty), "sluice db migrate")


def test_the_worker_processes_say_what_is_missing_in_one_line(tmp_path: Path) -> None:
    """`sluice worker`, its dead letters, the relay and the scheduler run in a process of their
    own (workers.cli): no broker or no schema is one line and exit 2 there too, not pika's
    log flood or a traceback."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    for broker in (f"amqp://guest:guest@127.0.0.1:{port}/", f"redis://127.0.0.1:{port}/0"):
        for args in (("worker",), ("worker", "dead-letters")):
            if args[-1] == "dead-letters" and broker.startswith("redis"):
                continue  # dead letters are RabbitMQ's queues; it says so
            done = sluice(*args, url=empty, SLUICE_BROKER_URL=broker)
            one_line_error(done, "cannot reach the message broker", "SLUICE_BROKER_URL")
            assert done.returncode == 2
    for args in (("relay", "--once"), ("scheduler", "--once")):
        one_line_error(sluice(*args, url=empty), "sluice db migrate")


def test_no_database_says_where_to_look() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    one_line_error(sluice("accounts", url=url), "cannot reach the database", "SLUICE_DATABASE_URL")


def test_every_option_and_argument_has_help() -> None:
    import typer

    from adapters.cli import app

    missing = []

    def walk(command: object, path: str) -> None:
        for param in getattr(command, "params", []):
            if param.name != "help" and not getattr(param, "help", None):
                missing.append(f"{path} {param.name}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "sluice")
    assert missing == []
