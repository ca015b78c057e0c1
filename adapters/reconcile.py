"""`sluice reconcile`: Sluice's books beside Stripe's balance transactions, movement by movement.

For the platform and every connected account, one pass:

1. lists Stripe's balance transactions created since the account's cursor (auto-paginated,
   100 a page, at most ``BTS_PER_ACCOUNT_MAX``), and the ledger's own (the balance-transactions
   read model) over the same instants;
2. groups both sides by the Stripe object they belong to (a ``py_`` payment by its transfer, a
   destination's payment refund by its reversal, an application fee by the charge it was taken
   from: the same mapping the agreement property uses) and compares amount, fees, net,
   ``available_on`` and status; a group that differs is a break with a name
   (``ledger.reconciliation.BREAK_NAMES``), recorded with its clearing entry;
3. repairs what a lost webhook explains, through the webhook fold itself (``Folder.fold`` of the
   event Stripe would have sent: the object is refetched, translated and recorded as a fact;
   funds Stripe says are available are released as ``balance.available`` would). A movement
   Stripe made on its own is recorded as Stripe reports it (``StripeAdjustment``). Nothing else
   is changed: a mismatch is reported, never "fixed" by guessing;
4. compares again what it repaired, resolves the breaks whose two sides agree (the clearing
   entry is reversed) and moves the cursor to the oldest transaction still pending or broken.

Every listing, page and repair is bounded; a crash leaves the cursor where it was (resumable).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from adapters.settings import Settings
from adapters.stripe.folding import SLUICE_PAYOUT_METADATA_KEY, Folder, Ignored
from adapters.stripe.gateway import GatewayError, StripeGateway
from ledger import facts
from ledger import reconciliation as r
from ledger.application import Ledger
from ledger.errors import SluiceError
from ledger.instants import MICROS_PER_SECOND, from_seconds, micros_to_seconds
from ledger.limits import TEXT_LEN_MAX
from ledger.payouts import IN_TRANSIT, PENDING_STATUS
from projections import queries
from projections import reconciliation as recon_view
from projections.runner import Projector
from projections.store import ReadModel

BTS_PER_ACCOUNT_MAX = 100_000  # one account's balance transactions checked in one pass
LEDGER_ROWS_MAX = BTS_PER_ACCOUNT_MAX  # the ledger's side of the same window
REPAIRS_PER_PASS_MAX = 10_000  # folds one pass may run (each refetches a few objects)
RECORD_BATCH_MAX = 500  # breaks recorded in one save (the engine's batch bound is 1000)
READ_MODEL_WAIT_S = 30.0  # how long a pass waits for another projector to catch up
# Which webhook a lost one would have been, by the prefix of the Stripe object a group is about.
REPAIR_EVENTS = {
    "ch_": "charge.succeeded",
    "tr_": "transfer.updated",
    "re_": "refund.updated",
    "fee_": "application_fee.created",
    "dp_": "charge.dispute.updated",
    "po_": "payout.updated",
    "tu_": "topup.succeeded",
}
PLATFORM_OBJECTS = ("tr_", "fee_", "tu_")  # objects that live on the platform whatever the account
PAYOUT_TYPES = frozenset({"payout", "payout_failure", "payout_cancel"})
# Balance transactions Stripe makes on its own, with no object Sluice books behind them: recorded
# as reported (``StripeAdjustment``). An adjustment naming a dispute is the dispute's.
STRIPE_MADE_TYPES = frozenset(
    {
        "adjustment",
        "stripe_fee",
        "transfer_cancel",
        "contribution",
        "reserve_transaction",
        "tax_fee",
    }
)
APPLICATION_FEES_SCANNED_MAX = 10_000  # fees read to find the one a fee refund belongs to


@dataclass
class Side:
    """One side's balance transactions of one group, summed."""

    amount: int = 0
    fees: Counter[str] = field(default_factory=Counter)
    net: int = 0
    pending: int = 0
    available: int = 0
    timeline: Counter[tuple[int, int]] = field(default_factory=Counter)
    refs: list[str] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    pending_until: int | None = None  # the latest available_on of a pending transaction
    available_until: int | None = None  # the latest available_on of an available one

    def add(self, bt: dict[str, Any], fees: dict[str, int], amount: int, ref: str) -> None:
        net, created = int(bt["net"]), int(bt["created"])
        on = int(bt["available_on"] or created)
        self.amount += amount
        self.fees.update(fees)
        self.net += net
        # Funds available when made are available from then (an earlier available_on says no more).
        self.timeline[(created, max(on, created))] += net
        if bt["status"] == "pending":
            self.pending += net
            self.pending_until = max(self.pending_until or on, on)
        else:
            self.available += net
            self.available_until = max(self.available_until or on, on)
        self.refs.append(ref)
        self.created.append(created)

    def money(self) -> tuple[int, dict[str, int], int]:
        return self.amount, {k: v for k, v in sorted(self.fees.items()) if v}, self.net

    def when(self) -> dict[tuple[int, int], int]:
        return {k: v for k, v in sorted(self.timeline.items()) if v}


@dataclass
class Group:
    account: str  # Sluice's account id
    stripe_account: str | None  # Stripe-Account, None for the platform
    currency: str
    key: str  # the Stripe object, as Sluice names it
    stripe: Side = field(default_factory=Side)
    ledger: Side = field(default_factory=Side)
    stripe_bts: list[dict[str, Any]] = field(default_factory=list)

    def break_name(self) -> str | None:
        s, led = self.stripe, self.ledger
        if s.money() == led.money() and s.when() == led.when():
            if (s.pending, s.available) == (led.pending, led.available):
                return None
            return r.STATUS_MISMATCH
        if not led.refs:
            return r.MISSING_IN_LEDGER
        if not s.refs:
            return r.MISSING_AT_STRIPE
        if s.amount != led.amount:
            return r.AMOUNT_MISMATCH
        if s.money()[1] != led.money()[1]:
            return r.FEE_MISMATCH
        if s.net != led.net:
            return r.AMOUNT_MISMATCH  # amount and fees alike, net not: Stripe's own arithmetic
        return r.AVAILABILITY_MISMATCH

    def unsettled_since(self) -> int | None:
        """The oldest instant a later pass must look at again (broken, or pending at Stripe)."""
        if (
            self.break_name() is None
            and not self.stripe.pending
            and not any(bt["status"] == "pending" for bt in self.stripe_bts)
        ):
            return None
        return min(self.stripe.created + self.ledger.created, default=None)


@dataclass
class AccountPass:
    account: str
    listed: int = 0
    list_seconds: float = 0.0
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)


@dataclass
class ReconcileReport:
    accounts: int = 0
    checked: int = 0  # Stripe balance transactions compared
    list_seconds: float = 0.0  # time spent listing them from Stripe
    seconds: float = 0.0
    found: Counter[str] = field(default_factory=Counter)  # breaks reported, by name
    repaired: int = 0
    resolved: int = 0
    open: Counter[str] = field(default_factory=Counter)  # still open after the pass, by name
    errors: list[str] = field(default_factory=list)


def _short(text: str) -> str:
    return text if len(text) <= TEXT_LEN_MAX else text[: TEXT_LEN_MAX - 1] + "…"


def _refs(refs: list[str]) -> str:
    shown = ",".join(refs[:6])
    return _short(shown + (f" (+{len(refs) - 6})" if len(refs) > 6 else ""))


def _at(seconds: int | None) -> datetime | None:
    return from_seconds(seconds) if seconds is not None else None


class Reconciler:
    """One reconciliation pass at a time over the platform and its connected accounts."""

    def __init__(
        self,
        ledger: Ledger,
        view: ReadModel,
        gateway: StripeGateway,
        settings: Settings,
        *,
        folder: Folder | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.view = view
        self.gateway = gateway
        self.settings = settings
        self.folder = folder or Folder(ledger, gateway, settings)
        self.clock = clock or ledger.clock
        self.platform = settings.platform_account_id
        self._links: dict[tuple[str, str, str], str] = {}  # Stripe links never change: cached
        self._reversal_parent: dict[str, str] = {}  # trr_ → tr_, learnt from payment refunds
        self._payout_ids: dict[str, str] = {}  # Sluice payout id → Stripe's po_
        self._refund_fee: dict[str, str] = {}  # fr_ → fee_
        self._sluice_payout: dict[str, str] = {}  # Stripe's po_ → Sluice's payout id

    # The pass --------------------------------------------------------------------------------

    def run(self, accounts: Iterable[str] | None = None) -> ReconcileReport:
        started = time.monotonic()
        report = ReconcileReport()
        self.catch_up()
        holders = self.holders(accounts)
        report.accounts = len(holders)
        passes = [self.compare(sluice_id, stripe_id) for sluice_id, stripe_id in holders]
        for done in passes:
            report.checked += done.listed
            report.list_seconds += done.list_seconds
        open_keys = self.open_breaks()
        for done in passes:
            self.record(done, open_keys, report, repaired=set())
        repaired = self.repair(passes, report)
        if repaired:
            self.catch_up()
            passes = [self.compare(p.account, self._stripe_id(p.account)) for p in passes]
            open_keys = self.open_breaks()
            for done in passes:
                self.record(done, open_keys, report, repaired=repaired)
        for done in passes:
            self.advance(done)
        self.catch_up()
        for (status, name), n in recon_view.break_counts(self.view).items():
            if status == r.OPEN:
                report.open[name] += n
        report.seconds = time.monotonic() - started
        return report

    def holders(self, accounts: Iterable[str] | None) -> list[tuple[str, str | None]]:
        """(Sluice's id, Stripe-Account) of every account to reconcile: connected accounts
        first (their payment refunds name the transfers the platform's reversals belong to),
        the platform last. Stripe's accounts Sluice has never seen are opened first."""
        if accounts is not None:
            chosen = list(dict.fromkeys(accounts))
        else:
            known = {
                row[0] for row in recon_view.clearing_books(self.view)
            } | self._ledger_accounts()
            listed = {str(a.id) for a in self.gateway.list_accounts()}
            platform_stripe = self.settings.stripe_platform_account_id
            others = (known | listed) - {self.platform, platform_stripe or ""}
            chosen = [*sorted(others), self.platform]
        for account in chosen:
            if account == self.platform:
                self.folder.ensure_platform()  # never opened if every event was lost
            elif self.ledger.get_account(account) is None:
                self.folder.sync_account(account)
        return [(a, self._stripe_id(a)) for a in chosen]

    def _stripe_id(self, account: str) -> str | None:
        return None if account == self.platform else account

    def _ledger_accounts(self) -> set[str]:
        with self.view.read() as tx:
            tx.execute("SELECT DISTINCT account_id FROM rm_balances")
            return {str(row["account_id"]) for row in tx.all()}

    def catch_up(self) -> None:
        """The read models include every event recorded so far: run the projector here, or
        wait (bounded) for the one running elsewhere."""
        projector = Projector(
            self.ledger, self.view, ["balances", "balance_transactions", "reconciliation"]
        )
        try:
            projector.run_once()
        except Exception:  # another projector wrote the same position first: wait for it
            head = self.ledger.recorder.max_notification_id() or 0
            for name in projector.projections:
                if not projector.wait_for(name, head, READ_MODEL_WAIT_S):
                    raise

    # Comparing ---------------------------------------------------------------------------------

    def compare(self, account: str, stripe_id: str | None) -> AccountPass:
        done = AccountPass(account)
        cursor = r.get_cursor(self.ledger, account)
        started = time.monotonic()
        listed = list(self._stripe_bts(stripe_id, cursor))
        done.list_seconds = time.monotonic() - started
        done.listed = len(listed)
        for bt in listed:
            fees = Counter[str]()
            for detail in bt.get("fee_details") or []:
                fees[str(detail["type"])] += int(detail["amount"])
            group = self._group(
                done, stripe_id, str(bt["currency"]), self._stripe_key(stripe_id, bt)
            )
            group.stripe.add(bt, dict(fees), int(bt["amount"]), str(bt["id"]))
            group.stripe_bts.append(bt)
        for bt in self._ledger_bts(account, cursor):
            fees = Counter[str]()
            for detail in bt["fee_details"]:
                fees[str(detail["type"])] += int(detail["amount"])
            amount = int(bt["amount"])
            if stripe_id is not None and bt["type"] == "application_fee":
                # Sluice books the application fee as a line of its own on the connected
                # account; Stripe shows it as a fee of the payment it was taken from.
                fees["application_fee"] += -amount
                amount = 0
            key = self._ledger_key(stripe_id, bt)
            self._group(done, stripe_id, str(bt["currency"]), key).ledger.add(
                bt, dict(fees), amount, str(bt["entry_id"])
            )
        return done

    def _group(self, done: AccountPass, stripe_id: str | None, currency: str, key: str) -> Group:
        found = done.groups.get((currency, key))
        if found is None:
            found = done.groups[(currency, key)] = Group(done.account, stripe_id, currency, key)
        return found

    def _stripe_bts(self, stripe_id: str | None, cursor: int) -> Iterable[dict[str, Any]]:
        listing = self.gateway.balance_transactions(account=stripe_id, created={"gte": cursor})
        for n, txn in enumerate(listing):
            if n >= BTS_PER_ACCOUNT_MAX:
                raise GatewayError(
                    f"more than {BTS_PER_ACCOUNT_MAX} balance transactions since the cursor",
                    retryable=False,
                )
            yield txn.data

    def _ledger_bts(self, account: str, cursor: int) -> list[dict[str, Any]]:
        with self.view.read() as tx:
            tx.execute(
                "SELECT * FROM rm_balance_transactions WHERE account_id = %s AND created >= %s"
                " ORDER BY created, id LIMIT %s",
                (account, cursor * MICROS_PER_SECOND, LEDGER_ROWS_MAX + 1),
            )
            rows = tx.all()
        if len(rows) > LEDGER_ROWS_MAX:
            raise SluiceError(f"more than {LEDGER_ROWS_MAX} ledger movements since the cursor")
        for row in rows:  # instants as Stripe shows them: unix seconds
            row["fee_details"] = json.loads(row["fee_details"])
            row["created"] = micros_to_seconds(row["created"])
            row["available_on"] = micros_to_seconds(row["available_on"])
        return rows

    def _stripe_key(self, stripe_id: str | None, bt: dict[str, Any]) -> str:
        """The Stripe object a balance transaction belongs to, as Sluice names it."""
        source = bt.get("source")
        if not source:
            return str(bt["id"])  # a movement of its own (an adjustment, a Stripe fee)
        source = str(source)
        if stripe_id is None:
            return source
        if source.startswith("py_"):  # a transfer's payment on its destination
            return self._link("py", stripe_id, source)
        if bt["type"] == "payment_refund":  # the destination's side of a transfer reversal
            return self._link("pyr", stripe_id, source)
        return source

    def _ledger_key(self, stripe_id: str | None, bt: dict[str, Any]) -> str:
        source = str(bt["source"])
        if stripe_id is not None and bt["type"] == "application_fee" and source.startswith("fee_"):
            return self._link("fee", stripe_id, source)  # the payment it was a fee of
        if bt["type"] in PAYOUT_TYPES:
            stripe_payout = self._stripe_payout(source)
            self._sluice_payout[stripe_payout] = source
            return stripe_payout
        return source or str(bt["id"])

    def _stripe_payout(self, payout_id: str) -> str:
        """A payout Sluice requested goes by Stripe's ``po_`` id once Stripe made it."""
        if payout_id not in self._payout_ids:
            payout = self.ledger.get_payout(payout_id)
            stripe_id = payout.stripe_payout_id if payout is not None else None
            if stripe_id is None:
                return payout_id  # not at Stripe yet: not cached, it may be there next pass
            self._payout_ids[payout_id] = str(stripe_id)
        return self._payout_ids[payout_id]

    def _link(self, kind: str, account: str, object_id: str) -> str:
        """py_ → its transfer (tr_); a payment refund → its reversal (trr_, remembering the
        transfer it reverses); an application fee → the object whose transaction carries it."""
        cache_key = (kind, account, object_id)
        if cache_key in self._links:
            return self._links[cache_key]
        if kind == "py":
            found = str(
                self.gateway.retrieve("charge", object_id, account=account).data["source_transfer"]
            )
        elif kind == "pyr":
            refund = self.gateway.retrieve("refund", object_id, account=account).data
            found = str(refund.get("source_transfer_reversal") or object_id)
            self._reversal_parent[found] = self._link("py", account, str(refund["charge"]))
        else:
            charge = str(self.gateway.retrieve("application_fee", object_id).data["charge"])
            found = self._link("py", account, charge) if charge.startswith("py_") else charge
        self._links[cache_key] = found
        return found

    # Recording ---------------------------------------------------------------------------------

    def open_breaks(self) -> set[tuple[str, str, str]]:
        return {
            (b["account"], b["currency"], b["stripe_object"])
            for b in recon_view.all_breaks(self.view, status=r.OPEN)
        }

    def record(
        self,
        done: AccountPass,
        open_keys: set[tuple[str, str, str]],
        report: ReconcileReport,
        *,
        repaired: set[tuple[str, str, str]],
    ) -> None:
        """Reports each broken group (unless its break already says the same) and resolves the
        open breaks whose groups agree now, in batches (one save, one transaction each)."""
        commands: list[r.ReportBreak | r.ResolveBreak] = []
        for group in done.groups.values():
            name = group.break_name()
            where = (group.account, group.currency, group.key)
            if name is None:
                if where in open_keys:
                    resolve = self._resolve(group, "refetched" if where in repaired else "matched")
                    commands += [resolve] if resolve is not None else []
                    report.resolved += resolve is not None
                continue
            command = self._report(group, name)
            if command is not None:
                commands.append(command)
                report.found[name] += 1
        for start in range(0, len(commands), RECORD_BATCH_MAX):
            for result in self.ledger.execute_batch(commands[start : start + RECORD_BATCH_MAX]):
                if result.error is not None:
                    raise result.error

    def _report(self, group: Group, name: str) -> r.ReportBreak | None:
        s, led = group.stripe, group.ledger
        pending = s.pending - led.pending
        on = s.pending_until if s.pending_until is not None else led.pending_until
        source = group.stripe_bts[0].get("source") if group.stripe_bts else None
        detail = (
            f"stripe amount {s.amount} fees {dict(s.money()[1])} net {s.net} (pending {s.pending}"
            f", available {s.available}); ledger amount {led.amount} fees "
            f"{dict(led.money()[1])} net {led.net} (pending {led.pending}, available "
            f"{led.available})"
        )
        command = r.ReportBreak(
            idempotency_key="",
            effective_at=self.clock(),
            account_id=group.account,
            currency=group.currency,
            key=group.key,
            break_name=name,
            stripe_ref=_refs([*s.refs, *([f"source {source}"] if source else [])]),
            ledger_ref=_refs(led.refs),
            difference={
                "amount": s.amount - led.amount,
                "fee": s.amount - s.net - (led.amount - led.net),
                "net": s.net - led.net,
            },
            detail=_short(detail),
            clearing_pending_minor=pending,
            clearing_available_minor=s.available - led.available,
            clearing_on=_at(on) if pending else None,
        )
        known = r.get_break(self.ledger, group.account, group.currency, group.key)
        if known is not None and known.same_as(command):
            return None
        version = known.version if known is not None else 0
        key = f"reconcile:break:{r.break_id(group.account, group.currency, group.key)}:{version}"
        return _with_key(command, key)

    def _resolve(self, group: Group, how: str) -> r.ResolveBreak | None:
        known = r.get_break(self.ledger, group.account, group.currency, group.key)
        if known is None or known.status != r.OPEN:
            return None
        return r.ResolveBreak(
            idempotency_key=f"reconcile:resolve:{known.break_id}:{known.version}",
            effective_at=self.clock(),
            account_id=group.account,
            currency=group.currency,
            key=group.key,
            how=how,
        )

    def advance(self, done: AccountPass) -> None:
        """Moves the cursor to the oldest transaction still pending or broken (or to the newest
        seen): the next pass starts there. Never backwards, and only when it moves."""
        unsettled = [u for g in done.groups.values() if (u := g.unsettled_since()) is not None]
        seen = [c for g in done.groups.values() for c in g.stripe.created + g.ledger.created]
        if not seen:
            return
        target = min(unsettled) if unsettled else max(seen)
        current = r.get_cursor(self.ledger, done.account)
        if target <= current:
            return
        self.ledger.execute(
            r.AdvanceCursor(
                idempotency_key=f"reconcile:cursor:{done.account}:{target}",
                effective_at=self.clock(),
                account_id=done.account,
                cursor=target,
                checked=done.listed,
            )
        )

    # Repairing what a lost webhook explains ---------------------------------------------------

    def repair(
        self, passes: list[AccountPass], report: ReconcileReport
    ) -> set[tuple[str, str, str]]:
        """Folds, for each group Stripe has and the ledger lacks (or holds as pending what
        Stripe made available), what Stripe would have sent. Returns the groups it repaired."""
        repaired: set[tuple[str, str, str]] = set()
        for done in passes:
            for group in done.groups.values():
                name = group.break_name()
                if name is None and self._payout_moving(group):
                    name = "payout_status"  # no money differs; its status may (a lost event)
                elif name not in (r.MISSING_IN_LEDGER, r.STATUS_MISMATCH, r.AMOUNT_MISMATCH):
                    continue  # a fee or timing difference is reported, never guessed at
                if report.repaired >= REPAIRS_PER_PASS_MAX:
                    report.errors.append(f"repairs stopped at {REPAIRS_PER_PASS_MAX}")
                    return repaired
                head = self.ledger.recorder.max_notification_id()
                try:
                    # Repaired: the fold recorded something (a refetch that finds nothing new
                    # to record changes nothing, and needs no second look).
                    if (
                        self._repair(group, name)
                        and self.ledger.recorder.max_notification_id() != head
                    ):
                        repaired.add((group.account, group.currency, group.key))
                        report.repaired += 1
                except (Ignored, SluiceError, GatewayError) as error:
                    report.errors.append(
                        f"{group.account} {group.currency} {group.key}: {name} not repaired: "
                        f"{type(error).__name__}: {error}"
                    )
        return repaired

    def _payout_moving(self, group: Group) -> bool:
        """A payout the ledger still has on its way: ``payout.paid`` moves no balance, so only
        its status can say a webhook was lost. Refetched while pending or in transit."""
        if not group.key.startswith("po_"):
            return False
        payout = self.ledger.get_payout(self._sluice_payout.get(group.key, group.key))
        return payout is not None and payout.status in (PENDING_STATUS, IN_TRANSIT)

    def _repair(self, group: Group, name: str) -> bool:
        if name == r.STATUS_MISMATCH:
            return self._release(group)
        if not group.stripe_bts:
            return False
        if name == r.MISSING_IN_LEDGER and all(_stripe_made(bt) for bt in group.stripe_bts):
            return self._record_stripe_made(group)
        # A missing movement, or part of one (a refund or reversal the ledger has not seen
        # makes the amounts of its object differ): fold the object's webhook again.
        event = self._lost_event(group)
        if event is None:
            return False  # an object Sluice does not know how to refetch: reported as it is
        self.folder.fold(event)
        return True

    def _record_stripe_made(self, group: Group) -> bool:
        for bt in group.stripe_bts:  # Stripe moved money on its own: record it as reported
            self.ledger.record(
                facts.StripeAdjustment(
                    idempotency_key=f"stripe:txn:{bt['id']}",
                    effective_at=from_seconds(int(bt["created"])),
                    movement_id=str(bt["id"]),
                    account_id=group.account,
                    currency=str(bt["currency"]),
                    bt_type=str(bt["type"]),
                    amount_minor=int(bt["amount"]),
                    fee_minor=int(bt["fee"]),
                    available_on=from_seconds(int(bt["available_on"])),
                    source_id=str(bt["source"]) if bt.get("source") else None,
                    description=_short(str(bt.get("description") or "")) or None,
                )
            )
        return True

    def _lost_event(self, group: Group) -> dict[str, Any] | None:
        """The webhook Stripe would have sent for the group's object, or None when the object
        is not one Sluice folds (then the movement is Stripe's own)."""
        key = group.key
        if key.startswith("trr_") and key in self._reversal_parent:
            key = self._reversal_parent[key]
        if key.startswith("fr_"):
            key = self._fee_of_refund(key) or key
        kind = next((k for prefix, k in REPAIR_EVENTS.items() if key.startswith(prefix)), None)
        if kind is None:
            return None
        account = None if key.startswith(PLATFORM_OBJECTS) else group.stripe_account
        return {
            "id": f"reconcile:{group.account}:{key}",
            "type": kind,
            "livemode": self.settings.livemode,
            "created": max(group.stripe.created, default=0),
            "account": account,
            "data": {"object": {"id": key}},
        }

    def _fee_of_refund(self, fee_refund_id: str) -> str | None:
        """The application fee a fee refund (``fr_``) belongs to: Stripe names it only on the
        refund, which is retrieved through its fee, so the platform's fees are read (newest
        first, bounded) and every refund they list is remembered."""
        if fee_refund_id not in self._refund_fee:
            for n, fee in enumerate(self.gateway.list_application_fees()):
                if n >= APPLICATION_FEES_SCANNED_MAX:
                    break
                for refund in (fee.data.get("refunds") or {}).get("data", []):
                    self._refund_fee[str(refund["id"])] = str(fee.id)
                if fee_refund_id in self._refund_fee:
                    break
        return self._refund_fee.get(fee_refund_id)

    def _release(self, group: Group) -> bool:
        """Stripe says these funds are available and the ledger holds them as pending: the
        ``balance.available`` that said so was lost. Release what was due by then."""
        until = group.stripe.available_until
        if until is None or group.ledger.pending == 0 or group.stripe.pending:
            return False
        at = from_seconds(until)
        self.ledger.record(
            facts.FundsAvailable(
                idempotency_key=f"reconcile:available:{group.account}:{group.currency}:{until}",
                effective_at=at,
                account_id=group.account,
                currency=group.currency,
                until=at,
            )
        )
        return True


def _stripe_made(bt: dict[str, Any]) -> bool:
    """A movement Stripe made on its own: no source, or a type no object of Sluice's books
    (an adjustment naming a dispute is the dispute's: its fold books it)."""
    source = str(bt.get("source") or "")
    return not source or (bt["type"] in STRIPE_MADE_TYPES and not source.startswith("dp_"))


def _with_key(command: r.ReportBreak, key: str) -> r.ReportBreak:
    return replace(command, idempotency_key=key)


# Balance agreement ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """One account and currency at a cut-off: the ledger's books beside Stripe's balance."""

    account: str
    currency: str
    ledger_pending: int
    ledger_available: int
    stripe_pending: int
    stripe_available: int
    clearing: int  # the account's clearing book: what open breaks hold (zero when none)

    @property
    def agrees(self) -> bool:
        return (self.ledger_pending, self.ledger_available) == (
            self.stripe_pending,
            self.stripe_available,
        )


def balance_agreement(
    ledger: Ledger,
    gateway: StripeGateway,
    settings: Settings,
    accounts: Iterable[str],
    view: ReadModel | None = None,
) -> tuple[datetime, list[Agreement]]:
    """Per account and currency, the ledger's pending and available beside Stripe's
    ``GET /v1/balance``, read at one cut-off (the instant returned, before the first read)."""
    cutoff = ledger.clock()
    clearing = recon_view.clearing_books(view) if view is not None else {}
    rows: list[Agreement] = []
    for account in dict.fromkeys(accounts):
        stripe_id = None if account == settings.platform_account_id else account
        theirs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        balance = gateway.retrieve_balance(account=stripe_id)
        for kind, index in (("pending", 0), ("available", 1)):
            for row in balance.get(kind) or []:
                theirs[str(row["currency"])][index] += int(row["amount"])
        currencies = set(theirs) | {c for (a, c) in clearing if a == account}
        if view is not None:  # currencies only the ledger holds differ too
            currencies |= {row["currency"] for row in queries.balance(view, account)["pending"]}
        for currency in sorted(currencies):
            mine = ledger.get_balance(account, currency)
            rows.append(
                Agreement(
                    account,
                    currency,
                    mine.pending_minor if mine else 0,
                    mine.available_minor if mine else 0,
                    *theirs[currency],
                    clearing.get((account, currency), 0),
                )
            )
    return cutoff, rows


def known_accounts(ledger: Ledger, gateway: StripeGateway, settings: Settings) -> list[str]:
    """The platform and every connected account Stripe lists."""
    platform_stripe = settings.stripe_platform_account_id
    listed = [str(a.id) for a in gateway.list_accounts() if str(a.id) != platform_stripe]
    return [settings.platform_account_id, *sorted(listed)]


# Payout reconciliation ---------------------------------------------------------------------------

PAYOUTS_REPORTED_MAX = 100  # the most recent payouts of an account one report covers (a page)
ITEMS_PER_PAYOUT_MAX = 10_000  # balance transactions one payout may settle, in the report


@dataclass(frozen=True)
class PayoutReconciliation:
    """One payout at Stripe and what it settled (``balance_transactions?payout=``): for an
    automatic payout the items' net sums exactly to its amount; a manual one settles no items."""

    account: str
    payout: str  # Stripe's po_
    sluice_payout: str | None  # the ledger's payout id (None: the ledger has none)
    currency: str
    amount: int
    status: str
    automatic: bool
    arrival_date: int
    items: int
    gross: int
    fees: int
    net: int
    ledger_status: str | None
    ledger_amount: int | None

    @property
    def sums(self) -> bool:
        """Automatic: items net to the amount. Manual: Stripe itemizes nothing (true)."""
        return self.net == self.amount if self.automatic else self.items == 0

    @property
    def agrees(self) -> bool:
        return self.sums and (self.ledger_status, self.ledger_amount) == (self.status, self.amount)


def payout_report(
    ledger: Ledger, gateway: StripeGateway, settings: Settings, account: str
) -> list[PayoutReconciliation]:
    """Each of the account's recent payouts at Stripe, itemized, beside the ledger's payout."""
    stripe_id = None if account == settings.platform_account_id else account
    if stripe_id is None:
        return []  # the platform's own payouts are outside Sluice's books
    rows = []
    for found in gateway.list_payouts(account=stripe_id, limit=PAYOUTS_REPORTED_MAX):
        payout = found.data
        gross = fees = net = items = 0
        for n, txn in enumerate(gateway.balance_transactions(account=stripe_id, payout=found.id)):
            bt = txn.data
            if n >= ITEMS_PER_PAYOUT_MAX:
                raise GatewayError(f"{found.id} settles too many items", retryable=False)
            if bt["type"] in PAYOUT_TYPES and bt.get("source") == found.id:
                continue  # the payout's own transaction, and its failure
            gross, fees, net, items = (
                gross + int(bt["amount"]),
                fees + int(bt["fee"]),
                net + int(bt["net"]),
                items + 1,
            )
        sluice_id = (payout.get("metadata") or {}).get(SLUICE_PAYOUT_METADATA_KEY) or found.id
        mine = ledger.get_payout(str(sluice_id))
        rows.append(
            PayoutReconciliation(
                account,
                found.id,
                str(sluice_id) if mine is not None else None,
                str(payout["currency"]),
                int(payout["amount"]),
                str(payout["status"]),
                bool(payout.get("automatic")),
                int(payout.get("arrival_date") or 0),
                items,
                gross,
                fees,
                net,
                mine.status if mine is not None else None,
                mine.amount_minor if mine is not None else None,
            )
        )
    return rows
