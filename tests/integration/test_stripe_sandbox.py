"""The Stripe sandbox behaves as Stripe's money model says (reference/stripe-connect.md), driven by
the real stripe-python SDK over HTTP."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from stripe_sandbox import FeeRule, Sandbox, SandboxSettings
from stripe_sandbox.settings import Chaos

DAY_S = 86_400
HOUR_S = 3_600
BANK_OK = "000123456789"
FAILING_BANKS = {
    "000111111113": "account_closed",
    "000222222227": "insufficient_funds",
    "000333333335": "debit_not_authorized",
    "000444444440": "invalid_currency",
}
BANK_PAID_THEN_FAILED = "000111111116"


# --- helpers -------------------------------------------------------------------------------------


def bank(number: str = BANK_OK, currency: str = "usd") -> dict[str, str]:
    return {
        "object": "bank_account",
        "country": "US",
        "currency": currency,
        "routing_number": "110000000",
        "account_number": number,
    }


def on(account: str) -> dict[str, str]:
    return {"stripe_account": account}


def connected(
    client: Any, *, number: str = BANK_OK, interval: str = "manual", delay_days: int = 2
) -> str:
    account = client.v1.accounts.create(
        {
            "type": "express",
            "country": "US",
            "external_account": bank(number),
            "settings": {"payouts": {"schedule": {"interval": interval, "delay_days": delay_days}}},
        }
    )
    return str(account.id)


def pay(client: Any, amount: int, method: str = "pm_card_visa", **params: Any) -> Any:
    options = params.pop("options", None)
    return client.v1.payment_intents.create(
        {"amount": amount, "currency": "usd", "payment_method": method, "confirm": True, **params},
        options=options,
    )


def balance_transactions(client: Any, account: str | None = None, **filters: Any) -> list[Any]:
    options = on(account) if account else None
    listed = client.v1.balance_transactions.list({"limit": 100, **filters}, options=options)
    return list(listed.auto_paging_iter())


def nets(client: Any, account: str | None = None) -> dict[tuple[str, str], int]:
    """Σ net of an account's balance transactions per (currency, status)."""
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for bt in balance_transactions(client, account):
        sums[(bt.currency, bt.status)] += bt.net
    return dict(sums)


def balance(client: Any, account: str | None = None) -> dict[tuple[str, str], int]:
    options = on(account) if account else None
    fetched = client.v1.balance.retrieve(options=options)
    sums = {}
    for status in ("available", "pending"):
        for entry in getattr(fetched, status):
            sums[(entry.currency, status)] = entry.amount
    return sums


def by_type(bts: list[Any]) -> dict[str, list[int]]:
    """Nets per balance transaction type, oldest first (lists come newest first)."""
    found: dict[str, list[int]] = defaultdict(list)
    for bt in reversed(bts):
        found[bt.type].append(bt.net)
    return dict(found)


def control(sb: Sandbox, path: str, body: dict[str, Any] | None = None) -> Any:
    """Calls a /_sandbox control route over HTTP."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        sb.base_url + path,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Receiver:
    """A webhook endpoint: records raw bodies and headers, answers the next queued status."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"

    def events(self, secret: str) -> list[Any]:
        return [
            stripe.Webhook.construct_event(body, headers["Stripe-Signature"], secret)
            for headers, body in self.requests
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(seed=7, webhook_delivery="manual") as sandbox:
        yield sandbox


@pytest.fixture
def client(sb: Sandbox) -> Any:
    return sb.client()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


# --- charges -------------------------------------------------------------------------------------


def test_destination_charge_with_application_fee_books_the_reference_example(client: Any) -> None:
    seller = connected(client)
    intent = pay(client, 1000, application_fee_amount=123, transfer_data={"destination": seller})

    charge = client.v1.charges.retrieve(intent.latest_charge)
    transfer = client.v1.transfers.retrieve(charge.transfer)
    fee = client.v1.application_fees.retrieve(charge.application_fee)
    payment = client.v1.charges.retrieve(transfer.destination_payment, options=on(seller))
    platform_bts = balance_transactions(client)
    seller_bts = balance_transactions(client, seller)

    assert by_type(platform_bts) == {"charge": [941], "transfer": [-1000], "application_fee": [123]}
    charge_bt = next(bt for bt in platform_bts if bt.type == "charge")
    assert (charge_bt.amount, charge_bt.fee, charge_bt.fee_details[0].type) == (
        1000,
        59,
        "stripe_fee",
    )
    assert [(bt.type, bt.amount, bt.fee, bt.net) for bt in seller_bts] == [
        ("payment", 1000, 123, 877)
    ]
    assert seller_bts[0].fee_details[0].type == "application_fee"
    assert balance(client) == {("usd", "available"): 0, ("usd", "pending"): 64}
    assert balance(client, seller) == {("usd", "available"): 0, ("usd", "pending"): 877}
    assert payment.id.startswith("py_") and payment.source_transfer == transfer.id
    assert (transfer.destination, transfer.amount, transfer.source_transaction) == (
        seller,
        1000,
        charge.id,
    )
    assert (fee.account, fee.amount, fee.charge, fee.originating_transaction) == (
        seller,
        123,
        payment.id,
        charge.id,
    )
    assert charge.transfer_group == f"group_{intent.id}" == transfer.transfer_group


def test_destination_charge_with_transfer_amount_keeps_the_rest_and_creates_no_fee(
    client: Any,
) -> None:
    seller = connected(client)
    intent = pay(client, 1000, transfer_data={"destination": seller, "amount": 800})
    charge = client.v1.charges.retrieve(intent.latest_charge)

    assert charge.application_fee is None
    assert client.v1.application_fees.list().data == []
    assert balance(client)[("usd", "pending")] == 1000 - 59 - 800
    assert balance(client, seller)[("usd", "pending")] == 800


def test_direct_charge_lives_on_the_connected_account(client: Any) -> None:
    seller = client.v1.accounts.create({"type": "standard"}).id
    intent = pay(client, 2000, application_fee_amount=150, options=on(seller))

    charge = client.v1.charges.retrieve(intent.latest_charge, options=on(seller))
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.charges.retrieve(intent.latest_charge)
    seller_bt = client.v1.balance_transactions.retrieve(
        charge.balance_transaction, options=on(seller)
    )
    fee = client.v1.application_fees.retrieve(charge.application_fee)

    assert missing.value.code == "resource_missing"
    assert charge.application == fee.application and fee.account == seller
    assert (seller_bt.amount, seller_bt.fee, seller_bt.net) == (2000, 88 + 150, 2000 - 238)
    assert sorted(d.type for d in seller_bt.fee_details) == ["application_fee", "stripe_fee"]
    assert by_type(balance_transactions(client)) == {"application_fee": [150]}


def test_declined_card_raises_card_error_and_leaves_the_intent_retryable(client: Any) -> None:
    with pytest.raises(stripe.CardError) as declined:
        pay(client, 1000, "pm_card_chargeDeclined")
    intent = declined.value.error.payment_intent

    assert (declined.value.http_status, declined.value.code) == (402, "card_declined")
    assert intent.status == "requires_payment_method"
    assert client.v1.charges.retrieve(intent.latest_charge).status == "failed"
    retried = client.v1.payment_intents.confirm(intent.id, {"payment_method": "pm_card_visa"})
    assert retried.status == "succeeded"
    assert [bt.type for bt in balance_transactions(client)] == ["charge"]


# --- separate charges and transfers --------------------------------------------------------------


def test_transfers_from_a_source_charge_follow_it_and_never_exceed_it(client: Any) -> None:
    driver, restaurant = connected(client), connected(client)
    intent = pay(client, 10_000)
    charge_id = intent.latest_charge
    charge_bt = client.v1.balance_transactions.retrieve(
        client.v1.charges.retrieve(charge_id).balance_transaction
    )

    first = client.v1.transfers.create(
        {
            "amount": 7000,
            "currency": "usd",
            "destination": restaurant,
            "source_transaction": charge_id,
        }
    )
    second = client.v1.transfers.create(
        {"amount": 2000, "currency": "usd", "destination": driver, "source_transaction": charge_id}
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.create(
            {
                "amount": 1001,
                "currency": "usd",
                "destination": driver,
                "source_transaction": charge_id,
            }
        )

    payment_bt = balance_transactions(client, restaurant)[0]
    assert payment_bt.status == "pending"
    assert payment_bt.available_on == charge_bt.available_on
    assert first.transfer_group == second.transfer_group == f"group_{intent.id}"
    assert client.v1.charges.retrieve(charge_id).transfer_group == f"group_{intent.id}"
    # The platform keeps the difference: 10000 - 320 fee - 7000 - 2000.
    assert balance(client)[("usd", "pending")] == 680


def test_a_transfer_without_source_needs_the_platforms_available_balance(client: Any) -> None:
    seller = connected(client)
    pay(client, 5000)  # pending only
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.transfers.create({"amount": 1000, "currency": "usd", "destination": seller})
    assert refused.value.code == "balance_insufficient"

    pay(client, 5000, "pm_card_bypassPending")  # available at once
    transfer = client.v1.transfers.create(
        {"amount": 1000, "currency": "usd", "destination": seller}
    )
    assert transfer.source_transaction is None
    assert balance(client, seller)[("usd", "available")] == 1000


def test_a_reversal_needs_the_connected_accounts_available_balance(client: Any) -> None:
    seller = connected(client)
    intent = pay(client, 1000, transfer_data={"destination": seller})  # seller funds pending
    transfer_id = client.v1.charges.retrieve(intent.latest_charge).transfer
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.transfers.reversals.create(transfer_id, {"amount": 100})
    assert refused.value.code == "balance_insufficient"

    pay(client, 2000, "pm_card_bypassPending", transfer_data={"destination": seller})
    reversal = client.v1.transfers.reversals.create(transfer_id, {"amount": 100})
    transfer = client.v1.transfers.retrieve(transfer_id)
    assert (transfer.amount_reversed, transfer.reversed) == (100, False)
    assert transfer.reversals.data[0].id == reversal.id
    assert by_type(balance_transactions(client, seller))["payment_refund"] == [-100]


# --- refunds -------------------------------------------------------------------------------------


def test_partial_refunds_reverse_the_transfer_proportionally(client: Any) -> None:
    seller = connected(client)
    intent = pay(
        client, 1000, "pm_card_bypassPending", transfer_data={"destination": seller, "amount": 800}
    )

    first = client.v1.refunds.create(
        {"payment_intent": intent.id, "amount": 400, "reverse_transfer": True}
    )
    second = client.v1.refunds.create(
        {"payment_intent": intent.id, "amount": 600, "reverse_transfer": True}
    )

    reversals = [
        client.v1.transfers.reversals.retrieve(
            client.v1.charges.retrieve(intent.latest_charge).transfer, refund.transfer_reversal
        )
        for refund in (first, second)
    ]
    assert [r.amount for r in reversals] == [320, 480]
    assert reversals[0].source_refund == first.id
    assert client.v1.charges.retrieve(intent.latest_charge).refunded is True
    assert balance(client, seller)[("usd", "available")] == 0
    # The platform lost only its share: -59 fee, kept 200 - 200 refunded net of reversals.
    assert balance(client)[("usd", "available")] == 1000 - 59 - 800 - 1000 + 800
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create({"charge": intent.latest_charge})
    assert again.value.code == "charge_already_refunded"


def test_refunding_the_application_fee_is_proportional_and_needs_a_reversal(client: Any) -> None:
    seller = connected(client)
    intent = pay(
        client,
        1000,
        "pm_card_bypassPending",
        application_fee_amount=123,
        transfer_data={"destination": seller},
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(
            {"payment_intent": intent.id, "amount": 400, "refund_application_fee": True}
        )

    client.v1.refunds.create(
        {
            "payment_intent": intent.id,
            "amount": 400,
            "reverse_transfer": True,
            "refund_application_fee": True,
        }
    )
    fee = client.v1.application_fees.retrieve(
        client.v1.charges.retrieve(intent.latest_charge).application_fee
    )
    assert (fee.amount_refunded, fee.refunded) == (49, False)
    assert by_type(balance_transactions(client, seller)) == {
        "payment": [877],
        "payment_refund": [-400],
        "application_fee_refund": [49],
    }
    direct = client.v1.application_fees.refunds.create(fee.id)  # the rest of the fee
    assert direct.amount == 74
    assert client.v1.application_fees.retrieve(fee.id).refunded is True
    assert balance(client, seller)[("usd", "available")] == 877 - 400 + 49 + 74


def test_refunds_without_flags_leave_the_destination_its_funds(client: Any) -> None:
    seller = connected(client)
    intent = pay(client, 1000, "pm_card_bypassPending", transfer_data={"destination": seller})
    refund = client.v1.refunds.create({"charge": intent.latest_charge, "amount": 300})
    assert refund.transfer_reversal is None
    assert balance(client, seller)[("usd", "available")] == 1000
    assert balance(client)[("usd", "available")] == -59 - 300


# --- payouts -------------------------------------------------------------------------------------


def funded_seller(client: Any, number: str = BANK_OK, amount: int = 5000) -> str:
    seller = connected(client, number=number)
    pay(client, amount, "pm_card_bypassPending", transfer_data={"destination": seller})
    return seller


def test_a_payout_moves_pending_in_transit_paid_with_the_clock(sb: Sandbox, client: Any) -> None:
    seller = funded_seller(client)
    payout = client.v1.payouts.create({"amount": 3000, "currency": "usd"}, options=on(seller))
    assert payout.status == "pending" and payout.method == "standard"
    assert balance(client, seller)[("usd", "available")] == 2000

    sb.advance(HOUR_S)
    assert client.v1.payouts.retrieve(payout.id, options=on(seller)).status == "in_transit"
    sb.advance(payout.arrival_date - sb.clock.now())
    paid = client.v1.payouts.retrieve(payout.id, options=on(seller))
    assert paid.status == "paid"
    assert paid.failure_balance_transaction is None
    types = [e.type for e in client.v1.events.list(options=on(seller)).data]
    assert {"payout.created", "payout.updated", "payout.paid"} <= set(types)


@pytest.mark.parametrize(("number", "code"), sorted(FAILING_BANKS.items()))
def test_payouts_to_stripes_failing_test_accounts_fail_and_return_the_funds(
    sb: Sandbox, client: Any, number: str, code: str
) -> None:
    seller = funded_seller(client, number)
    payout = client.v1.payouts.create({"amount": 3000, "currency": "usd"}, options=on(seller))
    sb.advance(3 * DAY_S)

    failed = client.v1.payouts.retrieve(payout.id, options=on(seller))
    assert (failed.status, failed.failure_code) == ("failed", code)
    returned = client.v1.balance_transactions.retrieve(
        failed.failure_balance_transaction, options=on(seller)
    )
    assert (returned.type, returned.amount, returned.reporting_category) == (
        "payout_failure",
        3000,
        "payout_reversal",
    )
    assert balance(client, seller)[("usd", "available")] == 5000
    bank_account = client.v1.accounts.external_accounts.retrieve(seller, failed.destination)
    assert bank_account.status == "errored"


def test_a_payout_can_fail_after_it_was_paid(sb: Sandbox, client: Any) -> None:
    seller = funded_seller(client, BANK_PAID_THEN_FAILED)
    payout = client.v1.payouts.create({"amount": 1000, "currency": "usd"}, options=on(seller))
    sb.advance(payout.arrival_date - sb.clock.now())
    assert client.v1.payouts.retrieve(payout.id, options=on(seller)).status == "paid"

    sb.advance(DAY_S)
    failed = client.v1.payouts.retrieve(payout.id, options=on(seller))
    assert (failed.status, failed.failure_code) == ("failed", "no_account")
    assert balance(client, seller)[("usd", "available")] == 5000
    statuses = [
        e.data.previous_attributes.status
        for e in client.v1.events.list({"type": "payout.updated"}, options=on(seller)).data
    ]
    assert statuses == ["paid", "in_transit", "pending"]


def test_only_a_pending_payout_can_be_canceled(sb: Sandbox, client: Any) -> None:
    seller = funded_seller(client)
    payout = client.v1.payouts.create({"amount": 1000, "currency": "usd"}, options=on(seller))
    canceled = client.v1.payouts.cancel(payout.id, options=on(seller))
    assert canceled.status == "canceled"
    returned = client.v1.balance_transactions.retrieve(
        canceled.failure_balance_transaction, options=on(seller)
    )
    assert (returned.type, returned.net) == ("payout_cancel", 1000)

    later = client.v1.payouts.create({"amount": 1000, "currency": "usd"}, options=on(seller))
    sb.advance(HOUR_S)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payouts.cancel(later.id, options=on(seller))


def test_a_payout_needs_available_funds(client: Any) -> None:
    seller = connected(client)
    pay(client, 5000, transfer_data={"destination": seller})  # pending
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payouts.create({"amount": 100, "currency": "usd"}, options=on(seller))
    assert refused.value.code == "balance_insufficient"


def test_automatic_payouts_sweep_available_funds_and_reconcile(sb: Sandbox, client: Any) -> None:
    seller = connected(client, interval="daily", delay_days=2)
    pay(client, 1000, transfer_data={"destination": seller})
    pay(client, 3000, transfer_data={"destination": seller})
    sb.advance(2 * DAY_S)

    payouts = client.v1.payouts.list(options=on(seller)).data
    assert len(payouts) == 1 and payouts[0].automatic is True and payouts[0].amount == 4000
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payouts.cancel(payouts[0].id, options=on(seller))
    sb.advance(2 * DAY_S)
    payout = client.v1.payouts.retrieve(payouts[0].id, options=on(seller))
    assert (payout.status, payout.reconciliation_status) == ("paid", "completed")
    swept = balance_transactions(client, seller, payout=payout.id)
    assert sorted(bt.net for bt in swept) == [-4000, 1000, 3000]
    assert sum(bt.net for bt in swept) == 0


# --- disputes ------------------------------------------------------------------------------------


def disputed(client: Any) -> tuple[Any, Any]:
    intent = pay(client, 1000, "pm_card_createDispute")
    dispute = client.v1.disputes.list({"payment_intent": intent.id}).data[0]
    return intent, dispute


def test_a_lost_dispute_keeps_the_amount_and_fee_withdrawn(sb: Sandbox, client: Any) -> None:
    intent, dispute = disputed(client)
    withdrawal = dispute.balance_transactions[0]
    assert (dispute.status, dispute.reason, dispute.amount) == (
        "needs_response",
        "fraudulent",
        1000,
    )
    assert (withdrawal.type, withdrawal.reporting_category) == ("adjustment", "dispute")
    assert (withdrawal.amount, withdrawal.fee, withdrawal.net) == (-1000, 1500, -2500)
    assert client.v1.charges.retrieve(intent.latest_charge).disputed is True

    client.v1.disputes.update(dispute.id, {"evidence": {"uncategorized_text": "losing_evidence"}})
    assert client.v1.disputes.retrieve(dispute.id).status == "under_review"
    sb.advance(HOUR_S)
    lost = client.v1.disputes.retrieve(dispute.id)
    assert lost.status == "lost" and len(lost.balance_transactions) == 1
    assert sum(net for (cur, _), net in nets(client).items()) == 1000 - 59 - 2500


def test_a_won_dispute_reinstates_the_amount_and_the_fee(sb: Sandbox, client: Any) -> None:
    _, dispute = disputed(client)
    client.v1.disputes.update(dispute.id, {"evidence": {"uncategorized_text": "winning_evidence"}})
    sb.advance(HOUR_S)

    won = client.v1.disputes.retrieve(dispute.id)
    reinstatement = won.balance_transactions[1]
    assert won.status == "won"
    assert (reinstatement.reporting_category, reinstatement.amount, reinstatement.fee) == (
        "dispute_reversal",
        1000,
        -1500,
    )
    assert sum(nets(client).values()) == 1000 - 59
    closed = client.v1.events.list({"type": "charge.dispute.closed"}).data[0]
    assert closed.data.object.status == "won" and closed.request.id is None


def test_accepting_a_dispute_loses_it_at_once(client: Any) -> None:
    _, dispute = disputed(client)
    closed = client.v1.disputes.close(dispute.id)
    assert closed.status == "lost"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.disputes.close(dispute.id)


# --- top-ups, clock, balances ---------------------------------------------------------------------


def test_a_topup_becomes_available_by_the_clock_as_bank_account_funds(
    sb: Sandbox, client: Any
) -> None:
    seller = connected(client)
    topup = client.v1.topups.create({"amount": 10_000, "currency": "usd"})
    assert topup.status == "pending"
    assert balance(client)[("usd", "pending")] == 10_000

    sb.advance(topup.expected_availability_date - sb.clock.now())
    assert client.v1.topups.retrieve(topup.id).status == "succeeded"
    platform = client.v1.balance.retrieve()
    assert platform.available[0].source_types.bank_account == 10_000
    with pytest.raises(stripe.InvalidRequestError):  # card funds are what transfers draw first
        client.v1.transfers.create({"amount": 500, "currency": "usd", "destination": seller})
    client.v1.transfers.create(
        {"amount": 500, "currency": "usd", "destination": seller, "source_type": "bank_account"}
    )
    assert balance(client)[("usd", "available")] == 9500


def test_advancing_the_clock_releases_funds_per_accounts_delay_days(
    sb: Sandbox, client: Any
) -> None:
    fast = connected(client, delay_days=2)
    slow = connected(client, delay_days=7)
    sb.advance(10 * HOUR_S)  # charges mid-day: availability starts at 00:00 UTC + delay_days
    for seller in (fast, slow):
        pay(client, 1000, options=on(seller))

    sb.advance(2 * DAY_S - 10 * HOUR_S - 1)
    # Express accounts: the platform pays the Stripe fee of direct charges (fees.payer).
    assert by_type(balance_transactions(client)) == {"stripe_fee": [-59, -59]}
    assert balance(client, fast)[("usd", "pending")] == 1000
    sb.advance(1)
    assert balance(client, fast) == {("usd", "available"): 1000, ("usd", "pending"): 0}
    assert balance(client, slow)[("usd", "pending")] == 1000
    sb.advance(5 * DAY_S - 1)
    assert balance(client, slow)[("usd", "pending")] == 1000
    sb.advance(1)
    assert balance(client, slow)[("usd", "available")] == 1000
    released = client.v1.events.list({"type": "balance.available"}, options=on(slow)).data
    assert len(released) == 1 and released[0].data.object.available[0].amount == 1000


def test_balance_transactions_add_up_to_the_balance_for_every_account(
    sb: Sandbox, client: Any
) -> None:
    seller, other = connected(client), connected(client, number="000111111113")
    pay(
        client,
        1000,
        "pm_card_bypassPending",
        application_fee_amount=123,
        transfer_data={"destination": seller},
    )
    sct = pay(client, 5000)
    client.v1.transfers.create(
        {
            "amount": 2500,
            "currency": "usd",
            "destination": other,
            "source_transaction": sct.latest_charge,
        }
    )
    pay(client, 2000, application_fee_amount=100, options=on(seller))
    pay(client, 800, "pm_card_createDispute", options=on(other))
    client.v1.topups.create({"amount": 7000, "currency": "usd"})
    sb.advance(3 * DAY_S)
    client.v1.refunds.create({"payment_intent": sct.id, "amount": 1200})
    client.v1.payouts.create({"amount": 500, "currency": "usd"}, options=on(other))
    client.v1.payouts.create({"amount": 400, "currency": "usd"}, options=on(seller))
    sb.advance(5 * DAY_S)

    for account in (None, seller, other):
        expected = {key: value for key, value in nets(client, account).items()}
        assert balance(client, account) == {
            (cur, status): expected.get((cur, status), 0)
            for cur in {cur for cur, _ in expected} | {"usd"}
            for status in ("available", "pending")
        }


# --- idempotency and errors ----------------------------------------------------------------------


def test_the_same_idempotency_key_replays_and_other_params_conflict(
    sb: Sandbox, client: Any
) -> None:
    seller = funded_seller(client)
    pay(client, 5000, "pm_card_bypassPending")  # platform funds for unsourced transfers
    params = {"amount": 100, "currency": "usd", "destination": seller}
    first = client.v1.transfers.create(params, options={"idempotency_key": "move-1"})
    again = client.v1.transfers.create(params, options={"idempotency_key": "move-1"})

    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(client.v1.transfers.list().data) == 2  # the funding transfer and this one
    with pytest.raises(stripe.IdempotencyError) as conflict:
        client.v1.transfers.create({**params, "amount": 101}, options={"idempotency_key": "move-1"})
    assert conflict.value.http_status == 400
    # Keys are scoped per account: the same key on a connected account is a new request.
    scoped = client.v1.payouts.create(
        {"amount": 100, "currency": "usd"},
        options={"idempotency_key": "move-1", "stripe_account": seller},
    )
    assert scoped.id.startswith("po_")
    # Failed requests replay too (their error is saved), except parameter validation errors.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.create(
            {"currency": "usd", "destination": seller}, options={"idempotency_key": "move-2"}
        )
    fixed = client.v1.transfers.create(params, options={"idempotency_key": "move-2"})
    assert fixed.amount == 100


def test_events_carry_the_request_and_idempotency_key_that_caused_them(client: Any) -> None:
    intent = client.v1.payment_intents.create(
        {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True},
        options={"idempotency_key": "order-42"},
    )
    event = client.v1.events.list({"type": "payment_intent.succeeded"}).data[0]
    assert event.data.object.id == intent.id
    assert event.request.idempotency_key == "order-42"
    assert event.request.id == intent.last_response.request_id
    assert (event.livemode, event.api_version) == (False, stripe.api_version)


def test_stripe_errors_map_to_the_sdks_exception_classes(sb: Sandbox, client: Any) -> None:
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": sb.base_url}
        ).v1.balance.retrieve()
    with pytest.raises(stripe.PermissionError):
        client.v1.balance.retrieve(options=on("acct_1NoSuchAccount00"))
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.transfers.create(
            {"amount": 1, "currency": "usd", "destination": "x", "colour": "red"}
        )
    assert unknown.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as amount:
        client.v1.payment_intents.create({"amount": 10, "currency": "usd"})
    assert amount.value.code == "amount_too_small"


# --- webhooks ------------------------------------------------------------------------------------


def endpoint(client: Any, receiver: Receiver, **params: Any) -> Any:
    return client.v1.webhook_endpoints.create(
        {"url": receiver.url, "enabled_events": ["*"], **params}
    )


def test_webhooks_are_signed_as_stripe_signs_them(
    sb: Sandbox, client: Any, receiver: Receiver
) -> None:
    hook = endpoint(client, receiver)
    intent = pay(client, 1000, options={"idempotency_key": "checkout-1"})
    flushed = sb.flush()

    events = receiver.events(hook.secret)
    assert flushed["delivered"] == len(events) == 3
    assert [e.type for e in events] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    assert all(isinstance(e, stripe.Event) for e in events)
    assert events[-1].data.object.id == intent.id
    assert events[-1].request.idempotency_key == "checkout-1"
    headers, body = receiver.requests[0]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body + b" ", headers["Stripe-Signature"], hook.secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_other")
    assert client.v1.events.retrieve(events[0].id).pending_webhooks == 0


def test_connect_endpoints_receive_connected_account_events_with_account(
    sb: Sandbox, client: Any, receiver: Receiver
) -> None:
    platform_receiver = Receiver()
    try:
        connect_hook = endpoint(client, receiver, connect=True)
        platform_hook = endpoint(client, platform_receiver)
        seller = connected(client)
        pay(client, 1000, application_fee_amount=100, options=on(seller))
        sb.flush()
        connect_events = receiver.events(connect_hook.secret)
        platform_events = platform_receiver.events(platform_hook.secret)
    finally:
        platform_receiver.close()
    assert {e.account for e in connect_events} == {seller}
    assert "charge.succeeded" in {e.type for e in connect_events}
    assert [e.type for e in platform_events] == ["application_fee.created"]
    assert getattr(platform_events[0], "account", None) is None


def test_failed_deliveries_are_retried_with_backoff_in_sandbox_time(
    sb: Sandbox, client: Any
) -> None:
    failing = Receiver(statuses=(500, 503))
    try:
        hook = client.v1.webhook_endpoints.create(
            {"url": failing.url, "enabled_events": ["topup.created"]}
        )
        topup = client.v1.topups.create({"amount": 100, "currency": "usd"})
        assert sb.flush()["failed"] == 1
        event = client.v1.events.list({"type": "topup.created"}).data[0]
        assert event.pending_webhooks == 1
        assert client.v1.events.list({"delivery_success": False}).data[0].id == event.id

        sb.advance(299)
        assert len(failing.requests) == 1
        sb.advance(1)  # first retry after 5 minutes: 503 again
        assert len(failing.requests) == 2
        result = sb.advance(1800)  # second retry after 30 more minutes: 200
        delivered = failing.events(hook.secret)
    finally:
        failing.close()
    assert result["delivered"] == 1
    assert [e.id for e in delivered] == [event.id] * 3
    assert delivered[0].data.object.id == topup.id
    assert client.v1.events.retrieve(event.id).pending_webhooks == 0
    attempts = control(sb, "/_sandbox/webhooks/attempts")["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 503), (3, 200)]


def test_chaos_duplicates_and_reorders_deliveries_reproducibly(
    sb: Sandbox, client: Any, receiver: Receiver
) -> None:
    def run(seed: int) -> tuple[list[str], list[str]]:
        """(ids in delivery order, ids in creation order) of one seeded run."""
        sb.reset()
        receiver.requests.clear()
        hook = endpoint(client, receiver)
        control(sb, "/_sandbox/webhooks/chaos", {"duplicate": 0.5, "reorder": True, "seed": seed})
        for amount in (1000, 2000, 3000):
            pay(client, amount)
        control(sb, "/_sandbox/webhooks/flush", {})
        created = [e.id for e in reversed(client.v1.events.list({"limit": 100}).data)]
        return [e.id for e in receiver.events(hook.secret)], created

    (first, created), (again, _), (other, _) = run(1), run(1), run(2)
    assert first == again
    assert first != other
    assert len(first) > len(set(first)) == len(created) == 9  # some of 9 events sent twice
    assert list(dict.fromkeys(first)) != created  # not in creation order


def test_chaos_delay_holds_deliveries_until_the_clock_moves(
    sb: Sandbox, client: Any, receiver: Receiver
) -> None:
    endpoint(client, receiver)
    control(sb, "/_sandbox/webhooks/chaos", {"delay_seconds": 600})
    client.v1.topups.create({"amount": 100, "currency": "usd"})
    assert sb.flush()["attempted"] == 0
    advanced = control(sb, "/_sandbox/clock/advance", {"seconds": 600})
    assert advanced["delivered"] == 1 and len(receiver.requests) == 1


def test_background_delivery_sends_without_a_flush(receiver: Receiver) -> None:
    with Sandbox(seed=5) as sandbox:
        c = sandbox.client()
        hook = endpoint(c, receiver)
        c.v1.topups.create({"amount": 100, "currency": "usd"})
        for _ in range(200):
            if receiver.requests:
                break
            threading.Event().wait(0.01)
        assert [e.type for e in receiver.events(hook.secret)] == ["topup.created"]


# --- ids, settings, lists, controls --------------------------------------------------------------


def flow_ids(seed: int) -> list[str]:
    with Sandbox(seed=seed, webhook_delivery="manual") as sandbox:
        c = sandbox.client()
        seller = connected(c)
        intent = pay(c, 1000, application_fee_amount=100, transfer_data={"destination": seller})
        return [
            sandbox.secret_key,
            seller,
            intent.id,
            intent.latest_charge,
            *(bt.id for bt in balance_transactions(c)),
        ]


def test_ids_are_deterministic_for_a_seed_and_carry_stripes_prefixes() -> None:
    first, again, other = flow_ids(21), flow_ids(21), flow_ids(22)
    assert first == again
    assert not set(first) & set(other)
    assert [i.split("_")[0] for i in first[1:4]] == ["acct", "pi", "ch"]


def test_processing_fees_are_set_per_currency() -> None:
    fees = {"usd": FeeRule(290, 30), "jpy": FeeRule(360, 0)}
    with Sandbox(
        processing_fees=fees,
        dispute_fees={"jpy": 1500},
        platform_settlement_currencies=("jpy",),  # else Stripe would convert the yen to usd
        webhook_delivery="manual",
    ) as s:
        c = s.client()
        yen = c.v1.payment_intents.create(
            {"amount": 10_000, "currency": "jpy", "payment_method": "pm_card_visa", "confirm": True}
        )
        charge = c.v1.charges.retrieve(yen.latest_charge, {"expand": ["balance_transaction"]})
    assert (charge.balance_transaction.fee, charge.balance_transaction.currency) == (360, "jpy")


def test_lists_page_like_stripe(client: Any) -> None:
    for amount in range(1000, 1025):
        pay(client, amount)
    first = client.v1.payment_intents.list({"limit": 10})
    everything = list(client.v1.payment_intents.list({"limit": 10}).auto_paging_iter())
    assert first.has_more is True and len(first.data) == 10
    assert [p.amount for p in everything] == list(range(1024, 999, -1))
    before = client.v1.payment_intents.list({"limit": 3, "ending_before": everything[5].id})
    assert [p.id for p in before.data] == [p.id for p in everything[2:5]]
    recent = client.v1.charges.list({"created": {"gte": everything[0].created}, "limit": 100})
    assert len(recent.data) == 25


def test_reset_forgets_everything_and_restarts_the_clock(sb: Sandbox, client: Any) -> None:
    start = sb.clock.now()
    first = pay(client, 1000)
    sb.advance(DAY_S)
    answer = control(sb, "/_sandbox/reset", {})
    assert answer["now"] == start == sb.clock.now()
    assert client.v1.payment_intents.list().data == []
    assert pay(client, 1000).id == first.id  # same seed, same ids
    assert control(sb, "/_sandbox/clock")["now"] == start


def test_on_behalf_of_settles_on_the_connected_accounts_delay_days(
    sb: Sandbox, client: Any
) -> None:
    seller = connected(client, delay_days=5)
    intent = pay(
        client,
        1000,
        on_behalf_of=seller,
        transfer_data={"destination": seller},
        application_fee_amount=100,
    )
    charge = client.v1.charges.retrieve(intent.latest_charge, {"expand": ["balance_transaction"]})
    assert charge.on_behalf_of == seller
    assert charge.balance_transaction.available_on == sb.clock.now() + 5 * DAY_S
    with pytest.raises(stripe.InvalidRequestError):
        pay(client, 1000, on_behalf_of=seller, transfer_data={"destination": connected(client)})


def test_balance_transactions_filter_by_type_source_and_currency() -> None:
    # A platform that settles in eur as well, so the eur charge needs no conversion.
    with Sandbox(seed=7, webhook_delivery="manual", platform_settlement_currencies=("eur",)) as s:
        client = s.client()
        seller = connected(client)
        intent = pay(
            client, 1000, application_fee_amount=100, transfer_data={"destination": seller}
        )
        pay(client, 10_000, currency="eur")
        charge = client.v1.charges.retrieve(intent.latest_charge)

        by_source = balance_transactions(client, source=charge.id)
        assert [(bt.type, bt.id) for bt in by_source] == [("charge", charge.balance_transaction)]
        assert [bt.amount for bt in balance_transactions(client, type="transfer")] == [-1000]
        assert [bt.amount for bt in balance_transactions(client, currency="eur")] == [10_000]
        assert balance(client)[("eur", "pending")] == 10_000 - 290


def test_updating_an_account_sends_account_updated_with_previous_attributes(
    client: Any,
) -> None:
    seller = connected(client, interval="daily")
    updated = client.v1.accounts.update(
        seller,
        {
            "settings": {
                "payouts": {"schedule": {"interval": "weekly", "weekly_anchor": "friday"}}
            },
            "metadata": {"tier": "gold"},
        },
    )
    schedule = updated.settings.payouts.schedule
    assert (schedule.interval, schedule.weekly_anchor, schedule.delay_days) == (
        "weekly",
        "friday",
        2,
    )
    event = client.v1.events.list({"type": "account.updated"}, options=on(seller)).data[0]
    assert event.account == seller
    previous = event.data.previous_attributes.to_dict()
    assert previous["settings"]["payouts"]["schedule"]["interval"] == "daily"
    assert previous["metadata"] == {"tier": None}  # a new key's old value is null
    with pytest.raises(stripe.InvalidRequestError) as missing_anchor:
        client.v1.accounts.update(
            seller, {"settings": {"payouts": {"schedule": {"interval": "monthly"}}}}
        )
    assert missing_anchor.value.code == "parameter_missing"


def test_control_routes_force_payout_failures_and_dispute_outcomes(
    sb: Sandbox, client: Any
) -> None:
    seller = funded_seller(client)
    payout = client.v1.payouts.create({"amount": 700, "currency": "usd"}, options=on(seller))
    forced = control(sb, f"/_sandbox/payouts/{payout.id}/fail", {"failure_code": "declined"})
    assert (forced["status"], forced["failure_code"]) == ("failed", "declined")
    _, dispute = disputed(client)
    resolved = control(sb, f"/_sandbox/disputes/{dispute.id}/resolve", {"outcome": "won"})
    assert resolved["status"] == "won"
    assert control(sb, "/_sandbox/info")["platform_account"] == sb.platform_account_id


# --- Stripe's refusals and policies ---------------------------------------------------------------


def refusal(caught: pytest.ExceptionInfo[stripe.InvalidRequestError]) -> tuple[Any, ...]:
    """(HTTP status, error type, code, param) of a refused request, as the SDK parsed them."""
    error = caught.value
    return (error.http_status, error.error.type, error.code, error.param)


def account_in(client: Any, country: str, currency: str, **params: Any) -> str:
    account = client.v1.accounts.create(
        {
            "type": "express",
            "country": country,
            "default_currency": currency,
            "external_account": {**bank(currency=currency), "country": country},
            "settings": {"payouts": {"schedule": {"interval": "manual"}}},
            **params,
        }
    )
    return str(account.id)


def client_intents(client: Any) -> list[str]:
    return [intent.id for intent in client.v1.payment_intents.list({"limit": 100}).data]


def told_available(client: Any, account: str | None = None) -> list[Any]:
    """The account's `balance.available` events, oldest first."""
    options = on(account) if account else None
    listed = client.v1.events.list({"type": "balance.available", "limit": 100}, options=options)
    return list(reversed(listed.data))


def test_a_destination_charge_across_regions_needs_on_behalf_of() -> None:
    # A US platform that settles in jpy as well: the charge needs no currency conversion.
    with Sandbox(
        seed=3,
        webhook_delivery="manual",
        platform_settlement_currencies=("jpy",),
        cross_region_destination_needs_on_behalf_of=True,
    ) as s:
        c = s.client()
        seller = account_in(c, "JP", "jpy")
        yen = {"amount": 5000, "currency": "jpy", "transfer_data": {"destination": seller}}
        with pytest.raises(stripe.InvalidRequestError) as refused:
            pay(c, **yen)
        assert client_intents(c) == []
        accepted = pay(c, **yen, on_behalf_of=seller)
    assert refusal(refused) == (400, "invalid_request_error", None, "transfer_data[destination]")
    assert refused.value.user_message.startswith(
        "Cannot create a destination charge for connected accounts in JP because funds would be "
        "settled on the platform and the connected account is outside the platform's region. "
        "You may use the `on_behalf_of` parameter"
    )
    assert (accepted.status, accepted.on_behalf_of) == ("succeeded", seller)


def test_the_european_economic_area_is_one_region_for_destination_charges() -> None:
    with Sandbox(
        seed=3,
        webhook_delivery="manual",
        platform_country="DE",
        platform_currency="eur",
        cross_region_destination_needs_on_behalf_of=True,
    ) as s:
        c = s.client()
        french = account_in(c, "FR", "eur")
        british = account_in(c, "GB", "gbp")
        intent = pay(c, 1000, currency="eur", transfer_data={"destination": french})
        with pytest.raises(stripe.InvalidRequestError) as refused:
            pay(c, 1000, currency="gbp", transfer_data={"destination": british})
    assert intent.status == "succeeded"
    assert refusal(refused)[3] == "transfer_data[destination]"


def test_a_charge_in_a_currency_the_platform_does_not_settle_in_is_refused() -> None:
    with Sandbox(seed=3, webhook_delivery="manual", platform_settlement_currencies=()) as s:
        c = s.client()
        seller = connected(c)
        with pytest.raises(stripe.InvalidRequestError) as separate:
            pay(c, 5000, currency="jpy")
        with pytest.raises(stripe.InvalidRequestError) as destination:
            pay(c, 5000, currency="jpy", transfer_data={"destination": seller})
        assert client_intents(c) == []
        assert pay(c, 5000).status == "succeeded"  # usd, the platform's currency
    expected = (400, "invalid_request_error", "currency_conversion_unsupported", "currency")
    assert refusal(separate) == refusal(destination) == expected
    assert "does not settle in jpy (it settles in usd)" in separate.value.user_message


def test_a_platform_that_settles_in_jpy_accepts_jpy_and_refuses_usd() -> None:
    with Sandbox(
        seed=3,
        webhook_delivery="manual",
        platform_country="JP",
        platform_currency="jpy",
        platform_settlement_currencies=(),
    ) as s:
        c = s.client()
        intent = pay(c, 5000, currency="jpy")
        charge = c.v1.charges.retrieve(intent.latest_charge, {"expand": ["balance_transaction"]})
        with pytest.raises(stripe.InvalidRequestError) as refused:
            pay(c, 5000)
        platform = c.v1.accounts.retrieve_current()
    assert (platform.country, platform.default_currency) == ("JP", "jpy")
    assert charge.balance_transaction.currency == "jpy"
    assert refusal(refused)[2:] == ("currency_conversion_unsupported", "currency")


def test_a_direct_charge_must_be_in_a_currency_the_connected_account_settles_in(
    client: Any,
) -> None:
    # A US account that pays its own Stripe fees: the charge puts funds on it alone.
    seller = client.v1.accounts.create(
        {
            "country": "US",
            "controller": {"fees": {"payer": "account"}, "losses": {"payments": "stripe"}},
            "external_account": bank(),
        }
    ).id
    with pytest.raises(stripe.InvalidRequestError) as refused:
        pay(client, 5000, currency="jpy", options=on(seller))
    assert refusal(refused)[2:] == ("currency_conversion_unsupported", "currency")
    assert f"the account {seller} does not settle in jpy" in refused.value.user_message

    # A bank account in a currency makes it a settlement currency (Stripe's multi-currency
    # settlement), so the same charge goes through.
    client.v1.accounts.external_accounts.create(seller, {"external_account": bank(currency="jpy")})
    intent = pay(client, 5000, currency="jpy", options=on(seller))
    assert intent.status == "succeeded"
    assert balance(client, seller)[("jpy", "pending")] == 5000 - 145


def test_funds_available_at_once_send_balance_available_and_debits_do_not(
    client: Any,
) -> None:
    seller, other = connected(client), connected(client)
    intent = pay(client, 5000, "pm_card_bypassPending")  # available at once: 5000 - 175 fee
    client.v1.transfers.create({"amount": 1000, "currency": "usd", "destination": seller})
    client.v1.transfers.create(
        {
            "amount": 2000,
            "currency": "usd",
            "destination": other,
            "source_transaction": intent.latest_charge,  # already available
        }
    )
    client.v1.payouts.create({"amount": 400, "currency": "usd"}, options=on(seller))
    pay(client, 3000, transfer_data={"destination": other})  # pending: nothing to tell yet

    platform = told_available(client)
    assert [e.data.object.available[0].amount for e in platform] == [4825]
    assert platform[0].request.id == intent.last_response.request_id
    assert [e.data.object.available[0].amount for e in told_available(client, seller)] == [1000]
    assert [e.data.object.available[0].amount for e in told_available(client, other)] == [2000]


def test_funds_a_failed_payout_returns_send_balance_available_from_the_clock(
    sb: Sandbox, client: Any
) -> None:
    seller = funded_seller(client, "000111111113")  # bypassPending: 5000 available at once
    client.v1.payouts.create({"amount": 3000, "currency": "usd"}, options=on(seller))
    sb.advance(3 * DAY_S)

    events = told_available(client, seller)
    assert [e.data.object.available[0].amount for e in events] == [5000, 5000]
    assert events[0].request.id is not None and events[1].request.id is None


def test_delay_days_below_the_minimum_are_refused_on_create_and_update(client: Any) -> None:
    params = {"type": "express", "country": "US", "metadata": {"tier": "new"}}
    with pytest.raises(stripe.InvalidRequestError) as on_create:
        client.v1.accounts.create(
            {**params, "settings": {"payouts": {"schedule": {"delay_days": 1}}}}
        )
    assert client.v1.accounts.list().data == []
    lowest = client.v1.accounts.create(
        {**params, "settings": {"payouts": {"schedule": {"delay_days": "minimum"}}}}
    )
    assert lowest.settings.payouts.schedule.delay_days == 2

    with pytest.raises(stripe.InvalidRequestError) as on_update:
        client.v1.accounts.update(
            lowest.id,
            {
                "metadata": {"tier": "gold"},
                "settings": {"payouts": {"schedule": {"delay_days": 0}}},
            },
        )
    unchanged = client.v1.accounts.retrieve(lowest.id)
    assert (unchanged.metadata.to_dict(), unchanged.settings.payouts.schedule.delay_days) == (
        {"tier": "new"},
        2,
    )
    slower = client.v1.accounts.update(
        lowest.id, {"settings": {"payouts": {"schedule": {"delay_days": 5}}}}
    )
    assert slower.settings.payouts.schedule.delay_days == 5
    param = "settings[payouts][schedule][delay_days]"
    expected = (400, "invalid_request_error", "parameter_invalid_integer", param)
    assert refusal(on_create) == refusal(on_update) == expected


def test_the_delay_days_minimum_follows_the_platforms_own_schedule() -> None:
    with Sandbox(seed=3, webhook_delivery="manual", platform_delay_days=4) as s:
        c = s.client()
        default = c.v1.accounts.create({"type": "express"})
        with pytest.raises(stripe.InvalidRequestError) as refused:
            c.v1.accounts.update(
                default.id, {"settings": {"payouts": {"schedule": {"delay_days": 3}}}}
            )
        lowest = c.v1.accounts.update(
            default.id, {"settings": {"payouts": {"schedule": {"delay_days": "minimum"}}}}
        )
    assert default.settings.payouts.schedule.delay_days == 4
    assert lowest.settings.payouts.schedule.delay_days == 4
    assert refusal(refused)[3] == "settings[payouts][schedule][delay_days]"


def test_a_won_dispute_keeps_its_fee_when_the_policy_says_so() -> None:
    with Sandbox(seed=3, webhook_delivery="manual", dispute_fee_refunded_on_win=False) as s:
        c = s.client()
        _, dispute = disputed(c)
        c.v1.disputes.update(dispute.id, {"evidence": {"uncategorized_text": "winning_evidence"}})
        s.advance(HOUR_S)
        won = c.v1.disputes.retrieve(dispute.id)
        total = sum(nets(c).values())
    reinstatement = won.balance_transactions[1]
    assert (won.status, reinstatement.amount, reinstatement.fee) == ("won", 1000, 0)
    assert total == 1000 - 59 - 1500


# Every SandboxSettings field as a command line gives it, and what it must become.
OPTION_STRINGS: dict[str, tuple[str, Any]] = {
    "seed": ("9", 9),
    "secret_key": ("sk_test_cli", "sk_test_cli"),
    "api_version": ("2026-10-28.endive", "2026-10-28.endive"),
    "start_time": ("1793577600", 1_793_577_600),
    "platform_country": ("JP", "JP"),
    "platform_currency": ("jpy", "jpy"),
    "platform_settlement_currencies": ("usd, EUR", ("usd", "eur")),
    "cross_region_destination_needs_on_behalf_of": ("true", True),
    "platform_delay_days": ("3", 3),
    "platform_payout_interval": ("daily", "daily"),
    "default_delay_days": ("4", 4),
    "default_payout_interval": ("weekly", "weekly"),
    "processing_fees": ("jpy=360+0", {"jpy": FeeRule(360, 0)}),
    "fallback_processing_fee": ("250+10", FeeRule(250, 10)),
    "dispute_fees": ("jpy=1500", {"jpy": 1500}),
    "fallback_dispute_fee": ("2000", 2000),
    "dispute_fee_refunded_on_win": ("false", False),
    "dispute_evidence_due_days": ("9", 9),
    "dispute_resolution_delay_s": ("60", 60),
    "payout_submit_delay_s": ("120", 120),
    "payout_transit_days": ("1", 1),
    "payout_paid_then_failed_delay_s": ("600", 600),
    "topup_availability_days": ("3", 3),
    "webhook_retry_delays_s": ("10,20", (10, 20)),
    "webhook_timeout_s": ("2.5", 2.5),
    "webhook_delivery": ("manual", "manual"),
    "idempotency_key_ttl_s": ("3600", 3600),
    "onboarding_required": ("true", True),
    "fx_rates": ("usd:eur=0.9238,eur:usd=1.0825", {"usd:eur": "0.9238", "eur:usd": "1.0825"}),
    "instant_payout_fee_bps": ("150", 150),
    "payout_platform_fees": ("instant=100+0", {"instant": FeeRule(100, 0)}),
    "chaos": ("duplicate=0.5,reorder=true", Chaos(duplicate=0.5, reorder=True)),
}


def test_every_setting_can_be_given_as_a_command_line_string() -> None:
    assert set(OPTION_STRINGS) == {f.name for f in fields(SandboxSettings)}
    settings = SandboxSettings.from_options(**{k: text for k, (text, _) in OPTION_STRINGS.items()})
    assert {name: getattr(settings, name) for name in OPTION_STRINGS} == {
        name: value for name, (_, value) in OPTION_STRINGS.items()
    }
    with pytest.raises(ValueError):
        SandboxSettings.from_options(dispute_fee_refunded_on_win="maybe")


@pytest.mark.parametrize(
    "bad",
    [
        {"payout_transit_days": -1},
        {"fallback_dispute_fee": -1},
        {"processing_fees": {"usd": FeeRule(-1, 0)}},
        {"platform_settlement_currencies": ("USD",)},
        {"platform_country": "us"},
        {"webhook_timeout_s": 0},
        {"fx_rates": {"usd:usd": "1"}},
        {"fx_rates": {"usd:eur": "-0.9"}},
        {"instant_payout_fee_bps": -1},
        {"payout_platform_fees": {"weekly": FeeRule(0, 25)}},
    ],
)
def test_settings_refuse_values_the_sandbox_cannot_work_with(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SandboxSettings(**bad)
