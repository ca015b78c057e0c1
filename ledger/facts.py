"""Facts: money movements Stripe reports as done, recorded as Stripe reports them.

Sluice has two doors. A **command** (``ledger.commands``, through ``Ledger.execute``) is Sluice's
own intent: it is checked against Sluice's policy (available floors, per-charge caps, open
accounts, schedules) and may be refused. A **fact** (this module, through ``Ledger.record``) is
something the processor already did: it carries Stripe's numbers (fees, ``available_on``,
reversal and reinstatement amounts) and is recorded even where it breaks one of Sluice's
expectations. A ledger that refused a fact would disagree with Stripe from then on; a broken
expectation is flagged instead (the result's ``flagged`` entry, and a visible negative balance),
for reconciliation to name.

Only the shape of a fact is checked (ids, currencies, integer amounts, known accounts and
payments): a malformed fact is a bug at the edge, not a policy decision. Both doors end in the
same recording functions below, so a command and the fact Stripe reports for it book the same
entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ledger.accounts import check_metadata
from ledger.balances import LOTS_MAX, Balance
from ledger.commands import Message
from ledger.errors import InvalidParameterError, PayoutNotFoundError, SluiceError, SplitRuleError
from ledger.events import JournalEvent, check_instant
from ledger.ids import (
    balance_aggregate_id,
    object_id,
    payment_aggregate_id,
    payout_aggregate_id,
    transfer_aggregate_id,
)
from ledger.journal import (
    AVAILABLE,
    BANK,
    OPENING_BALANCE,
    PENDING,
    RESERVED,
    balance_row,
    book_deltas,
    entry,
    move,
)
from ledger.money import check_amount, check_currency
from ledger.openings import OPENING_INDEX_ID, Opening, OpeningIndex, opening_aggregate_id
from ledger.payments import Payment
from ledger.payouts import CANCELED, FAILED, IN_TRANSIT, PAID, TRANSITIONS, Payout
from ledger.splits import SplitPart, allocate
from ledger.transfers import Transfer

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.engine import Scope


@dataclass(frozen=True, kw_only=True)
class Fact(Message):
    """Something Stripe already did; ``effective_at`` is the instant Stripe reports for it."""


@dataclass(frozen=True, kw_only=True)
class ChargeSucceeded(Fact):
    """A captured charge with Stripe's fee and ``available_on`` (its balance transaction)."""

    name = "charge_succeeded"
    payment_id: str
    charge_type: str
    currency: str
    amount_minor: int
    stripe_fee_minor: int
    available_on: datetime
    application_fee_minor: int = 0
    account_id: str | None = None
    on_behalf_of: str | None = None
    transfer_group: str | None = None
    transfer_amount_minor: int | None = None
    transfer_id: str | None = None
    application_fee_id: str | None = None
    # Sluice's own routing rule riding on the charge (its ``sluice_split`` metadata): the ledger
    # allocates it and records the plan; it never refuses the charge itself.
    split: tuple[SplitPart, ...] = ()
    # The charge's metadata as Stripe reports it (its PaymentIntent's beneath), as sorted pairs.
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class TransferCreated(Fact):
    """A transfer to a connected account; ``available_on`` is its balance transaction's."""

    name = "transfer_created"
    transfer_id: str
    destination_account_id: str
    currency: str
    amount_minor: int
    available_on: datetime
    source_payment_id: str | None = None
    transfer_group: str | None = None


@dataclass(frozen=True, kw_only=True)
class TransferReversed(Fact):
    name = "transfer_reversed"
    transfer_id: str
    reversal_id: str
    amount_minor: int


@dataclass(frozen=True, kw_only=True)
class ChargeRefunded(Fact):
    """A refund, with the transfer reversal Stripe made for it (``refund.transfer_reversal``)."""

    name = "charge_refunded"
    payment_id: str
    refund_id: str
    amount_minor: int
    reversal_id: str | None = None
    reversal_minor: int = 0


@dataclass(frozen=True, kw_only=True)
class ApplicationFeeRefunded(Fact):
    name = "application_fee_refunded"
    payment_id: str
    fee_refund_id: str
    amount_minor: int


@dataclass(frozen=True, kw_only=True)
class DisputeFundsWithdrawn(Fact):
    """The withdrawal's balance transaction: the disputed amount and the dispute fee."""

    name = "dispute_funds_withdrawn"
    payment_id: str
    dispute_id: str
    amount_minor: int
    fee_minor: int


@dataclass(frozen=True, kw_only=True)
class DisputeFundsReinstated(Fact):
    """The reinstatement's balance transaction after a win: ``fee_minor`` as Stripe posts it
    (negative when the dispute fee is returned, 0 when Stripe keeps it)."""

    name = "dispute_funds_reinstated"
    payment_id: str
    dispute_id: str
    amount_minor: int
    fee_minor: int


@dataclass(frozen=True, kw_only=True)
class DisputeLost(Fact):
    name = "dispute_lost"
    payment_id: str
    dispute_id: str


@dataclass(frozen=True, kw_only=True)
class PayoutCreated(Fact):
    """A payout Stripe made (an automatic one, or one created outside Sluice)."""

    name = "payout_created"
    payout_id: str
    account_id: str
    currency: str
    amount_minor: int


@dataclass(frozen=True, kw_only=True)
class PayoutStatusReported(Fact):
    """A payout's status at Stripe (``in_transit``, ``paid``, ``failed``, ``canceled``), with
    Stripe's ``po_`` id for a payout Sluice requested."""

    name = "payout_status_reported"
    payout_id: str
    status: str
    stripe_payout_id: str | None = None
    failure_code: str | None = None
    # Stripe's details of the payout, verbatim (Payout.Reported); None: not reported.
    details: dict[str, str | int | bool | None] | None = None
    # The payout's metadata as Stripe reports it (Payout.MetadataReported), as sorted pairs;
    # None: not reported (an empty tuple: Stripe reports none).
    metadata: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, kw_only=True)
class FundsAvailable(Fact):
    """Stripe says funds due by ``until`` became available (``balance.available``)."""

    name = "funds_available"
    account_id: str
    currency: str
    until: datetime


@dataclass(frozen=True, kw_only=True)
class TopUpSucceeded(Fact):
    name = "topup_succeeded"
    topup_id: str
    account_id: str
    currency: str
    amount_minor: int
    available_on: datetime


@dataclass(frozen=True, kw_only=True)
class OpeningBalanceImported(Fact):
    """An account's balance in one currency at the import's cut-over (``effective_at``), from
    Stripe's numbers alone (``GET /v1/balance`` less the balance transactions since, pending
    lots by their ``available_on``). Booked against the account's ``opening_balance`` book; a
    later fact from before the cut-over is offset against it (``ledger.openings``)."""

    name = "opening_balance_imported"
    account_id: str
    currency: str
    available_minor: int  # may be negative: Stripe allows it
    pending: tuple[tuple[datetime, int], ...] = ()  # (available_on, amount_minor) lots


@dataclass(frozen=True, kw_only=True)
class BalanceTransactionsImported(Fact):
    """The import has booked an account's balance transactions up to ``cursor`` (Stripe's
    ``txn_`` id): an interrupted import resumes after it. Moves no money."""

    name = "balance_transactions_imported"
    account_id: str
    cursor: str


# Recording: shared by both doors ----------------------------------------------------------------


def book_charge(s: Scope, f: ChargeSucceeded, platform_id: str) -> tuple[Payment, dict[str, str]]:
    """Books a charge landing (and, for destination charges, its transfer)."""
    check_instant(f.available_on, "available_on")
    if s.find(payment_aggregate_id(f.payment_id), Payment) is not None:
        raise InvalidParameterError(f"payment {f.payment_id} already exists", param="payment_id")
    payment = Payment.capture(
        s.when,
        payment_id=f.payment_id,
        charge_type=f.charge_type,
        currency=f.currency,
        amount_minor=f.amount_minor,
        stripe_fee_minor=f.stripe_fee_minor,
        application_fee_minor=f.application_fee_minor,
        platform_account_id=platform_id,
        account_id=f.account_id,
        on_behalf_of=f.on_behalf_of,
        transfer_group=f.transfer_group,
        transfer_amount_minor=f.transfer_amount_minor,
        available_on=f.available_on,
        transfer_id=f.transfer_id,
        application_fee_id=f.application_fee_id,
    )
    if f.transfer_id is not None and f.charge_type != "destination":
        raise InvalidParameterError(
            "transfer_id names a destination charge's transfer", param="transfer_id"
        )
    s.add(payment)
    ids = {"payment": f.payment_id}
    if payment.destination_transfer_id is not None:
        s.add(
            Transfer.create(
                s.when,
                transfer_id=payment.destination_transfer_id,
                source_account_id=platform_id,
                destination_account_id=str(f.account_id),
                currency=f.currency,
                amount_minor=payment.transfer_amount_minor,
                source_payment_id=f.payment_id,
                transfer_group=f.transfer_group,
                pending_until=f.available_on,
            ),
            param="transfer_id",
        )
        ids["transfer"] = payment.destination_transfer_id
    if payment.application_fee_minor:
        ids["application_fee"] = payment_fee_id(payment, f.application_fee_id)
    return payment, ids


def payment_fee_id(payment: Payment, given: str | None) -> str:
    return given or object_id("fee", payment.payment_id)


def book_transfer(
    s: Scope,
    *,
    transfer_id: str,
    source_account_id: str,
    destination_account_id: str,
    currency: str,
    amount_minor: int,
    source_payment_id: str | None,
    transfer_group: str | None,
    available_on: datetime | None,
) -> None:
    """Books a transfer: pending on both sides until ``available_on`` if that is still ahead
    of the transfer's own instant, available at once otherwise (Stripe's rule: the funds follow
    the source charge's availability, whatever Sluice's pending lots hold)."""
    if s.find(transfer_aggregate_id(transfer_id), Transfer) is not None:
        raise InvalidParameterError(f"transfer {transfer_id} already exists", param="transfer_id")
    pending = available_on is not None and available_on > s.when.effective_at
    s.add(
        Transfer.create(
            s.when,
            transfer_id=transfer_id,
            source_account_id=source_account_id,
            destination_account_id=destination_account_id,
            currency=currency,
            amount_minor=amount_minor,
            source_payment_id=source_payment_id,
            transfer_group=transfer_group,
            pending_until=available_on if pending else None,
            available_on=available_on,
        )
    )


# Fact handlers ----------------------------------------------------------------------------------


def _charge_succeeded(s: Scope, f: ChargeSucceeded) -> dict[str, str]:
    check_currency(f.currency)
    s.account(s.platform_account_id, "platform")
    # Known accounts only (the edge opens them first); closed or charges-disabled is Sluice's
    # policy for its own commands, and Stripe has already taken this charge.
    for account_id, param in ((f.account_id, "account"), (f.on_behalf_of, "on_behalf_of")):
        if account_id is not None:
            s.account(account_id, param)
    payment, ids = book_charge(s, f, s.platform_account_id)
    if f.metadata:
        try:
            payment.report_metadata(check_metadata(dict(f.metadata)), s.when)
        except SluiceError as refused:  # metadata never refuses the charge itself
            ids["metadata"] = f"not recorded: {refused}"
    if f.split:
        try:
            plan_routing(s, payment, f.split)
            ids["routing"] = "planned"
        except SluiceError as refused:  # a bad rule is Sluice's problem, never the charge's
            ids["routing"] = f"not planned: {refused}"
    return ids


def plan_routing(s: Scope, payment: Payment, split: tuple[SplitPart, ...]) -> dict[str, int]:
    """Allocates a split rule over the charge (largest remainder, in ``ledger.splits``) and
    records the plan; the one place where a charge's routing is decided, for every door."""
    for part in split:
        if not isinstance(part, SplitPart):
            raise SplitRuleError("split parts are SplitPart values", param="split")
        if part.account_id == s.platform_account_id:
            raise SplitRuleError("the platform keeps the remainder implicitly", param="split")
        s.account(part.account_id, "split")
    parts = allocate(payment.amount_minor, list(split))
    payment.plan_routing(parts, s.when)
    return parts


def _transfer_created(s: Scope, f: TransferCreated) -> dict[str, str]:
    check_currency(f.currency)
    amount = check_amount(f.amount_minor, f.currency)
    s.account(f.destination_account_id, "destination")
    check_instant(f.available_on, "available_on")
    group = f.transfer_group
    if f.source_payment_id is not None:
        payment = s.payment(f.source_payment_id)
        payment.source_transfer(f.transfer_id, amount, s.when)
        group = group or payment.transfer_group
    book_transfer(
        s,
        transfer_id=f.transfer_id,
        source_account_id=s.platform_account_id,
        destination_account_id=f.destination_account_id,
        currency=f.currency,
        amount_minor=amount,
        source_payment_id=f.source_payment_id,
        transfer_group=group,
        available_on=f.available_on,
    )
    return {"transfer": f.transfer_id}


def _transfer_reversed(s: Scope, f: TransferReversed) -> dict[str, str]:
    transfer = s.transfer(f.transfer_id)
    amount = check_amount(f.amount_minor, transfer.currency)
    s.claim("reversal", f.reversal_id, "reversal_id")
    transfer.reverse(f.reversal_id, amount, s.when)
    return {"transfer": transfer.transfer_id, "reversal": f.reversal_id}


def _charge_refunded(s: Scope, f: ChargeRefunded) -> dict[str, str]:
    payment = s.payment(f.payment_id)
    amount = check_amount(f.amount_minor, payment.currency)
    reversal = check_amount(f.reversal_minor, payment.currency, "reversal_minor", allow_zero=True)
    s.claim("refund", f.refund_id, "refund_id")
    ids = {"refund": f.refund_id, "payment": payment.payment_id}
    if reversal:
        if payment.destination_transfer_id is None or f.reversal_id is None:
            raise InvalidParameterError(
                "a reversal needs the destination charge's transfer and its id",
                param="reversal_id",
            )
        s.claim("reversal", f.reversal_id, "reversal_id")
        s.transfer(payment.destination_transfer_id).reverse(f.reversal_id, reversal, s.when)
        ids["reversal"] = f.reversal_id
    payment.refund(f.refund_id, amount, reversal, 0, reversal > 0, False, s.when)
    return ids


def _application_fee_refunded(s: Scope, f: ApplicationFeeRefunded) -> dict[str, str]:
    payment = s.payment(f.payment_id)
    if payment.account_id is None:
        raise InvalidParameterError("this charge has no application fee", param="payment")
    amount = check_amount(f.amount_minor, payment.currency)
    s.claim("fee_refund", f.fee_refund_id, "fee_refund_id")
    payment.refund_fee(f.fee_refund_id, amount, s.when)
    return {"fee_refund": f.fee_refund_id, "payment": payment.payment_id}


def _dispute_funds_withdrawn(s: Scope, f: DisputeFundsWithdrawn) -> dict[str, str]:
    payment = s.payment(f.payment_id)
    s.claim("dispute", f.dispute_id, "dispute_id")
    payment.open_dispute(f.dispute_id, f.amount_minor, f.fee_minor, s.when)
    return {"dispute": f.dispute_id, "payment": payment.payment_id}


def _dispute_funds_reinstated(s: Scope, f: DisputeFundsReinstated) -> dict[str, str]:
    payment = s.payment(f.payment_id)
    s.claim("dispute_reinstatement", f.dispute_id, "dispute_id")
    payment.reinstate_dispute(f.dispute_id, f.amount_minor, f.fee_minor, s.when)
    return {"dispute": f.dispute_id, "payment": payment.payment_id}


def _dispute_lost(s: Scope, f: DisputeLost) -> dict[str, str]:
    payment = s.payment(f.payment_id)
    payment.lose_dispute(f.dispute_id, s.when)
    return {"dispute": f.dispute_id, "payment": payment.payment_id}


def _payout_created(s: Scope, f: PayoutCreated) -> dict[str, str]:
    check_currency(f.currency)
    amount = check_amount(f.amount_minor, f.currency)
    s.account(f.account_id)
    if s.find(payout_aggregate_id(f.payout_id), Payout) is not None:
        raise InvalidParameterError(f"payout {f.payout_id} already exists", param="payout_id")
    s.add(Payout.request(f.payout_id, f.account_id, f.currency, amount, s.when))
    return {"payout": f.payout_id}


def _payout_status_reported(s: Scope, f: PayoutStatusReported) -> dict[str, str]:
    payout = s.find(payout_aggregate_id(str(f.payout_id)), Payout)
    if payout is None:
        raise PayoutNotFoundError(f"no such payout: {f.payout_id}", param="payout")
    if f.stripe_payout_id is not None and payout.stripe_payout_id is None:
        payout.submitted(f.stripe_payout_id, s.when)
    if f.details is not None:
        payout.report(f.details, s.when)
    ids = {"payout": f.payout_id}
    if f.metadata is not None:
        try:
            payout.report_metadata(check_metadata(dict(f.metadata)), s.when)
        except SluiceError as refused:  # metadata never refuses the payout's status
            ids["metadata"] = f"not recorded: {refused}"
    if f.status == payout.status:
        return ids  # the submission alone
    if f.status == IN_TRANSIT or (f.status == PAID and IN_TRANSIT in TRANSITIONS[payout.status]):
        payout.mark_in_transit(s.when)
    if f.status == PAID:
        payout.mark_paid(s.when)
    elif f.status == FAILED:
        payout.fail(f.failure_code or "unknown", s.when)
    elif f.status == CANCELED:
        payout.cancel(s.when)
    elif f.status != IN_TRANSIT:
        raise InvalidParameterError(f"unknown payout status {f.status!r}", param="status")
    return ids


def _funds_available(s: Scope, f: FundsAvailable) -> dict[str, str]:
    check_currency(f.currency)
    check_instant(f.until, "until")
    s.account(f.account_id)
    balance = s.find(balance_aggregate_id(f.account_id, f.currency), Balance)
    released = balance.release(f.until, s.when) if balance is not None else None
    return {"entry": released.entry_id} if released is not None else {}


def _topup_succeeded(s: Scope, f: TopUpSucceeded) -> dict[str, str]:
    check_currency(f.currency)
    amount = check_amount(f.amount_minor, f.currency)
    check_instant(f.available_on, "available_on")
    s.account(f.account_id)
    s.claim("topup", f.topup_id, "topup_id")
    entry = move(
        object_id("txn", "topup", f.topup_id),
        "topup",
        amount,
        f.currency,
        (f.account_id, BANK),
        (f.account_id, PENDING),
        f.available_on,
    )
    s.balance(f.account_id, f.currency).top_up(f.topup_id, entry, amount, s.when)
    return {"topup": f.topup_id}


def _opening_balance_imported(s: Scope, f: OpeningBalanceImported) -> dict[str, str]:
    check_currency(f.currency)
    s.account(f.account_id)
    cutover = f.effective_at
    lots = _opening_lots(f, cutover)
    if not isinstance(f.available_minor, int) or isinstance(f.available_minor, bool):
        raise InvalidParameterError("available_minor must be an integer", param="available_minor")
    index = s.find(OPENING_INDEX_ID, OpeningIndex)
    if index is None:
        index = OpeningIndex.start(s.when)
        s.add(index)
    index.set_cutover(f.account_id, cutover, s.when)
    opening = s.find(opening_aggregate_id(f.account_id), Opening)
    if opening is None:
        opening = Opening.start(f.account_id, cutover, s.when)
        s.add(opening)
    if f.currency in opening.currencies:
        raise InvalidParameterError(
            f"{f.account_id} {f.currency} has an opening balance already", param="currency"
        )
    parts: list[tuple[datetime | None, int, str]] = [(on, n, PENDING) for on, n in lots]
    parts.append((None, f.available_minor, AVAILABLE))
    for on, amount, book in parts:
        if amount == 0:
            continue
        label = on.isoformat() if on is not None else "available"
        opening.book(
            f.currency,
            move(
                object_id("txn", "opening", f.account_id, f.currency, label),
                "opening_balance",
                amount,
                f.currency,
                (f.account_id, OPENING_BALANCE),
                (f.account_id, book),
                on,
            ),
            s.when,
        )
    return {"opening": f.account_id, "currency": f.currency}


def _opening_lots(f: OpeningBalanceImported, cutover: datetime) -> list[tuple[datetime, int]]:
    """Pending lots: pending at the cut-over (due after it), one per instant, bounded."""
    if not isinstance(f.pending, tuple) or len(f.pending) > LOTS_MAX:
        raise InvalidParameterError(f"at most {LOTS_MAX} pending lots", param="pending")
    lots: dict[datetime, int] = {}
    for lot in f.pending:
        if not isinstance(lot, tuple) or len(lot) != 2:
            raise InvalidParameterError("lots are (available_on, amount_minor)", param="pending")
        on = check_instant(lot[0], "pending")
        amount = lot[1]
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise InvalidParameterError("lot amounts are integers", param="pending")
        if on <= cutover or on in lots:
            raise InvalidParameterError(
                "pending lots fall due after the cut-over, one per instant", param="pending"
            )
        lots[on] = amount
    return sorted(lots.items())


def _balance_transactions_imported(s: Scope, f: BalanceTransactionsImported) -> dict[str, str]:
    opening = s.find(opening_aggregate_id(f.account_id), Opening)
    if opening is None:
        raise InvalidParameterError(f"{f.account_id} has no opening balance", param="account")
    opening.progress(f.cursor, s.when)
    return {"opening": f.account_id, "cursor": f.cursor}


_NOT_OFFSET = ("release", "opening_balance", "opening_offset")  # no money from outside


def offset_before_opening(s: Scope, f: Fact) -> None:
    """Run by the engine after every fact: what the fact booked on the balance books of an
    account whose history before its cut-over is an opening balance, dated before that
    cut-over, is in the opening balance already; an ``Opening.Offset`` returns it to the
    opening book, posting for posting (``ledger.openings``). One read when nothing was
    imported."""
    if isinstance(f, FundsAvailable | OpeningBalanceImported | BalanceTransactionsImported):
        return
    index = s.find(OPENING_INDEX_ID, OpeningIndex)
    if index is None:
        return
    for event in s.new_events():
        if not isinstance(event, JournalEvent) or event.kind in _NOT_OFFSET:
            continue
        for (owner, currency), books in book_deltas(event.entry_postings()).items():
            cutover = index.cutovers.get(owner)
            if cutover is None or event.effective_at >= cutover:
                continue
            pending, available, reserved = balance_row(books)
            if not (pending or available or reserved):
                continue
            opening = s.find(opening_aggregate_id(owner), Opening)
            if opening is None:
                raise InvalidParameterError(f"{owner} has a cut-over but no opening")
            lines = [
                (owner, PENDING, -pending, currency),
                (owner, AVAILABLE, -available, currency),
                (owner, RESERVED, -reserved, currency),
                (owner, OPENING_BALANCE, pending + available + reserved, currency),
            ]
            offset = entry(
                object_id("txn", "opening_offset", event.entry_id, owner),
                "opening_offset",
                lines,
                event.available_on if pending else None,
            )
            opening.offset(event.entry_id, offset, s.when)


FACT_HANDLERS: dict[type[Message], Callable[[Scope, Any], dict[str, str]]] = {
    ChargeSucceeded: _charge_succeeded,
    TransferCreated: _transfer_created,
    TransferReversed: _transfer_reversed,
    ChargeRefunded: _charge_refunded,
    ApplicationFeeRefunded: _application_fee_refunded,
    DisputeFundsWithdrawn: _dispute_funds_withdrawn,
    DisputeFundsReinstated: _dispute_funds_reinstated,
    DisputeLost: _dispute_lost,
    PayoutCreated: _payout_created,
    PayoutStatusReported: _payout_status_reported,
    FundsAvailable: _funds_available,
    TopUpSucceeded: _topup_succeeded,
    OpeningBalanceImported: _opening_balance_imported,
    BalanceTransactionsImported: _balance_transactions_imported,
}


# Movements Stripe makes on its own (reconciliation; the booking is ledger.reconciliation's) ---


@dataclass(frozen=True, kw_only=True)
class StripeAdjustment(Fact):
    """A movement Stripe made on its own that Sluice books no object for, as its balance
    transaction reports it: an ``adjustment``, a ``stripe_fee``, a ``transfer_cancel``, any type
    (``bt_type``, Stripe's). ``amount_minor`` and ``fee_minor`` are signed as Stripe's are; the
    account receives ``amount - fee``, pending until ``available_on`` if that is still ahead.
    One movement is recorded once (``movement_id``: Stripe's ``txn_`` id)."""

    name = "stripe_adjustment"
    movement_id: str
    account_id: str
    currency: str
    bt_type: str
    amount_minor: int
    available_on: datetime
    fee_minor: int = 0
    source_id: str | None = None  # the Stripe object behind it, when Stripe names one
    description: str | None = None
