"""Disputes (`/v1/disputes`): opened by `pm_card_createDispute`, resolved by Stripe's test evidence.

Balance effects follow the real dispute in reference §10 (dj-stripe fixture): a withdrawal
`adjustment` (category `dispute`, -amount, fee = dispute fee) on the account where the charge
lives, and on a win a reinstatement `adjustment` (category `dispute_reversal`, +amount, fee =
-dispute fee when `dispute_fee_refunded_on_win`). Evidence `uncategorized_text=winning_evidence`
or `losing_evidence` (docs.stripe.com/testing#disputes) closes the dispute as won or lost
`dispute_resolution_delay_s` later in sandbox time; other evidence leaves it `under_review` (use
`POST /_sandbox/disputes/{id}/resolve`). Unanswered disputes are lost at `evidence_details.due_by`.
"""

from __future__ import annotations

from stripe_sandbox.errors import bad_param, invalid
from stripe_sandbox.forms import Params, merge_metadata
from stripe_sandbox.settings import DAY_S
from stripe_sandbox.store import Ctx, Handler, Obj, SandboxCore, fee_detail

EVIDENCE_FIELDS = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)
OPEN_STATUSES = ("needs_response", "warning_needs_response")
TEST_EVIDENCE = {"winning_evidence": "won", "losing_evidence": "lost"}


class DisputesMixin(SandboxCore):
    def open_dispute(self, charge: Obj) -> Obj:
        owner, currency = charge["_owner"], charge["currency"]
        dispute_id = self.ids.new("dp_")
        amount = charge["amount"]
        dispute_fee = self.settings.dispute_fee(currency)
        # Undocumented: the dispute fee is withdrawn from the account the charge lives on, whatever
        # its controller settings (Stripe may charge the platform for some direct charges).
        withdrawal = self.book(
            owner,
            type_="adjustment",
            amount=-amount,
            currency=currency,
            source=dispute_id,
            category="dispute",
            description=f"Chargeback withdrawal for {charge['id']}",
            fee_details=[fee_detail(dispute_fee, currency, "stripe_fee", "Dispute fee")],
        )
        now = self.clock.now()
        # Undocumented: the reason (fraudulent), network code and a 7-day evidence window.
        due_by = now + self.settings.dispute_evidence_due_days * DAY_S
        dispute = {
            "id": dispute_id,
            "object": "dispute",
            "amount": amount,
            "balance_transactions": None,
            "charge": charge["id"],
            "created": now,
            "currency": currency,
            "enhanced_eligibility_types": [],
            "evidence": {**dict.fromkeys(EVIDENCE_FIELDS), "enhanced_evidence": {}},
            "evidence_details": {
                "due_by": due_by,
                "enhanced_eligibility": {},
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
                "submission_method": "not_submitted",
            },
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": {},
            "network_reason_code": "10.4",
            "payment_intent": charge["payment_intent"],
            "payment_method_details": {
                "card": {
                    "brand": "visa",
                    "case_type": "chargeback",
                    "network_reason_code": "10.4",
                },
                "type": "card",
            },
            "reason": "fraudulent",
            "status": "needs_response",
            "_bt_ids": [withdrawal["id"]],
        }
        self.put(dispute, owner)
        charge["disputed"] = True
        charge["_dispute"] = dispute_id
        self.schedule(due_by, "dispute_due", dispute_id)
        self.emit("charge.dispute.created", dispute, owner)
        self.emit("charge.dispute.funds_withdrawn", dispute, owner)
        return dispute

    # --- API -------------------------------------------------------------------------------------

    def retrieve_dispute(self, ctx: Ctx, dispute_id: str) -> Obj:
        return self.find("dispute", dispute_id, ctx.scope, "dispute", "dispute")

    def list_disputes(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(
            ("charge", "payment_intent", "created", "limit", "starting_after", "ending_before")
        )
        charge, intent = p.str("charge"), p.str("payment_intent")

        def keep(dispute: Obj) -> bool:
            return (charge is None or dispute["charge"] == charge) and (
                intent is None or dispute["payment_intent"] == intent
            )

        return self.page(self.stored(ctx.scope, "dispute"), p, "/v1/disputes", "dispute", keep)

    def update_dispute(self, ctx: Ctx, dispute_id: str, p: Params) -> Obj:
        dispute = self.retrieve_dispute(ctx, dispute_id)
        p.reject_unknown(("evidence", "metadata", "submit"))
        evidence = p.nested("evidence")
        evidence.reject_unknown(EVIDENCE_FIELDS)
        if evidence.data and dispute["status"] not in OPEN_STATUSES:
            raise invalid(
                f"This dispute is {dispute['status']}; evidence can no longer be changed.",
                param="evidence",
            )
        before = self.render(dispute)
        for name in EVIDENCE_FIELDS:
            if evidence.has(name):
                dispute["evidence"][name] = evidence.str(name)
        dispute["metadata"] = merge_metadata(dispute["metadata"], p.metadata())
        details = dispute["evidence_details"]
        if evidence.data:
            details["has_evidence"] = True
        if p.bool("submit", default=True) and dispute["status"] in OPEN_STATUSES:
            if not details["has_evidence"]:
                raise bad_param("Submit evidence before submitting the dispute.", "evidence")
            dispute["status"] = "under_review"
            details["submission_count"] += 1
            details["submission_method"] = "manual"
            outcome = TEST_EVIDENCE.get(dispute["evidence"]["uncategorized_text"] or "")
            # Undocumented: when test evidence resolves (an hour later by default); other
            # evidence stays under review until /_sandbox/disputes/{id}/resolve.
            if outcome is not None:
                due = self.clock.now() + self.settings.dispute_resolution_delay_s
                self.schedule(due, "dispute_resolve", dispute_id, outcome)
        self._emit_dispute_update(dispute, before)
        return dispute

    def close_dispute(self, ctx: Ctx, dispute_id: str, p: Params) -> Obj:
        """Accepting the dispute: it is lost at once and no funds come back."""
        dispute = self.retrieve_dispute(ctx, dispute_id)
        p.reject_unknown(())
        if dispute["status"] not in OPEN_STATUSES:
            raise invalid(
                f"This dispute is {dispute['status']} and cannot be closed.", param="dispute"
            )
        self.resolve_dispute(dispute, "lost")
        return dispute

    # --- lifecycle -------------------------------------------------------------------------------

    def resolve_dispute(self, dispute: Obj, outcome: str) -> None:
        """Closes the dispute as `won` (funds and fee reinstated) or `lost`."""
        if dispute["status"] in ("won", "lost", "warning_closed"):
            return
        owner, currency = dispute["_owner"], dispute["currency"]
        dispute["status"] = outcome
        if outcome == "won":
            dispute_fee = self.settings.dispute_fee(currency)
            details = []
            # Stripe now charges a "dispute received fee" (kept) and, on countering, a "dispute
            # countered fee" that "is returned to you" on a win (support.stripe.com/topics/
            # disputes). The sandbox has one fee; `dispute_fee_refunded_on_win` says whether a
            # win returns it (default True: the reinstatement in reference §10, fee -1500).
            if self.settings.dispute_fee_refunded_on_win:
                details.append(
                    fee_detail(-dispute_fee, currency, "stripe_fee", "Dispute fee refund")
                )
            reinstatement = self.book(
                owner,
                type_="adjustment",
                amount=dispute["amount"],
                currency=currency,
                source=dispute["id"],
                category="dispute_reversal",
                description=f"Chargeback reversal for {dispute['charge']}",
                fee_details=details,
            )
            dispute["_bt_ids"].append(reinstatement["id"])
            self.emit("charge.dispute.funds_reinstated", dispute, owner)
        self.emit("charge.dispute.closed", dispute, owner)

    def _task_dispute_resolve(self, dispute_id: str, outcome: str) -> None:
        self.resolve_dispute(self.objects[dispute_id], outcome)

    def _task_dispute_due(self, dispute_id: str) -> None:
        dispute = self.objects[dispute_id]
        if dispute["status"] in OPEN_STATUSES:
            dispute["evidence_details"]["past_due"] = True
            self.resolve_dispute(dispute, "lost")

    def _emit_dispute_update(self, dispute: Obj, before: Obj) -> None:
        changed = self._dispute_diff(before, dispute)
        if changed:
            self.emit("charge.dispute.updated", dispute, dispute["_owner"], changed)

    def _dispute_diff(self, before: Obj, dispute: Obj) -> Obj:
        after = self.render(dispute)
        changed: Obj = {}
        for key in ("status", "evidence", "evidence_details", "metadata"):
            if before[key] != after[key]:
                if isinstance(before[key], dict):
                    changed[key] = {k: v for k, v in before[key].items() if after[key].get(k) != v}
                else:
                    changed[key] = before[key]
        return changed


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/disputes", DisputesMixin.list_disputes),
    (
        "GET",
        "/v1/disputes/{dispute}",
        lambda st, c, p, dispute: st.retrieve_dispute(c, dispute),
    ),
    (
        "POST",
        "/v1/disputes/{dispute}",
        lambda st, c, p, dispute: st.update_dispute(c, dispute, p),
    ),
    (
        "POST",
        "/v1/disputes/{dispute}/close",
        lambda st, c, p, dispute: st.close_dispute(c, dispute, p),
    ),
]
