"""Reserves: funds held back from an account's available balance and released on a date.

Stripe's Reserves API (private preview; stripe-python 16.1 carries its objects `reserve.hold` and
`reserve.release`, balance transaction types `reserve_hold` / `reserve_release` and events
`reserve.hold.created`, `reserve.hold.updated`, `reserve.release.created`, but no service to
create them) lets a platform liable for losses hold part of a seller's funds. The sandbox places
a hold by a control, `POST /_sandbox/accounts/{id}/reserves` (`amount`, `currency`,
`release_after`), and releases it at `release_schedule.scheduled_release`: "midnight UTC of the
day after `release_after`" (Hold.ReleaseSchedule). Holds and releases are served at
`GET /v1/reserve/holds[/{id}]` and `GET /v1/reserve/releases/{id}`.

Each hold books a `reserve_hold` balance transaction of `-amount` on the account (available at
once, so its available balance drops), each release a `reserve_release` of `+amount`; the held
funds are in neither `available` nor `pending` meanwhile, so nothing pays them out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripe_sandbox.clock import day_start
from stripe_sandbox.errors import StripeApiError, bad_param, missing
from stripe_sandbox.forms import Params
from stripe_sandbox.settings import DAY_S
from stripe_sandbox.store import Ctx, Handler, Obj, SandboxCore

if TYPE_CHECKING:
    from stripe_sandbox.state import SandboxState

# Undocumented: the reporting category of reserve balance transactions; Stripe's `reserved_funds`
# (a risk reserve) reports as `risk_reserved_funds`, which these follow.
RESERVE_CATEGORY = "risk_reserved_funds"
# Undocumented: the prefix of hold ids (releases are `resrel_`, Release.reserve_release's example).
HOLD_PREFIX = "reshold_"
RELEASE_PREFIX = "resrel_"
AMOUNT_MAX = 99_999_999


class ReservesMixin(SandboxCore):
    def place_reserve(
        self, account: Obj, amount: int, currency: str, release_after: int | None
    ) -> Obj:
        now = self.clock.now()
        scheduled = None if release_after is None else day_start(max(release_after, now)) + DAY_S
        hold = {
            "id": self.ids.new(HOLD_PREFIX),
            "object": "reserve.hold",
            "amount": amount,
            "amount_releasable": amount,
            "created": now,
            "created_by": "application",
            "currency": currency,
            "destination": "risk_reserved",
            "is_releasable": True,
            "livemode": False,
            "metadata": {},
            "reason": "standalone",
            "release_details": [],
            "release_schedule": {"release_after": release_after, "scheduled_release": scheduled},
            "reserve_plan": None,
            "source_charge": None,
            "source_type": "card",
        }
        self.put(hold, account["id"])
        self.book(
            account["id"],
            type_="reserve_hold",
            amount=-amount,
            currency=currency,
            source=hold["id"],
            category=RESERVE_CATEGORY,
            description="Reserve hold",
        )
        self.emit("reserve.hold.created", hold, account["id"])
        if scheduled is not None:
            self.schedule(scheduled, "release_reserve", hold["id"])
        return hold

    def _task_release_reserve(self, hold_id: str) -> None:
        hold = self.objects[hold_id]
        amount = hold["amount_releasable"]
        if amount <= 0:
            return
        owner = hold["_owner"]
        release = {
            "id": self.ids.new(RELEASE_PREFIX),
            "object": "reserve.release",
            "amount": amount,
            "created": self.clock.now(),
            "created_by": "application",
            "currency": hold["currency"],
            "destination": "payments",
            "livemode": False,
            "metadata": {},
            "reason": "hold_expired",
            "released_at": self.clock.now(),
            "reserve_hold": hold_id,
            "reserve_plan": None,
            "source_transaction": None,
        }
        self.put(release, owner)
        self.book(
            owner,
            type_="reserve_release",
            amount=amount,
            currency=hold["currency"],
            source=release["id"],
            category=RESERVE_CATEGORY,
            description="Reserve release",
        )
        hold["amount_releasable"] = 0
        hold["is_releasable"] = False
        hold["release_details"].append({"amount": amount, "reserve_release": release["id"]})
        self.emit("reserve.release.created", release, owner)
        self.emit("reserve.hold.updated", hold, owner)

    def held_in_reserve(self, account_id: str, currency: str) -> int:
        """What the account's reserves hold now in `currency`."""
        return sum(
            hold["amount_releasable"]
            for hold in self.stored(account_id, "reserve.hold")
            if hold["currency"] == currency
        )

    def retrieve_reserve_hold(self, ctx: Ctx, hold_id: str) -> Obj:
        return self.find("reserve.hold", hold_id, ctx.scope, "reserve hold")

    def list_reserve_holds(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(("created", "limit", "starting_after", "ending_before"))
        holds = self.stored(ctx.scope, "reserve.hold")
        return self.page(holds, p, "/v1/reserve/holds", "reserve hold")

    def retrieve_reserve_release(self, ctx: Ctx, release_id: str) -> Obj:
        return self.find("reserve.release", release_id, ctx.scope, "reserve release")


def control(state: SandboxState, method: str, path: str, p: Params) -> Any:
    """`POST /_sandbox/accounts/{id}/reserves`: holds `amount` of its available `currency` funds
    until `release_after` (unix seconds; none: held until released some other way)."""
    parts = path.split("/")
    if method != "POST" or len(parts) != 5 or parts[4] != "reserves":
        raise StripeApiError(404, "invalid_request_error", f"Unrecognized sandbox route ({path}).")
    p.reject_unknown(("amount", "currency", "release_after"))
    amount = p.int("amount", required=True, minimum=1, maximum=AMOUNT_MAX)
    release_after = p.int("release_after", minimum=0)
    with state.lock:
        account = state.objects.get(parts[3])
        if account is None or account["object"] != "account":
            raise missing("account", parts[3], "account")
        currency = p.currency(required=False) or account["default_currency"]
        available = state.available(account["id"], currency)
        if amount is None or available < amount:
            # Undocumented: whether Stripe holds more than is available; the sandbox refuses.
            raise bad_param(
                f"The account has {available} {currency} available, less than {amount}.",
                "amount",
                "balance_insufficient",
            )
        hold = state.place_reserve(account, amount, currency, release_after)
        state.announce_available()
        return state.render(hold)


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/reserve/holds", lambda st, c, p: st.list_reserve_holds(c, p)),
    ("GET", "/v1/reserve/holds/{hold}", lambda st, c, p, hold: st.retrieve_reserve_hold(c, hold)),
    (
        "GET",
        "/v1/reserve/releases/{release}",
        lambda st, c, p, release: st.retrieve_reserve_release(c, release),
    ),
]
