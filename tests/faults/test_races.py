"""Two and four ``sluice serve`` processes on one store, racing: payouts and transfers that
cannot all fit in the available balance (exactly one wins each round, the rest are 402 and the
balance never goes below zero), and one Idempotency-Key sent to every process at once (one
command recorded; every answer is the same first result)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from tests.faults.support import (
    Serve,
    fresh_schema,
    open_accounts,
    post,
    prepare_store,
    sluice_env,
    topups_recorded,
)

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

ROUNDS = 4  # per kind of race and per number of processes
FUNDS = 1_000
ASK = 600  # two asks never fit in FUNDS: one winner per round
PER_PROCESS = 2  # concurrent requests per process and round


def _race(calls: list[Callable[[], tuple[int, dict[str, str], Any]]]) -> list[tuple[int, Any]]:
    """Runs the calls at the same instant (a barrier), returns (status, body) of each."""
    barrier = threading.Barrier(len(calls))
    out: list[tuple[int, Any]] = [(0, None)] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        status, _, body = calls[i]()
        out[i] = (status, body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return out


def _fund(address: str, key: str, account: str, tag: str, amount: int = FUNDS) -> None:
    """``amount`` more in ``account``'s available balance: a top-up already due, released."""
    now = int(time.time())
    topup = {"account": account, "amount": amount, "currency": "usd", "available_on": now - 60}
    status, _, body = post(address, "/v1/topups", topup, key, f"fund-{tag}")
    assert status == 200, body
    release = {"currency": "usd", "until": now}
    status, _, body = post(
        address, f"/v1/balances/{account}/release", release, key, f"release-{tag}"
    )
    assert status == 200, body


@pytest.mark.parametrize("processes", [2, 4])
def test_racing_serve_processes_have_one_winner_and_never_overdraw(
    postgres_url: str, processes: int
) -> None:
    with fresh_schema(postgres_url) as url:
        key = prepare_store(url)
        env = sluice_env(SLUICE_DATABASE_URL=url)
        servers = [Serve(env, projector=False) for _ in range(processes)]
        starters = [threading.Thread(target=s.start) for s in servers]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join(120)
        try:
            addresses = [s.address for s in servers]
            first = addresses[0]
            accounts = [f"acct_race{r}" for r in range(ROUNDS)]
            open_accounts(first, key, *accounts)
            for account in accounts:
                update = {"payouts_enabled": True}
                status, _, body = post(
                    first, f"/v1/accounts/{account}", update, key, f"enable-{account}"
                )
                assert status == 200, body
            n = processes * PER_PROCESS
            outcomes: dict[str, list[int]] = {"payout": [], "transfer": [], "same_key": []}
            for r, account in enumerate(accounts):
                # Payouts from one account.
                _fund(first, key, account, f"payout-{r}")
                body = {"account": account, "amount": ASK, "currency": "usd"}
                results = _race(
                    [
                        lambda i=i, r=r, body=body: post(
                            addresses[i % processes], "/v1/payouts", body, key, f"po-{r}-{i}"
                        )
                        for i in range(n)
                    ]
                )
                _one_winner(results, outcomes["payout"])
                # Transfers out of the platform's balance, brought back to FUNDS each round.
                _fund(first, key, "acct_platform", f"transfer-{r}", FUNDS if r == 0 else ASK)
                body = {"destination": account, "amount": ASK, "currency": "usd"}
                results = _race(
                    [
                        lambda i=i, r=r, body=body: post(
                            addresses[i % processes], "/v1/transfers", body, key, f"tr-{r}-{i}"
                        )
                        for i in range(n)
                    ]
                )
                _one_winner(results, outcomes["transfer"])
                # One key, every process at once.
                body = {"account": account, "amount": 7 + r, "currency": "usd"}
                results = _race(
                    [
                        lambda i=i, r=r, body=body: post(
                            addresses[i % processes], "/v1/topups", body, key, f"same-{r}"
                        )
                        for i in range(n)
                    ]
                )
                statuses = [status for status, _ in results]
                assert statuses == [200] * n, results
                assert len({str(reply) for _, reply in results}) == 1, results
                outcomes["same_key"].append(1)
        finally:
            for server in servers:
                server.stop()
        ledger = bootstrap(Settings(database_url=url))
        try:
            for account in accounts:
                balance = ledger.get_balance(account, "usd")
                assert balance is not None
                # FUNDS in, one payout of ASK out; then one transfer of ASK in, plus the top-up.
                assert balance.available_minor == FUNDS - ASK + ASK >= 0
            platform = ledger.get_balance("acct_platform", "usd")
            assert platform is not None and platform.available_minor == FUNDS - ASK
            same = [e for e in topups_recorded(ledger) if e.amount_minor < 100]
            assert len(same) == ROUNDS, [e.amount_minor for e in same]
        finally:
            ledger.close()
        total = sum(len(v) for v in outcomes.values())
        print(f"\n[faults] {processes} serve processes: {total} races, {n} requests each")


def _one_winner(results: list[tuple[int, Any]], tally: list[int]) -> None:
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) == 1, results
    losers = [body for status, body in results if status != 200]
    assert all(status == 402 for status, _ in results if status != 200), results
    assert all(body["error"]["code"] == "insufficient_funds" for body in losers), losers
    tally.append(1)
