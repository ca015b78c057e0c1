"""Laws of the read side, on SQLite and PostgreSQL: a projection equals a replay of the events,
a rebuild equals the incremental result, redelivery changes nothing, and a crash mid-batch
leaves the previous state for a clean retry."""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import bootstrap, init_database, read_model
from adapters.settings import Settings
from adapters.verify import verify
from ledger import commands as c
from ledger.application import Ledger
from ledger.errors import SluiceError
from ledger.splits import SplitPart
from projections import queries
from projections.audit import replay
from projections.runner import Projector

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
PLATFORM = "acct_platform"
SELLERS = ("acct_s1", "acct_s2", "acct_s3")
CURRENCIES = ("usd", "jpy")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path}/p.db")
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"proj_{secrets.token_hex(4)}"
    yield Settings(database_url=f"{base}?schema={schema}")
    with psycopg.connect(base, autocommit=True) as conn:  # this test's schemas, and _fresh()'s
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{schema}%",)
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def open_store(store: Settings, clock: Clock) -> tuple[Ledger, Projector]:
    """The Ledger and a projector with a small batch, so histories span many batches."""
    init_database(store)
    ledger = bootstrap(store, clock=clock)
    return ledger, Projector(ledger, read_model(store), batch_size=37)


def setup_accounts(ledger: Ledger) -> None:
    ledger.open_account(
        idempotency_key="open-p", account_id=PLATFORM, kind="platform", effective_at=T0
    )
    for seller in SELLERS:
        ledger.open_account(idempotency_key=f"open-{seller}", account_id=seller, effective_at=T0)
        ledger.update_account(
            idempotency_key=f"en-{seller}",
            account_id=seller,
            charges_enabled=True,
            payouts_enabled=True,
            effective_at=T0,
        )


def random_history(ledger: Ledger, clock: Clock, rng: random.Random, steps: int) -> None:
    """A plausible marketplace: charges of every type, refunds, transfers, disputes, releases,
    payouts and their outcomes. Commands the ledger refuses are part of the history too."""
    payments: list[str] = []
    transfers: list[str] = []
    payouts: list[str] = []
    for n in range(steps):
        clock.now += timedelta(hours=rng.randint(1, 30))
        key, at = f"h{n}", clock.now
        currency = rng.choice(CURRENCIES)
        amount = rng.randint(1, 900) * (10 if currency == "jpy" else 100)
        seller = rng.choice(SELLERS)
        roll = rng.random()
        cmd: c.Command
        if roll < 0.35 or not payments:
            kind = rng.choice(("direct", "destination", "separate"))
            extra: dict[str, Any] = {}
            if kind == "separate":
                extra["split"] = (SplitPart(seller, share_bps=rng.randint(1, 9000)),)
            else:
                extra |= {"account_id": seller, "application_fee_minor": amount // 10}
            cmd = c.RecordPayment(
                idempotency_key=key,
                effective_at=at,
                charge_type=kind,
                currency=currency,
                amount_minor=amount,
                stripe_fee_minor=amount // 30,
                **extra,
            )
        elif roll < 0.45:
            cmd = c.RefundPayment(
                idempotency_key=key,
                effective_at=at,
                payment_id=rng.choice(payments),
                amount_minor=rng.choice((None, amount // 4 or 1)),
                reverse_transfer=rng.random() < 0.5,
            )
        elif roll < 0.55:
            cmd = c.ReleaseFunds(
                idempotency_key=key,
                effective_at=at,
                account_id=rng.choice((PLATFORM, *SELLERS)),
                currency=currency,
                until=at,
            )
        elif roll < 0.62:
            cmd = c.CreateTransfer(
                idempotency_key=key,
                effective_at=at,
                destination_account_id=seller,
                currency=currency,
                amount_minor=amount // 5 or 1,
                source_payment_id=rng.choice((None, rng.choice(payments))),
            )
        elif roll < 0.67 and transfers:
            cmd = c.ReverseTransfer(
                idempotency_key=key,
                effective_at=at,
                transfer_id=rng.choice(transfers),
                amount_minor=None,
            )
        elif roll < 0.72:
            cmd = c.OpenDispute(
                idempotency_key=key,
                effective_at=at,
                payment_id=rng.choice(payments),
                fee_minor=1500,
            )
        elif roll < 0.76:
            cmd = c.CloseDispute(
                idempotency_key=key,
                effective_at=at,
                payment_id=rng.choice(payments),
                won=rng.random() < 0.5,
            )
        elif roll < 0.88:
            balance = ledger.get_balance(seller, currency)
            available = balance.available_minor if balance else 0
            cmd = c.RequestPayout(
                idempotency_key=key,
                effective_at=at,
                account_id=seller,
                currency=currency,
                amount_minor=max(1, available // 2),
            )
        elif payouts:
            payout = rng.choice(payouts)
            cmd = rng.choice(
                (
                    c.MarkPayoutInTransit(idempotency_key=key, effective_at=at, payout_id=payout),
                    c.MarkPayoutPaid(idempotency_key=key, effective_at=at, payout_id=payout),
                    c.FailPayout(
                        idempotency_key=key,
                        effective_at=at,
                        payout_id=payout,
                        failure_code="account_closed",
                    ),
                    c.CancelPayout(idempotency_key=key, effective_at=at, payout_id=payout),
                )
            )
        else:
            continue
        try:
            result = ledger.execute(cmd)
        except SluiceError:
            continue
        if "payment" in result.ids and isinstance(cmd, c.RecordPayment):
            payments.append(result.ids["payment"])
        transfers += [v for k, v in result.ids.items() if k.startswith("transfer")]
        if isinstance(cmd, c.RequestPayout):
            payouts.append(result.ids["payout"])


def assert_projections_equal_replay(ledger: Ledger, projector: Projector) -> None:
    view = projector.view
    for account in (PLATFORM, *SELLERS):
        from_events = replay(ledger, account).balances
        projected = queries.balance(view, account)
        got = {
            a["currency"]: {
                "available": a["amount"],
                "pending": p["amount"],
                "reserved": r["amount"],
            }
            for a, p, r in zip(
                projected["available"], projected["pending"], projected["reserved"], strict=True
            )
        }
        assert got == from_events, account
        # Stripe's reconciliation identity: balance transactions by status sum to the balance.
        with view.read() as tx:
            tx.execute(
                "SELECT currency, status, SUM(net) AS net FROM rm_balance_transactions"
                " WHERE account_id = %s GROUP BY currency, status",
                (account,),
            )
            sums = {(r["currency"], r["status"]): int(r["net"]) for r in tx.all()}
        for currency, books in from_events.items():
            assert sums.get((currency, "pending"), 0) == books["pending"], (account, currency)
            assert sums.get((currency, "available"), 0) == books["available"], (account, currency)
    with view.read() as tx:
        tx.execute("SELECT id, status, amount FROM rm_payouts")
        rows = tx.all()
    for row in rows:
        payout = ledger.get_payout(row["id"])
        assert payout is not None
        assert (row["status"], row["amount"]) == (payout.status, payout.amount_minor)
    fees: dict[tuple[str, str], int] = {}
    for _, event in ledger.iter_journal():
        if type(event).__name__ in ("ApplicationFeeCollected", "ApplicationFeeRefunded"):
            sign = 1 if type(event).__name__ == "ApplicationFeeCollected" else -1
            key = (event.effective_at.date().isoformat(), event.entry_postings()[0].currency)
            fees[key] = fees.get(key, 0) + sign * event.amount_minor
    projected_fees = {
        (r["day"], r["currency"]): r["net"]
        for r in queries.revenue(view, "1970-01-01", "9999-12-31")
    }
    assert projected_fees == {k: v for k, v in fees.items() if k in projected_fees or v}


HISTORY = settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HISTORY
@given(seed=st.integers(0, 2**32), steps=st.integers(20, 70))
def test_every_projection_equals_a_replay_of_the_events(
    store: Settings, seed: int, steps: int
) -> None:
    clock = Clock()
    ledger, projector = open_store(
        store.model_copy(update={"database_url": _fresh(store.database_url, seed)}), clock
    )
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(seed), steps)
    projector.run_once()
    assert_projections_equal_replay(ledger, projector)


@HISTORY
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.integers(1, 400), min_size=1, max_size=6))
def test_incremental_projection_equals_a_rebuild(
    store: Settings, seed: int, cuts: list[int]
) -> None:
    clock = Clock()
    ledger, projector = open_store(
        store.model_copy(update={"database_url": _fresh(store.database_url, seed)}), clock
    )
    setup_accounts(ledger)
    rng = random.Random(seed)
    for cut in sorted(cuts):  # writes interleaved with partial catch-ups, stopping anywhere
        random_history(ledger, clock, rng, 15)
        for name in projector.projections:
            projector.catch_up(name, stop=cut)
    projector.run_once()
    positions, differences = verify(
        ledger,
        projector.view,
        store.model_copy(update={"database_url": _fresh(store.database_url, seed)}),
    )
    assert not differences, [d.describe() for d in differences[:5]]
    assert all(p == ledger.recorder.max_notification_id() for p in positions.values())


def _fresh(url: str, seed: int) -> str:
    """Each hypothesis example gets its own store (a new SQLite file or PostgreSQL schema)."""
    if url.startswith("sqlite:///"):
        return url.replace(".db", f"-{seed}-{secrets.token_hex(3)}.db")
    base, schema = url.split("?schema=")
    return f"{base}?schema={schema}_{secrets.token_hex(3)}"


def _snapshot(projector: Projector) -> dict[str, list[dict[str, Any]]]:
    out = {}
    with projector.view.read() as tx:
        for table in ("rm_balances", "rm_balance_transactions", "rm_payouts", "rm_revenue"):
            tx.execute(f"SELECT * FROM {table}")
            out[table] = sorted(tx.all(), key=repr)
    return out


def test_redelivering_events_from_an_older_position_changes_nothing(store: Settings) -> None:
    clock = Clock()
    ledger, projector = open_store(store, clock)
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(7), 60)
    projector.run_once()
    before = _snapshot(projector)
    old = ledger.recorder.select_notifications(start=5, limit=50)
    events = [(n.id, ledger.mapper.to_domain_event(n)) for n in old]
    for projection in projector.projections.values():
        with pytest.raises(IntegrityError):
            projector.apply(projection, events)
    assert _snapshot(projector) == before
    assert_projections_equal_replay(ledger, projector)


class Crash(Exception):
    pass


def test_a_crash_mid_batch_leaves_the_previous_state_and_a_restart_converges(
    store: Settings,
) -> None:
    clock = Clock()
    ledger, projector = open_store(store, clock)
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(11), 80)
    projection = projector.projections["balance_transactions"]
    original = type(projection).process_event
    first_batch_end = _nth_position(ledger, 37)
    calls = {"n": 0}

    def crashing(self: Any, event: Any, tracking: Any) -> None:
        # The projection is handed only the events it uses: count those of the second batch.
        calls["n"] += tracking.notification_id > first_batch_end
        if calls["n"] == 3:  # inside the second batch of 37, some of its rows written
            raise Crash("power cut")
        original(self, event, tracking)

    projection.process_event = crashing.__get__(projection)  # type: ignore[method-assign]
    with pytest.raises(Crash):
        projector.catch_up("balance_transactions")
    assert projector.position("balance_transactions") == _nth_position(ledger, 37)
    del projection.process_event  # the restarted process runs the real code
    projector.run_once()
    assert_projections_equal_replay(ledger, projector)
    assert verify(ledger, projector.view, store)[1] == []


def _nth_position(ledger: Ledger, n: int) -> int:
    return ledger.recorder.select_notifications(start=1, limit=n)[-1].id


def test_audit_replay_between_two_events_matches_a_hand_computed_history(
    store: Settings,
) -> None:
    clock = Clock()
    ledger, _ = open_store(store, clock)
    setup_accounts(ledger)
    day = timedelta(days=1)
    # Day 0: a 100.00 destination charge, fee 3.20, application fee 10.00, available day 2.
    ledger.record_payment(
        idempotency_key="p1",
        effective_at=T0,
        charge_type="destination",
        currency="usd",
        amount_minor=10_000,
        stripe_fee_minor=320,
        application_fee_minor=1_000,
        account_id="acct_s1",
        available_on=T0 + 2 * day,
    )
    clock.now = T0 + 3 * day  # recorded three days later than it took effect
    ledger.release_funds(
        idempotency_key="r1",
        effective_at=T0 + 2 * day,
        account_id="acct_s1",
        currency="usd",
        until=T0 + 2 * day,
    )
    ledger.request_payout(
        idempotency_key="po1",
        effective_at=T0 + 4 * day,
        account_id="acct_s1",
        currency="usd",
        amount_minor=5_000,
    )

    def books(as_of: datetime | None = None, recorded: datetime | None = None) -> Any:
        return replay(ledger, "acct_s1", as_of=as_of, recorded_as_of=recorded).balances.get("usd")

    assert books(T0 - day) is None
    assert books(T0 + day) == {"pending": 9_000, "available": 0, "reserved": 0}
    assert books(T0 + 3 * day) == {"pending": 0, "available": 9_000, "reserved": 0}
    assert books(T0 + 5 * day) == {"pending": 0, "available": 4_000, "reserved": 0}
    # As known on day 1: the release had not been recorded yet (recorded on day 3).
    assert books(T0 + 5 * day, recorded=T0 + day) == {
        "pending": 9_000,
        "available": 0,
        "reserved": 0,
    }
    platform = replay(ledger, PLATFORM, as_of=T0 + day).balances["usd"]
    assert platform == {"pending": 1_000 - 320, "available": 0, "reserved": 0}


def test_verify_reports_a_tampered_read_model(store: Settings) -> None:
    clock = Clock()
    ledger, projector = open_store(store, clock)
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(3), 40)
    projector.run_once()
    assert verify(ledger, projector.view, store)[1] == []
    with projector.view.write(None) as tx:
        tx.execute(
            "UPDATE rm_balances SET available = available + 1 WHERE account_id = %s", (PLATFORM,)
        )
        tx.execute("DELETE FROM rm_payouts WHERE id IN (SELECT id FROM rm_payouts LIMIT 1)")
    differences = verify(ledger, projector.view, store)[1]
    tables = {d.table for d in differences}
    assert "rm_balances" in tables
    assert all(d.projection in ("balances", "payouts") for d in differences)
