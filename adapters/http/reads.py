"""GET routes. Finance queries read the projections (``Sluice-Position`` says how far they had
got; ``Sluice-Min-Position`` waits for a write to show up); accounts and audit read the log."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from adapters import deadlines
from adapters.export import (
    BALANCE_CHANGE_COLUMNS,
    BT_COLUMNS,
    STATEMENT_COLUMNS,
    SUMMARY_COLUMNS,
    ExportError,
    account_metadata,
    balance_change_rows,
    csv_lines,
    finance_balance_transaction,
    finance_payout,
    metadata_columns,
    statement_rows,
    summary_rows,
    zone,
)
from adapters.export import PAYOUT_COLUMNS as PAYOUT_COLUMNS_CSV
from adapters.http.accounts import METADATA_FILTER_DOC, metadata_filters
from adapters.http.auth import account_filter
from adapters.http.errors import API_ERROR, ApiError, ErrorEnvelope, envelope, not_found
from adapters.http.models import ID_PATTERN, TEXT_PATTERN, UNIX_SECONDS_MAX
from adapters.http.onboarding import requirements_out
from adapters.http.payout_reports import PayoutFilter, settled_by_payout
from adapters.http.support import (
    POSITION_HEADER,
    Format,
    Limit,
    Seconds,
    Sluice,
    csv_response,
    ctx,
    instant,
    json_response,
    list_response,
    wants_csv,
)
from ledger.errors import SluiceError
from ledger.instants import micros_to_seconds
from ledger.money import check_currency
from projections import exports, queries
from projections.audit import AUDIT_EVENTS_LIMIT_MAX, events_page, replay
from projections.queries import EXPORT_ROWS_MAX, LIST_LIMIT_DEFAULT, QueryError

router = APIRouter(tags=["reads"])
public_router = APIRouter(tags=["health"])  # no key, no thread pool, no store (but /readyz's)

Ctx = Annotated[Sluice, Depends(ctx)]
AccountId = Annotated[str, Path(min_length=1, max_length=255, pattern=ID_PATTERN)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=255, pattern=ID_PATTERN)]
Filter = Annotated[str | None, Query(min_length=1, max_length=255, pattern=TEXT_PATTERN)]
POSITION_MAX = 2**63 - 1
# The routes served from read models: they honour Sluice-Min-Position.
FROM_READ_MODELS: dict[str, Any] = {
    "parameters": [
        {
            "name": "Sluice-Min-Position",
            "in": "header",
            "required": False,
            "description": "Wait (at most a few seconds) until the read models include this log"
            " position (a POST's `position`). The answer's Sluice-Position says how far they got.",
            "schema": {"type": "integer", "minimum": 0},
        }
    ]
}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Routes that answer CSV too (Accept: text/csv or ?format=csv).
CSV_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or CSV with `Accept: text/csv` or `?format=csv`",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}

BALANCE_TRANSACTION_COLUMNS = (
    "id object account amount available_on created currency description fee fee_details net"
    " reporting_category source status type".split()
)
PAYOUT_COLUMNS = (
    "id object account amount currency status failure_code created updated timeline hold"
    " metadata".split()
)
REVENUE_COLUMNS = "object day currency application_fees application_fee_refunds net count".split()
MOVEMENT_COLUMNS = (
    "position id entry_id kind event book amount currency effective_at recorded_at".split()
)
Tz = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+/-]+$",
        description="CSV: IANA time zone of the instants (default UTC)",
    ),
]
EXPORT_PAGE_DEADLINE_S = 10.0  # each page of a streamed CSV gets its own deadline (see _stream)


def _stream(rows: Iterator[dict[str, Any]], columns: list[str], position: int | None) -> Any:
    """Every row as CSV, streamed: the request's deadline bounds the first page; each later
    page gets ``EXPORT_PAGE_DEADLINE_S`` of its own (an export of a million rows outlives any
    request budget, but no single read may hang)."""

    def paced() -> Iterator[dict[str, Any]]:
        while True:  # ends with the rows (at most EXPORT_ROWS_MAX, see projections.exports)
            token = deadlines.enter(EXPORT_PAGE_DEADLINE_S)
            try:
                row = next(rows, None)
            finally:
                deadlines.leave(token)
            if row is None:
                return
            yield row

    headers = {POSITION_HEADER: str(position)} if position is not None else {}
    headers["Sluice-Export-Rows-Max"] = str(EXPORT_ROWS_MAX)
    return StreamingResponse(
        csv_lines(paced(), columns), media_type="text/csv; charset=utf-8", headers=headers
    )


def _export_zone(tz: str | None) -> Any:
    try:
        return zone(tz)
    except ExportError as error:
        raise ApiError(400, error.code, error.message, param="tz") from None


def _export_size(count: int) -> None:
    if count > EXPORT_ROWS_MAX:
        raise ApiError(
            400,
            "export_too_large",
            f"{count} rows match, over the {EXPORT_ROWS_MAX} a CSV export holds: narrow it",
        )


EVENT_COLUMNS = "position type aggregate_id version data".split()


def _require_account(s: Sluice, account_id: str) -> None:
    if s.ledger.get_account(account_id) is None:
        raise not_found(f"no such account: {account_id}", "account_id")


def _check_cursor(s: Sluice, table: str, cursor: str | None, account: str | None) -> None:
    """An account key may page only from its own objects (another's id is 'no such object')."""
    if cursor is None or account is None:
        return
    with s.view.read() as tx:
        tx.execute(f"SELECT account_id FROM {table} WHERE id = %s", (cursor,))
        row = tx.one()
    if row is None or row["account_id"] != account:
        raise QueryError(f"no such object: {cursor}", "starting_after")


@public_router.get(
    "/healthz",
    name="healthz",
    summary="Liveness: the process answers, with its Stripe mode (no store)",
)
async def healthz(request: Request) -> Any:
    """Answers at once, whatever the store does: restart the process if this fails. Says which
    of Stripe's modes this process books (from its key), so a live deployment can be told from
    a test one at a glance."""
    livemode = request.app.state.sluice.settings.livemode
    return JSONResponse(
        {"status": "ok", "livemode": livemode, "mode": "live" if livemode else "test"}
    )


READY_THREADS = 2  # readiness checks in flight at once (each bounded by its own deadline)
_ready_limiter: list[Any] = []


def _check_store(s: Sluice, timeout_s: float) -> list[str]:
    """The migrations still pending (the store answering is the other half of the check)."""
    from adapters import health

    with deadlines.within(timeout_s):
        return health.pending_migrations(s.view, health.known_migrations(s.settings))


@public_router.get(
    "/readyz",
    name="readyz",
    summary="Readiness: the store answers within its timeout and is migrated",
    responses={
        503: {
            "model": ErrorEnvelope,
            "description": "store_unreachable, store_stalled or migrations_pending",
        }
    },
)
async def readyz(request: Request) -> Any:
    """200 when the store answers within ``http_ready_timeout_s`` and no migration is pending;
    503 with ``store_stalled`` (no answer in time), ``store_unreachable`` (refused) or
    ``migrations_pending`` (run ``sluice db migrate``) otherwise. Runs on threads of its own,
    so a request backlog never delays it."""
    import anyio

    s: Sluice = request.app.state.sluice
    timeout_s = s.settings.http_ready_timeout_s
    if not _ready_limiter:
        _ready_limiter.append(anyio.CapacityLimiter(READY_THREADS))
    code, detail, pending = "", "", []
    with anyio.move_on_after(timeout_s + 0.25) as scope:  # the watchdog ends it first
        try:
            pending = await anyio.to_thread.run_sync(
                _check_store, s, timeout_s, limiter=_ready_limiter[0], abandon_on_cancel=True
            )
        except deadlines.DeadlineExceeded as error:
            code, detail = "store_stalled", str(error)
        except Exception as error:  # refused, reset, unknown host: the store is unreachable
            code, detail = "store_unreachable", type(error).__name__
    if scope.cancelled_caught:
        code, detail = "store_stalled", "no answer in time"
    if not code and pending:
        from adapters.health import migrations_pending

        problem = migrations_pending(pending)
        return envelope(503, API_ERROR, problem.code, problem.message, headers={"Retry-After": "1"})
    if code:
        return envelope(
            503,
            API_ERROR,
            code,
            f"the store did not answer within {timeout_s:g} s ({detail})"
            if code == "store_stalled"
            else f"the store cannot be reached ({detail})",
            headers={"Retry-After": "1"},
        )
    return JSONResponse({"status": "ready"})


@router.get(
    "/v1/status",
    name="service_status",
    summary="Operational details: log head, projection positions and lag, key cache",
)
def service_status(s: Ctx) -> Any:
    head = s.ledger.recorder.max_notification_id() or 0
    with s.view.read() as tx:
        tx.execute("SELECT name, event_recorded, updated FROM rm_projection_meta")
        meta = {row["name"]: row for row in tx.all()}
    projections = {}
    for name in s.projector.projections:
        position = s.projector.position(name)
        seen = meta.get(name)
        projections[name] = {
            "position": position,
            "behind": max(0, head - position),  # positions may have gaps: at most this many
            "updated": micros_to_seconds(seen["updated"]) if seen else None,
        }
    thread = s.projector_thread
    loaded = s.keys.loaded_at if s.keys is not None else None
    return JSONResponse(
        {
            "object": "status",
            "livemode": s.settings.livemode,
            "head": head,
            "projector_running": bool(thread is not None and thread.is_alive()),
            "projections": projections,
            "keys_age_s": None if loaded is None else round(time.monotonic() - loaded, 3),
            # Waiting on an operator: Stripe took no payout or transfer for a key or permission
            # reason (held: adapters.stripe.errors); {"payouts": n, "routings": m}.
            "held": queries.hold_counts(s.view),
        }
    )


@router.get("/v1/accounts/{account_id}", name="retrieve_account", summary="An account's state")
def retrieve_account(account_id: AccountId, s: Ctx) -> Any:
    account = s.ledger.get_account(account_id)
    if account is None:
        raise not_found(f"no such account: {account_id}", "account_id")
    schedule = dict(account.schedule)
    minimums = schedule.pop("minimum_minor", None) or {}
    return {
        "id": account.account_id,
        "object": "account",
        "kind": account.kind,
        # getattr: an account snapshot taken before profiles existed has none.
        "name": getattr(account, "name", None),
        "email": getattr(account, "email", None),
        "metadata": dict(getattr(account, "metadata", None) or {}),
        "country": account.country,
        "default_currency": account.default_currency,
        "verification_status": account.verification_status,
        "capabilities": dict(account.capabilities),
        "charges_enabled": account.charges_enabled,
        "payouts_enabled": account.payouts_enabled,
        "settings": {"payouts": {"schedule": {**schedule, "minimum_amount": dict(minimums)}}},
        "closed": account.closed,
        "livemode": s.settings.livemode,
        "requirements": requirements_out(getattr(account, "requirements", None)),
    }


@router.get(
    "/v1/balances/{account_id}",
    name="retrieve_balance",
    openapi_extra=FROM_READ_MODELS,
    summary="Pending/available/reserved",
)
def retrieve_balance(account_id: AccountId, request: Request, s: Ctx) -> Any:
    _require_account(s, account_id)
    position = s.read_position(request, ["balances"])
    balance = queries.balance(s.view, account_id) | {"livemode": s.settings.livemode}
    return json_response(balance, position)


@router.get(
    "/v1/balance_transactions",
    name="list_balance_transactions",
    responses=CSV_OK,
    openapi_extra=FROM_READ_MODELS,
    summary="Balance transactions, newest first",
)
def list_balance_transactions(
    request: Request,
    s: Ctx,
    account: Filter = None,
    currency: Filter = None,
    type: Filter = None,
    source: Filter = None,
    created_gte: Annotated[Seconds, Query(alias="created[gte]")] = None,
    created_lt: Annotated[Seconds, Query(alias="created[lt]")] = None,
    limit: Limit = LIST_LIMIT_DEFAULT,
    starting_after: Cursor = None,
    format: Format = None,
    tz: Tz = None,
    payout: PayoutFilter = None,
) -> Any:
    """JSON: one page, newest first. CSV: every matching row, oldest first, finance-ready
    (``adapters.export``); ``limit`` and ``starting_after`` page the JSON only. ``payout``: what
    it settled and its own transactions, as Stripe lists them (``adapters.http.payout_reports``)."""
    if payout is not None:
        filters = {
            "currency": currency, "type": type, "source": source,
            "created_gte": created_gte, "created_lt": created_lt,
        }  # fmt: skip
        return settled_by_payout(request, s, payout, filters, wants_csv(request, format), tz)
    account = account_filter(request, account)
    _check_cursor(s, "rm_balance_transactions", starting_after, account)
    position = s.read_position(request, ["balance_transactions"])
    if wants_csv(request, format):
        filters = {
            "account": account, "currency": currency, "type": type, "source": source,
            "created_gte": created_gte, "created_lt": created_lt,
        }  # fmt: skip
        zone_ = _export_zone(tz)
        _export_size(exports.count_balance_transactions(s.view, **filters))
        keys, metadata_of = account_metadata(
            s.ledger.get_account, exports.accounts_in(s.view, account)
        )
        rows = (
            finance_balance_transaction(bt, zone_, keys, metadata_of)
            for bt in exports.iter_balance_transactions(s.view, **filters)
        )
        return _stream(rows, BT_COLUMNS + metadata_columns(keys), position)
    page = queries.list_balance_transactions(
        s.view,
        account=account,
        currency=currency,
        type=type,
        source=source,
        created_gte=created_gte,
        created_lt=created_lt,
        limit=limit,
        starting_after=starting_after,
    )
    return list_response(
        request,
        page.data,
        page.has_more,
        position,
        wants_csv(request, format),
        BALANCE_TRANSACTION_COLUMNS,
    )


@router.get(
    "/v1/payouts",
    name="list_payouts",
    responses=CSV_OK,
    openapi_extra={"parameters": [*FROM_READ_MODELS["parameters"], METADATA_FILTER_DOC]},
    summary="Payouts, newest first: filter by account, status, metadata",
)
def list_payouts(
    request: Request,
    s: Ctx,
    metadata: Annotated[dict[str, str], Depends(metadata_filters)],
    account: Filter = None,
    status: Annotated[
        Literal["pending", "held", "in_transit", "paid", "failed", "canceled"] | None, Query()
    ] = None,
    limit: Limit = LIST_LIMIT_DEFAULT,
    starting_after: Cursor = None,
    format: Format = None,
    tz: Tz = None,
) -> Any:
    """JSON: one page, newest first. CSV: every matching payout, oldest first."""
    account = account_filter(request, account)
    _check_cursor(s, "rm_payouts", starting_after, account)
    position = s.read_position(request, ["payouts"])
    if wants_csv(request, format):
        zone_ = _export_zone(tz)
        chosen = {"account": account, "status": status, "metadata": metadata}
        _export_size(exports.count_payouts(s.view, **chosen))
        keys, metadata_of = account_metadata(
            s.ledger.get_account, exports.accounts_in(s.view, account)
        )
        rows = (
            finance_payout(p, zone_, keys, metadata_of)
            for p in exports.iter_payouts(s.view, **chosen)
        )
        return _stream(rows, PAYOUT_COLUMNS_CSV + metadata_columns(keys), position)
    page = queries.list_payouts(
        s.view,
        account=account,
        status=status,
        metadata=metadata,
        limit=limit,
        starting_after=starting_after,
    )
    return list_response(
        request, page.data, page.has_more, position, wants_csv(request, format), PAYOUT_COLUMNS
    )


@router.get(
    "/v1/accounts/{account_id}/statement",
    name="retrieve_statement",
    responses=CSV_OK,
    openapi_extra=FROM_READ_MODELS,
    summary="Opening balance, movements, closing balance for from ≤ created < to",
)
def retrieve_statement(
    account_id: AccountId,
    request: Request,
    s: Ctx,
    currency: Annotated[str, Query(min_length=1, max_length=8, pattern=ID_PATTERN)],
    start: Annotated[Seconds, Query(alias="from")] = None,
    end: Annotated[Seconds, Query(alias="to")] = None,
    format: Format = None,
    tz: Tz = None,
) -> Any:
    """CSV: an opening row, every movement with the balance after it, a closing row."""
    try:
        check_currency(currency)
    except SluiceError as error:
        raise ApiError(400, error.code, error.message, param="currency") from None
    _require_account(s, account_id)
    position = s.read_position(request, ["balance_transactions"])
    result = queries.statement(
        s.view,
        account_id,
        currency,
        0 if start is None else start,
        UNIX_SECONDS_MAX + 1 if end is None else end,
    )
    if wants_csv(request, format):
        response = _stream(statement_rows(result, _export_zone(tz)), STATEMENT_COLUMNS, position)
        response.headers["Sluice-Opening-Balance"] = str(result["opening_balance"])
        response.headers["Sluice-Closing-Balance"] = str(result["closing_balance"])
        return response
    return json_response(result, position)


def _day(value: str, param: str) -> str:
    try:
        if not DAY.match(value):
            raise ValueError(value)
        date.fromisoformat(value)
    except ValueError:
        raise ApiError(
            400, "parameter_invalid", f"{param} is a day, YYYY-MM-DD", param=param
        ) from None
    return value


@router.get(
    "/v1/revenue",
    name="retrieve_revenue",
    responses=CSV_OK,
    openapi_extra=FROM_READ_MODELS,
    summary="Platform fee revenue per day",
)
def retrieve_revenue(
    request: Request,
    s: Ctx,
    start: Annotated[str, Query(alias="from", description="first day, YYYY-MM-DD")],
    end: Annotated[str, Query(alias="to", description="day after the last, YYYY-MM-DD")],
    format: Format = None,
) -> Any:
    day_from, day_to = _day(start, "from"), _day(end, "to")
    if day_to <= day_from:
        raise ApiError(400, "parameter_invalid", "to must be after from", param="to")
    position = s.read_position(request, ["revenue"])
    rows = queries.revenue(s.view, day_from, day_to)
    return list_response(
        request, rows, False, position, wants_csv(request, format), REVENUE_COLUMNS
    )


def _period_of(start: int | None, end: int | None) -> tuple[int, int]:
    lo, hi = 0 if start is None else start, UNIX_SECONDS_MAX + 1 if end is None else end
    if hi <= lo:
        raise ApiError(400, "parameter_invalid", "to must be after from", param="to")
    return lo, hi


@router.get(
    "/v1/reports/balance_change",
    name="retrieve_balance_change_report",
    responses=CSV_OK,
    openapi_extra=FROM_READ_MODELS,
    summary="Balance change from activity by reporting category, per currency, from ≤ created < to",
)
def retrieve_balance_change_report(
    request: Request,
    s: Ctx,
    account: Filter = None,
    start: Annotated[Seconds, Query(alias="from")] = None,
    end: Annotated[Seconds, Query(alias="to")] = None,
    format: Format = None,
) -> Any:
    """Per currency: an opening row, one row per reporting category (count, gross, fee, net),
    a closing row (= opening + the categories' nets). ``account`` defaults to the platform."""
    account = account_filter(request, account) or s.settings.platform_account_id
    position = s.read_position(request, ["balance_transactions"])
    rows = exports.balance_change(s.view, account, *_period_of(start, end))
    if wants_csv(request, format):
        return _stream(iter(balance_change_rows(rows)), BALANCE_CHANGE_COLUMNS, position)
    return json_response({"object": "list", "data": rows, "has_more": False}, position)


@router.get(
    "/v1/reports/seller_summaries",
    name="list_seller_summaries",
    responses=CSV_OK,
    openapi_extra=FROM_READ_MODELS,
    summary="Per seller and currency: opening, gross, fees, refunds, disputes, transfers,"
    " payouts, other, closing for from ≤ created < to",
)
def list_seller_summaries(
    request: Request,
    s: Ctx,
    account: Filter = None,
    start: Annotated[Seconds, Query(alias="from")] = None,
    end: Annotated[Seconds, Query(alias="to")] = None,
    format: Format = None,
) -> Any:
    """Closing = opening + the movements, exactly. The platform is not a seller."""
    account = account_filter(request, account)
    position = s.read_position(request, ["balance_transactions"])
    try:
        rows = exports.seller_summaries(
            s.view, *_period_of(start, end), account=account,
            exclude=[s.settings.platform_account_id],
        )  # fmt: skip
    except QueryError as error:
        raise ApiError(400, "export_too_large", str(error), param=error.param) from None
    if wants_csv(request, format):
        keys, metadata_of = account_metadata(s.ledger.get_account, [r["account"] for r in rows])
        return _stream(
            iter(summary_rows(rows, keys, metadata_of)),
            SUMMARY_COLUMNS + metadata_columns(keys),
            position,
        )
    return json_response({"object": "list", "data": rows, "has_more": False}, position)


@router.get(
    "/v1/audit/balances/{account_id}",
    name="audit_balances",
    responses=CSV_OK,
    summary="Balances and movements replayed from the events (as_of, recorded_as_of)",
)
def audit_balances(
    account_id: AccountId,
    request: Request,
    s: Ctx,
    as_of: Seconds = None,
    recorded_as_of: Seconds = None,
    format: Format = None,
) -> Any:
    _require_account(s, account_id)
    result = replay(
        s.ledger, account_id, as_of=instant(as_of), recorded_as_of=instant(recorded_as_of)
    )
    if wants_csv(request, format):
        return csv_response(result.movements, MOVEMENT_COLUMNS, result.position)
    return json_response(result.as_dict(), result.position)


@router.get(
    "/v1/audit/events", name="audit_events", responses=CSV_OK, summary="The raw event log, in order"
)
def audit_events(
    request: Request,
    s: Ctx,
    after: Annotated[int, Query(ge=0, le=POSITION_MAX, description="log position")] = 0,
    limit: Annotated[int, Query(ge=1, le=AUDIT_EVENTS_LIMIT_MAX)] = 100,
    format: Format = None,
) -> Any:
    page = events_page(s.ledger, after, limit)
    data = page["data"]
    if wants_csv(request, format):
        return list_response(
            request, data, page["has_more"], None, True, EVENT_COLUMNS, ("after", "position")
        )
    return {**page, "url": request.url.path}
