"""Drift: the sandbox disagreeing with what its clients were told, as Stripe sometimes does.

Two kinds, for reconciliation tests:
- **Lost webhooks**: chaos `drop` (`POST /_sandbox/webhooks/chaos` with `drop=0.2`) is the
  chance that an event is never delivered to any endpoint (it is still listed by `/v1/events`).
- **Movements Stripe makes on its own**: `POST /_sandbox/drift/balance_transactions` posts a
  balance transaction no request asked for (`type` adjustment, stripe_fee, transfer_cancel,
  contribution; a signed `amount`, `fee`, `currency`, `account` — the platform when absent —,
  `description`, `available_in` seconds), as Stripe does for an adjustment or a fee it charges.
  It carries no `source` (Undocumented: Stripe's own adjustments name one only sometimes) and
  sends no event but `balance.available` when its net is positive and available at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripe_sandbox.errors import StripeApiError, bad_param
from stripe_sandbox.forms import Params

if TYPE_CHECKING:
    from stripe_sandbox.state import SandboxState

DRIFT_TYPES = {  # type → reporting_category
    "adjustment": "other_adjustment",
    "stripe_fee": "fee",
    "transfer_cancel": "transfer_reversal",
    "contribution": "contribution",
}
SIGNED_AMOUNT_MAX = 99_999_999  # Stripe's 8 digits


def drop_probability(p: Params) -> float:
    """The `drop` parameter of the webhook chaos: a probability (0 when absent)."""
    raw = p.str("drop")
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        raise bad_param("drop is a probability between 0 and 1.", "drop") from None
    if not 0.0 <= value <= 1.0:
        raise bad_param("drop is a probability between 0 and 1.", "drop")
    return value


def control(state: SandboxState, method: str, path: str, p: Params) -> Any:
    if f"{method} {path}" == "POST /_sandbox/drift/balance_transactions":
        return post_movement(state, p)
    raise StripeApiError(404, "invalid_request_error", f"Unrecognized sandbox route ({path}).")


def post_movement(state: SandboxState, p: Params) -> dict[str, Any]:
    p.reject_unknown(
        ("account", "type", "amount", "fee", "currency", "description", "available_in")
    )
    bt_type = p.choice("type", DRIFT_TYPES, default="adjustment") or "adjustment"
    amount = p.int("amount", required=True, minimum=-SIGNED_AMOUNT_MAX, maximum=SIGNED_AMOUNT_MAX)
    fee = p.int("fee", default=0, minimum=-SIGNED_AMOUNT_MAX, maximum=SIGNED_AMOUNT_MAX) or 0
    if not amount:
        raise bad_param("amount cannot be zero.", "amount")
    later = p.int("available_in", default=0, minimum=0) or 0
    with state.lock:
        account = p.str("account") or state.platform_id
        found = state.objects.get(account)
        if found is None or found["object"] != "account":
            raise bad_param(f"No such account: {account}", "account")
        currency = p.currency(required=False) or found["default_currency"]
        details = (
            [
                {
                    "amount": fee,
                    "currency": currency,
                    "description": "Stripe fee",
                    "type": "stripe_fee",
                }
            ]
            if fee
            else []
        )
        saved, state._request = state._request, None  # Stripe acts: no request behind it
        try:
            bt = state.book(
                account,
                type_=bt_type,
                amount=int(amount),
                currency=currency,
                source=None,
                available_on=state.clock.now() + later,
                fee_details=details,
                category=DRIFT_TYPES[bt_type],
                description=p.str("description") or f"{bt_type} made by Stripe",
            )
            state.announce_available()
        finally:
            state._request = saved
        return state.render(bt)
