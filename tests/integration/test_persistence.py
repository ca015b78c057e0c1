"""The same scenario on SQLite and PostgreSQL: tables, reloads, a second process, snapshots."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from eventsourcing.application import project_aggregate

from ledger import commands as c
from ledger.application import Ledger
from ledger.balances import Balance
from ledger.ids import balance_aggregate_id
from ledger.splits import SplitPart
from tests.support import (
    PLATFORM,
    T0,
    aggregate_ids,
    aggregate_state,
    event_count,
    fresh_postgres_schema,
    new_ledger,
    uncached_ledger,
)

ACCOUNTS = (PLATFORM, "acct_a", "acct_b")
CURRENCIES = ("usd", "jpy")
SNAPSHOT_INTERVAL = 200  # Ledger.snapshotting_intervals[Balance]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sluice.db'}"
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with fresh_postgres_schema(postgres_url) as url:
        yield url


def _table_names(url: str) -> set[str]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows}
    import psycopg

    schema = parse_qs(urlparse(url).query)["schema"][0]
    with psycopg.connect(url.split("?", 1)[0]) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {name for (name,) in rows}


def _balances(app: Ledger) -> dict[tuple[str, str], tuple[int, int, int]]:
    found = {}
    for account in ACCOUNTS:
        for currency in CURRENCIES:
            balance = app.get_balance(account, currency)
            if balance is not None:
                found[(account, currency)] = (
                    balance.pending_minor,
                    balance.available_minor,
                    balance.reserved_minor,
                )
    return found


def _scenario(app: Ledger, clock: Clock) -> dict[str, str]:
    n = iter(range(10_000))

    def cmd(cls: type[c.Command], **params: Any) -> c.Command:
        return cls(idempotency_key=f"s{next(n)}", effective_at=clock.now, **params)

    def run(cls: type[c.Command], **params: Any) -> dict[str, str]:
        return app.execute(cmd(cls, **params)).ids

    run(c.OpenAccount, account_id=PLATFORM, kind="platform")
    for account in ("acct_a", "acct_b"):
        run(c.OpenAccount, account_id=account)
        run(c.UpdateAccount, account_id=account, charges_enabled=True, payouts_enabled=True)
    run(
        c.SetPayoutSchedule,
        account_id="acct_b",
        interval="weekly",
        delay_days=3,
        weekly_anchor="friday",
    )
    run(c.TopUp, account_id=PLATFORM, currency="usd", amount_minor=500_000)
    ids = {
        "destination": run(
            c.RecordPayment,
            charge_type="destination",
            currency="usd",
            amount_minor=20_000,
            stripe_fee_minor=610,
            application_fee_minor=2_000,
            account_id="acct_a",
        )["payment"],
        "separate": run(
            c.RecordPayment,
            charge_type="separate",
            currency="jpy",
            amount_minor=9_000,
            stripe_fee_minor=300,
            split=(SplitPart("acct_a", share_bps=5_000), SplitPart("acct_b", fixed_minor=1_000)),
        )["payment"],
    }
    clock.now += timedelta(days=3)
    for account in ACCOUNTS:
        for currency in CURRENCIES:
            run(c.ReleaseFunds, account_id=account, currency=currency, until=clock.now)
    ids["transfer"] = run(
        c.CreateTransfer, destination_account_id="acct_b", currency="usd", amount_minor=3_000
    )["transfer"]
    run(c.RefundPayment, payment_id=ids["destination"], amount_minor=5_000, reverse_transfer=True)
    ids["payout"] = run(c.RequestPayout, account_id="acct_a", currency="usd", amount_minor=1_000)[
        "payout"
    ]
    run(c.MarkPayoutInTransit, payout_id=ids["payout"])
    run(c.MarkPayoutPaid, payout_id=ids["payout"])
    run(c.OpenDispute, payment_id=ids["separate"], amount_minor=2_000, fee_minor=1_500)
    run(c.CloseDispute, payment_id=ids["separate"], won=True)

    # Over 200 postings on acct_b's usd balance: a batch of top-ups, then payments and payouts.
    app.execute_batch(
        [cmd(c.TopUp, account_id="acct_b", currency="usd", amount_minor=100) for _ in range(120)]
    )
    for _ in range(45):
        clock.now += timedelta(hours=1)
        results = app.execute_batch(
            [
                cmd(
                    c.RecordPayment,
                    charge_type="direct",
                    currency="usd",
                    amount_minor=1_000,
                    stripe_fee_minor=59,
                    account_id="acct_b",
                    available_on=clock.now,
                ),
                cmd(c.ReleaseFunds, account_id="acct_b", currency="usd", until=clock.now),
                cmd(c.RequestPayout, account_id="acct_b", currency="usd", amount_minor=500),
            ]
        )
        assert all(result.ok for result in results), results
    return ids


def test_tables_are_created_and_a_second_ledger_sees_the_same_state(store_url: str) -> None:
    clock = Clock()
    app = new_ledger(store_url, clock, create_tables=True)
    try:
        # eventsourcing names PostgreSQL tables after the application, SQLite ones generically.
        prefix = "stored" if store_url.startswith("sqlite") else "ledger"
        assert {f"{prefix}_events", f"{prefix}_snapshots"} <= _table_names(store_url)
        ids = _scenario(app, clock)
        totals, books = app.journal_totals()
        assert set(totals.values()) == {0}

        second = new_ledger(store_url, clock, create_tables=False)
        try:
            assert _balances(second) == _balances(app)
            assert second.journal_totals() == (totals, books)
            assert event_count(second) == event_count(app)
            for name, get in (
                ("destination", second.get_payment),
                ("separate", second.get_payment),
                ("transfer", second.get_transfer),
                ("payout", second.get_payout),
            ):
                live = {"transfer": app.get_transfer, "payout": app.get_payout}.get(
                    name, app.get_payment
                )(ids[name])
                assert aggregate_state(get(ids[name])) == aggregate_state(live)
            # Idempotency holds across processes: the second one replays the first one's work.
            before = event_count(app)
            replay = second.execute(
                c.OpenAccount(idempotency_key="s1", effective_at=clock.now, account_id="acct_a")
            )
            assert replay.replayed and replay.ids == {"account": "acct_a"}
            assert event_count(app) == before
            # And what the second one writes, the first one sees.
            second.top_up(
                idempotency_key="from-second",
                account_id=PLATFORM,
                currency="jpy",
                amount_minor=77,
                effective_at=clock.now,
            )
            jpy = app.get_balance(PLATFORM, "jpy")
            assert jpy is not None and jpy.pending_minor == 77 + books.get(
                (PLATFORM, "pending", "jpy"), 0
            )
        finally:
            second.close()
    finally:
        app.close()


def test_snapshots_are_taken_and_a_reload_equals_the_live_aggregate(store_url: str) -> None:
    clock = Clock()
    app = new_ledger(store_url, clock, create_tables=True)
    try:
        _scenario(app, clock)
        balance_id = balance_aggregate_id("acct_b", "usd")
        live = app.repository.get(balance_id)
        assert isinstance(live, Balance)
        assert live.version > SNAPSHOT_INTERVAL
        assert app.snapshots is not None
        snapshots = list(app.snapshots.get(balance_id))
        assert snapshots, "no snapshot after more than 200 events on one balance"
        assert [s.originator_version for s in snapshots] == [SNAPSHOT_INTERVAL]

        reader = uncached_ledger(store_url, clock)  # snapshot + later events, no cache
        try:
            reloaded = reader.repository.get(balance_id)
            assert aggregate_state(reloaded) == aggregate_state(live)
            from_all_events = project_aggregate(None, app.events.get(balance_id))
            assert aggregate_state(from_all_events) == aggregate_state(live)
            at_snapshot = reader.repository.get(balance_id, version=SNAPSHOT_INTERVAL)
            assert aggregate_state(at_snapshot) == aggregate_state(snapshots[0].mutate(None))
            for aggregate_id in aggregate_ids(app):
                assert aggregate_state(reader.repository.get(aggregate_id)) == aggregate_state(
                    app.repository.get(aggregate_id)
                )
        finally:
            reader.close()
    finally:
        app.close()


def test_a_batch_past_an_interval_snapshots_the_aggregate_as_saved(store_url: str) -> None:
    """Batches of six payments take the seller's balance past version 200 (and 400) inside
    a batch: the snapshot is of the balance as saved, at the batch's version, not read back
    from the store; a reader starting from it, and one replaying every event, agree with the
    live aggregate, and a read at an earlier version does not use it."""
    clock = Clock()
    app = new_ledger(store_url, clock, create_tables=True)
    try:
        for account in (PLATFORM, "acct_a"):
            kind = "platform" if account == PLATFORM else "connected"
            app.execute(
                c.OpenAccount(
                    idempotency_key=f"open-{account}", effective_at=T0, account_id=account,
                    kind=kind,
                )
            )  # fmt: skip
        app.execute(
            c.UpdateAccount(
                idempotency_key="enable", effective_at=T0, account_id="acct_a",
                charges_enabled=True, payouts_enabled=True,
            )
        )  # fmt: skip
        balance_id = balance_aggregate_id("acct_a", "usd")
        n = iter(range(10_000))
        for _ in range(70):  # 420 payments, one Balance.Posted each, 6 per batch
            results = app.execute_batch(
                [
                    c.RecordPayment(
                        idempotency_key=f"p{next(n)}", effective_at=T0, charge_type="destination",
                        currency="usd", amount_minor=1_000, stripe_fee_minor=59,
                        application_fee_minor=100, account_id="acct_a",
                    )
                    for _ in range(6)
                ]
            )  # fmt: skip
            assert all(r.ok for r in results)
        live = app.repository.get(balance_id)
        assert app.snapshots is not None
        versions = [s.originator_version for s in app.snapshots.get(balance_id)]
        assert versions == [205, 403]  # the balance: opened, then 6 postings per batch
        reader = uncached_ledger(store_url, clock)
        try:
            assert aggregate_state(reader.repository.get(balance_id)) == aggregate_state(live)
            assert aggregate_state(
                project_aggregate(None, app.events.get(balance_id))
            ) == aggregate_state(live)
            for snapshot in app.snapshots.get(balance_id):
                at = reader.repository.get(balance_id, version=snapshot.originator_version)
                replayed = project_aggregate(
                    None, app.events.get(balance_id, lte=snapshot.originator_version)
                )
                assert aggregate_state(at) == aggregate_state(replayed)
                assert aggregate_state(snapshot.mutate(None)) == aggregate_state(replayed)
            earlier = reader.repository.get(balance_id, version=SNAPSHOT_INTERVAL)
            assert earlier.version == SNAPSHOT_INTERVAL
        finally:
            reader.close()
    finally:
        app.close()
