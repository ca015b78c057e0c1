"""Top-ups that fail or are reversed (`topup.failed`, `topup.reversed`).

A top-up pulls funds from the platform's bank account; the bank can refuse the debit before the
funds arrive (the top-up `failed`, with a `failure_code`) or return it after (`reversed`). Stripe
posts a `topup_reversal` balance transaction (-amount, category `topup_reversal`) beside the
top-up's own: for a failed top-up with the top-up's `available_on`, so the pending funds net to
zero and never become available; for a reversal at once, out of the available balance (which
may go negative). Undocumented: how Stripe dates a failed top-up's reversal transaction.

Triggers (not Stripe's; Stripe's test mode fails top-ups by their bank source):
`POST /_sandbox/topups/{id}/fail` (`failure_code`, default `insufficient_funds`) for a pending
top-up, `POST /_sandbox/topups/{id}/reverse` for a succeeded one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from stripe_sandbox.errors import StripeApiError, invalid
from stripe_sandbox.forms import Params
from stripe_sandbox.store import Obj, SandboxCore

if TYPE_CHECKING:
    from stripe_sandbox.state import SandboxState

FAILURE_MESSAGES = {
    "insufficient_funds": "The bank account has insufficient funds.",
    "account_closed": "The bank account has been closed.",
    "debit_not_authorized": "The bank did not authorize the debit.",
}


class TopupFailuresMixin(SandboxCore):
    def _reverse_topup(self, topup: Obj, available_on: int | None) -> Obj:
        return self.book(
            self.platform_id,
            type_="topup_reversal",
            amount=-topup["amount"],
            currency=topup["currency"],
            source=topup["id"],
            available_on=available_on,
            source_type="bank_account",
        )

    def fail_topup(self, topup: Obj, failure_code: str) -> Obj:
        if topup["status"] != "pending":
            raise invalid(f"Top-up {topup['id']} is {topup['status']}; only pending ones fail.")
        original = self.objects[topup["balance_transaction"]]
        self._reverse_topup(topup, max(self.clock.now(), original["available_on"]))
        topup.update(
            status="failed",
            failure_code=failure_code,
            failure_message=FAILURE_MESSAGES[failure_code],
        )
        self.emit("topup.failed", topup, self.platform_id)
        return topup

    def reverse_topup(self, topup: Obj) -> Obj:
        if topup["status"] != "succeeded":
            raise invalid(f"Top-up {topup['id']} is {topup['status']}; only succeeded reverse.")
        self._reverse_topup(topup, None)
        topup["status"] = "reversed"
        self.emit("topup.reversed", topup, self.platform_id)
        return topup


def control(state: SandboxState, method: str, path: str, p: Params) -> Any:
    found = re.fullmatch(r"POST /_sandbox/topups/([^/]+)/(fail|reverse)", f"{method} {path}")
    if found is None:
        raise StripeApiError(404, "invalid_request_error", f"Unrecognized sandbox route ({path}).")
    with state.lock:
        topup = state.objects.get(found.group(1))
        if topup is None or topup["object"] != "topup":
            raise invalid(f"No such topup: {found.group(1)}", code="resource_missing")
        if found.group(2) == "fail":
            p.reject_unknown(("failure_code",))
            code = p.choice("failure_code", FAILURE_MESSAGES, default="insufficient_funds")
            return state.render(state.fail_topup(topup, code or "insufficient_funds"))
        p.reject_unknown(())
        return state.render(state.reverse_topup(topup))
