"""Instants at the edges of the ledger: one codec for each representation Sluice stores or shows.

Inside the ledger an instant is an aware ``datetime`` in UTC. Read models keep integer
microseconds since the epoch (exact and sortable); Stripe and the API speak unix seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

MICROS_PER_SECOND = 1_000_000


def to_micros(instant: datetime) -> int:
    """Integer microseconds since the epoch (exact: no float on the way)."""
    return int(instant.timestamp()) * MICROS_PER_SECOND + instant.microsecond


def from_micros(micros: int) -> datetime:
    seconds, micro = divmod(int(micros), MICROS_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micro)


def to_seconds(instant: datetime) -> int:
    """Unix seconds, as Stripe and the API show instants (sub-second part dropped)."""
    return int(instant.timestamp())


def from_seconds(seconds: int | None) -> datetime:
    """Unix seconds (Stripe's ``created``, ``available_on``) as an aware UTC instant."""
    return datetime.fromtimestamp(int(seconds or 0), UTC)


def micros_to_seconds(micros: int | None) -> int | None:
    return None if micros is None else int(micros) // MICROS_PER_SECOND
