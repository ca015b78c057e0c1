"""Four ``sluice serve`` processes, many concurrent clients, every payment routed through the one
platform account (the hot account): every valid payment is accepted (no 409, no 5xx), and the
ledger balances afterwards with exactly the accepted payments in it."""

from __future__ import annotations

import threading
import time

import pytest

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from ledger.ids import WORLD
from ledger.journal import CUSTOMER_FUNDS, PENDING
from tests.faults.support import Serve, fresh_schema, open_accounts, post, prepare_store, sluice_env

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

PROCESSES = 4
CLIENTS = 32
PAYMENTS_PER_CLIENT = 12
SELLERS = 4


def test_every_valid_payment_through_a_hot_account_is_accepted_across_processes(
    postgres_url: str,
) -> None:
    with fresh_schema(postgres_url) as url:
        key = prepare_store(url)
        # Pools small enough that four servers and the suite stay inside PostgreSQL's 100
        # connections: group commit writes through one connection at a time anyway.
        env = sluice_env(
            SLUICE_DATABASE_URL=url,
            SLUICE_POSTGRES_POOL_SIZE="3",
            SLUICE_POSTGRES_MAX_OVERFLOW="3",
        )
        servers = [Serve(env, projector=False) for _ in range(PROCESSES)]
        starters = [threading.Thread(target=s.start) for s in servers]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join(120)
        sellers = [f"acct_hot{n}" for n in range(SELLERS)]
        statuses: list[tuple[int, object]] = []
        accepted: list[tuple[str, int, int]] = []
        lock = threading.Lock()
        try:
            addresses = [s.address for s in servers]
            open_accounts(addresses[0], key, *sellers)
            for seller in sellers:
                update = {"charges_enabled": True}
                status, _, reply = post(addresses[0], f"/v1/accounts/{seller}", update, key, seller)
                assert status == 200, reply
            barrier = threading.Barrier(CLIENTS)

            def client(i: int) -> None:
                barrier.wait(60)
                for n in range(PAYMENTS_PER_CLIENT):
                    amount = 1_000 + i * 100 + n
                    seller = sellers[(i + n) % SELLERS]
                    body = {
                        "charge_type": "destination",
                        "amount": amount,
                        "currency": "usd",
                        "stripe_fee": 59,
                        "application_fee_amount": 100,
                        "account": seller,
                        "available_on": (int(time.time()) // 86_400 + 2) * 86_400,
                    }
                    address = addresses[(i + n) % PROCESSES]
                    status, _, reply = post(address, "/v1/payments", body, key, f"hot-{i}-{n}")
                    with lock:
                        statuses.append((status, reply))
                        if status == 200:
                            accepted.append((seller, amount, 100))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
        finally:
            for server in servers:
                server.stop()
        refused = [(status, reply) for status, reply in statuses if status != 200]
        assert not refused, refused[:5]
        assert len(accepted) == CLIENTS * PAYMENTS_PER_CLIENT
        ledger = bootstrap(Settings(database_url=url))
        try:
            per_currency, per_book = ledger.journal_totals()
            assert all(total == 0 for total in per_currency.values()), per_currency
            assert per_book[(WORLD, CUSTOMER_FUNDS, "usd")] == -sum(a for _, a, _ in accepted)
            for seller in sellers:
                net = sum(a - fee for s, a, fee in accepted if s == seller)
                assert per_book[(seller, PENDING, "usd")] == net
                balance = ledger.get_balance(seller, "usd")
                assert balance is not None and balance.pending_minor == net
            platform = ledger.get_balance("acct_platform", "usd")
            assert platform is not None
            assert platform.pending_minor == per_book[("acct_platform", PENDING, "usd")]
        finally:
            ledger.close()
