"""Authorization holds: PaymentIntents with `capture_method=manual`.

Confirming such an intent authorizes the card and books nothing: the charge exists
(`status=succeeded`, `captured=false`, `amount_captured=0`, no balance transaction) and the intent
waits in `requires_capture` with `amount_capturable`. Events, as Stripe sends them:
`charge.succeeded` and `payment_intent.amount_capturable_updated` on authorization;
`charge.captured` and `payment_intent.succeeded` on capture; `payment_intent.canceled` (and
`charge.refunded`) on cancel; `charge.expired` and `payment_intent.canceled` when the
authorization lapses.

- `POST /v1/payment_intents/{id}/capture` captures all of `amount_capturable` or
  `amount_to_capture` of it; the rest is released. Only then does the charge book its balance
  transaction (the captured amount, its Stripe fee), with transfers and application fees as an
  automatic capture books them.
- `POST /v1/payment_intents/{id}/cancel` releases the whole hold.
- Expiry: Stripe holds an online card authorization for 7 days
  (docs.stripe.com/payments/place-a-hold-on-a-payment-method); the charge's
  `payment_method_details.card.capture_before` says when. On the sandbox clock the intent is then
  canceled by Stripe (`cancellation_reason=expired`) and a capture is refused with Stripe's
  `payment_intent_unexpected_state` error.
"""

from __future__ import annotations

from stripe_sandbox.errors import bad_param, invalid
from stripe_sandbox.forms import Params
from stripe_sandbox.payments import TEST_CARDS, PaymentsMixin, TestCard, approved_outcome
from stripe_sandbox.settings import DAY_S
from stripe_sandbox.store import Ctx, Handler, Obj

AUTHORIZATION_VALIDITY_S = 7 * DAY_S  # online card payments (Stripe's "place a hold" page)
CAPTURE_PARAMS = (
    "amount_to_capture",
    "application_fee_amount",
    "metadata",
    "statement_descriptor",
    "statement_descriptor_suffix",
)


class CapturesMixin(PaymentsMixin):
    def authorize_payment(self, intent: Obj, method: str, card: TestCard) -> None:
        """Confirms a manual-capture intent: the card is authorized, nothing is booked."""
        owner = intent["_owner"]
        expires_at = self.clock.now() + AUTHORIZATION_VALIDITY_S
        charge = self._new_charge(intent, method, card)
        charge["payment_method_details"]["card"]["capture_before"] = expires_at
        charge.update(amount_captured=0, captured=False, outcome=approved_outcome())
        self.put(charge, owner)
        intent.update(
            amount_capturable=intent["amount"],
            latest_charge=charge["id"],
            status="requires_capture",
        )
        self.schedule(expires_at, "expire_authorization", intent["id"])
        self.emit("charge.succeeded", charge, owner)
        self.emit("payment_intent.amount_capturable_updated", intent, owner)

    def capture_payment_intent(self, ctx: Ctx, intent_id: str, p: Params) -> Obj:
        intent = self.retrieve_payment_intent(ctx, intent_id)
        p.reject_unknown(CAPTURE_PARAMS)
        if intent["status"] != "requires_capture":
            # Stripe's message for a capture in any other status (an expired hold: canceled).
            raise invalid(
                "This PaymentIntent could not be captured because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
                "may be captured: requires_capture.",
                code="payment_intent_unexpected_state",
            )
        capturable = intent["amount_capturable"]
        amount = p.int("amount_to_capture", minimum=1) or capturable
        if amount > capturable:
            raise invalid(
                f"The amount to capture ({amount}) must be less than or equal to the amount "
                f"capturable ({capturable}).",
                param="amount_to_capture",
                code="amount_too_large",
            )
        transfer_amount = (intent["transfer_data"] or {}).get("amount")
        if transfer_amount is not None and transfer_amount > amount:
            # Undocumented: the sandbox refuses a capture below transfer_data[amount].
            raise bad_param(
                "amount_to_capture cannot be less than transfer_data[amount].",
                "amount_to_capture",
            )
        fee = p.int("application_fee_amount", minimum=0)
        if fee is not None:
            intent["application_fee_amount"] = fee
        if intent["application_fee_amount"]:
            # Stripe: "The amount of the application fee collected will be capped at the total
            # amount captured."
            intent["application_fee_amount"] = min(intent["application_fee_amount"], amount)
        charge = self.objects[intent["latest_charge"]]
        charge.update(
            amount_captured=amount,
            captured=True,
            application_fee_amount=intent["application_fee_amount"],
        )
        # Undocumented: the released remainder shows on no refund object and leaves
        # `amount_refunded` at 0 (refunds then draw on `amount_captured`).
        intent["amount_capturable"] = 0
        method = intent["payment_method"]
        self._capture(intent, method, TEST_CARDS[method], captured=(charge, amount))
        return intent

    def cancel_authorization(self, intent: Obj, reason: str | None) -> Obj:
        """Releases a hold: on request, or when it lapses (`reason="expired"`)."""
        owner = intent["_owner"]
        charge = self.objects[intent["latest_charge"]]
        intent.update(
            status="canceled",
            canceled_at=self.clock.now(),
            cancellation_reason=reason,
            amount_capturable=0,
        )
        # Stripe refunds an uncaptured charge when its intent is canceled (no money moved, so
        # no balance transaction). Undocumented: no Refund object is made for it.
        charge.update(amount_refunded=charge["amount"], refunded=True)
        if reason == "expired":
            self.emit("charge.expired", charge, owner)
        else:
            self.emit("charge.refunded", charge, owner)
        self.emit("payment_intent.canceled", intent, owner)
        return intent

    def _task_expire_authorization(self, intent_id: str) -> None:
        intent = self.objects[intent_id]
        if intent["status"] == "requires_capture":
            self.cancel_authorization(intent, "expired")


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    (
        "POST",
        "/v1/payment_intents/{intent}/capture",
        lambda st, c, p, intent: st.capture_payment_intent(c, intent, p),
    ),
]
