"""Stripe-shaped errors: every failure leaves as ``{"error": {type, code, message, param}}``.

Domain errors (``SluiceError``) keep their code, message, param and HTTP status. FastAPI's own
failures (validation, unknown routes, wrong methods, malformed JSON) are reshaped to the same
envelope; anything unexpected becomes a 500 ``api_error`` without a traceback in the body.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import DataError, InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.deadlines import DeadlineExceeded
from ledger.errors import ConcurrencyError, IdempotencyConflictError, SluiceError
from projections.queries import QueryError

log = logging.getLogger("sluice.http")

INVALID_REQUEST = "invalid_request_error"
API_ERROR = "api_error"
AUTHENTICATION_ERROR = "authentication_error"
PERMISSION_ERROR = "permission_error"
IDEMPOTENCY_ERROR = "idempotency_error"


class ErrorBody(BaseModel):
    type: str = Field(description="invalid_request_error, api_error, authentication_error, …")
    code: str
    message: str
    param: str | None = None


class ErrorEnvelope(BaseModel):
    """Every error response (documentation only)."""

    error: ErrorBody


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc("Invalid request: a parameter is missing, unknown or invalid"),
    401: _doc("No API key, or an invalid one"),
    403: _doc("The key's role may not use this route"),
    404: _doc("No such object (or not visible to this key)"),
    503: _doc(
        "deadline_exceeded or store_unavailable: nothing was half-written; retry after"
        " Retry-After seconds (a POST with the same Idempotency-Key)"
    ),
}
RETRY_AFTER_S = 1
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    402: _doc("Insufficient available funds"),
    409: _doc("Idempotency conflict, invalid state transition or existing object"),
}


class ApiError(Exception):
    """An error raised by the HTTP layer itself (auth, headers, query parameters)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type: str = INVALID_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.headers = headers or {}


def not_found(message: str, param: str | None = None) -> ApiError:
    return ApiError(404, "resource_missing", message, param=param)


def envelope(
    status: int,
    type: str,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"type": type, "code": code, "message": message, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def param_path(loc: Sequence[Any]) -> str | None:
    """FastAPI's error location as a Stripe parameter path: ``split[0][account]``."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path") else []
    if loc and loc[0] == "header" and len(loc) > 1:
        return str(loc[1])
    if not parts:
        return None
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {"type": "value_error", "loc": (), "msg": "invalid request"}
    kind, loc = str(first.get("type", "")), tuple(first.get("loc", ()))
    param = param_path(loc)
    if kind == "json_invalid":
        return envelope(400, INVALID_REQUEST, "json_invalid", "the request body is not valid JSON")
    if loc == ("body",):
        if kind == "missing":
            return envelope(
                400, INVALID_REQUEST, "parameter_missing", "the request needs a JSON object body"
            )
        return envelope(
            400, INVALID_REQUEST, "parameter_invalid", "the request body must be a JSON object"
        )
    if kind == "missing":
        code, message = "parameter_missing", f"missing required parameter: {param}"
    elif kind == "extra_forbidden":
        code, message = "parameter_unknown", f"received unknown parameter: {param}"
    else:
        code, message = "parameter_invalid", f"invalid {param}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return envelope(400, INVALID_REQUEST, code, message, param)


def sluice_error_response(error: SluiceError) -> JSONResponse:
    if isinstance(error, IdempotencyConflictError):
        kind = IDEMPOTENCY_ERROR
    elif isinstance(error, ConcurrencyError):
        kind = API_ERROR
    else:
        kind = INVALID_REQUEST
    status = error.http_status if 400 <= error.http_status < 500 else 400
    return envelope(status, kind, error.code, error.message, error.param)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(413, "request body too large")


def deadline_response(budget_s: float | None = None) -> JSONResponse:
    within = f" of {budget_s:g} s" if budget_s else ""
    return envelope(
        503,
        API_ERROR,
        "deadline_exceeded",
        f"the request did not finish within its deadline{within}; nothing was half-written:"
        " retry later (a POST with the same Idempotency-Key, which answers with the first"
        " result if it was recorded)",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def body_too_large(max_bytes: int) -> JSONResponse:
    """The answer to a declared Content-Length over the limit (or not a number)."""
    return envelope(413, INVALID_REQUEST, "body_too_large", f"bodies are at most {max_bytes} bytes")


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with a 413 envelope.

    A declared Content-Length over the limit is answered before anything is read; a chunked
    body that runs over it stops being read there and the request is answered 413 too (the
    error is an HTTP exception, so every route, the webhook's included, answers it alike).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await body_too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


def install(app: FastAPI, authorize_late: Any) -> None:
    """Registers the handlers. ``authorize_late(request)`` re-checks credentials for requests
    rejected before their dependencies ran (a malformed body), so 401/403 still come first."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.type, exc.code, exc.message, exc.param, exc.headers)

    @app.exception_handler(SluiceError)
    async def _sluice_error(_: Request, exc: SluiceError) -> JSONResponse:
        return sluice_error_response(exc)

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        return envelope(400, INVALID_REQUEST, "parameter_invalid", str(exc), exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if not getattr(request.state, "authorized", False):
            try:
                await authorize_late(request)
            except ApiError as denied:
                return await _api_error(request, denied)
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return envelope(404, INVALID_REQUEST, "route_not_found", "unrecognized request URL")
        if exc.status_code == 405:
            return envelope(
                405, INVALID_REQUEST, "method_not_allowed", "method not allowed", None, headers
            )
        if exc.status_code == 413:
            return envelope(413, INVALID_REQUEST, "body_too_large", "the request body is too large")
        if 400 <= exc.status_code < 500:
            detail = exc.detail if isinstance(exc.detail, str) else "bad request"
            return envelope(exc.status_code, INVALID_REQUEST, "request_invalid", detail)
        return envelope(exc.status_code, API_ERROR, "internal_error", "internal error")

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        log.warning("deadline exceeded: %s %s: %s", request.method, request.url.path, exc)
        return deadline_response(getattr(request.app.state, "request_timeout_s", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _store_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("store unavailable: %s", exc)
        return envelope(
            503,
            API_ERROR,
            "store_unavailable",
            "the store is unavailable; nothing was half-written: retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> JSONResponse:
        # The last line of defence: validation should refuse such values first.
        log.warning("a value the store refused: %s", exc)
        return envelope(
            400, INVALID_REQUEST, "parameter_invalid", "a value of the request cannot be stored"
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return envelope(500, API_ERROR, "internal_error", "an unexpected error occurred")
