"""Every object the Stripe sandbox serves parses into stripe-python 16's own class, with no field
the SDK does not declare, and every id carries Stripe's prefix.

The objects are fetched with the real SDK (`stripe.StripeClient` over HTTP) from one sandbox in
which a small marketplace has done everything the sandbox supports. A field is *declared* when it
is annotated on the SDK class or one of its bases; nested objects are checked against the nested
class the SDK declares for them (`_inner_class_types`) or, for expanded and embedded resources,
against the resource class their `object` names.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from stripe._stripe_object import StripeObject

from stripe_sandbox import Sandbox

DAY_S = 86_400
BANK_OK = "000123456789"
BANK_NO_ACCOUNT = "000111111116"
PREFIXES = {
    "account": ("acct_",),
    "application_fee": ("fee_",),
    "balance_transaction": ("txn_",),
    "bank_account": ("ba_",),
    "charge": ("ch_", "py_"),
    "dispute": ("dp_",),
    "event": ("evt_",),
    "fee_refund": ("fr_",),
    "payment_intent": ("pi_",),
    "payout": ("po_",),
    "refund": ("re_",),
    "topup": ("tu_",),
    "transfer": ("tr_",),
    "transfer_reversal": ("trr_",),
    "webhook_endpoint": ("we_",),
}
ALL_PREFIXES = (*(p for group in PREFIXES.values() for p in group), "ca_", "pm_", "req_")
ID_LIKE = re.compile(r"^[a-z]{2,5}_[A-Za-z0-9]{14,}$")


def declared_fields(cls: type) -> dict[str, Any]:
    """Annotations of `cls` and its bases (the SDK's declared fields). `object` counts as
    declared on classes that declare their object name as `OBJECT_NAME` (ListObject does)."""
    fields: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        fields.update(inspect.get_annotations(klass))
    if getattr(cls, "OBJECT_NAME", None):
        fields.setdefault("object", cls.OBJECT_NAME)
    return {name: kind for name, kind in fields.items() if not name.startswith("_")}


def _is_untyped(annotation: Any) -> bool:
    """Fields the SDK types as free-form maps (metadata, event data.object, …)."""
    return "UntypedStripeObject" in str(annotation)


def undeclared(obj: StripeObject, cls: type | None = None, path: str = "$") -> list[str]:
    """Paths of fields in `obj` that its SDK class does not declare (recursively)."""
    cls = cls or type(obj)
    declared = declared_fields(cls)
    problems = []
    for key, value in obj.to_dict(recursive=False).items():
        where = f"{path}.{key}"
        if key not in declared:
            problems.append(f"{where} is not declared on {cls.__qualname__}")
            continue
        problems += _check_value(value, cls, key, declared[key], where)
    return problems


def _check_value(value: Any, owner: type, key: str, annotation: Any, where: str) -> list[str]:
    if isinstance(value, list):
        problems = []
        for i, item in enumerate(value):
            problems += _check_value(item, owner, key, annotation, f"{where}[{i}]")
        return problems
    if not isinstance(value, StripeObject):
        return []
    if getattr(type(value), "OBJECT_NAME", None):
        return undeclared(value, type(value), where)
    nested = getattr(owner, "_inner_class_types", {}).get(key)
    if nested is not None:
        if type(value) is not nested:
            return [f"{where} parsed as {type(value).__qualname__}, not {nested.__qualname__}"]
        return undeclared(value, nested, where)
    if _is_untyped(annotation):
        return []
    return [f"{where} is a nested object the SDK declares no class for ({annotation})"]


def bad_ids(value: Any, path: str = "$") -> list[str]:
    """Ids without Stripe's prefix: an object's own id, and every id-like string."""
    problems = []
    if isinstance(value, dict):
        kind, object_id = value.get("object"), value.get("id")
        if (
            isinstance(kind, str)
            and kind in PREFIXES
            and not str(object_id).startswith(PREFIXES[kind])
        ):
            problems.append(f"{path}.id {object_id!r} lacks {PREFIXES[kind]} for {kind}")
        for key, item in value.items():
            problems += bad_ids(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += bad_ids(item, f"{path}[{i}]")
    elif (
        isinstance(value, str)
        and ID_LIKE.match(value)
        and not value.startswith((*ALL_PREFIXES, "group_", "whsec_"))
    ):
        problems.append(f"{path} {value!r} has an unknown prefix")
    return problems


# --- the world -----------------------------------------------------------------------------------


def bank(number: str) -> dict[str, str]:
    return {
        "object": "bank_account",
        "country": "US",
        "currency": "usd",
        "routing_number": "110000000",
        "account_number": number,
    }


class World:
    """One sandbox in which every resource exists at least once."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        c = self.client = sandbox.client()
        self.seller = c.v1.accounts.create(
            {
                "controller": {
                    "fees": {"payer": "application"},
                    "losses": {"payments": "application"},
                    "requirement_collection": "application",
                    "stripe_dashboard": {"type": "none"},
                },
                "country": "US",
                "email": "seller@example.com",
                "business_profile": {"name": "Seller"},
                "capabilities": {
                    "card_payments": {"requested": True},
                    "transfers": {"requested": True},
                },
                "external_account": bank(BANK_OK),
                "settings": {"payouts": {"schedule": {"interval": "manual"}}},
                "metadata": {"sluice": "seller"},
            }
        )
        self.standard = c.v1.accounts.create(
            {"type": "standard", "external_account": bank(BANK_NO_ACCOUNT)}
        )
        acct = self.seller.id
        self.bank_account = c.v1.accounts.external_accounts.create(
            acct, {"external_account": bank(BANK_NO_ACCOUNT)}
        )
        self.endpoint = c.v1.webhook_endpoints.create(
            {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"], "connect": True}
        )
        self.destination = c.v1.payment_intents.create(
            {
                "amount": 1000,
                "currency": "usd",
                "payment_method": "pm_card_bypassPending",
                "confirm": True,
                "application_fee_amount": 123,
                "transfer_data": {"destination": acct},
                "metadata": {"order": "1"},
            }
        )
        self.charge = c.v1.charges.retrieve(self.destination.latest_charge)
        self.transfer = c.v1.transfers.retrieve(self.charge.transfer)
        self.refund = c.v1.refunds.create(
            {
                "charge": self.charge.id,
                "amount": 400,
                "reverse_transfer": True,
                "refund_application_fee": True,
            }
        )
        self.fee = c.v1.application_fees.retrieve(self.charge.application_fee)
        self.fee_refund = c.v1.application_fees.refunds.create(self.fee.id, {"amount": 10})
        self.sct = c.v1.payment_intents.create(
            {
                "amount": 5000,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
        self.sct_transfer = c.v1.transfers.create(
            {
                "amount": 3000,
                "currency": "usd",
                "destination": acct,
                "source_transaction": self.sct.latest_charge,
            }
        )
        self.reversal = c.v1.transfers.reversals.create(self.transfer.id, {"amount": 100})
        self.direct = c.v1.payment_intents.create(
            {
                "amount": 2000,
                "currency": "usd",
                "payment_method": "pm_card_createDispute",
                "confirm": True,
                "application_fee_amount": 200,
            },
            options={"stripe_account": acct},
        )
        try:
            c.v1.payment_intents.create(
                {
                    "amount": 700,
                    "currency": "usd",
                    "payment_method": "pm_card_chargeDeclined",
                    "confirm": True,
                }
            )
        except stripe.CardError as exc:
            self.declined = exc
        self.topup = c.v1.topups.create({"amount": 10_000, "currency": "usd"})
        sandbox.advance(3 * DAY_S)
        on_seller = {"stripe_account": acct}
        self.dispute = c.v1.disputes.list(options=on_seller).data[0]
        self.dispute = c.v1.disputes.update(
            self.dispute.id,
            {"evidence": {"uncategorized_text": "winning_evidence"}},
            options=on_seller,
        )
        self.payout = c.v1.payouts.create({"amount": 500, "currency": "usd"}, options=on_seller)
        self.failing_payout = c.v1.payouts.create(
            {"amount": 100, "currency": "usd", "destination": self.bank_account.id},
            options=on_seller,
        )
        self.canceled_payout = c.v1.payouts.cancel(
            c.v1.payouts.create({"amount": 50, "currency": "usd"}, options=on_seller).id,
            options=on_seller,
        )
        sandbox.advance(4 * DAY_S)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Sandbox(seed=11, webhook_delivery="manual") as sandbox:
        yield World(sandbox)


def on(account: Any) -> dict[str, str]:
    return {"stripe_account": account.id if hasattr(account, "id") else account}


Fetch = Callable[[World], Any]
RESOURCES: list[tuple[str, Fetch, type]] = [
    (
        "account (application-controlled)",
        lambda w: w.client.v1.accounts.retrieve(w.seller.id),
        stripe.Account,
    ),
    ("account (standard)", lambda w: w.client.v1.accounts.retrieve(w.standard.id), stripe.Account),
    ("platform account", lambda w: w.client.v1.accounts.retrieve_current(), stripe.Account),
    (
        "bank account",
        lambda w: w.client.v1.accounts.external_accounts.retrieve(w.seller.id, w.bank_account.id),
        stripe.BankAccount,
    ),
    (
        "payment intent",
        lambda w: w.client.v1.payment_intents.retrieve(w.destination.id),
        stripe.PaymentIntent,
    ),
    (
        "declined payment intent (error body)",
        lambda w: w.declined.error.payment_intent,
        stripe.PaymentIntent,
    ),
    (
        "direct payment intent",
        lambda w: w.client.v1.payment_intents.retrieve(w.direct.id, options=on(w.seller)),
        stripe.PaymentIntent,
    ),
    ("destination charge", lambda w: w.client.v1.charges.retrieve(w.charge.id), stripe.Charge),
    (
        "destination payment py_",
        lambda w: w.client.v1.charges.retrieve(
            w.transfer.destination_payment, options=on(w.seller)
        ),
        stripe.Charge,
    ),
    (
        "direct charge",
        lambda w: w.client.v1.charges.retrieve(w.direct.latest_charge, options=on(w.seller)),
        stripe.Charge,
    ),
    ("platform balance", lambda w: w.client.v1.balance.retrieve(), stripe.Balance),
    (
        "connected balance",
        lambda w: w.client.v1.balance.retrieve(options=on(w.seller)),
        stripe.Balance,
    ),
    (
        "balance transaction",
        lambda w: w.client.v1.balance_transactions.retrieve(w.charge.balance_transaction),
        stripe.BalanceTransaction,
    ),
    ("transfer", lambda w: w.client.v1.transfers.retrieve(w.transfer.id), stripe.Transfer),
    (
        "sourced transfer",
        lambda w: w.client.v1.transfers.retrieve(w.sct_transfer.id),
        stripe.Transfer,
    ),
    (
        "transfer reversal",
        lambda w: w.client.v1.transfers.reversals.retrieve(w.transfer.id, w.reversal.id),
        stripe.TransferReversal,
    ),
    ("refund", lambda w: w.client.v1.refunds.retrieve(w.refund.id), stripe.Refund),
    (
        "destination payment refund",
        lambda w: w.client.v1.refunds.list(options=on(w.seller)).data[0],
        stripe.Refund,
    ),
    (
        "application fee",
        lambda w: w.client.v1.application_fees.retrieve(w.fee.id),
        stripe.ApplicationFee,
    ),
    (
        "application fee refund",
        lambda w: w.client.v1.application_fees.refunds.retrieve(w.fee.id, w.fee_refund.id),
        stripe.ApplicationFeeRefund,
    ),
    (
        "paid payout",
        lambda w: w.client.v1.payouts.retrieve(w.payout.id, options=on(w.seller)),
        stripe.Payout,
    ),
    (
        "failed payout",
        lambda w: w.client.v1.payouts.retrieve(w.failing_payout.id, options=on(w.seller)),
        stripe.Payout,
    ),
    ("canceled payout", lambda w: w.canceled_payout, stripe.Payout),
    (
        "dispute",
        lambda w: w.client.v1.disputes.retrieve(w.dispute.id, options=on(w.seller)),
        stripe.Dispute,
    ),
    ("topup", lambda w: w.client.v1.topups.retrieve(w.topup.id), stripe.Topup),
    ("event", lambda w: w.client.v1.events.list().data[0], stripe.Event),
    ("webhook endpoint (create response)", lambda w: w.endpoint, stripe.WebhookEndpoint),
    (
        "webhook endpoint",
        lambda w: w.client.v1.webhook_endpoints.retrieve(w.endpoint.id),
        stripe.WebhookEndpoint,
    ),
]
LISTS: list[tuple[str, Fetch, type]] = [
    ("accounts", lambda w: w.client.v1.accounts.list(), stripe.Account),
    (
        "external accounts",
        lambda w: w.client.v1.accounts.external_accounts.list(w.seller.id),
        stripe.BankAccount,
    ),
    ("payment intents", lambda w: w.client.v1.payment_intents.list(), stripe.PaymentIntent),
    ("charges", lambda w: w.client.v1.charges.list(), stripe.Charge),
    ("connected charges", lambda w: w.client.v1.charges.list(options=on(w.seller)), stripe.Charge),
    ("transfers", lambda w: w.client.v1.transfers.list(), stripe.Transfer),
    (
        "reversals",
        lambda w: w.client.v1.transfers.reversals.list(w.transfer.id),
        stripe.TransferReversal,
    ),
    ("refunds", lambda w: w.client.v1.refunds.list(), stripe.Refund),
    ("application fees", lambda w: w.client.v1.application_fees.list(), stripe.ApplicationFee),
    (
        "fee refunds",
        lambda w: w.client.v1.application_fees.refunds.list(w.fee.id),
        stripe.ApplicationFeeRefund,
    ),
    ("payouts", lambda w: w.client.v1.payouts.list(options=on(w.seller)), stripe.Payout),
    ("disputes", lambda w: w.client.v1.disputes.list(options=on(w.seller)), stripe.Dispute),
    ("topups", lambda w: w.client.v1.topups.list(), stripe.Topup),
    ("webhook endpoints", lambda w: w.client.v1.webhook_endpoints.list(), stripe.WebhookEndpoint),
]


@pytest.mark.parametrize(("name", "fetch", "cls"), RESOURCES, ids=[r[0] for r in RESOURCES])
def test_each_resource_parses_into_its_sdk_class_with_only_declared_fields(
    world: World, name: str, fetch: Fetch, cls: type
) -> None:
    obj = fetch(world)
    assert isinstance(obj, cls), f"{name} parsed as {type(obj).__qualname__}"
    assert undeclared(obj) == []
    assert bad_ids(obj.to_dict()) == []


@pytest.mark.parametrize(("name", "fetch", "cls"), LISTS, ids=[r[0] for r in LISTS])
def test_each_list_is_a_list_object_of_the_sdk_class(
    world: World, name: str, fetch: Fetch, cls: type
) -> None:
    page = fetch(world)
    assert isinstance(page, stripe.ListObject)
    assert page.data, f"the world has no {name}"
    assert all(isinstance(item, cls) for item in page.data)
    assert undeclared(page) == []
    assert bad_ids(page.to_dict()) == []


@pytest.mark.parametrize("scope", ["platform", "connected"])
def test_every_balance_transaction_has_only_declared_fields(world: World, scope: str) -> None:
    options = on(world.seller) if scope == "connected" else None
    listed = world.client.v1.balance_transactions.list({"limit": 100}, options=options)
    seen_types = set()
    for bt in listed.auto_paging_iter():
        assert isinstance(bt, stripe.BalanceTransaction)
        assert undeclared(bt) == []
        assert bad_ids(bt.to_dict()) == []
        assert bt.net == bt.amount - bt.fee
        assert bt.fee == sum(detail.amount for detail in bt.fee_details)
        literal_types = typing.get_args(typing.get_args(declared_fields(type(bt))["type"])[0])
        assert bt.type in literal_types
        seen_types.add(bt.type)
    assert len(seen_types) >= 5


@pytest.mark.parametrize("scope", ["platform", "connected"])
def test_every_event_and_its_object_parse_into_sdk_classes(world: World, scope: str) -> None:
    options = on(world.seller) if scope == "connected" else None
    events = list(world.client.v1.events.list({"limit": 100}, options=options).auto_paging_iter())
    assert len(events) > 5
    event_types = typing.get_args(declared_fields(stripe.Event)["type"])
    for event in events:
        assert isinstance(event, stripe.Event)
        assert event.type in event_types
        assert event.livemode is False
        assert undeclared(event) == []
        assert bad_ids(event.to_dict()) == []
        data_object = event.data.object
        assert isinstance(data_object, StripeObject)
        if event.type != "balance.available":
            assert getattr(type(data_object), "OBJECT_NAME", None), event.type
        assert (getattr(event, "account", None) == world.seller.id) == (scope == "connected")


def test_expanded_fields_parse_into_the_expanded_class(world: World) -> None:
    intent = world.client.v1.payment_intents.retrieve(
        world.destination.id, {"expand": ["latest_charge.balance_transaction"]}
    )
    assert isinstance(intent.latest_charge, stripe.Charge)
    assert isinstance(intent.latest_charge.balance_transaction, stripe.BalanceTransaction)
    listed = world.client.v1.balance_transactions.list({"expand": ["data.source"], "limit": 100})
    sources = {type(bt.source) for bt in listed.data if bt.source is not None}
    assert {stripe.Charge, stripe.Transfer, stripe.ApplicationFee, stripe.Refund} <= sources
    assert undeclared(intent) == []
    assert undeclared(listed) == []


def test_the_field_checker_catches_undeclared_fields_at_any_depth() -> None:
    charge = stripe.Charge.construct_from(
        {
            "id": "ch_1234567890abcdef",
            "object": "charge",
            "bogus": 1,
            "outcome": {"type": "authorized", "made_up": True},
            "metadata": {"anything": "goes"},
            "refunds": {"object": "list", "data": [{"id": "re_x", "object": "refund", "odd": 2}]},
        },
        "sk_test_x",
    )
    assert sorted(undeclared(charge)) == [
        "$.bogus is not declared on Charge",
        "$.outcome.made_up is not declared on Charge.Outcome",
        "$.refunds.data[0].odd is not declared on Refund",
    ]
    assert bad_ids({"object": "charge", "id": "tr_1234567890abcdef"}) != []


def test_deleting_a_webhook_endpoint_returns_stripes_deleted_shape(world: World) -> None:
    endpoint = world.client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/other", "enabled_events": ["payout.paid"]}
    )
    deleted = world.client.v1.webhook_endpoints.delete(endpoint.id)
    assert isinstance(deleted, stripe.WebhookEndpoint)
    assert deleted.deleted is True
    assert undeclared(deleted) == []


def test_error_envelopes_carry_type_code_message_and_param(world: World) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        world.client.v1.charges.retrieve("ch_doesnotexist000000000000")
    error = caught.value.error
    assert (error.type, error.code, error.param) == (
        "invalid_request_error",
        "resource_missing",
        "charge",
    )
    assert caught.value.http_status == 404
    assert caught.value.request_id and caught.value.request_id.startswith("req_")
    declined = world.declined.error
    assert (declined.type, declined.code, declined.decline_code) == (
        "card_error",
        "card_declined",
        "generic_decline",
    )
