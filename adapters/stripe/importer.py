"""Adopting Sluice on a platform that already runs: ``sluice stripe import``.

1. **Accounts.** Every connected account (``GET /v1/accounts``) is opened and brought in step
   through the folder's own ``account.updated`` path (``Folder.sync_account``), so an imported
   account equals a folded one; its payout schedule is recorded beside it, unless Stripe's is
   ``manual`` (the platform pays out: Sluice's own schedule applies).
2. **Opening balances.** Stripe has no balance-as-of endpoint, so each account's balance at the
   cut-over is derived from Stripe's numbers alone: ``GET /v1/balance`` now, less the net of every
   balance transaction created at or after the cut-over (read twice around the listing, so a
   movement landing meanwhile is caught). What was pending at the cut-over are the balance
   transactions created before it (within ``lookback_days``) whose ``available_on`` is after it:
   they become pending lots by ``available_on``, released as their balance transactions say
   they are available. Booked as ``OpeningBalanceImported`` against the ``opening_balance`` book.
3. **Everything since.** Each balance transaction since the cut-over names its source object;
   the folder folds it as the webhook for that object would (refetched, translated, keyed by
   Stripe's ids), so the same webhooks arriving later fold into nothing new. A fact the fold
   needs from before the cut-over (the charge of a later refund) is offset against the opening
   balance by the ledger (``ledger.openings``). Balance transactions with no fact (a
   ``stripe_fee``, an adjustment that is no dispute) are counted as skipped, never silently.
4. **Resumable and idempotent.** Per account, the last booked balance transaction is recorded in
   the ledger (``BalanceTransactionsImported``) after every page; a second run books nothing new.
5. **Report.** The books beside ``GET /v1/balance`` per account and currency, pending and
   available; any difference is named.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from adapters.settings import Settings
from adapters.stripe import translate
from adapters.stripe.folding import Folder, Ignored
from adapters.stripe.gateway import GatewayError, StripeGateway
from ledger import commands as c
from ledger import facts
from ledger.application import Ledger
from ledger.errors import InvalidParameterError, SluiceError
from ledger.openings import Opening, opening_aggregate_id

LOOKBACK_DAYS_DEFAULT = 90  # Stripe's longest usual pending period is well inside it
LOOKBACK_DAYS_MAX = 3_650
PAGE_SIZE = 100  # balance transactions booked between two cursor records (and progress lines)
SNAPSHOT_ATTEMPTS_MAX = 3  # balance reads around the listing until two agree
BALANCE_TRANSACTIONS_PER_ACCOUNT_MAX = 1_000_000  # held in memory to book oldest first

Json = dict[str, Any]
Progress = Callable[[str], None]
_at = translate.at


@dataclass(frozen=True)
class Holder:
    """An account whose balance Sluice keeps: Sluice's id, and Stripe's (None: the platform)."""

    sluice_id: str
    stripe_id: str | None


@dataclass
class ImportReport:
    cutover: datetime
    accounts: list[str] = field(default_factory=list)  # connected accounts imported
    booked: int = 0  # balance transactions booked since the cut-over
    already: int = 0  # skipped as booked by an earlier run (the cursor)
    movements: int = 0  # booked as generic Stripe-made movements (no object's fact)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    nothing: Counter[str] = field(default_factory=Counter)  # folded into nothing, by reason
    flagged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    balances: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.skipped or self.errors or self.differences)


def _schedule_command(account_id: str, acct: Json) -> c.SetPayoutSchedule | None:
    """Stripe's payout schedule of an account as Sluice's command (keyed by its content).

    None for Stripe's ``manual``: there it means the platform creates the payouts, i.e. Sluice
    pays out by its own schedule, not Sluice's ``manual`` (never by schedule, only on request).
    The account keeps Sluice's default schedule, as it does when ``account.updated`` opens it:
    the same account at Stripe must not be paid out or not by whichever path opened it first
    (the periodic ``sync_accounts`` or the webhook)."""
    schedule = ((acct.get("settings") or {}).get("payouts") or {}).get("schedule") or {}
    if not schedule.get("interval") or schedule["interval"] == "manual":
        return None
    params: dict[str, Any] = {
        "interval": str(schedule["interval"]),
        "delay_days": int(schedule.get("delay_days") or 0),
        "weekly_anchor": schedule.get("weekly_anchor")
        if schedule["interval"] == "weekly"
        else None,
        "monthly_anchor": schedule.get("monthly_anchor")
        if schedule["interval"] == "monthly"
        else None,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return c.SetPayoutSchedule(
        idempotency_key=f"stripe:account:{account_id}:schedule:{digest}",
        effective_at=_at(acct.get("created")),
        account_id=account_id,
        **params,
    )


def open_account(ledger: Ledger, folder: Folder, acct: Json) -> bool:
    """Opens (or refreshes) a connected account as ``account.updated`` folds it, with its payout
    schedule. Returns whether it was new to the ledger."""
    account_id = str(acct["id"])
    new = ledger.get_account(account_id) is None
    folder.sync_account(account_id)
    schedule = _schedule_command(account_id, acct)
    if schedule is not None:
        ledger.execute(schedule)
    return new


def sync_accounts(
    ledger: Ledger, gateway: StripeGateway, settings: Settings, *, refresh: bool = False
) -> list[str]:
    """Opens every connected account Stripe lists that the ledger does not know (all of them
    with ``refresh``): accounts created at Stripe later are picked up without any event.
    Returns the ids opened (or refreshed)."""
    folder = Folder(ledger, gateway, settings, route_inline=False)
    done = []
    for listed in gateway.list_accounts():
        if listed.id == settings.stripe_platform_account_id:
            continue
        if refresh or ledger.get_account(listed.id) is None:
            open_account(ledger, folder, listed.data)
            done.append(listed.id)
    return done


class Importer:
    def __init__(
        self,
        ledger: Ledger,
        gateway: StripeGateway,
        settings: Settings,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.settings = settings
        self.platform = settings.platform_account_id
        # Never inline routing: a charge from before Sluice was routed by whoever ran it then.
        self.folder = Folder(ledger, gateway, settings, route_inline=False)
        self.progress: Progress = progress or (lambda line: None)
        self._folded: set[tuple[str, str, str | None]] = set()
        self._fee_of_refund: dict[str, str] | None = None

    # The whole import --------------------------------------------------------------------------

    def run(
        self, since: datetime | None, lookback_days: int = LOOKBACK_DAYS_DEFAULT
    ) -> ImportReport:
        if not 0 < lookback_days <= LOOKBACK_DAYS_MAX:
            raise InvalidParameterError(
                f"lookback_days is 1 to {LOOKBACK_DAYS_MAX}", param="lookback_days"
            )
        self._ensure_platform()
        holders = [Holder(self.platform, None)]
        accounts = sync_accounts(self.ledger, self.gateway, self.settings, refresh=True)
        holders += [Holder(a, a) for a in accounts]
        self.progress(f"accounts: {len(accounts)} connected account(s) and the platform")
        cutover = self._cutover(since, holders)
        report = ImportReport(cutover, accounts)
        self.progress(f"cut-over: {cutover.isoformat()}")
        since_cutover = {}
        for holder in holders:  # every opening first: facts from before it are offset
            since_cutover[holder] = self._open(holder, cutover, lookback_days)
        for holder in holders:
            if not self._book(holder, since_cutover[holder], report):
                break  # the cursor stays before the failure: the next run resumes there
        self.compare(holders, report)
        return report

    def _ensure_platform(self) -> None:
        """The platform's account, exactly as the folder opens it (same key, same parameters)."""
        if self.ledger.get_account(self.platform) is None:
            self.ledger.execute(
                c.OpenAccount(
                    idempotency_key="stripe:platform:open",
                    effective_at=_at(0),
                    account_id=self.platform,
                    kind="platform",
                )
            )

    def opening(self, account_id: str) -> Opening | None:
        try:
            found: object = self.ledger.repository.get(opening_aggregate_id(account_id))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Opening) else None

    def _cutover(self, since: datetime | None, holders: list[Holder]) -> datetime:
        """The stored cut-over (a resumed import), the one asked for, or "now" by Stripe's own
        clock: the second of the newest balance transaction (or account) Stripe has, so that
        second's movements are booked as facts and anything Stripe does later is after the
        cut-over (a wall clock may disagree with Stripe's; only Stripe's numbers date its
        movements, and ``created`` has a resolution of one second)."""
        stored = self.opening(self.platform)
        if stored is not None:
            if since is not None and since != stored.cutover:
                raise InvalidParameterError(
                    f"this ledger was imported with the cut-over {stored.cutover.isoformat()}; "
                    "resume with that --since (or none)",
                    param="since",
                )
            return stored.cutover
        if since is not None:
            return since
        newest = 0
        for holder in holders:
            for txn in self.gateway.balance_transactions(account=holder.stripe_id, limit=1):
                newest = max(newest, int(txn.data["created"]))
                break  # the newest comes first
            if holder.stripe_id is not None:
                acct = self.gateway.retrieve("account", holder.stripe_id).data
                newest = max(newest, int(acct.get("created") or 0))
        return _at(newest)

    # Opening balances --------------------------------------------------------------------------

    def _open(self, holder: Holder, cutover: datetime, lookback_days: int) -> list[Json]:
        """Books the holder's opening balance per currency; returns its balance transactions
        since the cut-over, oldest first."""
        since, totals = self._snapshot(holder, cutover)
        lots: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
        due: dict[str, set[datetime]] = defaultdict(set)  # lots Stripe says are available
        start = cutover - timedelta(days=lookback_days)
        before = {"gte": int(start.timestamp()), "lt": int(cutover.timestamp())}
        for listed in self.gateway.balance_transactions(account=holder.stripe_id, created=before):
            txn = listed.data
            on = _at(txn["available_on"])
            if on > cutover:
                lots[txn["currency"]][on] += int(txn["net"])
                if txn.get("status") == "available":
                    due[txn["currency"]].add(on)
        net_since: Counter[str] = Counter()
        for txn in since:
            net_since[txn["currency"]] += int(txn["net"])
        for currency in sorted(set(totals) | set(lots) | set(net_since)):
            pending = tuple((on, n) for on, n in sorted(lots[currency].items()) if n)
            at_cutover = totals.get(currency, 0) - net_since[currency]
            available = at_cutover - sum(n for _, n in pending)
            self._record(
                facts.OpeningBalanceImported(
                    idempotency_key=f"stripe:opening:{holder.sluice_id}:{currency}",
                    effective_at=cutover,
                    account_id=holder.sluice_id,
                    currency=currency,
                    available_minor=available,
                    pending=pending,
                )
            )
            self.progress(
                f"{holder.sluice_id} {currency}: opening pending {sum(n for _, n in pending)} "
                f"available {available} ({len(pending)} lot(s))"
            )
            for on in sorted(due[currency]):  # Stripe says these lots are available now
                self._record(
                    facts.FundsAvailable(
                        idempotency_key=f"stripe:opening:{holder.sluice_id}:{currency}:"
                        f"available:{int(on.timestamp())}",
                        effective_at=on,
                        account_id=holder.sluice_id,
                        currency=currency,
                        until=on,
                    )
                )
        return since

    def _snapshot(self, holder: Holder, cutover: datetime) -> tuple[list[Json], dict[str, int]]:
        """Balance transactions since the cut-over (oldest first) and the balance's totals per
        currency they belong to: the balance read before and after the listing must agree, or
        something moved meanwhile and the listing is read again (bounded)."""
        for _ in range(SNAPSHOT_ATTEMPTS_MAX):
            first = self._totals(holder)
            listed = []
            for n, txn in enumerate(
                self.gateway.balance_transactions(
                    account=holder.stripe_id, created={"gte": int(cutover.timestamp())}
                )
            ):
                if n >= BALANCE_TRANSACTIONS_PER_ACCOUNT_MAX:
                    raise InvalidParameterError(
                        f"{holder.sluice_id} has more than {BALANCE_TRANSACTIONS_PER_ACCOUNT_MAX} "
                        "balance transactions since the cut-over; choose a later --since",
                        param="since",
                    )
                listed.append(txn.data)
            if self._totals(holder) == first:
                listed.reverse()  # Stripe lists newest first; book oldest first
                return listed, first
        raise GatewayError(
            f"{holder.sluice_id}'s balance kept moving while it was read; run the import again",
            retryable=True,
        )

    def _totals(self, holder: Holder) -> dict[str, int]:
        balance = self.gateway.retrieve_balance(account=holder.stripe_id)
        totals: Counter[str] = Counter()
        for kind in ("pending", "available"):
            for row in balance.get(kind, []):
                totals[str(row["currency"])] += int(row["amount"])
        return dict(totals)

    # Balance transactions since the cut-over -------------------------------------------------

    def _book(self, holder: Holder, since: list[Json], report: ImportReport) -> bool:
        """Books the holder's balance transactions since the cut-over after its cursor, a page at
        a time, recording the cursor after each page. False: stopped on an error."""
        opening = self.opening(holder.sluice_id)
        cursor = opening.cursor if opening is not None else None
        ids = [str(t["id"]) for t in since]
        start = ids.index(cursor) + 1 if cursor in ids else 0
        report.already += start
        for page_start in range(start, len(since), PAGE_SIZE):
            page = since[page_start : page_start + PAGE_SIZE]
            for txn in page:
                try:
                    self._book_one(holder, txn, report)
                except (SluiceError, Ignored) as error:
                    report.errors.append(
                        f"{holder.sluice_id} {txn['id']} {txn['type']} {txn.get('source')}: "
                        f"{type(error).__name__}: {error}"
                    )
                    return False
            self._record(
                facts.BalanceTransactionsImported(
                    idempotency_key=f"stripe:import:{holder.sluice_id}:{page[-1]['id']}",
                    effective_at=_at(page[-1]["created"]),
                    account_id=holder.sluice_id,
                    cursor=str(page[-1]["id"]),
                )
            )
            self.progress(
                f"{holder.sluice_id}: booked {page_start + len(page)}/{len(since)} balance "
                "transaction(s) since the cut-over"
            )
        return True

    def _book_one(self, holder: Holder, txn: Json, report: ImportReport) -> None:
        trigger = self._trigger(holder, txn)
        if isinstance(trigger, str):
            if self._record_movement(holder, txn):
                report.booked += 1
                report.movements += 1
            else:
                report.skipped[str(txn["type"])].append(
                    f"{holder.sluice_id} {txn['id']}: {trigger}"
                )
            return
        if trigger is None:  # booked with another balance transaction (its mirror)
            report.booked += 1
            return
        kind, object_id, account = trigger
        if (kind, object_id, account) not in self._folded:
            event = {
                "id": f"import:{txn['id']}",
                "type": kind,
                "livemode": self.settings.livemode,
                "created": int(txn["created"]),
                "account": account,
                "data": {"object": {"id": object_id}},
            }
            try:
                outcome = self.folder.fold(event)
            except Ignored as why:
                report.nothing[str(why)] += 1
                outcome = "folded"
            if outcome != "folded":
                report.flagged.append(f"{holder.sluice_id} {txn['id']}: {outcome}")
            self._folded.add((kind, object_id, account))
        report.booked += 1

    def _trigger(self, holder: Holder, txn: Json) -> tuple[str, str, str | None] | str | None:
        """The webhook event whose fold books this balance transaction's source object:
        (event type, object id, Stripe account); None when its mirror on the other side books
        it; a string saying why it cannot be booked (no fact for it)."""
        kind, source, account = str(txn["type"]), str(txn.get("source") or ""), holder.stripe_id
        if kind == "charge" and source.startswith("ch_"):
            return "charge.succeeded", source, account
        if kind == "payment" and source.startswith("py_"):  # a transfer's destination side
            return "transfer.updated", self._source_transfer(source, account), None
        if kind == "payment_refund" and source:  # a reversal's destination side
            refund = self.gateway.retrieve("refund", source, account=account).data
            return "transfer.updated", self._source_transfer(str(refund["charge"]), account), None
        if kind == "transfer_refund":
            return None  # its destination's payment_refund folds the transfer's reversals
        if kind == "refund" and source:
            return "refund.updated", source, account
        if kind == "transfer" and source.startswith("tr_"):
            return "transfer.updated", source, None
        if kind == "application_fee" and source.startswith("fee_"):
            return "application_fee.created", source, None
        if kind == "application_fee_refund" and source:
            fee = self._fee_of(source)
            if fee is None:
                return f"no application fee lists the fee refund {source}"
            return "application_fee.refunded", fee, None
        if kind == "adjustment" and source.startswith(("dp_", "du_")):
            return "charge.dispute.updated", source, account
        if kind in ("payout", "payout_failure", "payout_cancel") and source.startswith("po_"):
            return "payout.updated", source, account
        if kind == "topup" and source.startswith("tu_") and account is None:
            return "topup.succeeded", source, None
        return f"no fact books a {kind} balance transaction (source {source or 'none'})"

    def _record_movement(self, holder: Holder, txn: Json) -> bool:
        """A balance transaction no object's fact books (an adjustment that is no dispute, a
        ``stripe_fee``…), as the generic Stripe-made movement, when this ledger has that fact.
        False: it has not (the caller counts it as skipped)."""
        movement = getattr(facts, "StripeAdjustment", None)
        if movement is None or movement not in self.ledger.handlers:
            return False
        source = txn.get("source")
        self._record(
            movement(
                idempotency_key=f"stripe:movement:{txn['id']}",
                effective_at=_at(txn["created"]),
                movement_id=str(txn["id"]),
                account_id=holder.sluice_id,
                currency=str(txn["currency"]),
                bt_type=str(txn["type"]),
                amount_minor=int(txn["amount"]),
                fee_minor=int(txn.get("fee") or 0),
                available_on=_at(txn["available_on"]),
                source_id=str(source) if source else None,
                description=txn.get("description"),
            )
        )
        return True

    def _source_transfer(self, payment_id: str, account: str | None) -> str:
        payment = self.gateway.retrieve("charge", payment_id, account=account).data
        return str(payment["source_transfer"])

    def _fee_of(self, fee_refund_id: str) -> str | None:
        """The application fee a fee refund belongs to: Stripe has no direct lookup, so the
        platform's fees are listed once (bounded by the gateway) and their refunds indexed."""
        if self._fee_of_refund is None:
            self._fee_of_refund = {}
            for fee in self.gateway.list_application_fees():
                for refund in (fee.data.get("refunds") or {}).get("data", []):
                    self._fee_of_refund[str(refund["id"])] = fee.id
        return self._fee_of_refund.get(fee_refund_id)

    def _record(self, fact: facts.Fact) -> None:
        self.ledger.record(fact)

    # The closing report ------------------------------------------------------------------------

    def compare(self, holders: Iterable[Holder], report: ImportReport) -> None:
        """The books beside ``GET /v1/balance``, per account and currency, pending and
        available; every difference is named."""
        for holder in holders:
            balance = self.gateway.retrieve_balance(account=holder.stripe_id)
            stripe: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for index, kind in enumerate(("pending", "available")):
                for row in balance.get(kind, []):
                    stripe[str(row["currency"])][index] += int(row["amount"])
            currencies = set(stripe) | set(self._ledger_currencies(holder.sluice_id))
            for currency in sorted(currencies):
                found = self.ledger.get_balance(holder.sluice_id, currency)
                ours = [found.pending_minor, found.available_minor] if found else [0, 0]
                theirs = stripe.get(currency, [0, 0])
                line = (
                    f"{holder.sluice_id} {currency}: ledger pending {ours[0]} available "
                    f"{ours[1]}, Stripe pending {theirs[0]} available {theirs[1]}"
                )
                report.balances.append(line)
                if ours != theirs:
                    report.differences.append(line)

    def _ledger_currencies(self, account_id: str) -> list[str]:
        opening = self.opening(account_id)
        return list(opening.currencies) if opening is not None else []
