"""``POST /webhooks/stripe``: verify the signature on the raw body, store the event once, 2xx.

Nothing is folded here: the event is recorded first and applied later (``sluice inbox process``
or the workers), so Stripe gets its answer fast and a slow or failing fold never loses an event.
"""

from __future__ import annotations

import json
from typing import Any

import stripe
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from adapters.http.errors import API_ERROR, INVALID_REQUEST, envelope
from adapters.stripe import inbox

router = APIRouter(tags=["webhooks"])


def verify(
    raw: bytes, signature: str, secrets: str, tolerance_s: int
) -> stripe.SignatureVerificationError | None:
    """Checks the signature with Stripe's SDK against each configured secret (one per endpoint,
    platform and Connect, and old and new while rotating). None when one of them matches."""
    failures: list[stripe.SignatureVerificationError] = []
    for secret in (part.strip() for part in secrets.split(",") if part.strip()):
        try:
            stripe.WebhookSignature.verify_header(
                raw.decode("utf-8", errors="replace"), signature, secret, tolerance_s
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


@router.post("/webhooks/stripe", name="stripe_webhook", status_code=200)
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
    failure = verify(raw, signature, secret, sluice.settings.stripe_webhook_tolerance_s)
    if failure is not None:
        stale = "tolerance" in str(failure).lower()
        return envelope(
            400,
            INVALID_REQUEST,
            "signature_stale" if stale else "signature_invalid",
            str(failure),
            param="Stripe-Signature",
        )
    try:
        event = json.loads(raw)
        if not isinstance(event, dict) or not str(event.get("id", "")).startswith("evt_"):
            raise ValueError("not a Stripe event")
    except (ValueError, UnicodeDecodeError) as error:
        return envelope(400, INVALID_REQUEST, "payload_invalid", f"unreadable event: {error}")
    inserted = inbox.store(sluice.view, event, raw)
    return JSONResponse({"received": True, "duplicate": not inserted, "id": event["id"]})
