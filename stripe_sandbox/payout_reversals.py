"""Payout reversals: `POST /v1/payouts/{id}/reverse` (with `Stripe-Account`).

Stripe: "Reverses a payout by debiting the destination bank account. At this time, you can only
reverse payouts for connected accounts to US and Canadian bank accounts. If the payout is manual
and in the `pending` status, use `/v1/payouts/:id/cancel` instead." The reversal is a new payout
in the opposite direction, linked both ways (`original_payout` on the new one, `reversed_by` on
the original); its balance transaction returns the original's amount to the account's balance.

Undocumented, as the sandbox does it: only a `paid` payout is reversed; the reversal payout is
`paid` at once (the bank was debited), its balance transaction is a `payout` of +amount
(category `payout_reversal`) available at once, and events are `payout.created` and
`payout.paid` for the reversal, `payout.updated` for the original.
"""

from __future__ import annotations

from stripe_sandbox.errors import invalid
from stripe_sandbox.forms import Params, merge_metadata
from stripe_sandbox.store import Ctx, Handler, Obj, SandboxCore

REVERSIBLE_BANK_COUNTRIES = ("US", "CA")


class PayoutReversalsMixin(SandboxCore):
    def reverse_payout(self, ctx: Ctx, payout_id: str, p: Params) -> Obj:
        p.reject_unknown(("metadata",))
        payout = self.find("payout", payout_id, ctx.scope, "payout", "payout")
        self._check_reversible(ctx, payout)
        original_bt = self.objects[payout["balance_transaction"]]
        reversal_id = self.ids.new("po_")
        # The original's balance transaction, undone: in the balance's currency and amount.
        bt = self.book(
            ctx.scope,
            type_="payout",
            amount=-original_bt["amount"],
            currency=original_bt["currency"],
            source=reversal_id,
            category="payout_reversal",
            source_type=original_bt["_source_type"],
        )
        now = self.clock.now()
        public = {k: v for k, v in payout.items() if not k.startswith("_")}
        reversal = {
            **public,
            "id": reversal_id,
            "arrival_date": now,
            "automatic": False,
            "balance_transaction": bt["id"],
            "created": now,
            "description": None,
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "metadata": merge_metadata({}, p.metadata()),
            "original_payout": payout_id,
            "reconciliation_status": "not_applicable",
            "reversed_by": None,
            "status": "paid",
        }
        self.put(reversal, ctx.scope)
        payout["reversed_by"] = reversal_id
        self.emit("payout.created", reversal, ctx.scope)
        self.emit("payout.paid", reversal, ctx.scope)
        self.emit("payout.updated", payout, ctx.scope, {"reversed_by": None})
        return reversal

    def _check_reversible(self, ctx: Ctx, payout: Obj) -> None:
        if ctx.is_platform:
            raise invalid("You can only reverse payouts for connected accounts.", param="payout")
        if payout["original_payout"] is not None or payout["reversed_by"] is not None:
            raise invalid(f"Payout {payout['id']} has already been reversed.", param="payout")
        if payout["status"] != "paid":
            raise invalid(
                f"Payout {payout['id']} is {payout['status']}; only a paid payout can be "
                "reversed (cancel a pending one).",
                param="payout",
            )
        bank = self.objects.get(payout["destination"]) or {}
        if bank.get("country") not in REVERSIBLE_BANK_COUNTRIES:
            raise invalid(
                "At this time, you can only reverse payouts for connected accounts to US and "
                "Canadian bank accounts.",
                param="payout",
            )


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    (
        "POST",
        "/v1/payouts/{payout}/reverse",
        lambda st, c, p, payout: st.reverse_payout(c, payout, p),
    ),
]
