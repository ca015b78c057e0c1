"""Payouts through the real pipeline (relay → RabbitMQ → dramatiq workers → Stripe sandbox →
ledger) while it is broken, repeatedly: the relay and the workers are SIGKILLed mid-payout
(every Stripe call is slowed so a kill lands in the middle of one), and the RabbitMQ node is
restarted while they run. The node is the test's own (its own name, ports and data); the shared
broker is never touched. In the end every payout exists exactly once at the sandbox and once in
the ledger.

PostgreSQL is a private cluster too: the relay's single-instance lock is an advisory lock of the
whole database, which a relay of another run on the shared server would hold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from adapters.stripe.folding import SLUICE_PAYOUT_METADATA_KEY
from ledger.ids import object_id
from ledger.payouts import Payout
from stripe_sandbox import Sandbox
from tests.faults.stripe_proxy import stripe_proxy
from tests.faults.support import (
    ROOT,
    STOP_TIMEOUT_S,
    PrivateRabbit,
    private_postgres,
    sluice_env,
    wait_until,
)
from tests.integration.stripe_support import (
    BANK_OK,
    Target,
    fold_all,
    fresh_store,
    sandbox_events,
    sandbox_gateway,
    sandbox_settings,
    store_events,
)

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

ACCOUNTS = 4
PAYOUTS_PER_ACCOUNT = 3
FUNDS = 4_000
AMOUNT = 500
KILL_ROUNDS = 3  # relay and workers SIGKILLed this many times, then RabbitMQ restarted
# Per round: how long after a Stripe call was seen the SIGKILL comes (while calls are held).
KILL_AFTER_CALL_S = (0.1, 0.3, 0.15)
STRIPE_DELAY_S = 0.25  # every Stripe call is held this long first: kills land mid-call
WORK_SEEN_S = 60  # a restarted worker makes a Stripe call within this, or it is broken
FINISH_S = 120  # after the last restart, every payout must be recorded within this


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own session: a SIGKILL to the group takes dramatiq's worker children with it.
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _start(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    return [
        _spawn(["-m", "workers.cli", "relay"], env),
        _spawn(["-m", "dramatiq", "workers.main", "--processes", "1", "--threads", "3"], env),
    ]


def _kill9(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_S)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)


def test_payouts_exactly_once_through_kills_and_a_broker_restart(
    postgres_tools: None, rabbitmq_tools: None
) -> None:
    rabbit = PrivateRabbit()
    booting = threading.Thread(target=rabbit.start, kwargs={"wait": False})
    booting.start()  # the node boots (~12 s) while the accounts are funded
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (
            private_postgres() as pg,
            Sandbox(seed=23, webhook_delivery="manual") as sb,
            stripe_proxy(sb.base_url, delay_s=STRIPE_DELAY_S) as proxy,
            fresh_store(pg.url, **sandbox_settings(sb)) as store,
        ):
            gateway = sandbox_gateway(sb, timeout_s=10, max_network_retries=0)
            target = Target("sandbox", sb.client(), gateway, sb)
            accounts = [target.account(BANK_OK) for _ in range(ACCOUNTS)]
            for account in accounts:
                target.pay(FUNDS, "pm_card_bypassPending", transfer_data={"destination": account})
            store_events(store.view, sandbox_events(sb, [None, *accounts]))
            fold_all(store.folder(gateway), store.view)
            payouts: dict[str, str] = {}  # payout id → account
            for account in accounts:
                balance = store.ledger.get_balance(account, "usd")
                assert balance is not None and balance.available_minor == FUNDS
                for n in range(PAYOUTS_PER_ACCOUNT):
                    payout_id = object_id("po", "faults", account, str(n))
                    store.ledger.request_payout(
                        idempotency_key=f"faults:{payout_id}",
                        account_id=account,
                        currency="usd",
                        amount_minor=AMOUNT,
                        payout_id=payout_id,
                    )
                    payouts[payout_id] = account

            booting.join(120)
            rabbit.wait_started()
            settings = store.settings
            env = sluice_env(
                SLUICE_DATABASE_URL=settings.database_url,
                SLUICE_STRIPE_API_KEY=settings.stripe_api_key,
                SLUICE_STRIPE_API_BASE=proxy.base_url,
                SLUICE_STRIPE_PLATFORM_ACCOUNT_ID=str(settings.stripe_platform_account_id),
                SLUICE_STRIPE_MAX_NETWORK_RETRIES="0",
                SLUICE_BROKER_URL=rabbit.url,
                SLUICE_QUEUE_PREFIX=f"f{uuid.uuid4().hex[:6]}_",
            )

            def recorded() -> int:
                return sum(
                    1
                    for pid in payouts
                    if (p := store.ledger.get_payout(pid)) is not None and p.stripe_payout_id
                )

            progress = []
            for round_no in range(KILL_ROUNDS):
                calls = proxy.calls
                procs = _start(env)
                wait_until(lambda c=calls: proxy.calls > c, WORK_SEEN_S, "a Stripe call")
                time.sleep(KILL_AFTER_CALL_S[round_no])
                _kill9(procs)
                progress.append(recorded())
            # The last generation lives on, and the broker goes away and comes back under it:
            # the relay and the workers reconnect by themselves.
            calls = proxy.calls
            procs = _start(env)
            wait_until(lambda: proxy.calls > calls, WORK_SEEN_S, "a Stripe call")
            rabbit.stop()
            progress.append(recorded())
            rabbit.start()
            wait_until(lambda: recorded() == len(payouts), FINISH_S, "every payout recorded")
            time.sleep(2.0)  # time for a duplicate to (wrongly) act
            _stop(procs)
            procs = []
            _check_exactly_once(store.ledger, gateway, payouts)
            print(
                f"\n[faults] payouts: {len(payouts)} through {KILL_ROUNDS} SIGKILLs of relay and"
                f" workers and a RabbitMQ restart; recorded after each kill and when the broker"
                f" stopped: {progress};"
                f" Stripe calls {proxy.calls}"
            )
    finally:
        _stop(procs)
        booting.join(120)
        rabbit.close()


def _check_exactly_once(ledger: Any, gateway: Any, payouts: dict[str, str]) -> None:
    submitted: dict[Any, int] = {}
    for _, event in ledger.iter_events():
        if isinstance(event, Payout.Submitted):
            submitted[event.originator_id] = submitted.get(event.originator_id, 0) + 1
    for payout_id in payouts:
        payout = ledger.get_payout(payout_id)
        assert payout is not None and payout.stripe_payout_id, payout_id
        assert submitted.get(payout.id) == 1, (payout_id, submitted.get(payout.id))
    for account in set(payouts.values()):
        at_stripe = gateway.list_payouts(account=account)
        ours = sorted(p.data["metadata"][SLUICE_PAYOUT_METADATA_KEY] for p in at_stripe)
        assert ours == sorted(pid for pid, acct in payouts.items() if acct == account), ours
        for found in at_stripe:
            payout = ledger.get_payout(found.data["metadata"][SLUICE_PAYOUT_METADATA_KEY])
            assert payout is not None and payout.stripe_payout_id == found.id
