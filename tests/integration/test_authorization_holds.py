"""Authorization holds end to end: the sandbox's manual capture through the real SDK over HTTP,
its signed webhooks folded into the ledger, and the ledger agreeing with the sandbox
(``GET /v1/balance`` per account and currency, the balance transactions, the inbox) while
payments are held, captured fully or partly, canceled, or left to expire.

The fidelity half checks the sandbox's held intents, charges and events against stripe-python
16's own classes (no undeclared field, Stripe's prefixes, Stripe's event types and errors)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from adapters.stripe.holds import authorized_minor, get_authorization
from stripe_sandbox import Sandbox, SandboxSettings
from stripe_sandbox.captures import AUTHORIZATION_VALIDITY_S
from tests.integration.stripe_support import PLATFORM
from tests.integration.test_stripe_fidelity import bad_ids, undeclared
from tests.property.agreement_support import Config, Player, postgres_stores, sqlite_stores

DAY_S = 86_400


def hold(player: Player, amount: int, options: Any = None, **extra: Any) -> Any:
    body = {
        "amount": amount,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
        "capture_method": "manual",
        **extra,
    }
    return player.client.v1.payment_intents.create(body, options)


def sandbox_authorized(player: Player, account: str | None) -> int:
    """What the sandbox holds for an account: its intents waiting for capture."""
    options = {"stripe_account": account} if account else None
    intents = player.client.v1.payment_intents.list({"limit": 100}, options).data
    return sum(int(i.amount_capturable) for i in intents if i.status == "requires_capture")


def check_holds_agree(player: Player, seller: str) -> None:
    for sluice_id, stripe_id in ((PLATFORM, None), (seller, seller)):
        assert authorized_minor(player.ledger, sluice_id, "usd") == sandbox_authorized(
            player, stripe_id
        ), sluice_id
    player.assert_agrees()


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


def test_held_payments_agree_with_stripe_while_held_captured_released_and_expired(
    player: Player,
) -> None:
    seller = player.accounts["A0"].id
    destination = hold(player, 10_000, transfer_data={"destination": seller},
                       application_fee_amount=1_000)  # fmt: skip
    separate = hold(player, 7_000)
    direct = hold(player, 5_000, {"stripe_account": seller}, application_fee_amount=200)
    canceled = hold(player, 3_000)
    lapsing = hold(player, 2_000, {"stripe_account": seller})
    player.settle()
    # Held: visible as authorized, never pending nor available, on either side.
    assert authorized_minor(player.ledger, PLATFORM, "usd") == 20_000
    assert authorized_minor(player.ledger, seller, "usd") == 7_000
    check_holds_agree(player, seller)

    client = player.client
    client.v1.payment_intents.capture(destination.id, {"amount_to_capture": 6_000})
    client.v1.payment_intents.capture(separate.id)
    client.v1.payment_intents.capture(
        direct.id, {"amount_to_capture": 4_000}, {"stripe_account": seller}
    )
    client.v1.payment_intents.cancel(canceled.id)
    player.settle()
    assert authorized_minor(player.ledger, PLATFORM, "usd") == 0
    assert authorized_minor(player.ledger, seller, "usd") == 2_000
    charge = player.ledger.get_payment(str(destination.latest_charge))
    assert charge is not None and charge.amount_minor == 6_000  # what Stripe captured
    check_holds_agree(player, seller)

    player.apply(("advance", {"seconds": AUTHORIZATION_VALIDITY_S + DAY_S}))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.capture(lapsing.id, {}, {"stripe_account": seller})
    assert refused.value.code == "payment_intent_unexpected_state"
    expired = get_authorization(player.ledger, str(lapsing.latest_charge))
    assert expired is not None and expired.status == "expired"
    assert authorized_minor(player.ledger, seller, "usd") == 0
    check_holds_agree(player, seller)


def test_a_hold_whose_webhooks_were_lost_is_rebuilt_from_stripe_on_the_capture(
    player: Player,
) -> None:
    """Events are triggers: a capture event alone records the authorization, then its capture."""
    player.control("/_sandbox/webhooks/chaos", {"drop": 1.0})
    intent = hold(player, 8_000)
    player.settle()  # the authorization's events are lost for good
    player.control("/_sandbox/webhooks/chaos", {"drop": 0.0})
    assert get_authorization(player.ledger, str(intent.latest_charge)) is None
    player.client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 5_000})
    player.settle()
    found = get_authorization(player.ledger, str(intent.latest_charge))
    assert found is not None and (found.status, found.captured_minor) == ("captured", 5_000)
    check_holds_agree(player, player.accounts["A0"].id)


# Fidelity: the sandbox's held objects are Stripe's ---------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxSettings(webhook_delivery="manual")) as sb:
        yield sb


def _intent(sb: Sandbox, amount: int = 1_000) -> Any:
    return sb.client().v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )


def _clean(obj: Any) -> None:
    assert undeclared(obj) == [], undeclared(obj)
    assert bad_ids(obj.to_dict()) == []


def test_a_held_intent_and_its_charge_are_stripes_classes_with_stripes_numbers(
    sandbox: Sandbox,
) -> None:
    client = sandbox.client()
    intent = _intent(sandbox, 2_500)
    assert isinstance(intent, stripe.PaymentIntent)
    assert (intent.status, intent.capture_method) == ("requires_capture", "manual")
    assert (intent.amount_capturable, intent.amount_received) == (2_500, 0)
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert isinstance(charge, stripe.Charge)
    assert (charge.captured, charge.amount_captured, charge.balance_transaction) == (
        False,
        0,
        None,
    )
    card = charge.payment_method_details.card  # type: ignore[union-attr]
    assert card.amount_authorized == 2_500
    assert card.capture_before == charge.created + 7 * DAY_S
    for obj in (intent, charge):
        _clean(obj)

    captured = client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 1_500})
    assert (captured.status, captured.amount_received, captured.amount_capturable) == (
        "succeeded",
        1_500,
        0,
    )
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert (charge.captured, charge.amount_captured) == (True, 1_500)
    txn = client.v1.balance_transactions.retrieve(str(charge.balance_transaction))
    assert isinstance(txn, stripe.BalanceTransaction)
    assert (txn.type, txn.amount, txn.net) == ("charge", 1_500, 1_500 - txn.fee)
    for obj in (captured, charge, txn):
        _clean(obj)


def test_capture_and_cancel_refuse_as_stripe_refuses(sandbox: Sandbox) -> None:
    client = sandbox.client(max_network_retries=0)
    intent = _intent(sandbox)
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 1_001})
    assert (too_much.value.code, too_much.value.param) == ("amount_too_large", "amount_to_capture")
    canceled = client.v1.payment_intents.cancel(intent.id)
    assert (canceled.status, canceled.amount_capturable) == ("canceled", 0)
    _clean(canceled)
    with pytest.raises(stripe.InvalidRequestError) as late:
        client.v1.payment_intents.capture(intent.id)
    assert late.value.code == "payment_intent_unexpected_state"
    assert "status of canceled" in str(late.value.user_message)


def test_an_uncaptured_authorization_expires_on_the_sandbox_clock(sandbox: Sandbox) -> None:
    intent = _intent(sandbox)
    sandbox.advance(AUTHORIZATION_VALIDITY_S)
    lapsed = sandbox.client().v1.payment_intents.retrieve(intent.id)
    assert (lapsed.status, lapsed.cancellation_reason) == ("canceled", "expired")
    charge = sandbox.client().v1.charges.retrieve(str(intent.latest_charge))
    assert (charge.captured, charge.refunded, charge.amount_refunded) == (False, True, 1_000)


def test_held_payments_send_stripes_events_in_stripes_order(sandbox: Sandbox) -> None:
    client = sandbox.client()
    first = _intent(sandbox)
    client.v1.payment_intents.capture(first.id)
    second = _intent(sandbox)
    sandbox.advance(AUTHORIZATION_VALIDITY_S)
    events = list(reversed(client.v1.events.list({"limit": 100}).data))

    def about(intent: Any) -> list[str]:
        ids = {intent.id, str(intent.latest_charge)}
        return [e.type for e in events if e.data.object.to_dict().get("id") in ids]

    assert about(first) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.amount_capturable_updated",
        "charge.captured",
        "payment_intent.succeeded",
    ]
    assert about(second)[-2:] == ["charge.expired", "payment_intent.canceled"]
    for event in events:
        assert isinstance(event, stripe.Event)
        _clean(event)
