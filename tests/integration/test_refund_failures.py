"""Refunds that fail, top-ups that fail or are reversed, and payout reversals, end to end.

Stripe's test card ``pm_card_refundFail`` in the sandbox: the refund succeeds, then fails and its
funds come back as a ``refund_failure`` balance transaction. A top-up fails
(``/_sandbox/topups/{id}/fail``) or is reversed (``…/reverse``), with a ``topup_reversal``. A paid
payout is reversed (``POST /v1/payouts/{id}/reverse``). Each is checked against stripe-python 16's
classes, folded from the signed webhooks, and the ledger agrees with the sandbox (balances,
balance transactions, inbox) before and after."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from adapters.stripe.failures import get_payout_reversal, get_refund_failure, get_topup_reversal
from stripe_sandbox import Sandbox, SandboxSettings
from stripe_sandbox.payments import REFUND_FAILURE_DELAY_S
from tests.integration.stripe_support import SANDBOX_CONTROLLER, bank
from tests.integration.test_stripe_fidelity import bad_ids, undeclared
from tests.property.agreement_support import Config, Player, postgres_stores, sqlite_stores


def pay(client: Any, amount: int, options: Any = None, **extra: Any) -> Any:
    body = {"amount": amount, "currency": "usd", "payment_method": "pm_card_refundFail",
            "confirm": True, **extra}  # fmt: skip
    return client.v1.payment_intents.create(body, options)


@pytest.fixture(params=["sqlite", "postgres"])
def player(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Player]:
    if request.param == "sqlite":
        stores = sqlite_stores(tmp_path)
    else:
        stores = postgres_stores(request.getfixturevalue("postgres_url"))
    with Player(Config(), stores) as started:
        started.apply(("account", {"label": "A0", "delay_days": 2, "bank": "ok",
                                   "interval": "manual"}))  # fmt: skip
        yield started


def test_failed_refunds_return_their_funds_and_the_ledger_agrees_with_stripe(
    player: Player,
) -> None:
    seller = player.accounts["A0"].id
    client = player.client
    separate = pay(client, 9_000)
    direct = pay(client, 6_000, {"stripe_account": seller}, application_fee_amount=300)
    destination = pay(client, 5_000, transfer_data={"destination": seller})
    player.settle()
    refunds = [
        client.v1.refunds.create({"payment_intent": separate.id, "amount": 4_000}),
        client.v1.refunds.create({"payment_intent": direct.id}, {"stripe_account": seller}),
        client.v1.refunds.create({"payment_intent": destination.id, "reverse_transfer": True}),
    ]
    player.settle()
    player.assert_agrees()  # refunded: the funds left
    player.apply(("advance", {"seconds": REFUND_FAILURE_DELAY_S}))
    for refund in refunds:
        failed = get_refund_failure(player.ledger, str(refund.id))
        assert failed is not None and failed.amount_minor == refund.amount
    player.assert_agrees()  # failed: the funds came back, as Stripe booked them


def test_a_failed_refund_whose_earlier_events_were_lost_is_recorded_whole(player: Player) -> None:
    intent = pay(player.client, 7_000)
    player.settle()
    player.control("/_sandbox/webhooks/chaos", {"drop": 1.0})
    refund = player.client.v1.refunds.create({"payment_intent": intent.id, "amount": 2_500})
    player.settle()  # the refund's own events are lost for good
    player.control("/_sandbox/webhooks/chaos", {"drop": 0.0})
    player.apply(("advance", {"seconds": REFUND_FAILURE_DELAY_S}))
    payment = player.ledger.get_payment(str(intent.latest_charge))
    assert payment is not None and refund.id in payment.refunds
    assert get_refund_failure(player.ledger, str(refund.id)) is not None
    player.assert_agrees()


# Fidelity --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxSettings(webhook_delivery="manual")) as sb:
        yield sb


def test_a_failing_refund_is_stripes_refund_then_stripes_failure(sandbox: Sandbox) -> None:
    client = sandbox.client()
    intent = pay(client, 3_000)
    refund = client.v1.refunds.create({"payment_intent": intent.id, "amount": 1_200})
    assert refund.status == "succeeded"  # Stripe: "its status begins as succeeded"
    sandbox.advance(REFUND_FAILURE_DELAY_S)
    failed = client.v1.refunds.retrieve(refund.id)
    assert isinstance(failed, stripe.Refund)
    assert failed.status == "failed" and failed.failure_reason == "expired_or_canceled_card"
    txn = client.v1.balance_transactions.retrieve(str(failed.failure_balance_transaction))
    assert (txn.type, txn.reporting_category, txn.amount, txn.status, txn.source) == (
        "refund_failure", "refund_failure", 1_200, "available", refund.id,
    )  # fmt: skip
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.amount_refunded == 0
    for obj in (failed, txn, charge):
        assert undeclared(obj) == [], undeclared(obj)
        assert bad_ids(obj.to_dict()) == []
    events = client.v1.events.list({"limit": 20}).data
    about = [e.type for e in reversed(events) if e.data.object.to_dict().get("id") == refund.id]
    assert about[-3:] == ["charge.refund.updated", "refund.updated", "refund.failed"]
    for event in events:
        assert undeclared(event) == [], undeclared(event)


def test_refunds_on_other_cards_do_not_fail(sandbox: Sandbox) -> None:
    client = sandbox.client()
    intent = client.v1.payment_intents.create(
        {"amount": 3_000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    refund = client.v1.refunds.create({"payment_intent": intent.id})
    sandbox.advance(REFUND_FAILURE_DELAY_S * 2)
    assert client.v1.refunds.retrieve(refund.id).status == "succeeded"


# Top-ups that fail or are reversed ------------------------------------------------------------


def test_failed_and_reversed_top_ups_agree_with_stripe(player: Player) -> None:
    client = player.client
    failing = client.v1.topups.create({"amount": 40_000, "currency": "usd"})
    reversing = client.v1.topups.create({"amount": 25_000, "currency": "usd"})
    player.settle()
    player.assert_agrees()
    player.control(f"/_sandbox/topups/{failing.id}/fail", {"failure_code": "account_closed"})
    player.settle()
    player.assert_agrees()  # the failed top-up's pending funds net to zero
    player.apply(("advance", {"seconds": 10 * 86_400}))
    player.control(f"/_sandbox/topups/{reversing.id}/reverse")
    player.settle()
    player.assert_agrees()  # the reversed one left the available balance
    for topup, status in ((failing, "failed"), (reversing, "reversed")):
        found = get_topup_reversal(player.ledger, str(topup.id))
        assert found is not None and found.status == status


def test_failed_and_reversed_top_ups_are_stripes(sandbox: Sandbox) -> None:
    client = sandbox.client()
    failing = client.v1.topups.create({"amount": 1_000, "currency": "usd"})
    reversing = client.v1.topups.create({"amount": 2_000, "currency": "usd"})
    failed = control(sandbox, f"/_sandbox/topups/{failing.id}/fail")
    assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_funds")
    sandbox.advance(10 * 86_400)
    control(sandbox, f"/_sandbox/topups/{reversing.id}/reverse")
    for topup_id, status in ((failing.id, "failed"), (reversing.id, "reversed")):
        topup = client.v1.topups.retrieve(topup_id)
        assert isinstance(topup, stripe.Topup) and topup.status == status
        assert undeclared(topup) == [], undeclared(topup)
        [txn] = client.v1.balance_transactions.list(
            {"source": topup_id, "type": "topup_reversal"}
        ).data
        assert (txn.amount, txn.reporting_category) == (-topup.amount, "topup_reversal")
        assert undeclared(txn) == [], undeclared(txn)
    types = [e.type for e in client.v1.events.list({"limit": 30}).data]
    assert {"topup.failed", "topup.reversed"} <= set(types)
    with pytest.raises(urllib.error.HTTPError):  # only a pending top-up fails
        control(sandbox, f"/_sandbox/topups/{reversing.id}/fail")


def control(sb: Sandbox, path: str) -> Any:
    request = urllib.request.Request(f"{sb.base_url}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# Payout reversals -------------------------------------------------------------------------------

# The payouts read model lists Sluice's payouts; a reversal is its own movement there (a
# ``payout`` balance transaction of +amount), checked below by its own rule.
MONEY = ("balances", "inbox", "transactions", "timing")


def test_a_reversed_payout_returns_its_funds_and_the_ledger_agrees_with_stripe(
    player: Player,
) -> None:
    seller = player.accounts["A0"].id
    on = {"stripe_account": seller}
    client = player.client
    client.v1.payment_intents.create({"amount": 9_000, "currency": "usd", "confirm": True,
                                      "payment_method": "pm_card_bypassPending"}, on)  # fmt: skip
    player.settle()
    payout = client.v1.payouts.create({"amount": 6_000, "currency": "usd"}, on)
    player.apply(("advance", {"seconds": 5 * 86_400}))
    assert client.v1.payouts.retrieve(payout.id, {}, on).status == "paid"
    player.assert_agrees()
    reversal = client.v1.payouts.reverse(payout.id, {}, on)
    player.settle()
    player.assert_agrees(MONEY)
    found = get_payout_reversal(player.ledger, str(reversal.id))
    assert found is not None and (found.original_payout_id, found.amount_minor) == (
        payout.id, 6_000,
    )  # fmt: skip
    original = player.ledger.get_payout(str(payout.id))
    assert original is not None and original.status == "paid"  # it was paid; then reversed


def test_a_payout_reversal_is_stripes(sandbox: Sandbox) -> None:
    client = sandbox.client(max_network_retries=0)
    account = client.v1.accounts.create(
        {"country": "US", "default_currency": "usd", "controller": SANDBOX_CONTROLLER,
         "capabilities": {"card_payments": {"requested": True},
                          "transfers": {"requested": True}},
         "settings": {"payouts": {"schedule": {"interval": "manual"}}},
         "external_account": bank()}
    )  # fmt: skip
    on = {"stripe_account": account.id}
    client.v1.payment_intents.create({"amount": 5_000, "currency": "usd", "confirm": True,
                                      "payment_method": "pm_card_bypassPending"}, on)  # fmt: skip
    payout = client.v1.payouts.create({"amount": 3_000, "currency": "usd"}, on)
    with pytest.raises(stripe.InvalidRequestError):  # pending: cancel it instead
        client.v1.payouts.reverse(payout.id, {}, on)
    sandbox.advance(5 * 86_400)
    reversal = client.v1.payouts.reverse(payout.id, {}, on)
    assert isinstance(reversal, stripe.Payout)
    assert (reversal.original_payout, reversal.amount, reversal.status) == (payout.id, 3_000,
                                                                           "paid")  # fmt: skip
    assert client.v1.payouts.retrieve(payout.id, {}, on).reversed_by == reversal.id
    txn = client.v1.balance_transactions.retrieve(str(reversal.balance_transaction), {}, on)
    assert (txn.type, txn.amount, txn.reporting_category) == ("payout", 3_000, "payout_reversal")
    for obj in (reversal, txn):
        assert undeclared(obj) == [], undeclared(obj)
        assert bad_ids(obj.to_dict()) == []
    with pytest.raises(stripe.InvalidRequestError):  # once
        client.v1.payouts.reverse(payout.id, {}, on)
    with pytest.raises(stripe.InvalidRequestError):  # only connected accounts' payouts
        client.v1.payouts.reverse(str(reversal.id))
