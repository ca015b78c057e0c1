"""Adopting Sluice on a platform that already runs (``sluice stripe import``), end to end.

A history is made in the Stripe sandbox with the real ``stripe`` SDK *before Sluice exists* (no
store, no webhook endpoint): accounts, destination, direct and separate charges, sourced
transfers, refunds with reversals and fee refunds, an application-fee refund, a payout, top-ups
and a lost dispute, with a cut-over in the middle. Then Sluice arrives: the import books the
accounts, the opening balances at the cut-over and every balance transaction since, and the
agreement checks of ``tests/property/agreement_support`` must hold (ledger, read model and the
sandbox's ``GET /v1/balance`` per account and currency; balance transactions since the cut-over
per Stripe object, in money and timing). Then the old events (from before and after the cut-over)
are delivered after all, new activity arrives by signed webhooks over HTTP, and the agreement
still holds with nothing booked twice. A second import books nothing; an interrupted import
resumes. On SQLite and on PostgreSQL (a fresh schema per test).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from adapters import jobs
from adapters.http.app import create_app
from adapters.http.server import serving
from adapters.stripe import importer as importer_module
from adapters.stripe.importer import Importer, ImportReport
from ledger import facts
from ledger.instants import from_seconds
from projections import queries
from projections.runner import Projector
from stripe_sandbox import Sandbox
from tests.integration.stripe_support import (
    fold_all,
    ledger_balance,
    ledger_state,
    open_store,
    sandbox_events,
    sandbox_gateway,
    sandbox_settings,
    store_events,
)
from tests.property import agreement_support
from tests.property.agreement_support import (
    DAY_S,
    HOUR_S,
    Config,
    Findings,
    Group,
    Op,
    Player,
    StoreOpener,
    postgres_stores,
    sqlite_stores,
)

CHECKS = ("balances", "inbox", "transactions", "payouts", "timing")
CLI_TIMEOUT_S = 120  # one import of a small history, as a process


def account(label: str, delay_days: int) -> Op:
    return (
        "account",
        {"label": label, "delay_days": delay_days, "bank": "ok", "interval": "manual"},
    )


BEFORE_CUTOVER: list[Op] = [
    account("A0", 2),
    account("A1", 7),  # its destination payments are still pending at the cut-over
    (
        "destination_charge",
        {"label": "C0", "to": "A0", "amount": 10_000, "card": "visa", "application_fee": 1_000},
    ),
    (
        "destination_charge",
        {"label": "C1", "to": "A1", "amount": 20_000, "card": "visa", "application_fee": 2_000},
    ),
    (
        "direct_charge",
        {"label": "C2", "on": "A0", "amount": 5_000, "card": "visa", "application_fee": 500},
    ),
    # Pending on A1 (7 days) at the cut-over: an opening lot, released by Stripe's word later.
    (
        "direct_charge",
        {"label": "C7", "on": "A1", "amount": 6_000, "card": "visa", "application_fee": 600},
    ),
    ("separate_charge", {"label": "C3", "amount": 30_000, "card": "visa"}),
    ("transfer", {"label": "T0", "to": "A1", "amount": 10_000, "source": "C3"}),
    ("separate_charge", {"label": "C4", "amount": 8_000, "card": "dispute"}),
    ("topup", {"label": "U0", "amount": 50_000}),
    ("advance", {"seconds": 3 * DAY_S}),
    (
        "refund",
        {"charge": "C0", "amount": 2_000, "reverse_transfer": True, "refund_application_fee": True},
    ),
    ("refund_application_fee", {"charge": "C1", "amount": 500}),
    ("payout", {"label": "P0", "account": "A0", "amount": 3_000}),
    ("advance", {"seconds": HOUR_S}),
]
# After the cut-over, still before Sluice: movements on objects from before it, and new ones.
AFTER_CUTOVER: list[Op] = [
    ("advance", {"seconds": HOUR_S}),
    ("refund", {"charge": "C3", "amount": 5_000}),
    ("reverse_transfer", {"transfer": "T0", "amount": 2_000}),
    ("transfer", {"label": "T1", "to": "A0", "amount": 5_000, "source": "C3"}),
    ("refund_application_fee", {"charge": "C2", "amount": 200}),
    ("resolve_dispute", {"charge": "C4", "outcome": "lost", "via": "sandbox"}),
    (
        "destination_charge",
        {"label": "C5", "to": "A0", "amount": 7_000, "card": "visa", "application_fee": 700},
    ),
    ("payout", {"label": "P1", "account": "A1", "amount": 1_000}),
    ("advance", {"seconds": 2 * DAY_S}),
    ("topup", {"label": "U1", "amount": 10_000}),
]
# With Sluice running: webhooks over HTTP, on objects from before the cut-over too.
WITH_SLUICE: list[Op] = [
    ("refund", {"charge": "C1", "amount": 3_000, "reverse_transfer": True}),
    ("separate_charge", {"label": "C6", "amount": 12_000, "card": "visa"}),
    ("transfer", {"label": "T2", "to": "A1", "amount": 4_000, "source": "C6"}),
    ("payout", {"label": "P2", "account": "A0", "amount": 1_000}),
    ("advance", {"seconds": 6 * DAY_S}),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    if request.param == "sqlite":
        return sqlite_stores(tmp_path)
    return postgres_stores(request.getfixturevalue("postgres_url"))


class AdoptingPlayer(Player):
    """A ``Player`` whose Sluice arrives late: operations first run on the sandbox alone (no
    store, no endpoint, nothing delivered), then ``arrive`` starts Sluice as ``Player.start``
    does. Balance transactions are compared from the cut-over on (the history before it is one
    opening balance in Sluice), payouts for those made since the cut-over or known to Sluice."""

    cutover_s = 0
    arrived = False

    def start(self) -> AdoptingPlayer:
        try:
            self.sb = self.stack.enter_context(Sandbox(self.config.sandbox_settings()))
            self.client = self.sb.client(max_network_retries=0)
        except BaseException:
            self.stack.close()
            raise
        return self

    def arrive(self) -> None:
        self.settings = self.stack.enter_context(self.stores(sandbox_settings(self.sb)))
        store = self.stack.enter_context(open_store(self.settings))
        self.ledger, self.view = store.ledger, store.view
        app = create_app(self.settings, ledger=self.ledger, view=self.view, run_projector=False)
        base_url = self.stack.enter_context(serving(app))
        self.endpoints = [
            self.client.v1.webhook_endpoints.create(
                {"url": f"{base_url}/webhooks/stripe", "enabled_events": ["*"], "connect": connect}
            )
            for connect in (False, True)
        ]
        self.settings.stripe_webhook_secret = ",".join(str(e.secret) for e in self.endpoints)
        self.gateway = sandbox_gateway(self.sb, timeout_s=10)
        self.folder = store.folder(self.gateway)
        self.projector = Projector(self.ledger, self.view)
        self.arrived = True

    def settle(self) -> None:
        if self.arrived:
            super().settle()

    def run_import(self, since: datetime | None, **kwargs: Any) -> ImportReport:
        lines: list[str] = []
        progress: Callable[[str], None] = kwargs.pop("progress", lines.append)
        report = Importer(self.ledger, self.gateway, self.settings, progress=progress).run(
            since, **kwargs
        )
        self.cutover_s = int(report.cutover.timestamp())
        self.projector.run_once()
        return report

    def findings(self) -> Findings:
        cutover = self.cutover_s

        class Since(Group):
            def add(self, **row: Any) -> None:
                # Sluice's opening rows stand for the history before: Stripe has no such row.
                opening = row["row"].split()[1] in ("opening_balance", "opening_offset")
                if int(row["created"]) >= cutover and not opening:
                    super().add(**row)

        with mock.patch.object(agreement_support, "Group", Since):
            return super().findings()

    def _compare_payouts(self, found: Findings) -> None:
        ours = {p: s for p, s in ledger_state(self.ledger).payouts.items()}
        for _, stripe_id, label in self.holders():
            if stripe_id is None:
                continue
            listed = self.client.v1.payouts.list({"limit": 100}, {"stripe_account": stripe_id})
            for payout in listed.auto_paging_iter():
                if payout.created < self.cutover_s and payout.id not in ours:
                    continue  # before the cut-over: in the opening balance
                if ours.get(payout.id) != payout.status:
                    found.problems["payouts"].append(
                        f"{label} {payout.id}: Sluice {ours.get(payout.id)} != {payout.status}"
                    )


def play(player: AdoptingPlayer, ops: list[Op]) -> None:
    for op in ops:
        outcome = player.apply(op)
        assert not outcome.startswith(("refused", "skipped")), f"{op}: {outcome}"


@pytest.fixture
def adopting(stores: StoreOpener) -> Iterator[AdoptingPlayer]:
    with AdoptingPlayer(Config(), stores) as player:
        play(player, BEFORE_CUTOVER)
        player.cutover_s = player.now()
        play(player, AFTER_CUTOVER)
        player.arrive()
        yield player


def _cutover(player: AdoptingPlayer) -> datetime:
    return from_seconds(player.cutover_s)


def test_an_imported_history_agrees_with_stripe_and_later_webhooks_fold_on_top_once(
    adopting: AdoptingPlayer,
) -> None:
    player = adopting
    report = player.run_import(_cutover(player))
    assert report.ok, report
    assert report.booked > 0 and not report.errors
    player.assert_agrees(CHECKS)
    before = ledger_state(player.ledger)

    again = player.run_import(None)  # a second run (resuming at the stored cut-over)
    assert again.ok and again.booked == 0, again
    assert ledger_state(player.ledger) == before

    # Every event from before Sluice, from before and after the cut-over, delivered after all.
    events = sandbox_events(player.sb, [None, *(a.id for a in player.accounts.values())])
    assert store_events(player.view, events) == len(events)
    fold_all(player.folder, player.view)
    player.projector.run_once()
    player.assert_agrees(CHECKS)
    assert ledger_state(player.ledger).balances == before.balances

    play(player, WITH_SLUICE)  # new activity, delivered as signed webhooks over HTTP
    player.assert_agrees(CHECKS)


def test_an_interrupted_import_resumes_after_its_cursor(adopting: AdoptingPlayer) -> None:
    player = adopting

    class Interrupted(Exception):
        pass

    def stop_after_first_page(line: str) -> None:
        if "booked" in line:
            raise Interrupted(line)

    with mock.patch.object(importer_module, "PAGE_SIZE", 3), pytest.raises(Interrupted):
        player.run_import(_cutover(player), progress=stop_after_first_page)
    report = player.run_import(None)
    assert report.ok, report
    assert report.already == 3
    player.assert_agrees(CHECKS)


def test_the_default_cut_over_takes_todays_balance_and_old_events_change_nothing(
    adopting: AdoptingPlayer,
) -> None:
    player = adopting
    report = player.run_import(None)  # "now", by Stripe's clock: the newest movement's second
    assert report.ok, report
    assert report.cutover == from_seconds(player.now())  # the sandbox's clock stood still
    player.assert_agrees(CHECKS)
    balances = ledger_state(player.ledger).balances

    events = sandbox_events(player.sb, [None, *(a.id for a in player.accounts.values())])
    store_events(player.view, events)
    fold_all(player.folder, player.view)
    player.projector.run_once()
    assert ledger_state(player.ledger).balances == balances
    player.assert_agrees(CHECKS)

    play(player, WITH_SLUICE)
    player.assert_agrees(CHECKS)


def test_opening_lots_are_released_by_the_schedulers_release_machinery(
    adopting: AdoptingPlayer,
) -> None:
    """No webhook at all after the import: the opening's pending lots show as pending balance
    transactions, the scheduler finds them due (``due_releases``) and ``release_due`` releases
    them, and the books still equal Stripe's balances."""
    player = adopting
    assert player.run_import(_cutover(player)).ok
    a1 = player.accounts["A1"].id
    assert ledger_balance(player.ledger, a1)["usd"][0] > 0  # C7, pending at the cut-over
    player.control("/_sandbox/clock/advance", {"seconds": 8 * DAY_S})  # nothing delivered
    ctx = jobs.Context(player.settings, player.ledger, player.view, player.gateway)
    due = queries.due_releases(player.view, from_seconds(player.now()))
    assert a1 in {account for account, _, _ in due}
    for account_id, currency, until in due:
        jobs.release_due_body(ctx, account_id, currency, until.isoformat())
    player.projector.run_once()
    assert ledger_balance(player.ledger, a1)["usd"][0] == 0
    player.assert_agrees(("balances",))


def test_accounts_created_at_stripe_later_are_opened_without_any_event(
    adopting: AdoptingPlayer,
) -> None:
    player = adopting
    assert player.run_import(_cutover(player)).ok
    ctx = jobs.Context(player.settings, player.ledger, player.view, player.gateway)
    assert jobs.sync_accounts_body(ctx) == []
    player._op_account("A9", 3, "ok", "weekly:friday")  # no webhook delivered
    (opened,) = jobs.sync_accounts_body(ctx)
    assert opened == player.accounts["A9"].id
    found = player.ledger.get_account(opened)
    assert found is not None and found.kind == "connected"
    assert found.schedule["interval"] == "weekly" and found.schedule["delay_days"] == 3
    assert jobs.sync_accounts_body(ctx) == []
    # Stripe's ``manual`` (the platform pays out) is not Sluice's ``manual`` (never by schedule):
    # opened by the sync, as by ``account.updated``, the account keeps Sluice's own schedule.
    player._op_account("A8", 2, "ok", "manual")
    (opened,) = jobs.sync_accounts_body(ctx)
    found = player.ledger.get_account(opened)
    assert found is not None and found.schedule["interval"] != "manual", found.schedule


def test_the_command_imports_and_answers_in_one_line_when_it_cannot(
    stores: StoreOpener,
) -> None:
    """``sluice stripe import`` as a process: exit 0 with the books equal to Stripe's balances
    (a ``stripe_fee`` Stripe charged the platform is booked as a Stripe-made movement where the
    ledger has that fact, else named as skipped with exit 1); a different cut-over on a resumed
    import is one line and exit 2, never a traceback."""
    with AdoptingPlayer(Config(), stores) as player:
        play(player, [account("A0", 2), ("advance", {"seconds": HOUR_S})])
        cutover = player.now()
        play(player, [("separate_charge", {"label": "C0", "amount": 4_000, "card": "visa"})])
        # A direct charge on an account whose Stripe fee the platform pays: a stripe_fee BT.
        payer = player.client.v1.accounts.create(
            {
                "country": "US",
                "controller": {"fees": {"payer": "application"}},
                "capabilities": {"card_payments": {"requested": True}},
            }
        )
        player._pay(5_000, "visa", {"stripe_account": payer.id})
        player.arrive()
        env = {
            **os.environ,
            "SLUICE_DATABASE_URL": player.settings.database_url,
            "SLUICE_STRIPE_API_KEY": player.sb.secret_key,
            "SLUICE_STRIPE_API_BASE": player.sb.base_url,
            "SLUICE_STRIPE_PLATFORM_ACCOUNT_ID": player.sb.platform_account_id,
        }

        def sluice(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "adapters.cli", "stripe", "import", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT_S,
                check=False,
            )

        done = sluice("--since", str(cutover))
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        assert "booked 1/" in done.stdout  # progress: a line per account and page
        if facts.StripeAdjustment in player.ledger.handlers:
            assert done.returncode == 0, done.stdout
            assert "books equal Stripe's balances" in done.stdout
        else:
            assert done.returncode == 1, done.stdout
            assert "skipped (no fact books them): 1" in done.stdout
            assert "stripe_fee" in done.stdout and "books differ" in done.stdout

        refused = sluice("--since", str(cutover - HOUR_S), "--quiet")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = (refused.stdout + refused.stderr).strip().splitlines()
        assert len(lines) == 1 and "cut-over" in lines[0], lines
