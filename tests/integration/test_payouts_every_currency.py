"""Payouts in every currency an account holds, each to the external account for that currency,
and cross-border payouts Stripe converts: the sandbox (over HTTP, through stripe-python 16's own
classes) behaves as Stripe does, and Sluice's scheduler pays each currency, folds Stripe's
conversion with Stripe's numbers and ends in agreement with the sandbox, per currency."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from adapters.jobs import Context, evaluate_payout_body, submit_payout_body
from ledger.ids import WORLD
from ledger.journal import BANK, FX
from ledger.payouts import PAID
from projections.queries import list_payouts
from projections.runner import Projector
from stripe_sandbox import Sandbox
from tests.integration.stripe_support import (
    BANK_OK,
    ROUTING,
    SANDBOX_CONTROLLER,
    Store,
    fold_all,
    fresh_store,
    ledger_balance,
    nonzero,
    sandbox_events,
    sandbox_gateway,
    sandbox_settings,
    store_events,
    stripe_balance,
)
from tests.integration.test_stripe_fidelity import undeclared
from tests.property.invariants import check_books_conserved

DAY_S = 86_400
RATE = "0.9238"  # usd → eur, fixed for the sandbox


def bank(currency: str, country: str = "US", number: str = BANK_OK) -> dict[str, str]:
    return {
        "object": "bank_account",
        "country": country,
        "currency": currency,
        "routing_number": ROUTING,
        "account_number": number,
    }


def seller(client: Any, country: str, default_currency: str, first_bank: dict[str, str]) -> str:
    account = client.v1.accounts.create(
        {
            "country": country,
            "default_currency": default_currency,
            "controller": SANDBOX_CONTROLLER,
            "capabilities": {
                "card_payments": {"requested": True},
                "transfers": {"requested": True},
            },
            "settings": {"payouts": {"schedule": {"interval": "daily"}}},
            "external_account": first_bank,
        }
    )
    return str(account.id)


def fund(client: Any, account: str, amount: int, currency: str) -> None:
    """A settled destination charge: ``amount`` less the platform's 10% lands available."""
    client.v1.payment_intents.create(
        {
            "amount": amount,
            "currency": currency,
            "payment_method": "pm_card_bypassPending",
            "confirm": True,
            "application_fee_amount": amount // 10,
            "transfer_data": {"destination": account},
        }
    )


def fold(sb: Sandbox, store: Store, accounts: list[str | None]) -> None:
    store_events(store.view, sandbox_events(sb, accounts))
    reports = fold_all(store.folder(sandbox_gateway(sb)), store.view)
    assert not any(r.errors for r in reports), [r.errors for r in reports]


def agree(sb: Sandbox, store: Store, accounts: list[str]) -> None:
    client = sb.client()
    for account in accounts:
        ours = ledger_balance(store.ledger, account)
        theirs = nonzero(stripe_balance(client, account))
        assert ours == theirs, f"{account}: ledger {ours} != Stripe {theirs}"
    check_books_conserved(store.ledger.journal_totals()[0])


def pay_out(ctx: Context, account: str, currency: str, slot: str) -> str:
    payout_id = evaluate_payout_body(ctx, account, currency, slot)
    assert payout_id is not None, f"no payout of {currency} due"
    assert submit_payout_body(ctx, payout_id) is not None
    return payout_id


# Fidelity: the sandbox's payouts in several currencies, through the SDK's own classes ----------


def test_each_currency_pays_out_to_its_own_bank_and_one_without_a_bank_is_refused() -> None:
    with Sandbox(seed=171, webhook_delivery="manual", platform_settlement_currencies=None) as sb:
        client = sb.client()
        account = seller(client, "US", "usd", bank("usd"))
        eur_bank = client.v1.accounts.external_accounts.create(
            account, {"external_account": bank("eur"), "default_for_currency": True}
        )
        assert isinstance(eur_bank, stripe.BankAccount) and eur_bank.default_for_currency
        fund(client, account, 10_000, "usd")
        fund(client, account, 8_000, "eur")
        on = {"stripe_account": account}
        usd = client.v1.payouts.create({"amount": 9_000, "currency": "usd"}, on)
        eur = client.v1.payouts.create({"amount": 7_200, "currency": "eur"}, on)
        assert isinstance(eur, stripe.Payout)
        assert (eur.destination, eur.currency, eur.amount) == (eur_bank.id, "eur", 7_200)
        assert usd.destination != eur_bank.id
        txn = client.v1.balance_transactions.retrieve(str(eur.balance_transaction), {}, on)
        assert isinstance(txn, stripe.BalanceTransaction)
        assert (txn.amount, txn.currency, txn.exchange_rate) == (-7_200, "eur", None)
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.payouts.create({"amount": 100, "currency": "gbp"}, on)
        assert refused.value.param == "currency"  # no external account in gbp, no conversion


def test_a_cross_border_payout_is_converted_at_the_configured_rate_and_reports_it() -> None:
    with Sandbox(
        seed=172,
        webhook_delivery="manual",
        cross_region_destination_needs_on_behalf_of=False,
        fx_rates={"usd:eur": RATE},
    ) as sb:
        client = sb.client()
        account = seller(client, "DE", "usd", bank("eur", "DE"))
        fund(client, account, 10_000, "usd")
        on = {"stripe_account": account}
        payout = client.v1.payouts.create({"amount": 9_000, "currency": "usd"}, on)
        assert isinstance(payout, stripe.Payout)
        # What reaches the bank (Stripe's payout.amount), in the bank's currency.
        assert (payout.amount, payout.currency) == (8_314, "eur")  # 9000 at 0.9238 is 8314.2
        txn = client.v1.balance_transactions.retrieve(str(payout.balance_transaction), {}, on)
        assert isinstance(txn, stripe.BalanceTransaction)
        assert (txn.amount, txn.currency, txn.type) == (-9_000, "usd", "payout")
        assert str(txn.exchange_rate) == RATE
        assert undeclared(payout) == [] and undeclared(txn) == []  # only fields the SDK knows
        balance = client.v1.balance.retrieve({}, on)
        assert {b.currency: b.amount for b in balance.available} == {"usd": 0}
        # Canceled: the amount taken comes back in the balance's currency, at the same rate.
        canceled = client.v1.payouts.cancel(str(payout.id), {}, on)
        back = client.v1.balance_transactions.retrieve(
            str(canceled.failure_balance_transaction), {}, on
        )
        assert (back.amount, back.currency, back.type) == (9_000, "usd", "payout_cancel")
        assert str(back.exchange_rate) == RATE


def test_without_a_rate_a_payout_in_a_currency_with_no_external_account_is_refused() -> None:
    with Sandbox(
        seed=173, webhook_delivery="manual", cross_region_destination_needs_on_behalf_of=False
    ) as sb:
        client = sb.client()
        account = seller(client, "DE", "usd", bank("eur", "DE"))
        fund(client, account, 10_000, "usd")
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.payouts.create(
                {"amount": 9_000, "currency": "usd"}, {"stripe_account": account}
            )
        assert "external accounts in that currency" in str(refused.value.user_message)


# End to end: Sluice's scheduler pays each currency; the ledger agrees with the sandbox --------


@pytest.mark.postgres
def test_sluice_pays_out_every_currency_an_account_holds_and_agrees_with_stripe(
    postgres_url: str,
) -> None:
    with Sandbox(seed=174, webhook_delivery="manual", platform_settlement_currencies=None) as sb:
        client = sb.client()
        account = seller(client, "US", "usd", bank("usd"))
        client.v1.accounts.external_accounts.create(account, {"external_account": bank("eur")})
        fund(client, account, 10_000, "usd")
        fund(client, account, 8_000, "eur")
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            fold(sb, store, [None, account])
            ctx = Context(store.settings, store.ledger, store.view, sandbox_gateway(sb))
            slot = datetime.fromtimestamp(sb.clock.now(), UTC).date().isoformat()
            paid = {c: pay_out(ctx, account, c, slot) for c in ("usd", "eur")}
            fold(sb, store, [None, account])
            sb.advance(3 * DAY_S)
            fold(sb, store, [None, account])
            for currency, payout_id in paid.items():
                recorded = store.ledger.get_payout(payout_id)
                assert recorded is not None and recorded.status == PAID, currency
            agree(sb, store, [account])
            _, per_book = store.ledger.journal_totals()
            assert per_book[(account, BANK, "usd")] == 9_000
            assert per_book[(account, BANK, "eur")] == 7_200


@pytest.mark.postgres
def test_a_cross_border_payout_is_booked_with_stripes_rate_through_fx_and_agrees_with_stripe(
    postgres_url: str,
) -> None:
    with Sandbox(
        seed=175,
        webhook_delivery="manual",
        cross_region_destination_needs_on_behalf_of=False,
        fx_rates={"usd:eur": RATE},
    ) as sb:
        client = sb.client()
        account = seller(client, "DE", "usd", bank("eur", "DE"))
        fund(client, account, 10_000, "usd")
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            fold(sb, store, [None, account])
            ctx = Context(store.settings, store.ledger, store.view, sandbox_gateway(sb))
            slot = datetime.fromtimestamp(sb.clock.now(), UTC).date().isoformat()
            payout_id = pay_out(ctx, account, "usd", slot)
            fold(sb, store, [None, account])
            sb.advance(3 * DAY_S)
            fold(sb, store, [None, account])
            recorded = store.ledger.get_payout(payout_id)
            assert recorded is not None and recorded.status == PAID
            at_stripe = client.v1.payouts.retrieve(
                str(recorded.stripe_payout_id), {}, {"stripe_account": account}
            )
            assert recorded.exchange_rate == RATE
            assert (recorded.bank_currency, recorded.bank_amount_minor) == (
                at_stripe.currency,
                at_stripe.amount,
            )
            agree(sb, store, [account])
            _, per_book = store.ledger.journal_totals()
            assert per_book[(account, BANK, "eur")] == at_stripe.amount
            assert per_book[(WORLD, FX, "usd")] == 9_000
            assert per_book[(WORLD, FX, "eur")] == -at_stripe.amount
            Projector(store.ledger, store.view).run_once()
            [shown] = list_payouts(store.view, account=account).data
            assert (shown["currency"], shown["amount"]) == ("usd", 9_000)
            assert (shown["bank_currency"], shown["bank_amount"], shown["exchange_rate"]) == (
                "eur",
                at_stripe.amount,
                RATE,
            )
