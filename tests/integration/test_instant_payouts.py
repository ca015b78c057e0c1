"""Instant Payouts with Stripe's instant fee: the sandbox (over HTTP, through stripe-python 16's
own classes) takes `method=instant` to a destination that supports it, within 30 minutes, for its
configured fee on the payout's balance transaction; Sluice folds the payout and Stripe's fee as
Stripe reports them and ends in agreement with the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from adapters.reconcile import Reconciler
from ledger.ids import WORLD
from ledger.journal import STRIPE_FEES
from ledger.payouts import FAILED, PAID
from projections.queries import list_payouts, revenue
from projections.runner import Projector
from stripe_sandbox import Sandbox
from stripe_sandbox.settings import FeeRule
from tests.integration.stripe_support import (
    BANK_CLOSED,
    BANK_OK,
    PLATFORM,
    Target,
    fresh_store,
    ledger_balance,
    nonzero,
    sandbox_gateway,
    sandbox_settings,
    stripe_balance,
)
from tests.integration.test_payouts_every_currency import agree, fold
from tests.integration.test_stripe_fidelity import undeclared

INSTANT_ARRIVAL_S = 30 * 60


def funded_seller(sb: Sandbox, number: str = BANK_OK) -> tuple[Any, str]:
    client = sb.client()
    target = Target("sandbox", client, sandbox_gateway(sb), sb)
    account = target.account(number)
    target.pay(
        20_000,
        "pm_card_bypassPending",
        application_fee_amount=2_000,
        transfer_data={"destination": account},
    )
    return client, account


def test_an_instant_payout_arrives_within_30_minutes_for_stripes_configured_fee() -> None:
    with Sandbox(seed=181, webhook_delivery="manual", instant_payout_fee_bps=150) as sb:
        client, account = funded_seller(sb)
        on = {"stripe_account": account}
        payout = client.v1.payouts.create(
            {"amount": 10_000, "currency": "usd", "method": "instant"}, on
        )
        assert isinstance(payout, stripe.Payout) and payout.method == "instant"
        assert payout.arrival_date - payout.created <= INSTANT_ARRIVAL_S
        txn = client.v1.balance_transactions.retrieve(str(payout.balance_transaction), {}, on)
        assert isinstance(txn, stripe.BalanceTransaction)
        assert (txn.amount, txn.fee, txn.net) == (-10_000, 150, -10_150)
        assert [(d.type, d.amount) for d in txn.fee_details] == [("stripe_fee", 150)]
        assert undeclared(payout) == [] and undeclared(txn) == []
        balance = client.v1.balance.retrieve({}, on)
        assert {b.currency: b.amount for b in balance.available} == {"usd": 18_000 - 10_150}


def test_an_instant_payout_beyond_available_with_its_fee_is_refused() -> None:
    with Sandbox(seed=182, webhook_delivery="manual") as sb:
        client, account = funded_seller(sb)
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.payouts.create(
                {"amount": 18_000, "currency": "usd", "method": "instant"},
                {"stripe_account": account},
            )
        assert refused.value.code == "balance_insufficient"  # 18000 + 1% fee > 18000


@pytest.mark.postgres
def test_sluice_books_an_instant_payout_and_its_fee_as_stripe_reports_them(
    postgres_url: str,
) -> None:
    with Sandbox(seed=183, webhook_delivery="manual") as sb:
        client, account = funded_seller(sb)
        payout = client.v1.payouts.create(
            {"amount": 10_000, "currency": "usd", "method": "instant"}, {"stripe_account": account}
        )
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            fold(sb, store, [None, account])
            agree(sb, store, [account])
            sb.advance(INSTANT_ARRIVAL_S + 60)
            fold(sb, store, [None, account])
            recorded = store.ledger.get_payout(str(payout.id))
            assert recorded is not None and recorded.status == PAID
            assert (
                recorded.stripe_fee_minor == 100
            )  # Stripe's 1%, read from its balance transaction
            agree(sb, store, [account])
            _, per_book = store.ledger.journal_totals()
            assert per_book[(account, "bank", "usd")] == 10_000


@pytest.mark.postgres
def test_a_failed_instant_payout_returns_its_amount_and_fee(postgres_url: str) -> None:
    with Sandbox(seed=184, webhook_delivery="manual") as sb:
        client, account = funded_seller(sb, BANK_CLOSED)
        payout = client.v1.payouts.create(
            {"amount": 10_000, "currency": "usd", "method": "instant"}, {"stripe_account": account}
        )
        sb.advance(INSTANT_ARRIVAL_S + 60)
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            fold(sb, store, [None, account])
            recorded = store.ledger.get_payout(str(payout.id))
            assert recorded is not None and recorded.status == FAILED
            agree(sb, store, [account])
            _, per_book = store.ledger.journal_totals()
            # Only the charge's processing fee (2.9% + 30 of 20000) stays with Stripe: the
            # returned Instant Payout's fee is back with the seller.
            assert per_book[(WORLD, STRIPE_FEES, "usd")] == 610
            assert recorded.stripe_fee_minor == 100


# Payout monetization: the platform's fee on a seller's payout, booked as its revenue ---------


PRICING = {"instant": FeeRule(percent_bps=100, fixed_minor=0), "standard": FeeRule(0, 25)}


def test_the_platforms_payout_fee_is_an_application_fee_sourced_by_the_payout() -> None:
    with Sandbox(seed=185, webhook_delivery="manual", payout_platform_fees=PRICING) as sb:
        client, account = funded_seller(sb)
        on = {"stripe_account": account}
        platform_before = nonzero(stripe_balance(client, None))
        payout = client.v1.payouts.create(
            {"amount": 10_000, "currency": "usd", "method": "instant"}, on
        )
        assert payout.application_fee_amount == 100
        fee = client.v1.application_fees.retrieve(str(payout.application_fee))
        assert isinstance(fee, stripe.ApplicationFee)
        assert (fee.account, fee.amount, fee.fee_source.type, fee.fee_source.payout) == (
            account,
            100,
            "payout",
            payout.id,
        )
        assert undeclared(fee) == []
        txn = client.v1.balance_transactions.retrieve(str(payout.balance_transaction), {}, on)
        assert sorted((d.type, d.amount) for d in txn.fee_details) == [
            ("application_fee", 100),
            ("stripe_fee", 100),
        ]
        assert txn.net == -10_200
        platform_after = nonzero(stripe_balance(client, None))
        assert platform_after["usd"][1] - platform_before["usd"][1] == 100
        standard = client.v1.payouts.create({"amount": 1_000, "currency": "usd"}, on)
        assert standard.application_fee_amount == 25  # the standard price: 25 fixed


@pytest.mark.postgres
def test_sluice_books_the_platforms_payout_fee_as_revenue_and_agrees_with_stripe(
    postgres_url: str,
) -> None:
    with Sandbox(seed=186, webhook_delivery="manual", payout_platform_fees=PRICING) as sb:
        client, account = funded_seller(sb)
        payout = client.v1.payouts.create(
            {"amount": 10_000, "currency": "usd", "method": "instant"}, {"stripe_account": account}
        )
        sb.advance(INSTANT_ARRIVAL_S + 60)
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            fold(sb, store, [None, account])
            recorded = store.ledger.get_payout(str(payout.id))
            assert recorded is not None and recorded.status == PAID
            assert (recorded.stripe_fee_minor, recorded.application_fee_minor) == (100, 100)
            agree(sb, store, [account])
            assert ledger_balance(store.ledger, PLATFORM) == nonzero(stripe_balance(client, None))
            Projector(store.ledger, store.view).run_once()
            day = datetime.fromtimestamp(sb.clock.now(), UTC).date()
            rows = revenue(store.view, day.isoformat(), (day + timedelta(days=1)).isoformat())
            collected = sum(r["application_fees"] for r in rows if r["currency"] == "usd")
            assert collected == 2_000 + 100  # the charge's application fee and the payout's
            [shown] = list_payouts(store.view, account=account).data
            assert (shown["stripe_fee"], shown["application_fee"]) == (100, 100)
            # Reconciliation finds Stripe's itemization in the ledger's: no break anywhere.
            gateway = sandbox_gateway(sb)
            report = Reconciler(
                store.ledger, store.view, gateway, store.settings, folder=store.folder(gateway)
            ).run()
            assert not report.found and not report.errors, report
