"""`SandboxState`: the whole in-memory Stripe, its clock, and what moving the clock does.

All reads and writes take one lock (`state.lock`); webhook deliveries are sent outside it, so a
receiver may call back into the sandbox while it is being delivered to.
"""

from __future__ import annotations

from typing import Any

from stripe_sandbox.accounts import AccountsMixin
from stripe_sandbox.captures import CapturesMixin
from stripe_sandbox.clock import day_start
from stripe_sandbox.disputes import DisputesMixin
from stripe_sandbox.errors import bad_param, missing
from stripe_sandbox.faults import Faults
from stripe_sandbox.forms import Params
from stripe_sandbox.payments import PaymentsMixin
from stripe_sandbox.payout_reversals import PayoutReversalsMixin
from stripe_sandbox.payouts import PayoutsMixin
from stripe_sandbox.refund_failures import RefundFailuresMixin
from stripe_sandbox.requirements import RequirementsMixin
from stripe_sandbox.reserves import ReservesMixin
from stripe_sandbox.settings import DAY_S, SandboxSettings
from stripe_sandbox.store import Ctx, Handler, Obj
from stripe_sandbox.topup_failures import TopupFailuresMixin
from stripe_sandbox.transfers import TransfersMixin
from stripe_sandbox.webhooks import Outgoing, WebhooksMixin, post

ADVANCE_STEPS_MAX = 100_000


class SandboxState(
    AccountsMixin,
    RequirementsMixin,
    ReservesMixin,
    CapturesMixin,
    RefundFailuresMixin,
    TopupFailuresMixin,
    PayoutReversalsMixin,
    PaymentsMixin,
    TransfersMixin,
    PayoutsMixin,
    DisputesMixin,
    WebhooksMixin,
):
    """The sandbox's state. Construct it with settings; serve it with `create_sandbox_app`."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        super().__init__(settings or SandboxSettings())
        self.faults = Faults()  # Stripe's errors on demand (stripe_sandbox.faults)
        self._init_webhooks()
        self._make_platform()

    def reset(self) -> None:
        """Forgets everything: objects, events, deliveries, chaos; the clock restarts."""
        with self.lock:
            self.clock._reset()
            self._init_core()
            self._init_webhooks()
            self._make_platform()
            self.faults.clear()

    # --- balance ---------------------------------------------------------------------------------

    def retrieve_balance(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(())
        return self.balance_object(ctx.scope)

    def retrieve_balance_transaction(self, ctx: Ctx, bt_id: str) -> Obj:
        return self.find("balance_transaction", bt_id, ctx.scope, "balance transaction")

    def list_balance_transactions(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(
            (
                "type",
                "source",
                "payout",
                "currency",
                "created",
                "limit",
                "starting_after",
                "ending_before",
            )
        )
        type_, source = p.str("type"), p.str("source")
        currency = p.currency(required=False)
        payout = p.str("payout")
        if payout is not None:
            found = self.objects.get(payout)
            if found is None or found["object"] != "payout" or found["_owner"] != ctx.scope:
                raise missing("payout", payout, "payout")

        def keep(bt: Obj) -> bool:
            if type_ is not None and bt["type"] != type_:
                return False
            if source is not None and bt["source"] != source:
                return False
            if currency is not None and bt["currency"] != currency:
                return False
            # Undocumented: a payout's own BT is listed under `payout=` (automatic payouts list
            # every BT they swept as well; manual payouts only their own).
            return (
                payout is None
                or bt["_payout"] == payout
                or (bt["type"] == "payout" and bt["source"] == payout)
            )

        items = self.stored(ctx.scope, "balance_transaction")
        return self.page(items, p, "/v1/balance_transactions", "balance transaction", keep)

    # --- the clock -------------------------------------------------------------------------------

    def advance(self, seconds: int, *, deliver: bool = True) -> dict[str, Any]:
        """Moves the clock forward `seconds`, stopping at each instant where something happens
        (funds become available, a payout day starts, a task or a webhook is due) so that
        everything happens in order and at its own time. Returns what was done."""
        if seconds < 0:
            raise bad_param("seconds cannot be negative.", "seconds")
        totals = {"delivered": 0, "failed": 0}
        with self.lock:
            target = self.clock.now() + seconds
        for _ in range(ADVANCE_STEPS_MAX):
            with self.lock:
                step = self._next_instant(target, deliver)
                self.clock._move_to(step)
                self._run_instant()
                batch = self.take_due_deliveries() if deliver else []
            self._count(totals, self.send(batch))
            if step >= target:
                with self.lock:
                    pending = self.next_delivery_due()
                    return {
                        "now": self.clock.now(),
                        **totals,
                        "scheduled": len(self._deliveries),
                        "next_delivery_at": pending,
                    }
        raise RuntimeError(f"advance did not finish within {ADVANCE_STEPS_MAX} steps")

    def _next_instant(self, target: int, deliver: bool) -> int:
        now = self.clock.now()
        candidates = [self.next_task_due(), self.next_availability()]
        if deliver:
            candidates.append(self.next_delivery_due())
        if self.has_automatic_schedules():
            candidates.append(day_start(now) + DAY_S)
        later = [c for c in candidates if c is not None and now < c <= target]
        return min(later, default=target)

    def _run_instant(self) -> None:
        """Runs what is due now: availability (balance.available), automatic payouts at the
        start of a day, then scheduled tasks (funds they make available at once, such as a
        failed payout's, are announced after them). The clock acts: events carry no request."""
        now = self.clock.now()
        saved, self._request = self._request, None
        try:
            released = self.pop_newly_available()
            # `balance.available` "is not fired for negative transactions" (reference §2.2).
            self.announce_available(bt["_owner"] for bt in released if bt["net"] > 0)
            last_day = day_start(self._last_tick)
            day = last_day + DAY_S
            if day <= now and self.has_automatic_schedules():
                # One day at a time: `_next_instant` stops at each day start when schedules exist.
                for boundary in range(day, now + 1, DAY_S):
                    self.run_automatic_payouts(boundary)
            self.run_due_tasks()
            self.announce_available()
        finally:
            self._request = saved
        self._last_tick = now

    # --- webhooks --------------------------------------------------------------------------------

    def send(self, batch: list[Outgoing]) -> dict[str, int]:
        """Sends deliveries (call without holding the lock) and books their outcomes."""
        counts = {"delivered": 0, "failed": 0}
        for outgoing in batch:
            status, error = post(outgoing, self.settings.webhook_timeout_s)
            with self.lock:
                ok = self.record_delivery(outgoing, status, error)
            counts["delivered" if ok else "failed"] += 1
        return counts

    def flush(self) -> dict[str, Any]:
        """Delivers every webhook due now, synchronously."""
        with self.lock:
            batch = self.take_due_deliveries()
        counts = self.send(batch)
        with self.lock:
            return {
                **counts,
                "attempted": len(batch),
                "scheduled": len(self._deliveries),
                "next_delivery_at": self.next_delivery_due(),
            }

    @staticmethod
    def _count(totals: dict[str, int], counts: dict[str, int]) -> None:
        for key, value in counts.items():
            totals[key] += value


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/balance", SandboxState.retrieve_balance),
    ("GET", "/v1/balance_transactions", SandboxState.list_balance_transactions),
    (
        "GET",
        "/v1/balance_transactions/{bt}",
        lambda st, c, p, bt: st.retrieve_balance_transaction(c, bt),
    ),
]
