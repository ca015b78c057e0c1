"""The Stripe webhook inbox: verified events stored once (deduplicated on ``evt_`` id) before
anything acts on them, then folded into the ledger at Sluice's own pace."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from projections.store import ReadModel

INBOX_DDL = (
    "CREATE TABLE IF NOT EXISTS sl_stripe_events ("
    " event_id TEXT PRIMARY KEY, type TEXT NOT NULL, account TEXT, livemode BIGINT NOT NULL,"
    " created BIGINT NOT NULL, received BIGINT NOT NULL, payload TEXT NOT NULL,"
    " status TEXT NOT NULL, attempts BIGINT NOT NULL, last_error TEXT, processed BIGINT,"
    " outcome TEXT)",
    "CREATE INDEX IF NOT EXISTS ix_stripe_events_status ON sl_stripe_events (status, created)",
)
PENDING = "pending"  # stored, not yet folded
PARKED = "parked"  # refused for now (e.g. out of order); retried on the next pass
PROCESSED = "processed"
IGNORED = "ignored"  # other livemode, or a type Sluice does not fold (counted, kept)
FAILED = "failed"  # gave up after ATTEMPTS_MAX; needs a person
STATUSES = (PENDING, PARKED, PROCESSED, IGNORED, FAILED)
EVENT_PAYLOAD_BYTES_MAX = 512 * 1024


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    type: str
    account: str | None
    livemode: bool
    created: int
    attempts: int
    payload: dict[str, Any]


def store(view: ReadModel, event: dict[str, Any], raw: bytes) -> bool:
    """Stores a verified event once. Returns False for a duplicate delivery."""
    with view.write(None) as tx:
        tx.execute(
            "INSERT INTO sl_stripe_events (event_id, type, account, livemode, created, received,"
            " payload, status, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            (
                str(event["id"]),
                str(event.get("type", "")),
                event.get("account"),
                1 if event.get("livemode") else 0,
                int(event.get("created") or 0),
                int(time.time()),
                raw.decode("utf-8"),
                PENDING,
            ),
        )
        return tx.one() is not None


def due(view: ReadModel, limit: int) -> list[StoredEvent]:
    """Events to fold next, oldest first (``created`` has 1 s resolution; ties by arrival)."""
    with view.read() as tx:
        tx.execute(
            "SELECT event_id, type, account, livemode, created, attempts, payload"
            " FROM sl_stripe_events WHERE status IN (%s, %s)"
            " ORDER BY created, received, event_id LIMIT %s",
            (PENDING, PARKED, limit),
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
