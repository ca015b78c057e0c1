"""Folds authorization holds (PaymentIntents with ``capture_method=manual``) into ledger facts.

Every event about a held payment (``payment_intent.amount_capturable_updated``,
``charge.succeeded`` on authorization, ``charge.captured``, ``payment_intent.succeeded``,
``payment_intent.canceled``, ``charge.expired``) is a trigger only: the intent and its charge are
fetched fresh and the hold is brought in step with them, whatever arrived first or was lost.

- Not yet in the ledger: ``PaymentAuthorized`` with Stripe's numbers, the amount authorized
  (``payment_method_details.card.amount_authorized``) and the expiry (``capture_before``).
- Captured (``charge.captured``): the charge is recorded as any charge is (``_ensure_payment``:
  ``amount_captured``, the fee and ``available_on`` of its balance transaction), then
  ``AuthorizationCaptured`` with ``amount_captured``, dated by that balance transaction.
- Canceled: ``AuthorizationReleased`` (``expired`` when Stripe let it lapse), dated
  ``canceled_at``.

Payments captured automatically go on to the fold's usual handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.stripe.translate import Untranslatable, at
from ledger.application import Ledger
from ledger.holds import (
    AUTHORIZED_STATUS,
    CAPTURED,
    EXPIRED,
    Authorization,
    AuthorizationCaptured,
    AuthorizationReleased,
    HeldFunds,
    PaymentAuthorized,
    authorization_aggregate_id,
    held_funds_aggregate_id,
)

if TYPE_CHECKING:
    from adapters.stripe.folding import Folder

Json = dict[str, Any]
MANUAL = "manual"


# Queries -------------------------------------------------------------------------------------


def get_authorization(ledger: Ledger, payment_id: str) -> Authorization | None:
    return ledger._find(authorization_aggregate_id(payment_id), Authorization)


def authorized_minor(ledger: Ledger, account_id: str, currency: str) -> int:
    """What cards hold for the account now: visible, and never part of its balance."""
    held = ledger._find(held_funds_aggregate_id(account_id, currency), HeldFunds)
    return held.authorized_minor if held is not None else 0


# Translation (Stripe's JSON → facts) ------------------------------------------------------------


def payment_authorized(charge: Json, holder: str) -> PaymentAuthorized:
    card = (charge.get("payment_method_details") or {}).get("card") or {}
    expires = card.get("capture_before")
    if not expires:
        raise Untranslatable(f"{charge['id']} is uncaptured but has no capture_before")
    return PaymentAuthorized(
        idempotency_key=f"stripe:authorization:{charge['id']}",
        effective_at=at(charge["created"]),
        payment_id=str(charge["id"]),
        account_id=holder,
        currency=str(charge["currency"]),
        amount_minor=int(card.get("amount_authorized") or charge["amount"]),
        expires_at=at(expires),
    )


def authorization_captured(charge: Json, txn: Json) -> AuthorizationCaptured:
    return AuthorizationCaptured(
        idempotency_key=f"stripe:authorization:{charge['id']}:captured",
        effective_at=at(txn["created"]),
        payment_id=str(charge["id"]),
        amount_minor=int(charge["amount_captured"]),
    )


def authorization_released(charge: Json, intent: Json) -> AuthorizationReleased:
    expired = intent.get("cancellation_reason") == EXPIRED
    return AuthorizationReleased(
        idempotency_key=f"stripe:authorization:{charge['id']}:released",
        effective_at=at(intent.get("canceled_at") or charge["created"]),
        payment_id=str(charge["id"]),
        reason=EXPIRED if expired else "canceled",
    )


# The fold -------------------------------------------------------------------------------------


def fold_intent_event(folder: Folder, obj: Json, account: str | None) -> None:
    """``payment_intent.*``: a held payment's hold, else the fold's usual handling."""
    intent = folder.gateway.retrieve("payment_intent", str(obj["id"]), account=account).data
    if intent.get("capture_method") != MANUAL:
        folder._payment_intent_event(obj, account)
        return
    if not intent.get("latest_charge"):
        raise folder_ignored("no authorization yet")
    charge = folder.gateway.retrieve("charge", str(intent["latest_charge"]), account=account).data
    sync_hold(folder, intent, charge, account)


def fold_charge_event(folder: Folder, obj: Json, account: str | None) -> None:
    """``charge.*``: a held payment's hold, else the fold's usual handling."""
    if str(obj["id"]).startswith("py_") or not obj.get("payment_intent"):
        folder._charge_event(obj, account)
        return
    intent = folder.gateway.retrieve(
        "payment_intent", str(obj["payment_intent"]), account=account
    ).data
    if intent.get("capture_method") != MANUAL:
        folder._charge_event(obj, account)
        return
    charge = folder.gateway.retrieve("charge", str(obj["id"]), account=account).data
    sync_hold(folder, intent, charge, account)


def sync_hold(folder: Folder, intent: Json, charge: Json, account: str | None) -> None:
    """Brings the ledger's hold in step with Stripe's intent and charge (each fact once)."""
    holder = folder._sluice_account(account)
    if account is not None:
        folder._ensure_account(account)
    payment_id = str(charge["id"])
    hold = get_authorization(folder.ledger, payment_id)
    if hold is None:
        try:
            folder._record(payment_authorized(charge, holder))
        except Untranslatable as why:
            raise folder_ignored(str(why)) from None
        hold = get_authorization(folder.ledger, payment_id)
    if charge.get("captured"):
        folder._ensure_payment(payment_id, account, route=True)  # the money, as any charge
        if hold is not None and hold.status != CAPTURED:
            txn = folder.gateway.retrieve(
                "balance_transaction", str(charge["balance_transaction"]), account=account
            ).data
            folder._record(authorization_captured(charge, txn))
    elif (
        intent.get("status") == "canceled" and hold is not None and hold.status == AUTHORIZED_STATUS
    ):
        folder._record(authorization_released(charge, intent))


def folder_ignored(reason: str) -> Exception:
    from adapters.stripe.folding import Ignored

    return Ignored(reason)


def handlers(folder: Folder) -> dict[str, Any]:
    """The fold's handlers for events that may concern a hold (``Folder.handlers`` takes them)."""

    def on_intent(obj: Json, account: str | None) -> None:
        fold_intent_event(folder, obj, account)

    def on_charge(obj: Json, account: str | None) -> None:
        fold_charge_event(folder, obj, account)

    intent_types = ("succeeded", "amount_capturable_updated", "canceled")
    charge_types = ("succeeded", "captured", "expired")
    return {
        **{f"payment_intent.{t}": on_intent for t in intent_types},
        **{f"charge.{t}": on_charge for t in charge_types},
    }
