"""``POST /webhooks/stripe``: verify the signature on the raw body, store the event once, 2xx.

Nothing is folded here: the event is recorded first and applied later (``sluice inbox process``
or the workers), so Stripe gets its answer fast and a slow or failing fold never loses an event.
A signed event Sluice cannot parse is stored as ``unparseable`` (with the reason) and answered
200 too, so Stripe stops retrying it; a signed body that is no event at all is a 400.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import stripe
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from adapters.http.errors import API_ERROR, INVALID_REQUEST, ErrorEnvelope, envelope
from adapters.inbox_writer import writer_for
from adapters.stripe import inbox

router = APIRouter(tags=["webhooks"])
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
    "/webhooks/stripe",
    name="stripe_webhook",
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
    credential. A missing, forged, tampered or stale signature is a 400 and stores nothing."""
    sluice = request.app.state.sluice
    secret = sluice.settings.stripe_webhook_secret
    if not secret:
        return envelope(
            503,
            API_ERROR,
            "webhook_secret_missing",
            "SLUICE_STRIPE_WEBHOOK_SECRET is not configured",
        )
    signature = request.headers.get("stripe-signature")
    if not signature:
        return envelope(
            400,
            INVALID_REQUEST,
            "signature_missing",
            "no Stripe-Signature header",
            param="Stripe-Signature",
        )
    raw = await request.body()
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
    # The store is blocking I/O: off the event loop, under the request's deadline.
    # Stored in a group commit with concurrent deliveries (adapters/inbox_writer.py).
    inserted = await run_in_threadpool(writer_for(sluice.view).store, parsed.event, raw)
    return JSONResponse({"received": True, "duplicate": not inserted, "id": parsed.event_id})
