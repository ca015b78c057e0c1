"""Stripe's reserves and loss liability → Sluice's facts and commands.

Reserves (``reserve.hold.created``, ``reserve.hold.updated``, ``reserve.release.created``): the
money comes from the balance transactions Stripe booked for them (``reserve_hold`` and
``reserve_release``, fetched fresh by ``source``), never from the event's snapshot; the event
only names the hold and its releases, which never change once made. A release is recorded after
its hold, and a hold's update records every release it lists that the ledger lacks, so a lost
``reserve.release.created`` is made up for.

Loss liability: ``controller.losses.payments`` of a connected account, recorded when it changed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError

from adapters.stripe.translate import at
from ledger.risk import (
    LOSS_PAYERS,
    LossLiability,
    Reserve,
    ReserveHeld,
    ReserveReleased,
    SetLossLiability,
    liability_aggregate_id,
    reserve_aggregate_id,
)

if TYPE_CHECKING:
    from adapters.stripe.folding import Folder
    from ledger.application import Ledger

Json = dict[str, Any]
RELEASES_PER_FOLD_MAX = 100  # a hold lists its releases; Stripe makes a handful at most


class NotAReserve(ValueError):
    """The event names no hold (kept by the fold as ignored)."""


def _find(ledger: Ledger, aggregate: Any, cls: type[Any]) -> Any:
    try:
        found = ledger.repository.get(aggregate)
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, cls) else None


def _txn(folder: Folder, source: str, account: str | None, type_: str) -> Json:
    """The one balance transaction Stripe booked for ``source`` (a hold or a release)."""
    for txn in folder.gateway.balance_transactions(account=account, source=source):
        if txn.data.get("type") == type_:
            return txn.data
    raise NotAReserve(f"no {type_} balance transaction for {source}")


def fold_reserve(folder: Folder, obj: Json, account: str | None) -> None:
    """Records the hold the event names, and its releases, as their balance transactions say."""
    holder = folder._sluice_account(account)
    if account is not None:
        folder._ensure_account(account)
    if obj.get("object") == "reserve.release":
        hold_id, releases = obj.get("reserve_hold"), [obj["id"]]
    else:
        hold_id = obj.get("id")
        details = obj.get("release_details") or []
        releases = [str(d["reserve_release"]) for d in details[:RELEASES_PER_FOLD_MAX]]
    if not hold_id:
        raise NotAReserve("a release of no hold (a reserve plan's): nothing Sluice books")
    hold_id = str(hold_id)
    if _find(folder.ledger, reserve_aggregate_id(hold_id), Reserve) is None:
        hold = _txn(folder, hold_id, account, "reserve_hold")
        schedule = (
            (obj.get("release_schedule") or {}) if obj.get("object") != "reserve.release" else {}
        )
        scheduled = schedule.get("scheduled_release")
        folder._record(
            ReserveHeld(
                idempotency_key=f"stripe:reserve_hold:{hold_id}",
                effective_at=at(hold["created"]),
                reserve_id=hold_id,
                account_id=holder,
                currency=str(hold["currency"]),
                amount_minor=-int(hold["amount"]),
                release_after=at(scheduled) if isinstance(scheduled, int) else None,
            )
        )
    reserve = _find(folder.ledger, reserve_aggregate_id(hold_id), Reserve)
    for release_id in releases:
        if reserve is None or release_id in reserve.releases:
            continue
        txn = _txn(folder, release_id, account, "reserve_release")
        folder._record(
            ReserveReleased(
                idempotency_key=f"stripe:reserve_release:{release_id}",
                effective_at=at(txn["created"]),
                reserve_id=hold_id,
                release_id=release_id,
                amount_minor=int(txn["amount"]),
            )
        )


def liability_change(ledger: Ledger, account_id: str, acct: Json) -> SetLossLiability | None:
    """``controller.losses.payments`` as a command when the ledger holds another value (None
    when unchanged, or when Stripe does not say: an account object without ``controller``)."""
    losses = ((acct.get("controller") or {}).get("losses") or {}).get("payments")
    if losses not in LOSS_PAYERS:
        return None
    known = _find(ledger, liability_aggregate_id(account_id), LossLiability)
    before = known.losses_payments if known is not None else None
    if before == losses:
        return None
    version = known.version if known is not None else 0  # a change back is recorded too
    digest = hashlib.sha256(f"{before}>{losses}@{version}".encode()).hexdigest()[:12]
    return SetLossLiability(
        idempotency_key=f"stripe:account:{account_id}:losses:{digest}",
        effective_at=at(acct.get("created")),
        account_id=account_id,
        losses_payments=str(losses),
    )
