"""The sandbox's in-memory core: objects as Stripe renders them, balance transactions, balances,
list pages, events, and the scheduler that the clock drives.

Objects are stored as the JSON Stripe returns, plus internal keys that start with `_` (owner,
sequence number, links) and are stripped when rendered. Every object belongs to one account (its
*owner*): requests see an object only under its owner's scope (the platform, or the account named
in `Stripe-Account`), as in Stripe.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from stripe_sandbox.clock import SandboxClock, day_start
from stripe_sandbox.errors import StripeApiError, bad_param, missing
from stripe_sandbox.forms import Params
from stripe_sandbox.ids import IdFactory
from stripe_sandbox.settings import DAY_S, SandboxSettings

Obj = dict[str, Any]

LIST_LIMIT_DEFAULT = 10
LIST_LIMIT_MAX = 100
TASKS_PER_INSTANT_MAX = 10_000

# BalanceTransaction.type → reporting_category (docs.stripe.com/reports/reporting-categories).
# `adjustment` has no fixed category: dispute / dispute_reversal are passed explicitly.
REPORTING_CATEGORIES = {
    "charge": "charge",
    "payment": "charge",
    "refund": "refund",
    "payment_refund": "refund",
    "transfer": "transfer",
    "transfer_refund": "transfer_reversal",
    "application_fee": "platform_earning",
    "application_fee_refund": "platform_earning_refund",
    "payout": "payout",
    "payout_cancel": "payout_reversal",
    "payout_failure": "payout_reversal",
    "topup": "topup",
    "topup_reversal": "topup_reversal",
    "stripe_fee": "fee",
}
SOURCE_TYPES = ("card", "bank_account")


@dataclass(frozen=True)
class RequestInfo:
    """The API request being served, for `event.request` (None when the clock acts)."""

    id: str
    idempotency_key: str | None


@dataclass
class Ctx:
    """One API request: the account it acts as (`scope`) and the platform's id."""

    scope: str
    platform_id: str
    request: RequestInfo

    @property
    def is_platform(self) -> bool:
        return self.scope == self.platform_id


# A route handler: (state, ctx, params, **path arguments) → the response object.
Handler = Callable[..., Any]


def fee_detail(
    amount: int, currency: str, type_: str, description: str, application: str | None = None
) -> Obj:
    return {
        "amount": amount,
        "application": application,
        "currency": currency,
        "description": description,
        "type": type_,
    }


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def list_object(data: list[Obj], url: str, has_more: bool = False) -> Obj:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


class SandboxCore:
    """State shared by every resource; the resource mixins in `SandboxState` add the verbs."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.clock = SandboxClock(settings.start_time)
        fixed = IdFactory(settings.seed)
        self.secret_key = settings.secret_key or fixed.fixed("sk_test_", "secret")
        self.platform_id = fixed.fixed("acct_", "platform")
        self.application_id = fixed.fixed("ca_", "platform")
        self._init_core()

    def _init_core(self) -> None:
        self.ids = IdFactory(self.settings.seed)
        self.objects: dict[str, Obj] = {}
        self._lists: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._seq = itertools.count()
        self._tasks: list[tuple[int, int, str, tuple[Any, ...]]] = []
        self._pending_bts: list[tuple[int, int, str]] = []
        self._available_now: set[str] = set()  # accounts given available funds, not yet told
        self._request: RequestInfo | None = None
        self._last_tick = self.clock.now()
        self.idempotency: dict[tuple[str, str], dict[str, Any]] = {}
        # Per account: (clock, balance transactions summed, their sums) for `balance_sums`.
        self._sums: dict[str, tuple[int, int, dict[tuple[str, str, str], int]]] = {}

    # --- objects -----------------------------------------------------------------------------

    def put(self, obj: Obj, owner: str) -> Obj:
        obj["_owner"] = owner
        obj["_seq"] = next(self._seq)
        self.objects[obj["id"]] = obj
        self._lists[(owner, obj["object"])].append(obj["id"])
        return obj

    def stored(self, owner: str, object_type: str) -> list[Obj]:
        """The owner's objects of one type, oldest first."""
        return [self.objects[i] for i in self._lists.get((owner, object_type), [])]

    def find(
        self, object_type: str, object_id: str, scope: str, kind: str, param: str = "id"
    ) -> Obj:
        obj = self.objects.get(object_id)
        if obj is None or obj["object"] != object_type or obj["_owner"] != scope:
            raise missing(kind, object_id, param)
        return obj

    def render(self, obj: Obj) -> Obj:
        rendered = _strip_internal(obj)
        hook = getattr(self, f"_render_{obj['object']}", None)
        if hook is not None:
            hook(obj, rendered)
        return rendered

    def _render_balance_transaction(self, obj: Obj, rendered: Obj) -> None:
        rendered["status"] = "available" if obj["available_on"] <= self.clock.now() else "pending"

    def _render_dispute(self, obj: Obj, rendered: Obj) -> None:
        rendered["balance_transactions"] = [self.render(self.objects[i]) for i in obj["_bt_ids"]]

    def _render_transfer(self, obj: Obj, rendered: Obj) -> None:
        rendered["reversals"] = self._embedded(
            obj["_reversal_ids"], f"/v1/transfers/{obj['id']}/reversals"
        )

    def _render_application_fee(self, obj: Obj, rendered: Obj) -> None:
        url = f"/v1/application_fees/{obj['id']}/refunds"
        rendered["refunds"] = self._embedded(obj["_refund_ids"], url)

    def _render_account(self, obj: Obj, rendered: Obj) -> None:
        url = f"/v1/accounts/{obj['id']}/external_accounts"
        rendered["external_accounts"] = self._embedded(obj["_external_ids"], url)

    def _embedded(self, ids: list[str], url: str) -> Obj:
        # Undocumented: embedded lists show at most 10 items, newest first, like a first page.
        newest_first = [self.render(self.objects[i]) for i in reversed(ids)]
        return list_object(newest_first[:LIST_LIMIT_DEFAULT], url, len(ids) > LIST_LIMIT_DEFAULT)

    # --- balance transactions and balances ---------------------------------------------------

    def book(
        self,
        account: str,
        *,
        type_: str,
        amount: int,
        currency: str,
        source: str | None,
        available_on: int | None = None,
        fee_details: Iterable[Obj] = (),
        category: str | None = None,
        description: str | None = None,
        source_type: str = "card",
    ) -> Obj:
        """Posts one balance transaction (`net = amount - fee`) on `account`."""
        now = self.clock.now()
        details = list(fee_details)
        fee = sum(detail["amount"] for detail in details)
        available_on = now if available_on is None else available_on
        bt = {
            "id": self.ids.new("txn_"),
            "object": "balance_transaction",
            "amount": amount,
            "available_on": available_on,
            "balance_type": "payments",
            "created": now,
            "currency": currency,
            "description": description,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": details,
            "net": amount - fee,
            "reporting_category": category or REPORTING_CATEGORIES[type_],
            "source": source,
            "status": "pending",
            "type": type_,
            "_source_type": source_type,
            "_payout": None,
        }
        self.put(bt, account)
        if available_on > now:
            heapq.heappush(self._pending_bts, (available_on, bt["_seq"], bt["id"]))
        elif bt["net"] > 0:
            # Funds available at once (a transfer from the available balance, bypassPending,
            # a payout failure, …) send `balance.available` too: Stripe's changelog 2015-07-28,
            # "Transfers that are immediately processed now trigger the balance.available
            # event". Negative transactions do not ("This event is not fired for negative
            # transactions"). Sent by `announce_available` once the request or clock step ends.
            self._available_now.add(account)
        return bt

    def settle_at(self, account_id: str, created: int, *, bypass_pending: bool = False) -> int:
        """When funds captured at `created` become available on `account_id`;
        `pm_card_bypassPending` makes them available at once."""
        # Undocumented: availability starts at 00:00 UTC of the capture day plus the account's
        # `delay_days` (Stripe publishes the delay, not the time of day).
        if bypass_pending:
            return created
        account = self.objects[account_id]
        delay_days = account["settings"]["payouts"]["schedule"]["delay_days"]
        return max(created, day_start(created) + delay_days * DAY_S)

    def balance_sums(self, account: str) -> dict[tuple[str, str, str], int]:
        """Σ net per (currency, status, source type). Kept per account and extended by the
        transactions booked since, while the clock stands still: summing them all on every
        payout made a run of n payouts on one account O(n²) (a fifth of the sandbox's time
        in the workers bench at 600). A booked transaction's amount, currency, source type and
        `available_on` never change; a clock move (statuses change) sums them all again."""
        now = self.clock.now()
        ids = self._lists.get((account, "balance_transaction"), [])
        at, counted, kept = self._sums.get(account, (now, 0, {}))
        sums: dict[tuple[str, str, str], int] = defaultdict(int)
        if at == now and counted <= len(ids):
            sums.update(kept)
        else:
            counted = 0
        for bt_id in ids[counted:]:
            bt = self.objects[bt_id]
            status = "available" if bt["available_on"] <= now else "pending"
            sums[(bt["currency"], status, bt["_source_type"])] += bt["net"]
        self._sums[account] = (now, len(ids), dict(sums))
        return sums

    def available(self, account: str, currency: str, source_type: str | None = None) -> int:
        sums = self.balance_sums(account)
        types = SOURCE_TYPES if source_type is None else (source_type,)
        return sum(sums.get((currency, "available", t), 0) for t in types)

    def balance_object(self, account: str) -> Obj:
        sums = self.balance_sums(account)
        default = self.objects[account]["default_currency"]
        currencies = sorted({key[0] for key in sums} | {default}, key=lambda c: (c != default, c))
        balance: Obj = {"object": "balance", "available": [], "livemode": False, "pending": []}
        for status in ("available", "pending"):
            for currency in currencies:
                by_type = {t: sums.get((currency, status, t), 0) for t in SOURCE_TYPES}
                # Stripe lists the source types that hold funds; card always appears.
                shown = {t: v for t, v in by_type.items() if v or t == "card"}
                balance[status].append(
                    {"amount": sum(by_type.values()), "currency": currency, "source_types": shown}
                )
        return balance

    # --- lists -----------------------------------------------------------------------------------

    def page(
        self,
        items: list[Obj],
        params: Params,
        url: str,
        kind: str,
        extra: Callable[[Obj], bool] | None = None,
    ) -> Obj:
        """A Stripe list page over `items` (oldest first): newest first, `created` filter,
        `limit` 1-100, cursors `starting_after` / `ending_before`, `has_more`."""
        limit = params.int("limit", default=LIST_LIMIT_DEFAULT, minimum=1, maximum=LIST_LIMIT_MAX)
        limit = LIST_LIMIT_DEFAULT if limit is None else limit
        selected = [o for o in items if _created_matches(o, params) and (extra is None or extra(o))]
        newest_first = sorted(selected, key=lambda o: o["_seq"], reverse=True)
        after, before = params.str("starting_after"), params.str("ending_before")
        if after is not None:
            cursor = self._cursor(after, "starting_after", kind)
            rest = [o for o in newest_first if o["_seq"] < cursor]
            data, has_more = rest[:limit], len(rest) > limit
        elif before is not None:
            cursor = self._cursor(before, "ending_before", kind)
            rest = [o for o in newest_first if o["_seq"] > cursor]
            data, has_more = rest[-limit:], len(rest) > limit
        else:
            data, has_more = newest_first[:limit], len(newest_first) > limit
        return list_object([self.render(o) for o in data], url, has_more)

    def _cursor(self, object_id: str, param: str, kind: str) -> int:
        obj = self.objects.get(object_id)
        if obj is None:
            raise missing(kind, object_id, param)
        seq: int = obj["_seq"]
        return seq

    # --- events ----------------------------------------------------------------------------------

    @contextmanager
    def serving(self, request: RequestInfo) -> Iterator[None]:
        """Events made while serving `request` carry its id and idempotency key; funds it made
        available are announced (`balance.available`) after its other events."""
        self._request = request
        try:
            yield
        finally:
            self.announce_available()
            self._request = None

    def announce_available(self, released: Iterable[str] = ()) -> None:
        """Sends `balance.available` once for each account that got available funds since the
        last call (booked available, or `released` from pending), with the balance as it is."""
        accounts, self._available_now = self._available_now | set(released), set()
        # Undocumented: an event for funds a request made available carries that request
        # (`request.id`); funds released by the clock carry none.
        for account in sorted(accounts):
            self.emit("balance.available", self.balance_object(account), account)

    def emit(self, type_: str, obj: Obj, owner: str, previous_attributes: Obj | None = None) -> Obj:
        """Records an event about `obj` (rendered now: `data.object` never changes later)."""
        data: Obj = {"object": self.render(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        request = self._request
        event: Obj = {
            "id": self.ids.new("evt_"),
            "object": "event",
            "api_version": self.settings.api_version,
            "created": self.clock.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {
                "id": request.id if request else None,
                "idempotency_key": request.idempotency_key if request else None,
            },
            "type": type_,
        }
        if owner != self.platform_id:
            event["account"] = owner
        self.put(event, owner)
        self._on_event(event)
        return event

    def _on_event(self, event: Obj) -> None:
        """Overridden by the state to queue webhook deliveries."""

    # --- scheduler -------------------------------------------------------------------------------

    def schedule(self, due: int, name: str, *args: Any) -> None:
        heapq.heappush(self._tasks, (due, next(self._seq), name, args))

    def next_task_due(self) -> int | None:
        return self._tasks[0][0] if self._tasks else None

    def next_availability(self) -> int | None:
        return self._pending_bts[0][0] if self._pending_bts else None

    def run_due_tasks(self) -> None:
        now = self.clock.now()
        for _ in range(TASKS_PER_INSTANT_MAX):
            if not self._tasks or self._tasks[0][0] > now:
                return
            _, _, name, args = heapq.heappop(self._tasks)
            getattr(self, f"_task_{name}")(*args)
        raise RuntimeError(f"more than {TASKS_PER_INSTANT_MAX} sandbox tasks at one instant")

    def pop_newly_available(self) -> list[Obj]:
        """Balance transactions whose `available_on` has passed since the last call."""
        now = self.clock.now()
        released = []
        while self._pending_bts and self._pending_bts[0][0] <= now:
            _, _, bt_id = heapq.heappop(self._pending_bts)
            released.append(self.objects[bt_id])
        return released


def _strip_internal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_internal(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_strip_internal(v) for v in value]
    return copy.copy(value)


def _created_matches(obj: Obj, params: Params) -> bool:
    return range_matches(obj.get("created"), params, "created")


def range_matches(value: Any, params: Params, key: str) -> bool:
    """Stripe's range filters: `key=<int>` or `key[gt|gte|lt|lte]=<int>`."""
    if not params.has(key):
        return True
    if not isinstance(value, int):
        return False
    raw = params.data[key]
    if isinstance(raw, str):
        exact = params.int(key)
        return value == exact
    bounds = params.nested(key)
    bounds.reject_unknown(("gt", "gte", "lt", "lte"))
    checks = {
        "gt": lambda b: value > b,
        "gte": lambda b: value >= b,
        "lt": lambda b: value < b,
        "lte": lambda b: value <= b,
    }
    for name, check in checks.items():
        bound = bounds.int(name)
        if bound is not None and not check(bound):
            return False
    return True


def require_platform(ctx: Ctx, what: str) -> None:
    if not ctx.is_platform:
        raise bad_param(f"{what} is only available to the platform (no Stripe-Account).", "id")


__all__ = [
    "Ctx",
    "Obj",
    "RequestInfo",
    "SandboxCore",
    "StripeApiError",
    "fee_detail",
    "list_object",
    "range_matches",
    "require_platform",
    "round_half_up",
]
