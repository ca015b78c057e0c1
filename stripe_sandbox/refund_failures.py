"""Refunds that fail: Stripe's test card `pm_card_refundFail` (4000 0000 0000 5126).

docs.stripe.com/testing: "The charge succeeds. If you initiate a refund, its status begins as
`succeeded`. Some time later, its status transitions to `failed` and sends a
`charge.refund.updated` event." The funds come back: a `refund_failure` balance transaction
(+amount, category `refund_failure`, available at once) on the account the refund debited,
named by the refund's `failure_balance_transaction`; the charge's `amount_refunded` falls back.
Events: `charge.refund.updated`, `refund.updated` and `refund.failed`.
"""

from __future__ import annotations

from stripe_sandbox.payments import PaymentsMixin

FAILURE_REASON = "expired_or_canceled_card"  # Undocumented: the test card's reason


class RefundFailuresMixin(PaymentsMixin):
    def _task_fail_refund(self, refund_id: str) -> None:
        refund = self.objects[refund_id]
        if refund["status"] != "succeeded":
            return
        owner = refund["_owner"]
        charge = self.objects[refund["charge"]]
        bt = self.book(
            owner,
            type_="refund_failure",
            amount=refund["amount"],
            currency=refund["currency"],
            source=refund_id,
            category="refund_failure",
        )
        refund.update(
            status="failed",
            failure_reason=FAILURE_REASON,
            failure_balance_transaction=bt["id"],
        )
        # Undocumented: a transfer reversal or fee refund made with the refund stays as it is.
        charge["amount_refunded"] -= refund["amount"]
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.emit("charge.refund.updated", refund, owner)
        self.emit("refund.updated", refund, owner)
        self.emit("refund.failed", refund, owner)
