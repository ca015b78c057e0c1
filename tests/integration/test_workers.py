"""The workers against real services: RabbitMQ (confirms on), PostgreSQL (a fresh schema), the
in-process Stripe sandbox over HTTP, and real dramatiq worker processes (``dramatiq
workers.main``) started with subprocess. Every test checks effects at the sandbox (payouts
listed on the account) and in the ledger: duplicates of a message, a worker killed between the
Stripe call and its ledger record, racing schedule evaluations and a relay replay must each
end with exactly one payout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg.pq import TransactionStatus

from adapters import deadlines
from adapters.stripe.folding import SLUICE_PAYOUT_METADATA_KEY
from adapters.stripe.gateway import StripeClientGateway
from ledger.ids import object_id
from ledger.journal import AVAILABLE, BANK, PAYOUTS_IN_TRANSIT, PENDING
from ledger.payouts import FAILED, PAID, Payout
from projections.runner import Projector
from stripe_sandbox import Sandbox
from tests.integration.stripe_support import (
    BANK_CLOSED,
    BANK_OK,
    BANK_PAID_THEN_FAILED,
    DAY_S,
    Store,
    Target,
    fold_all,
    fresh_store,
    sandbox_events,
    sandbox_gateway,
    sandbox_settings,
    store_events,
)
from tests.support import delete_queues
from workers import actors
from workers.actors import evaluate_payout_body, payout_id_for, send, setup
from workers.broker import make_broker
from workers.context import Context, set_context
from workers.embedded import pay_out_by_schedule
from workers.relay import Relay
from workers.scheduler import Scheduler

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60.0
SETTLE_S = 2.0  # after the effect is seen: time for any duplicate to (wrongly) act
RELAY_POLL_S = 0.2  # the fixture relay looks for new events this often


@dataclass
class World:
    sb: Sandbox
    target: Target
    store: Store
    gateway: StripeClientGateway
    rabbitmq_url: str
    prefix: str
    accounts: list[str] = field(default_factory=list)

    def env(self, prefix: str | None = None, **extra: str) -> dict[str, str]:
        settings = self.store.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        return env | {
            "SLUICE_DATABASE_URL": settings.database_url,
            "SLUICE_STRIPE_API_KEY": settings.stripe_api_key,
            "SLUICE_STRIPE_API_BASE": str(settings.stripe_api_base),
            "SLUICE_STRIPE_PLATFORM_ACCOUNT_ID": str(settings.stripe_platform_account_id),
            "SLUICE_STRIPE_MAX_NETWORK_RETRIES": "0",
            "SLUICE_BROKER_URL": self.rabbitmq_url,
            "SLUICE_QUEUE_PREFIX": self.prefix if prefix is None else prefix,
            **extra,
        }

    def fold(self) -> None:
        """Stores every sandbox event of the platform and our accounts, folds the inbox."""
        store_events(self.store.view, sandbox_events(self.sb, [None, *self.accounts]))
        fold_all(self.store.folder(self.gateway), self.store.view)

    def funded(self, number: str = BANK_OK, amount: int = 4000) -> str:
        """A connected account with ``amount`` available, in the ledger and at Stripe."""
        account = self.target.account(number)
        self.accounts.append(account)
        self.target.pay(amount, "pm_card_bypassPending", transfer_data={"destination": account})
        self.fold()
        balance = self.store.ledger.get_balance(account, "usd")
        assert balance is not None and balance.available_minor == amount
        return account

    def stripe_payouts(self, account: str) -> list[Any]:
        return self.gateway.list_payouts(account=account)


def start_worker(env: dict[str, str], processes: int = 2, threads: int = 3) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "workers.main",
         "--processes", str(processes), "--threads", str(threads)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(condition: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {condition}")


@pytest.fixture(scope="module")
def world(postgres_url: str, rabbitmq_url: str) -> Iterator[World]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    with Sandbox(seed=41, webhook_delivery="manual") as sb:
        gateway = sandbox_gateway(sb, timeout_s=10, max_network_retries=0)
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            broker = make_broker(rabbitmq_url)
            setup(broker, prefix)
            previous = set_context(Context(store.settings, store.ledger, store.view, gateway))
            w = World(sb, Target("sandbox", sb.client(), gateway, sb), store, gateway,
                      rabbitmq_url, prefix)  # fmt: skip
            try:
                yield w
            finally:
                set_context(previous)
                broker.close()
                for p in {prefix, prefix + "crash_"}:
                    delete_queues(rabbitmq_url, p)


@pytest.fixture(scope="module")
def workers(world: World) -> Iterator[subprocess.Popen]:
    """Worker processes, and the outbox beside them: a relay publishing what new events call for
    (a requested payout's submission, a routing plan)."""
    proc = start_worker(world.env())
    relay = Relay(world.store.ledger, world.store.view, world.store.settings, name="fixture")
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(RELAY_POLL_S):
            relay.run_once()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        yield proc
    finally:
        stop.set()
        follower.join(timeout=10)
        stop_worker(proc)


def recorded(world: World, payout_id: str) -> Callable[[], str | None]:
    def check() -> str | None:
        payout = world.store.ledger.get_payout(payout_id)
        return payout.stripe_payout_id if payout is not None else None

    return check


def submitted_events(world: World, payout_id: str) -> int:
    return sum(
        isinstance(e, Payout.Submitted) and e.originator_id == payout_aggregate(world, payout_id)
        for _, e in world.store.ledger.iter_events()
    )


def payout_aggregate(world: World, payout_id: str) -> Any:
    payout = world.store.ledger.get_payout(payout_id)
    assert payout is not None
    return payout.id


# --- exactly once ------------------------------------------------------------------------------


def test_one_message_delivered_five_times_concurrently_pays_out_once(
    world: World, workers: subprocess.Popen
) -> None:
    account = world.funded()
    payout_id = object_id("po", "test", "five", account)
    world.store.ledger.request_payout(
        idempotency_key=f"test:five:{account}",
        account_id=account,
        currency="usd",
        amount_minor=1500,
        payout_id=payout_id,
    )
    for _ in range(5):
        send("submit_payout", payout_id)
    stripe_id = wait_for(recorded(world, payout_id))
    time.sleep(SETTLE_S)
    assert [p.id for p in world.stripe_payouts(account)] == [stripe_id]
    assert submitted_events(world, payout_id) == 1
    assert workers.poll() is None


def test_a_worker_killed_between_stripe_and_the_ledger_pays_out_once(world: World) -> None:
    account = world.funded()
    payout_id = object_id("po", "test", "crash", account)
    world.store.ledger.request_payout(
        idempotency_key=f"test:crash:{account}",
        account_id=account,
        currency="usd",
        amount_minor=2500,
        payout_id=payout_id,
    )
    prefix = world.prefix + "crash_"
    crashing = start_worker(
        world.env(prefix, SLUICE_TEST_CRASH_AFTER_STRIPE="1"), processes=1, threads=1
    )
    try:
        setup(actors.ACTORS["submit_payout"].broker, prefix)
        send("submit_payout", payout_id)
        crashing.wait(timeout=WAIT_S)  # the child died with os._exit(9); the master follows
    finally:
        stop_worker(crashing)
        setup(actors.ACTORS["submit_payout"].broker, world.prefix)
    at_stripe = world.stripe_payouts(account)
    assert len(at_stripe) == 1  # Stripe paid out, the ledger does not know yet
    assert recorded(world, payout_id)() is None

    restarted = start_worker(world.env(prefix), processes=1, threads=2)
    try:  # RabbitMQ redelivers the unacked message to the new worker
        stripe_id = wait_for(recorded(world, payout_id))
        time.sleep(SETTLE_S)
    finally:
        stop_worker(restarted)
    assert stripe_id == at_stripe[0].id
    assert [p.id for p in world.stripe_payouts(account)] == [stripe_id]
    assert submitted_events(world, payout_id) == 1


def test_two_workers_racing_one_schedule_slot_pay_out_once(
    world: World, workers: subprocess.Popen
) -> None:
    account = world.funded(amount=3300)
    slot = datetime.now(UTC).date().isoformat()
    payout_id = payout_id_for(account, "usd", slot)
    for _ in range(4):  # two worker processes with three threads each: they run concurrently
        send("evaluate_payout", account, "usd", slot)
    stripe_id = wait_for(recorded(world, payout_id))
    time.sleep(SETTLE_S)
    assert [p.id for p in world.stripe_payouts(account)] == [stripe_id]
    payout = world.store.ledger.get_payout(payout_id)
    assert payout is not None and payout.amount_minor == 3300
    balance = world.store.ledger.get_balance(account, "usd")
    assert balance is not None and balance.available_minor == 0
    # The same slot again, later: nothing new.
    assert evaluate_payout_body(_ctx(world), account, "usd", slot) == payout_id
    assert len(world.stripe_payouts(account)) == 1


def _ctx(world: World) -> Context:
    return Context(world.store.settings, world.store.ledger, world.store.view, world.gateway)


def test_the_relay_replayed_from_an_older_position_duplicates_nothing(
    world: World, workers: subprocess.Popen
) -> None:
    account = world.funded(amount=1200)
    payout_id = object_id("po", "test", "relay", account)
    world.store.ledger.request_payout(  # requested, never submitted: the relay's job
        idempotency_key=f"test:relay:{account}",
        account_id=account,
        currency="usd",
        amount_minor=1200,
        payout_id=payout_id,
    )
    relay = Relay(world.store.ledger, world.store.view, world.store.settings, name="test")
    relay.run_once()
    stripe_id = wait_for(recorded(world, payout_id))
    first = relay.published
    assert first >= 4  # every payout requested so far in this module
    relay.set_position(0)  # replay the whole log: same message ids, idempotent effects
    relay.run_once()
    assert relay.published == 2 * first
    time.sleep(2 * SETTLE_S)
    for acct in world.accounts:
        ours = [
            e.payout_id
            for _, e in world.store.ledger.iter_events()
            if isinstance(e, Payout.Requested) and e.account_id == acct
        ]
        assert len(world.stripe_payouts(acct)) == len(ours), acct
    assert [p.id for p in world.stripe_payouts(account)] == [stripe_id]
    assert relay.position() == max(p for p, _ in world.store.ledger.iter_events())


def test_exactly_one_relay_is_active_and_a_second_takes_over(world: World) -> None:
    settings = world.store.settings
    one = Relay(world.store.ledger, world.store.view, settings, name="single")
    two = Relay(world.store.ledger, world.store.view, settings, name="single")
    assert one.singleton.try_acquire()
    try:
        assert not two.singleton.try_acquire()
        stop = threading.Event()
        runner = threading.Thread(target=two.run, args=(stop,))
        runner.start()
        time.sleep(1.5)
        assert not two.singleton.held
        one.singleton.close()  # the first relay dies: its session's lock goes with it
        wait_for(lambda: two.singleton.held, timeout=10)
        stop.set()
        runner.join(timeout=10)
        assert not runner.is_alive()
    finally:
        one.singleton.close()
        two.singleton.close()


# --- failing banks -------------------------------------------------------------------------------


def test_a_failed_payout_returns_the_funds_and_pauses_payouts_until_the_bank_is_fixed(
    world: World, workers: subprocess.Popen
) -> None:
    account = world.funded(BANK_CLOSED, amount=2200)
    slot = datetime.now(UTC).date().isoformat()
    send("evaluate_payout", account, "usd", slot)
    payout_id = payout_id_for(account, "usd", slot)
    wait_for(recorded(world, payout_id))
    world.sb.advance(3 * DAY_S)
    store_events(world.store.view, sandbox_events(world.sb, [None, *world.accounts]))
    send("process_inbox")
    wait_for(lambda: getattr(world.store.ledger.get_payout(payout_id), "status", "") == FAILED)
    ledger = world.store.ledger
    balance = ledger.get_balance(account, "usd")
    assert balance is not None and balance.available_minor == 2200
    acct = ledger.get_account(account)
    assert acct is not None and acct.external_account_status == "errored"
    next_slot = (date.fromisoformat(slot) + timedelta(days=1)).isoformat()
    assert evaluate_payout_body(_ctx(world), account, "usd", next_slot) is None
    assert ledger.get_payout(payout_id_for(account, "usd", next_slot)) is None

    ledger.update_account(  # the seller fixed their bank account (as account.updated folds it)
        idempotency_key=f"test:bank-fixed:{account}",
        account_id=account,
        external_account_status="new",
    )
    assert evaluate_payout_body(_ctx(world), account, "usd", next_slot) == (
        payout_id_for(account, "usd", next_slot)
    )
    # The evaluation publishes nothing itself: the relay (the fixture's) sends the submission.
    wait_for(recorded(world, payout_id_for(account, "usd", next_slot)))


def test_a_payout_paid_then_failed_comes_back(world: World, workers: subprocess.Popen) -> None:
    account = world.funded(BANK_PAID_THEN_FAILED, amount=1800)
    slot = datetime.now(UTC).date().isoformat()
    send("evaluate_payout", account, "usd", slot)
    payout_id = payout_id_for(account, "usd", slot)
    stripe_id = wait_for(recorded(world, payout_id))
    arrival = world.gateway.retrieve("payout", stripe_id, account=account).data["arrival_date"]
    world.sb.advance(int(arrival) - int(world.sb.clock.now()))
    world.fold()
    payout = world.store.ledger.get_payout(payout_id)
    assert payout is not None and payout.status == PAID
    # Sluice's own payout carries the metadata it sent to Stripe, as Stripe reports it.
    assert payout.reported_metadata == {SLUICE_PAYOUT_METADATA_KEY: payout_id}
    world.sb.advance(DAY_S)
    world.fold()
    payout = world.store.ledger.get_payout(payout_id)
    assert payout is not None and payout.status == FAILED
    balance = world.store.ledger.get_balance(account, "usd")
    assert balance is not None and balance.available_minor == 1800


def test_a_business_rejection_is_dead_lettered_at_once_and_listed(
    world: World, workers: subprocess.Popen
) -> None:
    send("submit_payout", "po_does_not_exist")  # PayoutNotFoundError: a SluiceError, no retry

    def listed() -> str | None:
        out = subprocess.run(
            [sys.executable, "-m", "workers.cli", "dead-letters"],
            cwd=ROOT, env=world.env(), capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return out if "po_does_not_exist" in out else None

    out = wait_for(listed, timeout=20)
    assert "submit_payout" in out and "retries=0" in out
    assert listed()  # listing consumed nothing


def test_embedded_mode_pays_out_by_schedule_without_a_broker_server(world: World) -> None:
    account = world.funded(amount=2700)
    now = datetime.now(UTC) + timedelta(days=3)  # a slot no other test used
    try:
        paid = pay_out_by_schedule(
            world.store.ledger, world.store.view, world.gateway, world.store.settings, now
        )
    finally:
        setup(make_broker(world.rabbitmq_url), world.prefix)
    payout_id = payout_id_for(account, "usd", now.date().isoformat())
    assert payout_id in paid
    payout = world.store.ledger.get_payout(payout_id)
    assert payout is not None and payout.amount_minor == 2700 and payout.stripe_payout_id
    assert [p.id for p in world.stripe_payouts(account)] == [payout.stripe_payout_id]


# --- scheduler and books -------------------------------------------------------------------------


def test_the_scheduler_enqueues_evaluations_for_funded_scheduled_accounts(world: World) -> None:
    store = world.store
    Projector(store.ledger, store.view).run_once()
    published: list[tuple[str, tuple[Any, ...]]] = []
    message_ids: dict[str, list[str]] = {}

    def publish(name: str, *args: Any, msg_id: str | None = None) -> None:
        published.append((name, args))
        if msg_id is not None:
            message_ids.setdefault(name, []).append(msg_id)

    scheduler = Scheduler(store.ledger, store.view, store.settings, publish=publish)
    now = datetime(2026, 11, 30, 10, 0, 5, tzinfo=UTC)
    scheduler.tick(now)
    names = [n for n, _ in published]
    assert names[-4:] == ["process_inbox", "sweep", "reconcile", "sync_accounts"]
    # The hourly jobs go once an hour, however many ticks: the next tick sends neither, the
    # next hour's both, each under an id of its hour (a second scheduler would send the same).
    scheduler.tick(now + timedelta(minutes=30))
    assert [n for n, _ in published][-2:] == ["process_inbox", "sweep"]
    scheduler.tick(now + timedelta(hours=1))
    assert [n for n, _ in published][-2:] == ["reconcile", "sync_accounts"]
    assert len(set(message_ids["reconcile"])) == 2 == len(message_ids["sync_accounts"])
    del published[len(names) :]
    evaluated = {a[0] for n, a in published if n == "evaluate_payout"}
    funded = {
        acct
        for acct in world.accounts
        if (b := store.ledger.get_balance(acct, "usd")) is not None and b.available_minor > 0
    }
    assert evaluated == funded and funded  # the failed payouts' funds are back in available
    assert all(a[2] == now.date().isoformat() for n, a in published if n == "evaluate_payout")


def test_every_account_balances_against_its_payouts_and_the_journal(world: World) -> None:
    world.fold()  # everything Stripe did is in the ledger
    ledger = world.store.ledger
    _, per_book = ledger.journal_totals()
    payouts: dict[str, list[Payout]] = {}
    for _, e in ledger.iter_events():
        if isinstance(e, Payout.Requested):
            found = ledger.get_payout(e.payout_id)
            assert found is not None
            payouts.setdefault(e.account_id, []).append(found)
    for account in world.accounts:
        balance = ledger.get_balance(account, "usd")
        assert balance is not None

        def book(name: str, acct: str = account) -> int:
            return per_book.get((acct, name, "usd"), 0)

        assert book(PENDING) + book(AVAILABLE) == balance.pending_minor + balance.available_minor
        out = sum(p.amount_minor for p in payouts.get(account, []) if p.status != FAILED)
        assert book(PAYOUTS_IN_TRANSIT) + book(BANK) == out
        credited = sum(v for (o, _, cur), v in per_book.items() if o == account and v > 0)
        debited = -sum(v for (o, _, cur), v in per_book.items() if o == account and v < 0)
        assert out + balance.available_minor + balance.pending_minor == credited - debited
        # And Stripe agrees on what is available.
        stripe = world.target.client.v1.balance.retrieve({}, {"stripe_account": account})
        available = sum(b.amount for b in stripe.available if b.currency == "usd")
        assert available == balance.available_minor, account


LOCK_WAIT_S = 10.0  # a waiter gets a released lock in milliseconds; 10 s is a lost release


def test_the_advisory_lock_excludes_other_sessions_and_is_released_either_way(
    world: World,
) -> None:
    """Two contexts (two lock pools: two worker processes) on one key: the lock excludes the
    other, a waiter gets it once released, and a failed block leaves the lock released and its
    pooled connection idle, out of its transaction. The key is quoted, whatever it holds."""
    settings, ledger, view = world.store.settings, world.store.ledger, world.store.view
    first = Context(settings, ledger, view, world.gateway)
    second = Context(settings, ledger, view, world.gateway)
    key = f"sluice:test:{uuid.uuid4().hex}:it's; SELECT 1"
    try:
        with deadlines.within(30), first.advisory_lock(key) as held:
            assert held is True
            with second.advisory_lock(key, wait=False) as other:
                assert other is False
            got = threading.Event()

            def wait_for_it() -> None:
                with second.advisory_lock(key):
                    got.set()

            waiter = threading.Thread(target=wait_for_it, daemon=True)
            waiter.start()
            assert not got.wait(0.3)  # still held by the first
        waiter.join(LOCK_WAIT_S)
        assert got.is_set()
        with pytest.raises(RuntimeError), first.advisory_lock(key):
            raise RuntimeError("the step failed")
        with second.advisory_lock(key, wait=False) as other:
            assert other is True
        with first._lock_connections().connection() as conn:
            assert conn.info.transaction_status == TransactionStatus.IDLE  # ended, either way
    finally:
        for context in (first, second):
            if context._lock_pool is not None:
                context._lock_pool.close()
