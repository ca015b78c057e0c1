"""``POST /webhooks/stripe``: verify the signature on the raw body, store the event once, 2xx.

Nothing is folded here: the event is recorded first and applied later (``sluice inbox process``
or the workers), so Stripe gets its answer fast and a slow or failing fold never loses an event.
A signed event Sluice cannot parse is stored as ``unparseable`` (with the reason) and answered
200 too, so Stripe stops retrying it; a signed body that is no event at all is a 400.

``WebhookIngest`` answers these requests in ``sluice serve`` ahead of the generic routing: the
event loop's per-request work, not the store, bounded webhook ingest.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import stripe
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette._utils import get_route_path  # how the router reads the path
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http.auth import PUBLIC, access_for
from adapters.http.errors import (
    API_ERROR,
    INVALID_REQUEST,
    BodyTooLarge,
    ErrorEnvelope,
    body_too_large,
    envelope,
)
from adapters.http.support import Sluice
from adapters.inbox_writer import writer_for
from adapters.stripe import inbox

router = APIRouter(tags=["webhooks"])
WEBHOOK_PATH = "/webhooks/stripe"
ROUTE_NAME = "stripe_webhook"
log = logging.getLogger("sluice.http")


def signed_at(signature: str) -> int | None:
    """The ``t=`` timestamp of a Stripe-Signature header, read as Stripe's SDK reads it."""
    for item in signature.split(","):
        name, _, value = item.partition("=")
        if name.strip() == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify(
    raw: bytes, signature: str, secrets: str, tolerance_s: int
) -> stripe.SignatureVerificationError | None:
    """Checks the signature with Stripe's SDK against each configured secret (one per endpoint,
    platform and Connect, and old and new while rotating). None when one of them matches."""
    failures: list[stripe.SignatureVerificationError] = []
    for secret in (part.strip() for part in secrets.split(",") if part.strip()):
        try:
            stripe.WebhookSignature.verify_header(
                raw.decode("utf-8"), signature, secret, tolerance_s
            )
        except stripe.SignatureVerificationError as error:
            failures.append(error)
        else:
            return None
    if not failures:
        return stripe.SignatureVerificationError("no webhook secret configured", signature)
    # A signature that matched a secret but is too old says more than the other mismatches.
    stale = [f for f in failures if "tolerance" in str(f).lower()]
    return (stale or failures)[0]


@router.post(
    WEBHOOK_PATH,
    name=ROUTE_NAME,
    status_code=200,
    responses={
        400: {
            "model": ErrorEnvelope,
            "description": "signature_missing, signature_invalid, signature_stale,"
            " signature_future, or payload_invalid (signed, but no Stripe event at all)",
        },
        413: {"model": ErrorEnvelope, "description": "body_too_large"},
        503: {
            "model": ErrorEnvelope,
            "description": "webhook_secret_missing, deadline_exceeded or store_unavailable:"
            " nothing was stored; Stripe retries",
        },
    },
)
async def stripe_webhook(request: Request) -> Any:
    """Receives Stripe's (or the sandbox's) signed events. No API key: the signature is the
    credential. A missing, forged, tampered or stale signature is a 400 and stores nothing.

    In ``sluice serve`` these requests are answered by ``WebhookIngest`` (same checks, same
    answers) before the generic routing; this route documents them and serves any app built
    without that middleware."""
    sluice: Sluice = request.app.state.sluice
    signature = request.headers.get("stripe-signature")
    refused = refuse_unsigned(sluice, signature)
    if refused is not None:
        return refused
    return await ingest(sluice, signature or "", await request.body())


def refuse_unsigned(sluice: Sluice, signature: str | None) -> JSONResponse | None:
    """The answer to a delivery that cannot be checked, before its body is read."""
    if not sluice.settings.stripe_webhook_secret:
        return envelope(
            503,
            API_ERROR,
            "webhook_secret_missing",
            "SLUICE_STRIPE_WEBHOOK_SECRET is not configured",
        )
    if not signature:
        return envelope(
            400,
            INVALID_REQUEST,
            "signature_missing",
            "no Stripe-Signature header",
            param="Stripe-Signature",
        )
    return None


async def ingest(sluice: Sluice, signature: str, raw: bytes) -> JSONResponse:
    """Verifies a delivery's signature on its raw body and stores it (``refuse_unsigned``
    first)."""
    secret = sluice.settings.stripe_webhook_secret or ""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # Stripe signs UTF-8 JSON; these bytes can be neither its event nor its signature.
        return envelope(
            400, INVALID_REQUEST, "payload_invalid", "unreadable event: the body is not UTF-8"
        )
    tolerance_s = sluice.settings.stripe_webhook_tolerance_s
    failure = verify(raw, signature, secret, tolerance_s)
    if failure is not None:
        stale = "tolerance" in str(failure).lower()
        return envelope(
            400,
            INVALID_REQUEST,
            "signature_stale" if stale else "signature_invalid",
            str(failure),
            param="Stripe-Signature",
        )
    at = signed_at(signature)
    if at is not None and at > time.time() + tolerance_s:
        return envelope(
            400,
            INVALID_REQUEST,
            "signature_future",
            f"the signature is dated more than {tolerance_s} s in the future",
            param="Stripe-Signature",
        )
    try:
        parsed = inbox.parse_event(raw)
    except inbox.NotAnEvent as error:
        return envelope(400, INVALID_REQUEST, "payload_invalid", f"unreadable event: {error}")
    if parsed.event is None:
        inserted = await run_in_threadpool(inbox.store_unparseable, sluice.view, parsed, raw)
        log.warning("unparseable Stripe event %s stored: %s", parsed.event_id, parsed.reason)
        return JSONResponse(
            {
                "received": True,
                "duplicate": not inserted,
                "id": parsed.event_id,
                "status": inbox.UNPARSEABLE,
                "reason": parsed.reason,
            }
        )
    # Stored off the event loop, under the request's deadline, in a group commit with
    # concurrent deliveries (adapters/inbox_writer.py).
    inserted = await writer_for(sluice.view).store_async(parsed.event, raw)
    return JSONResponse({"received": True, "duplicate": not inserted, "id": parsed.event_id})


def _included(routes: Any) -> bool:
    """Whether ``router`` is included at the top level without a prefix (FastAPI wraps each
    included router); anything else (not included, or not recognised) keeps the generic path."""
    for route in routes:
        context = getattr(route, "include_context", None)
        if getattr(route, "original_router", None) is router and context is not None:
            return getattr(context, "prefix", None) == ""
    return False


class WebhookIngest:
    """Pure ASGI middleware answering ``POST /webhooks/stripe`` itself, placed inside the
    request deadline, the metrics and the request id (the middlewares outside it apply as to
    any route) and ahead of authentication, the body limit, form bodies and FastAPI's routing.
    It applies once what those apply to this route: no key (the route is public; the signature
    is the credential), ``BodyLimit``'s 413s, the route's checks (``refuse_unsigned``,
    ``ingest``), and the app's exception handlers, as its ``ExceptionMiddleware`` would (the
    deadline's and the store's 503s); an exception without a handler propagates as it would
    there. Every other request passes through untouched."""

    def __init__(self, app: ASGIApp, fastapi_app: Any, max_bytes: int) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.max_bytes = max_bytes
        # A route that ever needs a key goes through Authenticate like the others.
        self.public = PUBLIC in access_for(ROUTE_NAME).roles
        self._route: Any = None  # the documented route (for its metrics label), found once
        self._handlers: tuple[dict[Any, Any], dict[int, Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not self.public
            or get_route_path(scope) != WEBHOOK_PATH
            or self.route() is None
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route  # what the router would record: metrics label it so
        state = scope.setdefault("state", {})
        state["principal"], state["authorized"] = None, True  # as Authenticate: public
        signature: str | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"stripe-signature" and signature is None:
                signature = value.decode("latin-1")
            elif name == b"content-length":
                declared = value  # the last one, as BodyLimit reads it
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await body_too_large(self.max_bytes)(scope, receive, send)
            return
        started = False

        async def send_once(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            sluice: Sluice = self.fastapi_app.state.sluice
            response = refuse_unsigned(sluice, signature)
            if response is None:
                raw = await self._body(receive)
                response = await ingest(sluice, signature or "", raw)
            await response(scope, receive, send_once)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None or started:
                raise
            answer = await handler(Request(scope, receive), exc)
            await answer(scope, receive, send)

    def route(self) -> Any:
        """This module's route, if the app serves it (its router was included)."""
        if self._route is None and _included(self.fastapi_app.router.routes):
            self._route = next(r for r in router.routes if getattr(r, "name", None) == ROUTE_NAME)
        return self._route

    async def _body(self, receive: Receive) -> bytes:
        """The whole body, stopped past ``max_bytes`` as ``BodyLimit`` stops it."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise BodyTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _handler(self, exc: Exception) -> Any:
        """The handler Starlette's ExceptionMiddleware would pick (500 and ``Exception`` are
        the server error middleware's: those propagate)."""
        if self._handlers is None:
            by_class: dict[Any, Any] = {}
            by_status: dict[int, Any] = {}
            for key, handler in self.fastapi_app.exception_handlers.items():
                if key in (500, Exception):
                    continue
                if isinstance(key, int):
                    by_status[key] = handler
                else:
                    by_class[key] = handler
            self._handlers = by_class, by_status
        by_class, by_status = self._handlers
        if isinstance(exc, HTTPException) and exc.status_code in by_status:
            return by_status[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in by_class:
                return by_class[cls]
        return None
