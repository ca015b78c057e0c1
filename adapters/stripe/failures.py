"""Folds movements Stripe undid after reporting them done into ledger facts: refunds that fail,
top-ups that fail or are reversed (``topup.failed``, ``topup.reversed``: the top-up as recorded,
then its ``topup_reversal`` balance transaction, amount and ``available_on`` as Stripe's), and
payout reversals (a payout whose ``original_payout`` is set: its balance transaction's amount
comes back from the bank).

Refunds that fail after Stripe reported them done (``refund.failed``,
``refund.updated``, ``charge.refund.updated`` with ``status=failed``) into ledger facts.

The refund is refetched (events are triggers); if the ledger never saw it succeed (its events
were lost), the refund is recorded first, as Stripe made it, then its failure: the amount and
``available_on`` of Stripe's ``failure_balance_transaction``. Refunds in any other status go on
to the fold's usual handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.stripe.translate import at
from ledger.application import Ledger
from ledger.failures import (
    TOPUP_REVERSAL_STATUSES,
    PayoutReversal,
    PayoutReversed,
    RefundFailed,
    RefundFailure,
    TopUpReversal,
    TopUpReversed,
    payout_reversal_aggregate_id,
    refund_failure_aggregate_id,
    topup_reversal_aggregate_id,
)

if TYPE_CHECKING:
    from adapters.stripe.folding import Folder

Json = dict[str, Any]


def refund_failed(refund: Json, txn: Json, payment_id: str) -> RefundFailed:
    return RefundFailed(
        idempotency_key=f"stripe:refund:{refund['id']}:failed",
        effective_at=at(txn["created"]),
        payment_id=payment_id,
        refund_id=str(refund["id"]),
        amount_minor=int(txn["amount"]),
        available_on=at(txn["available_on"]),
    )


def get_refund_failure(ledger: Ledger, refund_id: str) -> RefundFailure | None:
    return ledger._find(refund_failure_aggregate_id(refund_id), RefundFailure)


def get_topup_reversal(ledger: Ledger, topup_id: str) -> TopUpReversal | None:
    return ledger._find(topup_reversal_aggregate_id(topup_id), TopUpReversal)


def fold_refund_event(folder: Folder, obj: Json, account: str | None) -> None:
    refund = folder.gateway.retrieve("refund", str(obj["id"]), account=account).data
    if refund.get("status") != "failed" or not refund.get("failure_balance_transaction"):
        folder._refund_event(obj, account)
        return
    # The refund happened before it failed: record it as Stripe made it (once).
    folder._fold_refund(str(refund["id"]), account, {**refund, "status": "succeeded"})
    if get_refund_failure(folder.ledger, str(refund["id"])) is not None:
        return
    payment_id = folder._ensure_payment(str(refund["charge"]), account)
    if payment_id is None:
        return
    txn = folder.gateway.retrieve(
        "balance_transaction", str(refund["failure_balance_transaction"]), account=account
    ).data
    folder._record(refund_failed(refund, txn, payment_id))
    holder = folder._sluice_account(account)
    folder._settle(txn, [holder], str(refund["currency"]), f"stripe:refund:{refund['id']}:failed")


def topup_reversed(topup: Json, txn: Json, holder: str) -> TopUpReversed:
    return TopUpReversed(
        idempotency_key=f"stripe:topup:{topup['id']}:reversal",
        effective_at=at(txn["created"]),
        topup_id=str(topup["id"]),
        account_id=holder,
        currency=str(topup["currency"]),
        amount_minor=-int(txn["amount"]),
        available_on=at(txn["available_on"]),
        status=str(topup["status"]),
    )


def fold_topup_event(folder: Folder, obj: Json, account: str | None) -> None:
    """``topup.failed`` / ``topup.reversed``: the top-up as Stripe made it (once), then its
    ``topup_reversal`` balance transaction."""
    folder._topup_event(obj, account)
    topup = folder.gateway.retrieve("topup", str(obj["id"])).data
    if topup.get("status") not in TOPUP_REVERSAL_STATUSES:
        return
    if get_topup_reversal(folder.ledger, str(topup["id"])) is not None:
        return
    found = list(
        folder.gateway.balance_transactions(source=str(topup["id"]), type="topup_reversal")
    )
    if not found:
        raise folder_ignored(f"{topup['id']} is {topup['status']} without a topup_reversal")
    txn = found[0].data
    folder._record(topup_reversed(topup, txn, folder.platform))
    key = f"stripe:topup:{topup['id']}:reversal"
    folder._settle(txn, [folder.platform], str(topup["currency"]), key)


def payout_reversed(reversal: Json, txn: Json, holder: str) -> PayoutReversed:
    return PayoutReversed(
        idempotency_key=f"stripe:payout:{reversal['id']}:reversal",
        effective_at=at(txn["created"]),
        payout_id=str(reversal["id"]),
        original_payout_id=str(reversal["original_payout"]),
        account_id=holder,
        currency=str(txn["currency"]),
        amount_minor=int(txn["amount"]),
        available_on=at(txn["available_on"]),
    )


def fold_payout_event(folder: Folder, obj: Json, account: str | None) -> None:
    """A reversal payout (``original_payout``) returns its funds once; any other payout goes to
    the fold's usual handler (a reversed original stays paid there)."""
    payout = folder.gateway.retrieve("payout", str(obj["id"]), account=account).data
    if not payout.get("original_payout"):
        folder._payout_event(obj, account)
        return
    holder = folder._sluice_account(account)
    if account is not None:
        folder._ensure_account(account)
    if get_payout_reversal(folder.ledger, str(payout["id"])) is not None:
        return
    txn = folder.gateway.retrieve(
        "balance_transaction", str(payout["balance_transaction"]), account=account
    ).data
    folder._record(payout_reversed(payout, txn, holder))
    key = f"stripe:payout:{payout['id']}:reversal"
    folder._settle(txn, [holder], str(txn["currency"]), key)


def get_payout_reversal(ledger: Ledger, payout_id: str) -> PayoutReversal | None:
    return ledger._find(payout_reversal_aggregate_id(payout_id), PayoutReversal)


def folder_ignored(reason: str) -> Exception:
    from adapters.stripe.folding import Ignored

    return Ignored(reason)


def handlers(folder: Folder) -> dict[str, Any]:
    """The fold's handlers for refund and top-up events (``Folder.handlers`` takes them)."""

    def on_refund(obj: Json, account: str | None) -> None:
        fold_refund_event(folder, obj, account)

    def on_topup(obj: Json, account: str | None) -> None:
        fold_topup_event(folder, obj, account)

    def on_payout(obj: Json, account: str | None) -> None:
        fold_payout_event(folder, obj, account)

    refunds = ("refund.failed", "refund.updated", "charge.refund.updated")
    payouts = ("payout.created", "payout.updated", "payout.paid")
    return {
        **dict.fromkeys(refunds, on_refund),
        **dict.fromkeys(("topup.failed", "topup.reversed"), on_topup),
        **dict.fromkeys(payouts, on_payout),
    }
