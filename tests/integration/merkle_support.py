"""Helpers for the Merkle log tests: a store with a history made by the Ledger's own commands,
and tampering with its events table behind the Ledger's back (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse
from uuid import uuid4

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.audit_log import Checkpointer, MerkleStore
from adapters.bootstrap import read_model
from adapters.settings import Settings
from ledger import commands as c
from ledger import facts
from ledger.application import Ledger
from tests.support import PLATFORM, T0, new_ledger, new_postgres_schema

SELLER = "acct_a"
OPS = ("charge", "transfer", "topup", "release", "payout")
TAMPERS = ("edit", "delete", "swap", "insert", "truncate")
SHIFT = 1_000_000_000  # moves rows out of the way while renumbering (above any test position)


class Clock:
    """The Ledger's clock: a second later on every call (recorded instants differ)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class Books:
    """A platform and one seller on a real store, its Merkle log and a signing key."""

    url: str
    ledger: Ledger
    view: Any
    store: MerkleStore
    checkpointer: Checkpointer
    key: Ed25519PrivateKey
    settings: Settings
    _n: int = 0
    closers: list[Callable[[], None]] = field(default_factory=list)

    def key_(self) -> str:
        self._n += 1
        return f"k{self._n}"

    def fact(self, cls: type[facts.Fact], **params: Any) -> None:
        at = T0 + timedelta(hours=self._n)
        self.ledger.record(cls(idempotency_key=self.key_(), effective_at=at, **params))

    def apply(self, op: str, amount: int) -> None:
        """One movement, as Stripe reports it (facts are recorded, never refused)."""
        n, usd = self._n, {"currency": "usd"}
        if op == "charge":
            self.fact(
                facts.ChargeSucceeded, payment_id=f"ch_{n}", charge_type="separate",
                amount_minor=amount, stripe_fee_minor=amount // 30,
                available_on=T0 + timedelta(days=2), **usd,
            )  # fmt: skip
        elif op == "transfer":
            self.fact(
                facts.TransferCreated, transfer_id=f"tr_{n}", destination_account_id=SELLER,
                amount_minor=amount, available_on=T0, **usd,
            )  # fmt: skip
        elif op == "topup":
            self.fact(
                facts.TopUpSucceeded, topup_id=f"tu_{n}", account_id=PLATFORM,
                amount_minor=amount, available_on=T0, **usd,
            )  # fmt: skip
        elif op == "release":
            self.fact(
                facts.FundsAvailable, account_id=PLATFORM, until=T0 + timedelta(days=3), **usd
            )
        else:
            self.fact(
                facts.PayoutCreated,
                payout_id=f"po_{n}",
                account_id=SELLER,
                amount_minor=amount,
                **usd,
            )

    def head(self) -> int:
        return int(self.ledger.recorder.max_notification_id() or 0)

    def positions(self) -> list[int]:
        return [p for p, _ in self.ledger.iter_events()]

    def close(self) -> None:
        self.ledger.close()
        self.view.datastore.close()
        for close in reversed(self.closers):
            close()


def open_books(url: str, closers: Sequence[Callable[[], None]] = ()) -> Books:
    settings = Settings(database_url=url)
    ledger = new_ledger(url, Clock())
    view = read_model(settings, create_tables=True)
    key = Ed25519PrivateKey.generate()
    store = MerkleStore(view)
    checkpointer = Checkpointer(ledger, store, key=key, page_events=7)  # pages end mid-history
    books = Books(url, ledger, view, store, checkpointer, key, settings, closers=list(closers))
    ledger.execute(
        c.OpenAccount(
            idempotency_key=books.key_(), effective_at=T0, account_id=PLATFORM, kind="platform"
        )
    )
    ledger.execute(c.OpenAccount(idempotency_key=books.key_(), effective_at=T0, account_id=SELLER))
    return books


@contextmanager
def books_on(backend: str, where: Any) -> Iterator[Books]:
    """``where``: a directory (SQLite) or the PostgreSQL URL (a throwaway schema)."""
    if backend == "sqlite":
        books = open_books(f"sqlite:///{where}/sluice-{uuid4().hex[:8]}.db")
    else:
        url, drop = new_postgres_schema(where)
        books = open_books(url, [drop])
    try:
        yield books
    finally:
        books.close()


# Tampering -------------------------------------------------------------------------------------


class Tamperer:
    """Alters the events table directly, as someone with database access could."""

    def __init__(self, books: Books) -> None:
        self.books = books
        self.table: str = getattr(books.ledger.recorder, "events_table_name")  # noqa: B009
        self.sqlite = books.url.startswith("sqlite")

    @contextmanager
    def _cursor(self) -> Iterator[tuple[Any, str, str]]:
        """(cursor, table, position column), committed at the end."""
        if self.sqlite:
            conn = sqlite3.connect(self.books.url.removeprefix("sqlite:///"))
            try:
                yield conn.cursor(), self.table, "rowid"
                conn.commit()
            finally:
                conn.close()
            return
        import psycopg

        parsed = urlparse(self.books.url)
        schema = parse_qs(parsed.query)["schema"][0]
        with psycopg.connect(self.books.url.split("?", 1)[0]) as pg, pg.cursor() as cur:
            yield cur, f'"{schema}"."{self.table}"', "notification_id"

    def _sql(self, statement: str) -> str:
        return statement.replace("%s", "?") if self.sqlite else statement

    def run(self, kind: str, position: int, other: int | None = None) -> int:
        """Applies one tamper; returns the first position a verifier must name."""
        with self._cursor() as (cur, t, pos):

            def q(statement: str, *params: Any) -> None:
                cur.execute(self._sql(statement.format(t=t, pos=pos)), params)

            if kind == "edit":
                q("SELECT state FROM {t} WHERE {pos} = %s", position)
                state = bytes(cur.fetchone()[0])
                q("UPDATE {t} SET state = %s WHERE {pos} = %s", bump_a_digit(state), position)
            elif kind == "delete":
                q("DELETE FROM {t} WHERE {pos} = %s", position)
            elif kind == "swap":
                assert other is not None and other > position
                q("UPDATE {t} SET {pos} = %s WHERE {pos} = %s", -1, position)
                q("UPDATE {t} SET {pos} = %s WHERE {pos} = %s", position, other)
                q("UPDATE {t} SET {pos} = %s WHERE {pos} = %s", other, -1)
            elif kind == "insert":  # a copy of `position`'s event, as a new one right after it
                q("UPDATE {t} SET {pos} = {pos} + %s WHERE {pos} > %s", SHIFT, position)
                q("UPDATE {t} SET {pos} = {pos} - %s WHERE {pos} > %s", SHIFT - 1, SHIFT)
                q("SELECT topic, state FROM {t} WHERE {pos} = %s", position)
                topic, state = cur.fetchone()
                new_id = uuid4().hex if self.sqlite else uuid4()
                q(
                    "INSERT INTO {t} ({pos}, originator_id, originator_version, topic, state)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    position + 1, new_id, 1, topic, bytes(state),
                )  # fmt: skip
                return position + 1
            elif kind == "truncate":
                q("DELETE FROM {t} WHERE {pos} >= %s", position)
            else:
                raise ValueError(kind)
        return position


def bump_a_digit(state: bytes) -> bytes:
    """The state with one digit changed (an amount, say): still valid JSON, another event."""
    at = state.find(b"amount_minor")
    for i in range(max(at, 0), len(state)):
        if 48 <= state[i] <= 57:
            return state[:i] + bytes([48 + (state[i] - 47) % 10]) + state[i + 1 :]
    raise ValueError("no digit to change")
