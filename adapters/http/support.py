"""What the routes share: the application context, POST and GET response helpers, CSV."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from uuid import UUID

from fastapi import Header, Query, Request
from fastapi.responses import JSONResponse, Response

from adapters import deadlines
from adapters.export import to_csv
from adapters.http.errors import ApiError
from adapters.http.models import UNIX_SECONDS_MAX
from adapters.keys import KeyCache
from adapters.settings import Settings
from ledger.application import CommandResult, Ledger
from ledger.ids import command_record_id
from ledger.instants import from_seconds, to_seconds
from ledger.limits import IDEMPOTENCY_KEY_LEN_MAX
from ledger.records import CommandRecord
from projections.queries import LIST_LIMIT_MAX
from projections.runner import Projector
from projections.store import ReadModel

# Query parameters several routers share.
Format = Annotated[
    Literal["json", "csv"] | None,
    Query(description="csv for a CSV rendering (or send Accept: text/csv)"),
]
Seconds = Annotated[int | None, Query(ge=0, le=UNIX_SECONDS_MAX, description="unix seconds")]
Limit = Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX, description="page size, 1 to 100")]


POSITION_HEADER = "Sluice-Position"
MIN_POSITION_HEADER = "Sluice-Min-Position"
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass
class Sluice:
    """Everything a request needs; one per app (``app.state.sluice``)."""

    settings: Settings
    ledger: Ledger
    view: ReadModel
    projector: Projector
    read_wait_s: float
    keys: KeyCache | None = None
    projector_thread: Any = None
    _query_names: dict[int, frozenset[str]] = field(default_factory=dict)

    # Writes ---------------------------------------------------------------------------------

    def written(
        self, body: dict[str, Any], results: Sequence[tuple[str, CommandResult]]
    ) -> JSONResponse:
        """The response to an accepted POST: ``body`` plus the log position of its events.

        ``results`` pairs each command's idempotency key with its result. A replay has no
        position of its own, so it is looked up (the position of the key's command record,
        which is the last event a command records), keeping the replayed body identical.
        """
        positions = [
            result.position if result.position is not None else self.command_position(key)
            for key, result in results
        ]
        known = [p for p in positions if p is not None]
        position = max(known) if known else None
        replayed = all(result.replayed for _, result in results)
        headers = {POSITION_HEADER: str(position)} if position is not None else {}
        if replayed:
            headers[REPLAYED_HEADER] = "true"
        body = {**body, "livemode": self.settings.livemode, "position": position}
        return JSONResponse(body, headers=headers)

    def command_position(self, idempotency_key: str) -> int | None:
        """Log position of the event that accepted ``idempotency_key`` (None if never used)."""
        return record_position(self.ledger, command_record_id(idempotency_key))

    # Reads ----------------------------------------------------------------------------------

    def read_position(self, request: Request, names: Sequence[str]) -> int:
        """Honours ``Sluice-Min-Position`` (bounded wait) and returns the position the read
        models ``names`` had reached before the query ran: the answer reflects at least it."""
        raw = request.headers.get(MIN_POSITION_HEADER)
        if raw is not None:
            wanted = parse_position(raw)
            wait_s = self.read_wait_s
            left = deadlines.remaining()
            if left is not None:  # leave a second of the request's deadline for the query
                wait_s = max(0.0, min(wait_s, left - 1.0))
            deadline = time.monotonic() + wait_s
            for name in names:
                self.projector.wait_for(name, wanted, max(0.0, deadline - time.monotonic()))
        return min(self.projector.position(name) for name in names)

    def allowed_query(self, request: Request) -> frozenset[str]:
        route = request.scope.get("route")
        names = self._query_names.get(id(route))
        if names is None:
            names = frozenset(_query_names(getattr(route, "dependant", None)))
            self._query_names[id(route)] = names
        return names


def _query_names(dependant: Any) -> set[str]:
    if dependant is None:
        return set()
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def parse_position(raw: str) -> int:
    text = raw.strip()
    if not text.isdigit() or len(text) > 18:
        raise ApiError(
            400,
            "parameter_invalid",
            f"{MIN_POSITION_HEADER} must be a non-negative integer log position",
            param=MIN_POSITION_HEADER,
        )
    return int(text)


def record_position(ledger: Ledger, aggregate_id: UUID) -> int | None:
    """Notification id of an aggregate's first event, straight from the event store."""
    recorder: Any = ledger.recorder
    datastore = getattr(recorder, "datastore", None)
    table = getattr(recorder, "events_table_name", None)
    if datastore is not None and table and hasattr(datastore, "schema"):  # PostgreSQL
        from psycopg.sql import SQL, Identifier

        statement = SQL(
            "SELECT notification_id FROM {}.{} WHERE originator_id = %s"
            " ORDER BY originator_version LIMIT 1"
        ).format(Identifier(datastore.schema), Identifier(table))
        with datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(statement, [aggregate_id])
            row = cursor.fetchone()
        return int(row["notification_id"]) if row else None
    if datastore is not None and table and hasattr(datastore, "transaction"):  # SQLite
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT rowid FROM {table} WHERE originator_id = ?"
                " ORDER BY originator_version LIMIT 1",
                (aggregate_id.hex,),
            )
            row = cursor.fetchone()
        return int(row[0]) if row else None
    for position, event in ledger.iter_events():  # in-memory store: scan (tests only)
        if isinstance(event, CommandRecord.Accepted) and event.originator_id == aggregate_id:
            return position
    return None


async def ctx(request: Request) -> Sluice:
    sluice: Sluice = request.app.state.sluice
    return sluice


async def idempotency_key(
    idempotency_key: str | None = Header(
        default=None,
        alias="Idempotency-Key",
        description="Required on every POST: the same key and body return the first result.",
    ),
) -> str:
    if idempotency_key is None:
        raise ApiError(
            400,
            "idempotency_key_missing",
            "send an Idempotency-Key header with every POST",
            param="Idempotency-Key",
        )
    if not idempotency_key.strip() or len(idempotency_key) > IDEMPOTENCY_KEY_LEN_MAX:
        raise ApiError(
            400,
            "idempotency_key_invalid",
            f"the Idempotency-Key is 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters",
            param="Idempotency-Key",
        )
    return idempotency_key


async def reject_unknown_query(request: Request) -> None:
    """Stripe refuses parameters it does not know; a typo must not silently widen a list."""
    sluice: Sluice = request.app.state.sluice
    allowed = sluice.allowed_query(request)
    for name in request.query_params:
        # metadata[key]=value filters are allowed where a route declares ``metadata``.
        if name.startswith("metadata[") and "metadata" in allowed:
            continue
        if name not in allowed:
            raise ApiError(
                400, "parameter_unknown", f"received unknown parameter: {name}", param=name
            )


def instant(seconds: int | None) -> datetime | None:
    return None if seconds is None else from_seconds(seconds)


def seconds(value: datetime | None) -> int | None:
    return None if value is None else to_seconds(value)


# GET responses ------------------------------------------------------------------------------


def wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip() == "text/csv" for part in accept.split(","))


def json_response(payload: Any, position: int | None) -> JSONResponse:
    headers = {POSITION_HEADER: str(position)} if position is not None else None
    return JSONResponse(payload, headers=headers)


def csv_response(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    position: int | None,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    headers = {POSITION_HEADER: str(position)} if position is not None else {}
    headers |= extra_headers or {}
    return Response(
        to_csv(rows, list(rows[0].keys()) if rows else list(columns)),
        media_type="text/csv; charset=utf-8",
        headers=headers,
    )


def list_response(
    request: Request,
    data: list[dict[str, Any]],
    has_more: bool,
    position: int | None,
    csv: bool,
    columns: Sequence[str],
    cursor: tuple[str, str] | None = ("starting_after", "id"),
) -> Response:
    """Stripe's list object, or its page as CSV (with ``Sluice-Has-More`` and a next link)."""
    if not csv:
        return json_response(
            {"object": "list", "data": data, "has_more": has_more, "url": request.url.path},
            position,
        )
    headers = {"Sluice-Has-More": "true" if has_more else "false"}
    if has_more and data and cursor is not None:
        param, key = cursor
        params = dict(request.query_params)
        params[param] = str(data[-1][key])
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return csv_response(data, columns, position, headers)
