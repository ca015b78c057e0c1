"""A Hypothesis state machine over the Ledger application, run on every supported store.

Rules send every command type, one by one and in batches, while a simulated clock moves forward.
Each command is valid by default and, about one time in four, breaks exactly one thing (an
amount that is invalid, over the limit or over what is available or left; an unknown or
uppercase currency; an unknown, unsuitable or closed account; a reused id; a bad key; a naive
instant). Bundles also hold ids that name nothing, and state makes other commands fail on their
own (payout transitions, disputes, closed accounts). After every step these invariants are checked:

* every journal entry sums to zero per currency, all books together sum to zero, and no two
  entries share an entry id;
* each Balance equals the journal's postings to its (owner, book, currency);
* refunds, transfers sourced from a charge and reversals of a transfer never exceed their whole,
  counted both by the aggregates and from their events;
* available funds are never negative right after a discretionary debit;
* a replayed command returns the first result and records nothing; a key reused with other
  parameters is refused and records nothing; a rejected command records nothing;
* every aggregate rebuilt from its events (and from its snapshot, and on SQL stores by a second,
  uncached Ledger) equals the live one;
* payouts only take the transitions in ``ledger.payouts.TRANSITIONS`` and are submitted to
  Stripe at most once.

Client-chosen ids (payment, transfer, payout, refund, reversal, fee refund, dispute and top-up
ids) are sometimes fresh and sometimes reused, on the same object or on another one, and keys are
sometimes not strings at all: all of that must be refused, alone, and record nothing.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger import commands as c
from ledger import holds, risk
from ledger.accounts import ConnectedAccount
from ledger.application import CommandResult, Ledger
from ledger.balances import Balance
from ledger.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidTransitionError,
    SluiceError,
)
from ledger.events import JournalEvent
from ledger.ids import balance_aggregate_id
from ledger.journal import AUTHORIZED, AVAILABLE, BALANCE_BOOKS, FX, RESERVED
from ledger.money import AMOUNT_MINOR_MAX
from ledger.payments import Payment
from ledger.payout_fx import PayoutConverted
from ledger.payouts import (
    CANCELED,
    FAILED,
    HELD,
    IN_TRANSIT,
    PAID,
    PENDING_STATUS,
    TRANSITIONS,
    Payout,
)
from ledger.splits import SplitPart
from ledger.transfers import Transfer
from tests.property.invariants import (
    check_balances_mirror_journal,
    check_books_conserved,
    check_entry_balanced,
    check_entry_id_unused,
    check_floor_after_discretionary_debit,
    check_payout_history,
    check_rebuilt_equals_live,
    check_same,
    check_within,
)
from tests.support import (
    PLATFORM,
    T0,
    aggregate_state,
    command_record,
    new_ledger,
    new_postgres_schema,
    uncached_ledger,
)

SELLERS = ("acct_s0", "acct_s1")  # opened with charges and payouts enabled
NEW_SELLERS = ("acct_s2", "acct_s3", "acct_s4")
NOBODY = "acct_nobody"
BAD_AMOUNTS = (0, -1, -2_500, 10.0, 99.5, True, "100", AMOUNT_MINOR_MAX + 1, 10**10)
BAD_CURRENCIES = ("USD", "Usd", "xyz", "")
META_KNOBS = ("empty_key", "long_key", "none_key", "int_key", "naive_instant")
FULL_SWEEP_EVERY = 10  # steps between checks of every aggregate, not only the ones just touched
PAYOUT_BUILDERS = (
    "mark_payout_in_transit",
    "mark_payout_paid",
    "fail_payout",
    "cancel_payout",
    "hold_payout",
)
PAYOUT_TARGETS: dict[type[c.Command], str] = {
    c.MarkPayoutInTransit: IN_TRANSIT,
    c.MarkPayoutPaid: PAID,
    c.FailPayout: FAILED,
    c.CancelPayout: CANCELED,
    c.HoldPayout: HELD,
}

T = TypeVar("T")
Draw = Callable[[st.SearchStrategy[Any]], Any]
Refs = dict[str, str]
# A store: (database URL, a factory of a second Ledger on it or None, cleanup), one per example.
Store = tuple[str, Callable[[Callable[[], datetime]], Ledger | None], Callable[[], None]]


def pick(draw: Draw, *options: tuple[int, T]) -> T:
    """A weighted choice that shrinks towards the first (the ordinary) option."""
    index = draw(st.integers(min_value=0, max_value=sum(w for w, _ in options) - 1))
    for weight, value in options:
        if index < weight:
            return value
        index -= weight
    raise AssertionError("unreachable")


def share(draw: Draw, whole: int | None) -> int:
    """A valid amount: some of ``whole`` when there is any, else a small one."""
    if whole is None or whole <= 0:
        return draw(st.integers(min_value=1, max_value=5_000))
    return pick(
        draw,
        (4, max(1, whole * draw(st.integers(min_value=1, max_value=100)) // 100)),
        (1, whole),
        (1, min(whole, draw(st.integers(min_value=1, max_value=300)))),
    )


def over(draw: Draw, whole: int | None) -> int:
    """Just more than ``whole`` (more than is available, left to refund, to reverse…)."""
    return max(1, whole or 0) + draw(st.integers(min_value=1, max_value=1_000))


def charge_amount(draw: Draw, currency: str) -> int:
    amount = pick(
        draw,
        (8, draw(st.integers(min_value=50, max_value=50_000))),
        (1, draw(st.integers(min_value=50_001, max_value=AMOUNT_MINOR_MAX))),
    )
    return max(10, amount - amount % 10) if currency == "kwd" else amount


def good_currency(draw: Draw) -> str:
    return pick(draw, (5, "usd"), (3, "jpy"), (1, "kwd"))


class LedgerMachine(RuleBasedStateMachine):
    accounts = Bundle("accounts")  # every account id: the platform, sellers, one that is unknown
    sellers = Bundle("sellers")  # connected accounts that were opened
    payments = Bundle("payments")
    transfers = Bundle("transfers")
    payouts = Bundle("payouts")

    def __init__(self, open_store: Callable[[], Store]) -> None:
        super().__init__()
        self.now = T0
        url, second_ledger, self._cleanup = open_store()
        try:
            self.app = new_ledger(url, lambda: self.now)
            self.reader = second_ledger(lambda: self.now)
        except BaseException:
            self._cleanup()
            raise
        self.serial = itertools.count(1)
        self.steps = 0
        self.last_position = 0
        self.accepted: list[tuple[c.Command, CommandResult]] = []
        self.accepted_ids: dict[str, dict[str, str]] = {}
        self.rejected: dict[str, c.Command] = {}
        self.transfer_keys: set[str] = set()  # keys that named a transfer (its id derives from it)
        # Client-chosen ids taken so far, by kind (a result's ids use the same names).
        self.used_ids: dict[str, set[str]] = {
            kind: set() for kind in ("refund", "reversal", "fee_refund", "dispute", "topup")
        }
        self.payout_model: dict[str, list[str]] = {}
        self.submitted: dict[str, str] = {}  # payout id → Stripe's po_ id
        # Authorization holds: payment id → [account, currency, amount, expires_at, status].
        self.hold_model: dict[str, list[Any]] = {}
        # What exists, and what the events say, as they are recorded: the independent side.
        self.opened_sellers: set[str] = set()
        self.payment_ids: set[str] = set()
        self.transfer_ids: set[str] = set()
        self.balance_keys: set[tuple[str, str]] = set()
        self.balance_ids: set[UUID] = set()
        self.refunded_per_event: dict[UUID, int] = defaultdict(int)
        self.sourced_per_event: dict[str, int] = defaultdict(int)
        self.reversed_per_event: dict[UUID, int] = defaultdict(int)
        self.transfer_books: dict[UUID, set[str]] = {}
        self.discretionary_posts: list[tuple[UUID, int]] = []
        self.all_ids: set[UUID] = set()
        self.touched: set[UUID] = set()
        self.entry_ids: set[str] = set()
        self.per_currency: dict[str, int] = {}  # running sums of every posting recorded
        self.per_book: dict[tuple[str, str, str], int] = {}
        self._totals: tuple[int, dict[str, int], dict[tuple[str, str, str], int]] | None = None
        setup: list[c.Command] = [
            c.OpenAccount(**self._key(), account_id=PLATFORM, kind="platform")
        ]
        for seller in SELLERS:
            setup.append(c.OpenAccount(**self._key(), account_id=seller))
            setup.append(
                c.UpdateAccount(
                    **self._key(), account_id=seller, charges_enabled=True, payouts_enabled=True
                )
            )
        assert all(result.ok for result in self._run(setup))

    def teardown(self) -> None:
        try:
            self.app.close()
            if self.reader is not None:
                self.reader.close()
        finally:
            self._cleanup()

    # Plumbing ---------------------------------------------------------------------------------

    def _key(self) -> dict[str, Any]:
        return {"idempotency_key": f"k{next(self.serial)}", "effective_at": self.now}

    def _knob(self, draw: Draw, *knobs: str) -> str | None:
        """None (a valid command) three times in four, else the one thing to get wrong."""
        options = (*knobs, *META_KNOBS)
        return pick(draw, (3 * len(options), None), *((1, knob) for knob in options))

    def _meta(self, draw: Draw, knob: str | None) -> dict[str, Any]:
        meta = self._key()
        if knob == "empty_key":
            meta["idempotency_key"] = ""
        elif knob == "long_key":
            meta["idempotency_key"] = "k" * 256
        elif knob == "none_key":
            meta["idempotency_key"] = None
        elif knob == "int_key":
            meta["idempotency_key"] = next(self.serial)
        elif knob == "naive_instant":
            meta["effective_at"] = self.now.replace(tzinfo=None)
        elif pick(draw, (9, False), (1, True)):
            meta["effective_at"] = self.now - timedelta(hours=draw(st.integers(1, 72)))  # backdated
        return meta

    def _fresh_id(self, prefix: str) -> str:
        return f"{prefix}_m{next(self.serial)}"

    def _reused(self, draw: Draw, taken: dict[str, Any], kind: str) -> str:
        """An id already used, by this object or by any other: refused, ledger-wide."""
        same_object = next(iter(taken), None)
        if same_object is not None and draw(st.booleans()):
            return same_object
        used = sorted(self.used_ids[kind])
        return draw(st.sampled_from(used)) if used else f"{kind}_shared"

    def _run(self, commands: list[c.Command]) -> list[CommandResult]:
        """Executes one batch and checks what it recorded against what it reported."""
        mark = self.last_position
        results = self.app.execute_batch(commands)
        new = list(self.app.iter_events(after=mark))
        recorded = [r for r in results if r.ok and not r.replayed]
        if not recorded:
            assert not new, f"nothing was accepted, yet {len(new)} events were recorded"
        else:
            positions = [r.position for r in recorded]
            assert all(p is not None and p > mark for p in positions), positions
            assert max(p for p, _ in new) == max(positions)  # type: ignore[type-var]
        # A command rejected early in a batch may be accepted later in it under the same key
        # (a retry after the funds arrived): its key is then rightly remembered.
        accepted_here = {r.idempotency_key for r in recorded}
        for command, result in zip(commands, results, strict=True):
            self._check_result(command, result, accepted_here)
        self._absorb(new)
        if len(commands) == 1 and recorded:
            self._check_discretionary_debit(commands[0], results[0])
        return results

    def _check_result(
        self, command: c.Command, result: CommandResult, accepted_here: set[str]
    ) -> None:
        key = command.idempotency_key
        assert result.idempotency_key == key and result.command == command.name
        if result.error is not None:
            assert isinstance(result.error, SluiceError)
            assert not isinstance(result.error, ConcurrencyError), result.error
            assert result.position is None and not result.ids
            fresh = isinstance(key, str) and 0 < len(key) <= 255 and key not in self.accepted_ids
            if fresh and key not in accepted_here:
                assert command_record(self.app, key) is None, f"rejected {key} was remembered"
                self.rejected[key] = command
        elif result.replayed:
            assert result.position is None
            assert result.ids == self.accepted_ids[key]
        else:
            assert key not in self.accepted_ids, f"{key} was accepted twice"
            self.accepted.append((command, result))
            self.accepted_ids[key] = result.ids
            self.rejected.pop(key, None)
            if isinstance(command, c.CreateTransfer) and command.transfer_id is None:
                self.transfer_keys.add(key)
            for kind, ids in self.used_ids.items():
                if kind in result.ids:
                    ids.add(result.ids[kind])
        self._model_payout(command, result)

    def _model_payout(self, command: c.Command, result: CommandResult) -> None:
        if result.replayed:
            return
        if isinstance(command, c.RequestPayout) and result.ok:
            self.payout_model[result.ids["payout"]] = ["pending"]
        if isinstance(command, c.SubmitPayout) and command.payout_id in self.payout_model:
            before = self.submitted.get(command.payout_id)
            if result.ok:
                assert before is None, f"payout {command.payout_id} was submitted twice"
                self.submitted[command.payout_id] = command.stripe_payout_id
                history = self.payout_model[command.payout_id]
                if history[-1] == HELD:  # Stripe took it after all: the hold ends
                    history.append(PENDING_STATUS)
            elif isinstance(result.error, InvalidTransitionError):
                assert before is not None, f"first submission of {command.payout_id} refused"
        target = PAYOUT_TARGETS.get(type(command))
        if target is None:
            return
        payout_id = getattr(command, "payout_id", None)
        history = self.payout_model.get(payout_id) if isinstance(payout_id, str) else None
        if history is None:
            assert not result.ok, f"a transition of unknown payout {payout_id} was accepted"
            return
        allowed = target in TRANSITIONS[history[-1]]
        if target == HELD:  # only what Stripe has not taken yet can be held
            allowed = allowed and payout_id not in self.submitted
        if result.ok:
            assert allowed, f"payout {payout_id} went from {history[-1]} to {target}"
            history.append(target)
        elif isinstance(result.error, InvalidTransitionError):
            assert not allowed, f"payout {payout_id}: {history[-1]} → {target} was refused"

    def _absorb(self, new: list[tuple[int, Any]]) -> None:
        for position, event in new:
            self.last_position = max(self.last_position, position)
            self.touched.add(event.originator_id)
            self.all_ids.add(event.originator_id)
            if isinstance(event, JournalEvent):
                postings = _postings(event)
                check_entry_balanced(event.entry_id, postings)
                check_entry_id_unused(event.entry_id, self.entry_ids)
                self.entry_ids.add(event.entry_id)
                for owner, book, amount_minor, cur in postings:
                    self.per_currency[cur] = self.per_currency.get(cur, 0) + amount_minor
                    key = (owner, book, cur)
                    self.per_book[key] = self.per_book.get(key, 0) + amount_minor
            if isinstance(event, ConnectedAccount.Opened):
                self.opened_sellers.add(event.account_id)
            elif isinstance(event, Payment.Captured):
                self.payment_ids.add(event.payment_id)
            elif isinstance(event, Payment.Refunded):
                self.refunded_per_event[event.originator_id] += event.amount_minor
            elif isinstance(event, Transfer.Created):
                self.transfer_ids.add(event.transfer_id)
                if event.source_payment_id is not None:
                    self.sourced_per_event[event.source_payment_id] += event.amount_minor
                self.transfer_books[event.originator_id] = {p[1] for p in _postings(event)}
            elif isinstance(event, Transfer.Reversed):
                self.reversed_per_event[event.originator_id] += event.amount_minor
            elif isinstance(event, Balance.Opened):
                self.balance_ids.add(event.originator_id)
                self.balance_keys.add((event.account_id, event.currency))
            elif isinstance(event, Balance.Posted) and event.discretionary:
                self.discretionary_posts.append((event.originator_id, event.originator_version))

    def _check_discretionary_debit(self, command: c.Command, result: CommandResult) -> None:
        """Right after a payout, a reversal or a transfer drawn on available funds, the debited
        balance still has available ≥ 0."""
        debited: tuple[str, str] | None = None
        if isinstance(command, c.RequestPayout) and not command.reported_by_stripe:
            debited = (command.account_id, command.currency)  # Stripe's own are facts
        elif isinstance(command, c.ReverseTransfer | c.CreateTransfer):
            transfer = self.app.get_transfer(result.ids["transfer"])
            assert transfer is not None
            if isinstance(command, c.ReverseTransfer):
                debited = (transfer.destination_account_id, transfer.currency)
            elif AVAILABLE in self.transfer_books[transfer.id]:
                debited = (transfer.source_account_id, transfer.currency)
        if debited is not None:
            balance = self.app.get_balance(*debited)
            assert balance is not None
            check_floor_after_discretionary_debit(
                f"{command.name} on {debited}", balance.available_minor
            )

    def _payment(self, payment_id: str) -> Payment | None:
        return self.app.get_payment(payment_id)

    def _available(self, account_id: str, currency: str) -> int | None:
        balance = self.app.get_balance(account_id, currency)
        return balance.available_minor if balance is not None else None

    # Command builders, shared by the single-command rules and the batch rule -----------------

    def build_open_account(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "exists", "bad_id", "platform_kind", "bad_kind", "currency")
        account_id = pick(
            draw, (2, f"acct_n{next(self.serial)}"), (1, draw(st.sampled_from(NEW_SELLERS)))
        )
        if knob == "exists":
            account_id = refs["seller"]
        elif knob == "bad_id":
            account_id = "seller_x"
        return c.OpenAccount(
            **self._meta(draw, knob),
            account_id=account_id,
            kind={"platform_kind": "platform", "bad_kind": "vendor"}.get(knob or "", "connected"),
            default_currency="USD" if knob == "currency" else good_currency(draw),
        )

    def build_update_account(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "flag", "status", "capability", "bank_status")
        flag = st.sampled_from([True, True, None, False])
        bank = pick(draw, (6, None), (2, "verified"), (1, "errored"))
        return c.UpdateAccount(
            external_account_status="broken" if knob == "bank_status" else bank,
            **self._meta(draw, knob),
            account_id=refs["account"],
            charges_enabled=draw(flag),
            payouts_enabled="yes" if knob == "flag" else draw(flag),
            verification_status="approved"
            if knob == "status"
            else pick(draw, (2, None), (1, "verified")),
            capabilities={"transfers": "on" if knob == "capability" else "active"},
        )

    def build_set_payout_schedule(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "interval", "delay", "anchor", "minimum")
        interval = pick(draw, (4, "daily"), (2, "manual"), (2, "weekly"), (1, "monthly"))
        return c.SetPayoutSchedule(
            **self._meta(draw, knob),
            account_id=refs["account"],
            interval="hourly" if knob == "interval" else interval,
            delay_days=pick(draw, (1, -1), (1, 400))
            if knob == "delay"
            else draw(st.integers(0, 3)),
            weekly_anchor="friday" if interval == "weekly" or knob == "anchor" else None,
            monthly_anchor=15 if interval == "monthly" else None,
            minimum_minor={"usd": -5}
            if knob == "minimum"
            else pick(draw, (3, None), (1, {"usd": 500})),
        )

    def build_close_account(self, draw: Draw, refs: Refs) -> c.Command:
        # Mostly sellers opened along the way, rarely the two funded ones or the platform
        # (a closed platform stops nearly everything).
        opened = sorted(self.opened_sellers - {*SELLERS, PLATFORM})
        account_id = pick(
            draw,
            (6, draw(st.sampled_from(opened)) if opened else refs["seller"]),
            (2, refs["seller"]),
            (1, refs["account"]),
        )
        return c.CloseAccount(**self._meta(draw, self._knob(draw)), account_id=account_id)

    def build_record_payment(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(
            draw,
            "charge_type",
            "currency",
            "amount",
            "kwd_digit",
            "fee",
            "app_fee",
            "transfer_amount",
            "account",
            "separate_with_account",
            "split",
            "split_on_destination",
            "reuse_id",
            "naive_available_on",
            "transfer_id_clash",
            "transfer_id_on_separate",
        )
        charge_type = pick(draw, (1, "destination"), (1, "separate"), (1, "direct"))
        cur = good_currency(draw)
        amount = charge_amount(draw, cur)
        seller, other = refs["seller"], refs["other"]
        params: dict[str, Any] = {
            "charge_type": charge_type,
            "currency": cur,
            "amount_minor": amount,
            "stripe_fee_minor": pick(draw, (1, 0), (3, min(amount, amount * 29 // 1_000 + 30))),
            "available_on": pick(
                draw, (1, None), (1, self.now + timedelta(hours=draw(st.integers(-48, 96))))
            ),
            "payment_id": pick(draw, (3, None), (1, self._fresh_id("py"))),
        }
        if charge_type in ("direct", "destination"):
            params["account_id"] = seller
            params["application_fee_minor"] = pick(draw, (1, 0), (2, amount // 10))
            if params["application_fee_minor"] and pick(draw, (3, False), (1, True)):
                params["application_fee_id"] = self._fresh_id("fee")
            if charge_type == "destination":
                if pick(draw, (3, False), (1, True)):
                    params["transfer_id"] = self._fresh_id("tr")
                if params["application_fee_minor"] == 0 and draw(st.booleans()):
                    params["transfer_amount_minor"] = max(1, amount * 8 // 10)
                if pick(draw, (5, False), (1, True)):
                    params["on_behalf_of"] = seller
        else:
            parts = pick(
                draw,
                (1, ()),
                (2, (SplitPart(seller, share_bps=draw(st.integers(1, 10_000))),)),
                (
                    2,
                    (
                        SplitPart(seller, share_bps=draw(st.integers(1, 9_000))),
                        SplitPart(other, fixed_minor=draw(st.integers(1, amount // 2 + 1))),
                    ),
                ),
            )
            params["split"] = parts if seller != other else parts[:1]
        if knob == "charge_type":
            params["charge_type"] = "card"
        elif knob == "currency":
            params["currency"] = draw(st.sampled_from(BAD_CURRENCIES))
        elif knob == "amount":
            params["amount_minor"] = draw(st.sampled_from(BAD_AMOUNTS))
        elif knob == "kwd_digit":
            params |= {"currency": "kwd", "amount_minor": max(10, amount - amount % 10) + 5}
        elif knob == "fee":
            params["stripe_fee_minor"] = pick(draw, (1, amount + 1), (1, -1))
        elif knob == "app_fee" and charge_type != "separate":
            params["application_fee_minor"] = pick(draw, (1, amount + 1), (1, -1))
        elif knob == "app_fee":
            params["application_fee_minor"] = 10  # separate charges take no application fee
        elif knob == "transfer_amount":
            params |= {"charge_type": "destination", "account_id": seller}
            params |= {"application_fee_minor": 0, "transfer_amount_minor": amount + 1}
            params["split"] = ()
        elif knob == "account" and charge_type != "separate":
            params["account_id"] = pick(draw, (1, NOBODY), (1, PLATFORM), (1, None))
        elif knob in ("account", "separate_with_account"):
            params |= {"charge_type": "separate", "account_id": seller, "application_fee_minor": 0}
        elif knob == "split":
            params |= {"charge_type": "separate", "account_id": None, "application_fee_minor": 0}
            params["split"] = pick(
                draw,
                (1, (SplitPart(seller, share_bps=6_000), SplitPart(other, share_bps=5_000))),
                (1, (SplitPart(seller, fixed_minor=amount + 1),)),
                (1, (SplitPart(PLATFORM, share_bps=1_000),)),
                (1, (SplitPart(NOBODY, share_bps=1_000),)),
                (1, (SplitPart(seller, share_bps=100, fixed_minor=5),)),
            )
        elif knob == "split_on_destination":
            params |= {"charge_type": "destination", "account_id": seller}
            params["split"] = (SplitPart(other, share_bps=1_000),)
        elif knob == "reuse_id":
            params["payment_id"] = pick(draw, (3, refs["payment"]), (1, next(self.serial)))
        elif knob == "naive_available_on":
            params["available_on"] = self.now.replace(tzinfo=None)
        elif knob == "transfer_id_clash" and self.transfer_keys:
            # A payment id equal to an earlier transfer's key derives that transfer's id.
            params |= {"charge_type": "destination", "account_id": seller, "split": ()}
            params["payment_id"] = draw(st.sampled_from(sorted(self.transfer_keys)))
        elif knob == "transfer_id_clash":
            taken = sorted(self.transfer_ids)
            params |= {"charge_type": "destination", "account_id": seller, "split": ()}
            params["transfer_id"] = draw(st.sampled_from(taken)) if taken else "tr_nobody"
        elif knob == "transfer_id_on_separate":
            params |= {"charge_type": "separate", "account_id": None, "application_fee_minor": 0}
            params["transfer_id"] = self._fresh_id("tr")
        return c.RecordPayment(**self._meta(draw, knob), **params)

    def build_create_transfer(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "amount", "over", "currency", "destination", "reuse_id")
        payment = self._payment(refs["payment"])
        sourced = payment is not None and payment.charge_type == "separate" and draw(st.booleans())
        params: dict[str, Any] = {
            "destination_account_id": refs["seller"],
            "transfer_id": pick(draw, (3, None), (1, self._fresh_id("tr"))),
        }
        if sourced:
            assert payment is not None
            left = payment.amount_minor - payment.sourced_minor
            params |= {"source_payment_id": payment.payment_id, "currency": payment.currency}
        else:
            cur = good_currency(draw)
            left = self._available(PLATFORM, cur)
            params["currency"] = cur
        params["amount_minor"] = share(draw, left)
        if knob == "amount":
            params["amount_minor"] = draw(st.sampled_from(BAD_AMOUNTS))
        elif knob == "over":
            params["amount_minor"] = over(draw, left)
        elif knob == "currency" and sourced:
            params["currency"] = "jpy" if params["currency"] != "jpy" else "usd"  # mismatch
        elif knob == "currency":
            params["currency"] = draw(st.sampled_from(BAD_CURRENCIES))
        elif knob == "destination":
            params["destination_account_id"] = pick(draw, (1, PLATFORM), (1, NOBODY))
        elif knob == "reuse_id":
            params["transfer_id"] = refs["transfer"]
        return c.CreateTransfer(**self._meta(draw, knob), **params)

    def build_reverse_transfer(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "amount", "over", "reuse_id")
        transfer = self.app.get_transfer(refs["transfer"])
        left = transfer.reversible_minor if transfer is not None else None
        reversal_id = pick(draw, (3, None), (1, self._fresh_id("trr")))
        if knob == "reuse_id":
            reversal_id = self._reused(draw, transfer.reversals if transfer else {}, "reversal")
        amount_minor = pick(draw, (1, None), (3, share(draw, left)))
        if knob == "amount":
            amount_minor = draw(st.sampled_from(BAD_AMOUNTS))
        elif knob == "over":
            amount_minor = over(draw, left)
        return c.ReverseTransfer(
            **self._meta(draw, knob),
            transfer_id=refs["transfer"],
            amount_minor=amount_minor,
            reversal_id=reversal_id,
        )

    def build_refund_payment(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "amount", "over", "flag", "reverse", "fee", "reuse_id", "facts")
        payment = self._payment(refs["payment"])
        left = payment.refundable_minor() if payment is not None else None
        destination = payment is not None and payment.charge_type == "destination"
        has_fee = payment is not None and payment.application_fee_minor > 0
        reverse: Any = destination and pick(draw, (2, True), (1, False))
        refund_fee = has_fee and (reverse or not destination) and draw(st.booleans())
        amount_minor = pick(draw, (1, None), (3, share(draw, left)))
        if knob == "amount":
            amount_minor = draw(st.sampled_from(BAD_AMOUNTS))
        elif knob == "over":
            amount_minor = over(draw, left)
        elif knob == "flag":
            reverse = "yes"
        elif knob == "reverse":
            reverse = not destination
        elif knob == "fee":
            refund_fee = not has_fee or (destination and not reverse)
        refund_id = pick(draw, (3, None), (1, self._fresh_id("re")))
        if knob == "reuse_id":
            refund_id = self._reused(draw, payment.refunds if payment else {}, "refund")
        facts: dict[str, Any] = {}
        if payment is not None and pick(draw, (3, False), (1, True)):
            # Stripe reports the reversal and fee refund it made; Sluice records them as given.
            if reverse is True and payment.destination_transfer_id is not None:
                transfer = self.app.get_transfer(payment.destination_transfer_id)
                left_to_reverse = transfer.reversible_minor if transfer is not None else 0
                facts["reversal_minor"] = pick(
                    draw, (3, min(left_to_reverse, draw(st.integers(0, 500)))), (1, 0)
                )
                facts["reversal_id"] = pick(draw, (1, None), (1, self._fresh_id("trr")))
            fee_left = payment.application_fee_minor - payment.application_fee_refunded_minor
            if fee_left > 0 and draw(st.booleans()):
                facts["application_fee_refund_minor"] = draw(st.integers(0, fee_left))
        if knob == "facts":
            wrong = pick(draw, (1, "unasked"), (1, "negative"), (1, "fee_over"))
            if wrong == "unasked":
                facts, reverse = {"reversal_minor": 10}, False  # needs reverse_transfer
            elif wrong == "negative":
                facts, reverse = {"reversal_minor": -1}, True
            else:
                facts = {"application_fee_refund_minor": AMOUNT_MINOR_MAX}
        return c.RefundPayment(
            **self._meta(draw, knob),
            payment_id=refs["payment"],
            amount_minor=amount_minor,
            reverse_transfer=reverse,
            refund_application_fee=refund_fee,
            refund_id=refund_id,
            **facts,
        )

    def build_refund_application_fee(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "amount", "over", "reuse_id")
        payment = self._payment(refs["payment"])
        left = (
            payment.application_fee_minor - payment.application_fee_refunded_minor
            if payment is not None
            else None
        )
        amount_minor = pick(draw, (1, None), (3, share(draw, left)))
        fee_refund_id = pick(draw, (3, None), (1, self._fresh_id("fr")))
        if knob == "amount":
            amount_minor = draw(st.sampled_from(BAD_AMOUNTS))
        elif knob == "over":
            amount_minor = over(draw, left)
        elif knob == "reuse_id":
            fee_refund_id = self._reused(draw, payment.fee_refunds if payment else {}, "fee_refund")
        return c.RefundApplicationFee(
            **self._meta(draw, knob),
            payment_id=refs["payment"],
            amount_minor=amount_minor,
            fee_refund_id=fee_refund_id,
        )

    def build_open_dispute(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "amount", "over", "fee", "reuse_id")
        payment = self._payment(refs["payment"])
        left = payment.refundable_minor() if payment is not None else None
        amount_minor = pick(draw, (1, None), (2, share(draw, left)))
        if knob == "amount":
            amount_minor = draw(st.sampled_from(BAD_AMOUNTS))
        elif knob == "over":
            amount_minor = over(draw, left)
        dispute_id = pick(draw, (3, None), (1, self._fresh_id("dp")))
        if knob == "reuse_id":
            dispute_id = self._reused(draw, {}, "dispute")
        return c.OpenDispute(
            **self._meta(draw, knob),
            payment_id=refs["payment"],
            amount_minor=amount_minor,
            fee_minor=-1 if knob == "fee" else pick(draw, (3, 1_500), (1, 0)),
            dispute_id=dispute_id,
        )

    def build_close_dispute(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "won")
        return c.CloseDispute(
            **self._meta(draw, knob),
            payment_id=refs["payment"],
            won="yes" if knob == "won" else draw(st.booleans()),
        )

    def build_release_funds(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "currency", "naive_until")
        until = self.now - timedelta(hours=pick(draw, (2, 0), (1, draw(st.integers(1, 72)))))
        return c.ReleaseFunds(
            **self._meta(draw, knob),
            account_id=refs["account"],
            currency=draw(st.sampled_from(BAD_CURRENCIES))
            if knob == "currency"
            else good_currency(draw),
            until=until.replace(tzinfo=None) if knob == "naive_until" else until,
        )

    def build_top_up(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "amount", "currency", "naive_available_on", "reuse_id")
        available_on = pick(
            draw, (2, None), (1, self.now + timedelta(hours=draw(st.integers(-24, 72))))
        )
        topup_id = pick(draw, (3, None), (1, self._fresh_id("tu")))
        if knob == "reuse_id":
            topup_id = self._reused(draw, {}, "topup")
        return c.TopUp(
            **self._meta(draw, knob),
            topup_id=topup_id,
            account_id=pick(draw, (2, PLATFORM), (1, refs["account"])),
            currency=draw(st.sampled_from(BAD_CURRENCIES))
            if knob == "currency"
            else good_currency(draw),
            amount_minor=(
                draw(st.sampled_from(BAD_AMOUNTS))
                if knob == "amount"
                else charge_amount(draw, "usd")
            ),
            available_on=(
                self.now.replace(tzinfo=None) if knob == "naive_available_on" else available_on
            ),
        )

    def build_request_payout(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(
            draw, "amount", "over", "currency", "account", "reuse_id", "reported_flag"
        )
        account_id = refs["seller"]
        funded = sorted(
            cur
            for acct, cur in self.balance_keys
            if acct == account_id and (self._available(acct, cur) or 0) > 0
        )
        cur = (
            pick(draw, (3, draw(st.sampled_from(funded))), (1, good_currency(draw)))
            if funded
            else good_currency(draw)
        )
        available = self._available(account_id, cur)
        params: dict[str, Any] = {
            "account_id": account_id,
            "currency": cur,
            "amount_minor": share(draw, available),
            "payout_id": pick(draw, (3, None), (1, self._fresh_id("po"))),
            # A payout Stripe made on its own: recorded as a fact, even past available funds.
            "reported_by_stripe": pick(draw, (9, False), (1, True)),
        }
        if knob == "reported_flag":
            params["reported_by_stripe"] = "yes"
        elif knob == "amount":
            params["amount_minor"] = draw(st.sampled_from(BAD_AMOUNTS))
        elif knob == "over":
            params["amount_minor"] = over(draw, available)
        elif knob == "currency":
            params["currency"] = draw(st.sampled_from(BAD_CURRENCIES))
        elif knob == "account":
            params["account_id"] = pick(draw, (1, NOBODY), (1, PLATFORM))  # platform: disabled
        elif knob == "reuse_id":
            params["payout_id"] = refs["payout"]
        return c.RequestPayout(**self._meta(draw, knob), **params)

    def build_submit_payout(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "stripe_id")
        stripe_id = "pay_x" if knob == "stripe_id" else self._fresh_id("po_stripe")
        return c.SubmitPayout(
            **self._meta(draw, knob), payout_id=refs["payout"], stripe_payout_id=stripe_id
        )

    def build_mark_payout_in_transit(self, draw: Draw, refs: Refs) -> c.Command:
        return c.MarkPayoutInTransit(**self._meta(draw, self._knob(draw)), payout_id=refs["payout"])

    def build_mark_payout_paid(self, draw: Draw, refs: Refs) -> c.Command:
        return c.MarkPayoutPaid(**self._meta(draw, self._knob(draw)), payout_id=refs["payout"])

    def build_fail_payout(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "failure_code")
        code = pick(draw, (1, ""), (1, "x" * 65)) if knob == "failure_code" else "account_closed"
        return c.FailPayout(**self._meta(draw, knob), payout_id=refs["payout"], failure_code=code)

    def build_cancel_payout(self, draw: Draw, refs: Refs) -> c.Command:
        return c.CancelPayout(**self._meta(draw, self._knob(draw)), payout_id=refs["payout"])

    def build_hold_payout(self, draw: Draw, refs: Refs) -> c.Command:
        knob = self._knob(draw, "reason_code")
        code = "api_key_expired"
        if knob == "reason_code":
            code = pick(draw, (1, ""), (1, "no such key"))
        return c.HoldPayout(
            **self._meta(draw, knob),
            payout_id=refs["payout"],
            reason_code=code,
            message="Expired API Key provided.",
        )

    BUILDERS: ClassVar[tuple[str, ...]] = (
        "open_account",
        "update_account",
        "set_payout_schedule",
        "close_account",
        "record_payment",
        "create_transfer",
        "reverse_transfer",
        "refund_payment",
        "refund_application_fee",
        "open_dispute",
        "close_dispute",
        "release_funds",
        "top_up",
        "request_payout",
        "submit_payout",
        "mark_payout_in_transit",
        "mark_payout_paid",
        "fail_payout",
        "cancel_payout",
        "hold_payout",
    )

    def _refs(self, draw: Draw, refs: Refs) -> Refs:
        """Bundle refs may name nothing (they start with such ids) or objects made in batches
        may be missing from them: three times in four, use an object known to exist."""
        open_payouts = [p for p, history in self.payout_model.items() if TRANSITIONS[history[-1]]]
        known = {
            "payment": self.payment_ids,
            "transfer": self.transfer_ids,
            "payout": open_payouts or self.payout_model.keys(),
        }
        for name, ids in known.items():
            if name in refs and ids and pick(draw, (3, True), (1, False)):
                refs[name] = draw(st.sampled_from(sorted(ids)))
        return refs

    def _one(self, kind: str, data: st.DataObject, **refs: str) -> CommandResult:
        builder: Callable[[Draw, Refs], c.Command] = getattr(self, f"build_{kind}")
        [result] = self._run([builder(data.draw, self._refs(data.draw, refs))])
        return result

    # Setup: bundles start with the opened accounts and with ids that name nothing; sometimes
    # the platform and the sellers start with funds and a few payments ---------------------------

    @initialize(target=accounts)
    def known_accounts(self) -> Any:
        return multiple(*SELLERS, PLATFORM, NOBODY)

    @initialize(target=sellers)
    def known_sellers(self) -> Any:
        return multiple(*SELLERS)

    @initialize(target=transfers)
    def unknown_transfer(self) -> str:
        return "tr_nobody"

    @initialize(target=payouts)
    def unknown_payout(self) -> str:
        return "po_nobody"

    @initialize(target=payments, funded=st.booleans())
    def opening_payments(self, funded: bool) -> Any:
        if not funded:
            return "py_nobody"
        s0, s1 = SELLERS
        commands: list[c.Command] = [
            c.TopUp(**self._key(), account_id=PLATFORM, currency=cur, amount_minor=1_000_000)
            for cur in ("usd", "jpy")
        ]
        for params in (
            {"charge_type": "destination", "account_id": s0, "application_fee_minor": 1_000},
            {"charge_type": "direct", "account_id": s1, "application_fee_minor": 500},
            {"charge_type": "separate", "split": (SplitPart(s0, share_bps=4_000),)},
        ):
            commands.append(
                c.RecordPayment(
                    **self._key(),
                    currency="usd",
                    amount_minor=10_000,
                    stripe_fee_minor=320,
                    available_on=self.now,
                    **params,
                )
            )
        results = self._run(commands)
        assert all(result.ok for result in results)
        self._release_everything_due()
        return multiple("py_nobody", *(r.ids["payment"] for r in results if "payment" in r.ids))

    # Rules: one per command -------------------------------------------------------------------

    @rule(targets=(accounts, sellers), seller=sellers, data=st.data())
    def open_account(self, seller: str, data: st.DataObject) -> Any:
        result = self._one("open_account", data, seller=seller)
        return result.ids["account"] if result.ok else multiple()

    @rule(account=accounts, data=st.data())
    def update_account(self, account: str, data: st.DataObject) -> None:
        self._one("update_account", data, account=account)

    @rule(account=accounts, data=st.data())
    def set_payout_schedule(self, account: str, data: st.DataObject) -> None:
        self._one("set_payout_schedule", data, account=account)

    @rule(seller=sellers, account=accounts, data=st.data())
    def close_account(self, seller: str, account: str, data: st.DataObject) -> None:
        self._one("close_account", data, seller=seller, account=account)

    @rule(target=payments, seller=sellers, other=sellers, payment=payments, data=st.data())
    def record_payment(self, seller: str, other: str, payment: str, data: st.DataObject) -> Any:
        result = self._one("record_payment", data, seller=seller, other=other, payment=payment)
        return result.ids["payment"] if result.ok else multiple()

    @precondition(lambda self: self.payment_ids)
    @rule(target=transfers, payment=payments)
    def transfers_of_a_payment(self, payment: str) -> Any:
        found = self._payment(payment)
        if found is None:
            return multiple()
        ids = list(found.sourced_transfers)
        if found.destination_transfer_id is not None:
            ids.append(found.destination_transfer_id)
        return multiple(*ids)

    @rule(target=transfers, seller=sellers, payment=payments, transfer=transfers, data=st.data())
    def create_transfer(self, seller: str, payment: str, transfer: str, data: st.DataObject) -> Any:
        result = self._one(
            "create_transfer", data, seller=seller, payment=payment, transfer=transfer
        )
        return result.ids["transfer"] if result.ok else multiple()

    @precondition(lambda self: self.transfer_ids)
    @rule(transfer=transfers, data=st.data())
    def reverse_transfer(self, transfer: str, data: st.DataObject) -> None:
        self._one("reverse_transfer", data, transfer=transfer)

    @precondition(lambda self: self.payment_ids)
    @rule(payment=payments, data=st.data())
    def refund_payment(self, payment: str, data: st.DataObject) -> None:
        self._one("refund_payment", data, payment=payment)

    @precondition(lambda self: self.payment_ids)
    @rule(payment=payments, data=st.data())
    def refund_application_fee(self, payment: str, data: st.DataObject) -> None:
        self._one("refund_application_fee", data, payment=payment)

    @precondition(lambda self: self.payment_ids)
    @rule(payment=payments, data=st.data())
    def open_dispute(self, payment: str, data: st.DataObject) -> None:
        self._one("open_dispute", data, payment=payment)

    @precondition(lambda self: self.payment_ids)
    @rule(payment=payments, data=st.data())
    def close_dispute(self, payment: str, data: st.DataObject) -> None:
        self._one("close_dispute", data, payment=payment)

    @rule(account=accounts, data=st.data())
    def release_funds(self, account: str, data: st.DataObject) -> None:
        self._one("release_funds", data, account=account)

    @rule(account=accounts, data=st.data())
    def top_up(self, account: str, data: st.DataObject) -> None:
        self._one("top_up", data, account=account)

    @rule(target=payouts, seller=sellers, payout=payouts, data=st.data())
    def request_payout(self, seller: str, payout: str, data: st.DataObject) -> Any:
        result = self._one("request_payout", data, seller=seller, payout=payout)
        return result.ids["payout"] if result.ok else multiple()

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def submit_payout(self, payout: str, data: st.DataObject) -> None:
        self._one("submit_payout", data, payout=payout)

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def mark_payout_in_transit(self, payout: str, data: st.DataObject) -> None:
        self._one("mark_payout_in_transit", data, payout=payout)

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def mark_payout_paid(self, payout: str, data: st.DataObject) -> None:
        self._one("mark_payout_paid", data, payout=payout)

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def fail_payout(self, payout: str, data: st.DataObject) -> None:
        self._one("fail_payout", data, payout=payout)

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def cancel_payout(self, payout: str, data: st.DataObject) -> None:
        self._one("cancel_payout", data, payout=payout)

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def hold_a_payout_then_submit_it(self, payout: str, data: st.DataObject) -> None:
        """Stripe did not take it (held), then took it on a later attempt: pending again."""
        refs = self._refs(data.draw, {"payout": payout})
        self._run([self.build_hold_payout(data.draw, refs)])
        self._run([self.build_submit_payout(data.draw, refs)])

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def move_a_payout_along(self, payout: str, data: st.DataObject) -> None:
        """Any of the four transitions on one payout (allowed or not), so payouts get deep into
        their life within one example: the model then says which ones must be refused."""
        kind = data.draw(st.sampled_from(sorted(PAYOUT_BUILDERS)))
        self._one(kind, data, payout=payout)

    @rule(
        account=accounts,
        seller=sellers,
        other=sellers,
        payment=payments,
        transfer=transfers,
        payout=payouts,
        data=st.data(),
    )
    def run_a_batch(
        self,
        account: str,
        seller: str,
        other: str,
        payment: str,
        transfer: str,
        payout: str,
        data: st.DataObject,
    ) -> None:
        """Several commands in one save(): each sees the ones before it; a rejected one is
        rejected alone. Sometimes a command comes twice in the batch (a replay)."""
        refs = {
            "account": account,
            "seller": seller,
            "other": other,
            "payment": payment,
            "transfer": transfer,
            "payout": payout,
        }
        kinds = data.draw(st.lists(st.sampled_from(self.BUILDERS), min_size=2, max_size=6))
        commands = [
            getattr(self, f"build_{kind}")(data.draw, self._refs(data.draw, dict(refs)))
            for kind in kinds
        ]
        if data.draw(st.booleans()):
            commands.append(commands[data.draw(st.integers(0, len(commands) - 1))])
        self._run(commands)

    @precondition(lambda self: self.payout_model)
    @rule(payout=payouts, data=st.data())
    def stripe_converts_a_payout(self, payout: str, data: st.DataObject) -> None:
        """Stripe converts a payout for a bank in another currency, at any rate and amount it
        says (a fact); sometimes a malformed one (another amount taken, the same currency)."""
        found = self.app.get_payout(payout)
        if not isinstance(found, Payout):
            return
        others = [cur for cur in ("usd", "eur", "jpy", "gbp") if cur != found.currency]
        bank_currency = pick(
            data.draw, (9, data.draw(st.sampled_from(others))), (1, found.currency)
        )
        taken = pick(data.draw, (9, found.amount_minor), (1, found.amount_minor + 1))
        fact = PayoutConverted(
            **self._key(),
            payout_id=payout,
            amount_minor=taken,
            bank_currency=bank_currency,
            bank_amount_minor=data.draw(st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX)),
            exchange_rate=data.draw(st.sampled_from(["0.9238", "1.0825", "151.3", "0.0066"])),
        )
        self._run([fact])  # type: ignore[list-item]

    @invariant()
    def conservation_per_currency_including_fx(self) -> None:
        """Each currency's books sum to zero (every_journal_entry_sums_to_zero…), and the fx
        book of each currency holds exactly the conversions of payouts still on their way or
        paid: what left in the payout's currency, less what went on in the bank's."""
        if self.steps % FULL_SWEEP_EVERY != 0 and not any(key[1] == FX for key in self.per_book):
            return
        expected: dict[str, int] = defaultdict(int)
        for payout_id in self.payout_model:
            found = self.app.get_payout(payout_id)
            converted = getattr(found, "bank_currency", None)
            if not isinstance(found, Payout) or converted is None:
                continue
            if found.status in ("failed", "canceled"):
                continue  # returned through fx: both sides undone
            expected[found.currency] += found.amount_minor
            expected[converted] -= found.bank_amount_minor
        _, per_book = self._journal_totals()
        fx = {cur: total for (owner, book, cur), total in per_book.items() if book == FX and total}
        assert fx == {cur: total for cur, total in expected.items() if total}, (fx, expected)

    @rule(hours=st.integers(min_value=1, max_value=96))
    def advance_clock(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule()
    def release_everything_due(self) -> None:
        self._release_everything_due()

    def _release_everything_due(self) -> None:
        self._run(
            [
                c.ReleaseFunds(**self._key(), account_id=account, currency=cur, until=self.now)
                for account, cur in sorted(self.balance_keys)
            ]
            or [c.ReleaseFunds(**self._key(), account_id=PLATFORM, currency="usd", until=self.now)]
        )

    # Authorization holds (ledger.holds): held amounts are authorized, never available ----------

    def _run_holds(self, messages: list[Any]) -> list[CommandResult]:
        """Runs hold facts and commands; they never move money in a balance book."""
        before = {k: v for k, v in self.per_book.items() if k[1] in BALANCE_BOOKS}
        results = self._run(messages)
        after = {k: v for k, v in self.per_book.items() if k[1] in BALANCE_BOOKS}
        assert before == after, "a hold posted to pending, available or reserved"
        return results

    @rule(seller=sellers, data=st.data())
    def authorize_a_payment(self, seller: str, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from((seller, PLATFORM)))
        currency = good_currency(data.draw)
        fact = holds.PaymentAuthorized(
            **self._key(),
            payment_id=self._fresh_id("ch_hold"),
            account_id=account,
            currency=currency,
            amount_minor=charge_amount(data.draw, currency),
            # Stripe's number (capture_before); short ones let the clock pass them.
            expires_at=self.now + timedelta(hours=data.draw(st.integers(1, 7 * 24))),
        )
        [result] = self._run_holds([fact])
        if result.ok:
            model = [account, currency, fact.amount_minor, fact.expires_at, "authorized"]
            self.hold_model[fact.payment_id] = model

    @precondition(lambda self: any(h[4] == "authorized" for h in self.hold_model.values()))
    @rule(data=st.data())
    def capture_or_release_a_hold(self, data: st.DataObject) -> None:
        """Sluice's capture is refused once the authorization expired; Stripe's is recorded."""
        held = sorted(p for p, h in self.hold_model.items() if h[4] == "authorized")
        payment_id = data.draw(st.sampled_from(held))
        _, _, amount, expires_at, _ = self.hold_model[payment_id]
        how = data.draw(st.sampled_from(("command", "stripe_capture", "canceled", "expired")))
        captured = share(data.draw, amount)
        message: Any
        if how == "command":
            message = holds.CaptureAuthorization(
                **self._key(), payment_id=payment_id, amount_minor=captured
            )
        elif how == "stripe_capture":
            message = holds.AuthorizationCaptured(
                **self._key(), payment_id=payment_id, amount_minor=captured
            )
        else:
            message = holds.AuthorizationReleased(**self._key(), payment_id=payment_id, reason=how)
        [result] = self._run_holds([message])
        expired = self.now >= expires_at
        if how == "command" and expired:
            assert isinstance(result.error, holds.AuthorizationExpiredError), result
            return
        assert result.ok, result
        if how == "stripe_capture" and expired:
            assert "expired" in result.ids["flagged"], result
        self.hold_model[payment_id][4] = how if how in holds.RELEASE_REASONS else "captured"

    @invariant()
    def holds_are_authorized_and_never_available(self) -> None:
        expected: dict[tuple[str, str], int] = defaultdict(int)
        for account, currency, amount, _, status in self.hold_model.values():
            if status == "authorized":
                expected[(account, currency)] += amount
        for (owner, book, currency), total in self.per_book.items():
            if book == AUTHORIZED:
                assert total == expected.get((owner, currency), 0), (owner, currency)
        for (account, currency), total in expected.items():
            assert self.per_book.get((account, AUTHORIZED, currency), 0) == total
            found = self._peek(holds.held_funds_aggregate_id(account, currency))
            assert isinstance(found, holds.HeldFunds)
            assert found.authorized_minor == total

    # Reserves (ledger.risk): held in the reserved book, never paid out, released by Stripe ---

    @property
    def reserve_model(self) -> dict[str, list[Any]]:
        """Reserve id → [account, currency, still held], as Stripe's facts say."""
        return self.__dict__.setdefault("_reserve_model", {})

    @rule(seller=sellers, data=st.data())
    def stripe_holds_a_reserve(self, seller: str, data: st.DataObject) -> None:
        """Stripe holds funds back (a fact: recorded even beyond what is available); sometimes
        under a reserve id already used, which is malformed and refused."""
        currency = good_currency(data.draw)
        taken = sorted(self.reserve_model)
        reused = taken and pick(data.draw, (9, False), (1, True))
        reserve_id = data.draw(st.sampled_from(taken)) if reused else self._fresh_id("resh")
        fact = risk.ReserveHeld(
            **self._key(),
            reserve_id=reserve_id,
            account_id=seller,
            currency=currency,
            amount_minor=charge_amount(data.draw, currency),
            release_after=self.now + timedelta(days=data.draw(st.integers(1, 90))),
        )
        [result] = self._run([fact])  # type: ignore[list-item]
        if reused:
            assert not result.ok, "a reserve id was held twice"
        elif result.ok:
            self.reserve_model[reserve_id] = [seller, currency, fact.amount_minor]

    @precondition(lambda self: any(r[2] > 0 for r in self.reserve_model.values()))
    @rule(data=st.data())
    def stripe_releases_a_reserve(self, data: st.DataObject) -> None:
        """All or part of what a reserve holds; more than it holds is refused (malformed)."""
        held = sorted(r for r, model in self.reserve_model.items() if model[2] > 0)
        reserve_id = data.draw(st.sampled_from(held))
        _, currency, remaining = self.reserve_model[reserve_id]
        amount = pick(data.draw, (9, share(data.draw, remaining)), (1, remaining + 10))
        if currency == "kwd":  # three-decimal amounts end in 0, as held ones do
            amount = max(10, amount - amount % 10)
        fact = risk.ReserveReleased(
            **self._key(),
            reserve_id=reserve_id,
            release_id=self._fresh_id("resrel"),
            amount_minor=amount,
        )
        [result] = self._run([fact])  # type: ignore[list-item]
        assert result.ok == (0 < amount <= remaining), result
        if result.ok:
            self.reserve_model[reserve_id][2] -= amount

    @precondition(lambda self: any(r[2] > 0 for r in self.reserve_model.values()))
    @rule(data=st.data())
    def a_payout_never_draws_on_reserved_funds(self, data: st.DataObject) -> None:
        """Sluice's payout of more than is available is refused however much is reserved."""
        held = sorted(r for r, model in self.reserve_model.items() if model[2] > 0)
        account, currency, _ = self.reserve_model[data.draw(st.sampled_from(held))]
        balance = self.app.get_balance(account, currency)
        assert balance is not None and balance.reserved_minor > 0
        over = max(balance.available_minor, 0) + data.draw(st.integers(1, balance.reserved_minor))
        over += -over % 10 if currency == "kwd" else 0  # three-decimal amounts end in 0
        if over > AMOUNT_MINOR_MAX:
            return
        [result] = self._run(
            [
                c.RequestPayout(
                    **self._key(), account_id=account, currency=currency, amount_minor=over
                )
            ]
        )
        assert not result.ok, f"a payout of {over} drew on reserved funds"
        found = self.app.get_account(account)
        # An account that can be paid out (open, payouts on, its bank account not errored)
        # is refused for funds; any other for what stops its payouts first.
        payable = found is not None and not found.closed and found.payouts_enabled
        if payable and found is not None and found.external_account_status != "errored":
            assert isinstance(result.error, InsufficientFundsError), result

    @invariant()
    def reserves_are_in_the_reserved_book_and_nowhere_else(self) -> None:
        expected: dict[tuple[str, str], int] = defaultdict(int)
        for account, currency, held in self.reserve_model.values():
            expected[(account, currency)] += held
        for (owner, book, currency), total in self.per_book.items():
            if book == RESERVED:
                assert total == expected.get((owner, currency), 0), (owner, currency)
        for (account, currency), total in expected.items():
            balance = self.app.get_balance(account, currency)
            assert balance is not None and balance.reserved_minor == total

    # Idempotency ------------------------------------------------------------------------------

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def repeat_an_accepted_command(self, data: st.DataObject) -> None:
        command, first = data.draw(st.sampled_from(self.accepted))
        mark = self.last_position
        # A retry comes later; the instant is not a parameter, so it is still the same command.
        [again] = self._run([replace(command, effective_at=self.now)])
        assert again.ok and again.replayed, again
        assert again.ids == first.ids
        assert again.position is None
        assert self.last_position == mark

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def reuse_a_key_with_other_parameters(self, data: st.DataObject) -> None:
        command, _ = data.draw(st.sampled_from(self.accepted))
        same_key = {"idempotency_key": command.idempotency_key, "effective_at": self.now}
        if data.draw(st.booleans()):
            other: c.Command = _with_other_parameters(command)
        elif isinstance(command, c.CloseAccount):
            other = c.OpenAccount(**same_key, account_id="acct_other")
        else:
            other = c.CloseAccount(**same_key, account_id=SELLERS[0])
        mark = self.last_position
        [result] = self._run([other])
        assert type(result.error) is IdempotencyConflictError, result
        assert result.error.code == "idempotency_conflict"
        assert self.last_position == mark

    @precondition(lambda self: self.rejected)
    @rule(data=st.data())
    def retry_a_rejected_command(self, data: st.DataObject) -> None:
        """A rejected command left nothing behind, not even its key: a retry runs afresh."""
        key = data.draw(st.sampled_from(sorted(self.rejected)))
        [result] = self._run([self.rejected[key]])
        assert not result.replayed

    # Invariants -------------------------------------------------------------------------------

    @invariant()
    def count_steps(self) -> None:
        self.steps += 1

    def _journal_totals(self) -> tuple[dict[str, int], dict[tuple[str, str, str], int]]:
        """``journal_totals()`` once per step (it reads the whole journal)."""
        if self._totals is None or self._totals[0] != self.last_position:
            self._totals = (self.last_position, *self.app.journal_totals())
        return self._totals[1], self._totals[2]

    @invariant()
    def every_journal_entry_sums_to_zero_and_all_books_balance(self) -> None:
        # Each new entry was checked as it was recorded (_absorb); now and then, all of them.
        if self.steps % FULL_SWEEP_EVERY == 0:
            seen: set[str] = set()
            for _, event in self.app.iter_journal():
                check_entry_balanced(event.entry_id, _postings(event))
                check_entry_id_unused(event.entry_id, seen)
                seen.add(event.entry_id)
        totals, per_book = self._journal_totals()
        assert totals == self.per_currency
        assert per_book == self.per_book
        check_books_conserved(totals)

    @invariant()
    def every_balance_equals_its_journal_postings(self) -> None:
        _, per_book = self._journal_totals()
        balances: dict[tuple[str, str], tuple[int, int, int]] = {}
        for balance_id in self.balance_ids:
            balance = self._peek(balance_id)
            assert isinstance(balance, Balance)
            assert balance.id == balance_aggregate_id(balance.account_id, balance.currency)
            assert sum(lot[1] for lot in balance.lots) == balance.pending_minor  # type: ignore[misc]
            balances[(balance.account_id, balance.currency)] = (
                balance.pending_minor,
                balance.available_minor,
                balance.reserved_minor,
            )
        check_balances_mirror_journal(balances, per_book)

    @invariant()
    def refunds_transfers_and_reversals_stay_within_their_whole(self) -> None:
        for aggregate_id in self._to_check():
            found = self._peek(aggregate_id)
            if isinstance(found, Payment):
                label = f"payment {found.payment_id}"
                check_within(f"{label} refunded", found.refunded_minor, found.amount_minor)
                check_same(
                    f"{label} refunded", found.refunded_minor, self.refunded_per_event[found.id]
                )
                check_same(f"{label} refunds", sum(found.refunds.values()), found.refunded_minor)
                sourced = self.sourced_per_event[found.payment_id]
                check_within(f"{label} transfers sourced", sourced, found.amount_minor)
                if found.charge_type == "separate":
                    check_same(f"{label} sourced", found.sourced_minor, sourced)
                check_within(
                    f"{label} fee refunded",
                    found.application_fee_refunded_minor,
                    found.application_fee_minor,
                )
                check_same(
                    f"{label} fee refunds",
                    sum(found.fee_refunds.values()),
                    found.application_fee_refunded_minor,
                )
            elif isinstance(found, Transfer):
                label = f"transfer {found.transfer_id}"
                reversed_minor = self.reversed_per_event[found.id]
                check_within(f"{label} reversed", found.reversed_minor, found.amount_minor)
                check_within(f"{label} reversed (events)", reversed_minor, found.amount_minor)
                check_same(f"{label} reversed", found.reversed_minor, reversed_minor)

    @invariant()
    def available_is_never_negative_after_a_discretionary_debit(self) -> None:
        for balance_id, version in self.discretionary_posts:
            then = self.app.repository.get(balance_id, version=version)
            assert isinstance(then, Balance)
            check_floor_after_discretionary_debit(
                f"{then.account_id} {then.currency} at version {version}", then.available_minor
            )
        self.discretionary_posts.clear()

    @invariant()
    def payouts_only_take_allowed_transitions(self) -> None:
        for payout_id, expected in self.payout_model.items():
            payout = self.app.get_payout(payout_id)
            assert isinstance(payout, Payout)
            statuses = [str(status) for status, _ in payout.history]
            check_payout_history(payout_id, statuses, TRANSITIONS, expected)
            assert payout.status == statuses[-1]
            assert payout.stripe_payout_id == self.submitted.get(payout_id)

    @invariant()
    def every_aggregate_rebuilt_from_its_events_equals_the_live_one(self) -> None:
        sweep = self.steps % FULL_SWEEP_EVERY == 0
        for aggregate_id in self._to_check():
            live = self._peek(aggregate_id)
            label = f"{type(live).__qualname__} {aggregate_id}"
            expected = aggregate_state(live)
            replayed = project_aggregate(None, self.app.events.get(aggregate_id))
            check_rebuilt_equals_live(label, expected, aggregate_state(replayed))
            if not sweep:
                continue
            # Now and then also through the snapshot store, and by a second, uncached Ledger.
            from_snapshot = self.app.repository.get(aggregate_id, version=live.version)
            check_rebuilt_equals_live(
                f"{label} (snapshot)", expected, aggregate_state(from_snapshot)
            )
            if self.reader is not None:
                elsewhere = self.reader.repository.get(aggregate_id)
                check_rebuilt_equals_live(f"{label} (reader)", expected, aggregate_state(elsewhere))
        self.touched.clear()

    def _peek(self, aggregate_id: UUID) -> Any:
        """The live aggregate, not a copy: only for reading."""
        return self.app.repository.get(aggregate_id, deepcopy_from_cache=False)

    def _to_check(self) -> set[UUID]:
        """The aggregates changed since the last step; every one of them now and then."""
        if self.steps % FULL_SWEEP_EVERY == 0:
            return set(self.all_ids)
        return set(self.touched)


def _postings(event: JournalEvent) -> list[tuple[str, str, int, str]]:
    return [(p.owner, p.book, p.amount_minor, p.currency) for p in event.entry_postings()]


def _with_other_parameters(command: c.Command) -> c.Command:
    amount_minor = getattr(command, "amount_minor", None)
    if isinstance(amount_minor, int) and not isinstance(amount_minor, bool):
        return replace(command, amount_minor=amount_minor + 1)  # type: ignore[call-arg]
    for name in ("payout_id", "transfer_id", "payment_id", "account_id"):
        value = getattr(command, name, None)
        if isinstance(value, str):
            return replace(command, **{name: f"{value}_other"})
    raise AssertionError(f"no parameter to change on {command}")


# Stores -----------------------------------------------------------------------------------------


def memory_store() -> Store:
    return "memory://", lambda clock: None, lambda: None


def sqlite_stores(directory: Path) -> Callable[[], Store]:
    counter = itertools.count()

    def open_store() -> Store:
        path = directory / f"ledger-{next(counter)}.db"
        url = f"sqlite:///{path}"
        return url, lambda clock: uncached_ledger(url, clock), lambda: path.unlink(missing_ok=True)

    return open_store


def postgres_stores(base_url: str) -> Callable[[], Store]:
    def open_store() -> Store:
        url, drop_schema = new_postgres_schema(base_url)
        return url, lambda clock: uncached_ledger(url, clock), drop_schema

    return open_store


def machine(open_store: Callable[[], Store]) -> Callable[[], LedgerMachine]:
    return lambda: LedgerMachine(open_store)


COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def test_ledger_state_machine_on_popo() -> None:
    run_state_machine_as_test(
        machine(memory_store),
        settings=settings(max_examples=100, stateful_step_count=50, **COMMON),
    )


def test_ledger_state_machine_on_sqlite(tmp_path: Path) -> None:
    run_state_machine_as_test(
        machine(sqlite_stores(tmp_path)),
        settings=settings(max_examples=30, stateful_step_count=40, **COMMON),
    )


@pytest.mark.postgres
def test_ledger_state_machine_on_postgres(postgres_url: str) -> None:
    run_state_machine_as_test(
        machine(postgres_stores(postgres_url)),
        settings=settings(max_examples=15, stateful_step_count=30, **COMMON),
    )
