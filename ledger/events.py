"""Event building blocks shared by the aggregates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.errors import InvalidParameterError
from ledger.journal import Entry, Posting, PostingRow, check_balanced


@dataclass(frozen=True, slots=True)
class When:
    """The two instants of every event: when it took effect, and when Sluice recorded it."""

    effective_at: datetime
    recorded_at: datetime


def check_instant(value: object, param: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidParameterError(f"{param} must be a timezone-aware datetime", param=param)
    return value


class JournalEvent(Aggregate.Event):
    """An event that moves money: it carries one balanced journal entry."""

    entry_id: str
    kind: str
    postings: list[PostingRow]
    available_on: datetime | None
    effective_at: datetime

    def entry_postings(self) -> list[Posting]:
        return [Posting.from_row(r) for r in self.postings]


def journal_fields(entry: Entry, when: When) -> dict[str, Any]:
    """Keyword arguments for a JournalEvent; re-checks the balance at the moment of building."""
    check_balanced(entry.postings)
    return {
        "entry_id": entry.entry_id,
        "kind": entry.kind,
        "postings": entry.rows(),
        "available_on": entry.available_on,
        "effective_at": when.effective_at,
        "timestamp": when.recorded_at,
    }
