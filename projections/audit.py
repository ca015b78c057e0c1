"""Auditor replay: balances and the movements behind them, computed from the events alone.

Two clocks: ``as_of`` selects movements by the instant they took effect (``effective_at``), and
``recorded_as_of`` by the instant Sluice recorded them (what was known then). Neither reads a
projection or an aggregate snapshot, so the answer cannot inherit a read model's mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.application import Ledger
from ledger.events import JournalEvent
from ledger.ids import balance_transaction_id
from ledger.journal import BALANCE_BOOKS, BALANCE_ORDER, balance_row, book_deltas

AUDIT_EVENTS_LIMIT_MAX = 1_000


@dataclass
class Replay:
    account: str
    as_of: datetime | None
    recorded_as_of: datetime | None
    balances: dict[str, dict[str, int]] = field(default_factory=dict)  # currency → book → amount
    movements: list[dict[str, Any]] = field(default_factory=list)
    position: int = 0  # the last log position read

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "audit_replay",
            "account": self.account,
            "as_of": int(self.as_of.timestamp()) if self.as_of else None,
            "recorded_as_of": int(self.recorded_as_of.timestamp()) if self.recorded_as_of else None,
            "position": self.position,
            "balances": [
                {"currency": cur, **books} for cur, books in sorted(self.balances.items())
            ],
            "movements": self.movements,
        }


PROGRESS_EVERY_EVENTS = 1_000  # how often ``replay`` reports its position


def replay(
    ledger: Ledger,
    account: str,
    *,
    as_of: datetime | None = None,
    recorded_as_of: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Replay:
    """``on_progress(position)`` is told every ``PROGRESS_EVERY_EVENTS`` events (a CLI's bar)."""
    result = Replay(account, as_of, recorded_as_of)
    for n, (position, event) in enumerate(ledger.iter_events()):
        result.position = position
        if on_progress is not None and n % PROGRESS_EVERY_EVENTS == 0:
            on_progress(position)
        if not isinstance(event, JournalEvent):
            continue
        if as_of is not None and event.effective_at > as_of:
            continue
        if recorded_as_of is not None and event.timestamp > recorded_as_of:
            continue
        postings = event.entry_postings()
        for (owner, currency), books in book_deltas(postings).items():
            if owner == account and not BALANCE_BOOKS.isdisjoint(books):
                totals = result.balances.setdefault(currency, dict.fromkeys(BALANCE_ORDER, 0))
                for book, amount in zip(BALANCE_ORDER, balance_row(books), strict=True):
                    totals[book] += amount
        for p in postings:
            if p.owner != account or p.book not in BALANCE_BOOKS:
                continue
            result.movements.append(
                {
                    "position": position,
                    # The movement's one id: its balance transaction's, in exports and proofs too.
                    "id": balance_transaction_id(event.entry_id, account),
                    "entry_id": event.entry_id,
                    "kind": event.kind,
                    "event": type(event).__qualname__,
                    "book": p.book,
                    "amount": p.amount_minor,
                    "currency": p.currency,
                    "effective_at": int(event.effective_at.timestamp()),
                    "recorded_at": event.timestamp.isoformat(),
                }
            )
    return result


def events_page(ledger: Ledger, after: int, limit: int) -> dict[str, Any]:
    """The raw log for auditors: every event with its position, type and payload."""
    if not 1 <= limit <= AUDIT_EVENTS_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {AUDIT_EVENTS_LIMIT_MAX}")
    page = ledger.recorder.select_notifications(
        start=max(after, 0), limit=limit + 1, inclusive_of_start=False
    )
    data = []
    for notification in page[:limit]:
        event = ledger.mapper.to_domain_event(notification)
        payload = {
            k: (v.isoformat() if isinstance(v, datetime) else str(v) if k == "originator_id" else v)
            for k, v in vars(event).items()
        }
        data.append(
            {
                "position": notification.id,
                "type": f"{type(event).__module__}.{type(event).__qualname__}",
                "aggregate_id": str(notification.originator_id),
                "version": notification.originator_version,
                "data": payload,
            }
        )
    return {"object": "list", "data": data, "has_more": len(page) > limit}
