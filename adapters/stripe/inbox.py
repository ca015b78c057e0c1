"""The Stripe webhook inbox: verified events stored once (deduplicated on ``evt_`` id) before
anything acts on them, then folded into the ledger at Sluice's own pace.

A signed event Sluice cannot parse (``parse_event``: malformed fields, nesting deeper than
``NESTING_MAX``, larger than ``EVENT_PAYLOAD_BYTES_MAX``) is stored too, as ``unparseable`` with
the reason and the raw body (base64), and counted: Stripe gets its 2xx and stops retrying, and
nothing is dropped silently. ``due`` never hands such an event to the folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from projections.store import ReadModel

# The inbox's table, ``sl_stripe_events`` (event_id, type, account, livemode, created, received,
# payload, status, attempts, last_error, processed, outcome), comes from the migrations
# (migrations/, `sluice db migrate`): it can't be rebuilt from events.
PENDING = "pending"  # stored, not yet folded
PARKED = "parked"  # refused for now (e.g. out of order); retried on the next pass
PROCESSED = "processed"
IGNORED = "ignored"  # other livemode, or a type Sluice does not fold (counted, kept)
FAILED = "failed"  # gave up after ATTEMPTS_MAX; needs a person
UNPARSEABLE = "unparseable"  # signed, but not an event Sluice can read: kept, never folded
# Stripe refused Sluice's credentials or permissions while folding (a hold-class error: a
# rotated or mis-scoped key): never failed for it, retried every HELD_RETRY_S until fixed.
HELD = "held"
STATUSES = (PENDING, PARKED, PROCESSED, IGNORED, FAILED, UNPARSEABLE, HELD)
HELD_RETRY_S = 60  # a fixed key is picked up within a minute; a broken one costs a call a minute
EVENT_PAYLOAD_BYTES_MAX = 512 * 1024
NESTING_MAX = 32  # Stripe's objects nest a handful of levels; deeper is not one of its events
CREATED_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z, as the API's unix seconds
_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,255}$")  # ids and types: printable ASCII, no spaces
_EVENT_ID = re.compile(r"^evt_[\x21-\x7e]{1,251}$")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_FIRST_ID = re.compile(r'"id"\s*:\s*"(evt_(?:[^"\\]|\\.){0,300})"')


class NotAnEvent(ValueError):
    """A signed body that is no Stripe event at all (not JSON, not an object, no ``evt_`` id)."""


@dataclass(frozen=True)
class Parsed:
    """``event`` when it is an event Sluice can fold, else ``reason`` and the id to store it by."""

    event: dict[str, Any] | None
    event_id: str
    type: str
    reason: str | None = None


def nesting_depth(text: str) -> int:
    """How deep JSON arrays and objects nest in ``text`` (strings skipped), without parsing."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub('""', text))
    depth = deepest = 0
    for ch in brackets:  # only the brackets are left: short for any real event
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _unparseable_id(raw_id: str) -> str:
    return "evt_unparseable_" + hashlib.sha256(raw_id.encode("utf-8", "replace")).hexdigest()[:32]


def parse_event(raw: bytes) -> Parsed:
    """Reads a verified webhook body. Raises ``NotAnEvent`` for a body that is no event at all;
    returns ``Parsed`` with a ``reason`` for an event Sluice cannot fold."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotAnEvent(f"not UTF-8: {error.reason}") from None
    try:
        event = json.loads(text)
    except RecursionError:
        found = _FIRST_ID.search(text)
        if found is None:
            raise NotAnEvent("nested too deeply to read, and no evt_ id found") from None
        candidate = found.group(1)
        plain = _EVENT_ID.match(candidate) and "\\" not in candidate
        stored_id = candidate if plain else _unparseable_id(candidate)
        return Parsed(None, stored_id, UNPARSEABLE, "nested too deeply to read")
    except ValueError as error:
        raise NotAnEvent(f"not JSON: {error}") from None
    if not isinstance(event, dict):
        raise NotAnEvent("not a JSON object")
    raw_id = event.get("id")
    if not isinstance(raw_id, str) or not raw_id.startswith("evt_"):
        raise NotAnEvent("no evt_ id: not a Stripe event")
    kind = event.get("type")
    clean_type = kind if isinstance(kind, str) and _PRINTABLE.match(kind) else UNPARSEABLE
    reason = _problem(event, raw, text)
    if not _EVENT_ID.match(raw_id):
        reason = reason or "id is not a printable evt_ id of at most 255 characters"
        return Parsed(None, _unparseable_id(raw_id), clean_type, reason)
    if reason is not None:
        return Parsed(None, raw_id, clean_type, reason)
    return Parsed(event, raw_id, clean_type)


def _problem(event: dict[str, Any], raw: bytes, text: str) -> str | None:
    """Why a JSON object with an evt_ id is not an event Sluice can fold (None: it is)."""
    if len(raw) > EVENT_PAYLOAD_BYTES_MAX:
        return f"larger than {EVENT_PAYLOAD_BYTES_MAX} bytes"
    if nesting_depth(text) > NESTING_MAX:
        return f"nested deeper than {NESTING_MAX} levels"
    kind = event.get("type")
    if not isinstance(kind, str) or not _PRINTABLE.match(kind):
        return "type is not a printable string of at most 255 characters"
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        return "created is not an integer"
    if not 0 <= created <= CREATED_MAX:
        return f"created is out of range (0 to {CREATED_MAX})"
    account = event.get("account")
    if account is not None and (not isinstance(account, str) or not _PRINTABLE.match(account)):
        return "account is neither null nor a printable id"
    livemode = event.get("livemode", False)
    if not isinstance(livemode, bool):
        return "livemode is not a boolean"
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return "data.object is not an object"
    return None


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    type: str
    account: str | None
    livemode: bool
    created: int
    attempts: int
    payload: dict[str, Any]


_INSERT_EVENT = (
    "INSERT INTO sl_stripe_events (event_id, type, account, livemode, created, received,"
    " payload, status, attempts) VALUES {rows}"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
_EVENT_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, 0)"
STORE_MANY_MAX = 100  # rows per statement: 8 parameters each stays under SQLite's 999


def _row(event: dict[str, Any], raw: bytes, received: int) -> tuple[Any, ...]:
    return (
        str(event["id"]),
        str(event.get("type", "")),
        event.get("account"),
        1 if event.get("livemode") else 0,
        int(event.get("created") or 0),
        received,
        raw.decode("utf-8"),
        PENDING,
    )


def store(view: ReadModel, event: dict[str, Any], raw: bytes) -> bool:
    """Stores a verified event once. Returns False for a duplicate delivery."""
    return store_many(view, [(event, raw)])[0]


def store_many(view: ReadModel, items: list[tuple[dict[str, Any], bytes]]) -> list[bool]:
    """Stores verified events in one statement, committed on its own (one round trip on
    PostgreSQL); says of each whether it was new. Of two deliveries of one event in ``items``,
    the first stores it and the second is the duplicate, as if they came one after the other."""
    if not 1 <= len(items) <= STORE_MANY_MAX:
        raise ValueError(f"store_many takes 1 to {STORE_MANY_MAX} events")
    received = int(time.time())
    returned = view.write_one(
        _INSERT_EVENT.format(rows=", ".join([_EVENT_ROW] * len(items))),
        [value for event, raw in items for value in _row(event, raw, received)],
    )
    inserted = {row["event_id"] for row in returned}
    outcome = []
    for event, _ in items:
        event_id = str(event["id"])
        outcome.append(event_id in inserted)
        inserted.discard(event_id)  # a second delivery in the same group is the duplicate
    return outcome


def store_unparseable(view: ReadModel, parsed: Parsed, raw: bytes) -> bool:
    """Stores a signed event Sluice cannot parse, once (by its id, or a hash of a bad one), with
    the reason and the raw body. Returns False for a duplicate delivery."""
    reason = (parsed.reason or "unparseable").replace("\x00", "\\x00")[:2000]
    payload = json.dumps(
        {"unparseable": reason, "raw_base64": base64.b64encode(raw).decode("ascii")}
    )
    with view.write(None) as tx:
        tx.execute(
            "INSERT INTO sl_stripe_events (event_id, type, account, livemode, created, received,"
            " payload, status, attempts, last_error, outcome)"
            " VALUES (%s, %s, NULL, 0, 0, %s, %s, %s, 0, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            (parsed.event_id, parsed.type, int(time.time()), payload, UNPARSEABLE, reason,
             UNPARSEABLE),
        )  # fmt: skip
        return tx.one() is not None


def due(view: ReadModel, limit: int) -> list[StoredEvent]:
    """Events to fold next, oldest first (``created`` has 1 s resolution; ties by arrival)."""
    with view.read() as tx:
        tx.execute(
            "SELECT event_id, type, account, livemode, created, attempts, payload"
            " FROM sl_stripe_events WHERE status IN (%s, %s)"
            " OR (status = %s AND processed <= %s)"
            " ORDER BY created, received, event_id LIMIT %s",
            (PENDING, PARKED, HELD, int(time.time()) - HELD_RETRY_S, limit),
        )
        rows = tx.all()
    return [
        StoredEvent(
            r["event_id"],
            r["type"],
            r["account"],
            bool(r["livemode"]),
            int(r["created"]),
            int(r["attempts"]),
            json.loads(r["payload"]),
        )
        for r in rows
    ]


def mark(view: ReadModel, event_id: str, status: str, outcome: str, error: str | None) -> None:
    with view.write(None) as tx:
        tx.execute(
            "UPDATE sl_stripe_events SET status = %s, outcome = %s, last_error = %s,"
            " attempts = attempts + 1, processed = %s WHERE event_id = %s",
            (status, outcome[:500], error[:2000] if error else None, int(time.time()), event_id),
        )


def counts(view: ReadModel) -> dict[str, dict[str, int]]:
    """Per status, per event type: what the inbox holds."""
    with view.read() as tx:
        tx.execute("SELECT status, type, COUNT(*) AS n FROM sl_stripe_events GROUP BY status, type")
        rows = tx.all()
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["status"], {})[r["type"]] = int(r["n"])
    return out


def mode_counts(view: ReadModel) -> dict[bool, int]:
    """Stored events per Stripe mode (livemode true/false): events of the mode a deployment does
    not book stay stored (status ignored) and are counted here, so a wrong key shows."""
    with view.read() as tx:
        tx.execute("SELECT livemode, COUNT(*) AS n FROM sl_stripe_events GROUP BY livemode")
        rows = tx.all()
    return {bool(r["livemode"]): int(r["n"]) for r in rows}
