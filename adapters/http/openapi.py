"""The typed contract: every route's 200 body as its model (``models.RESPONSES``), and a
description on every parameter, written into FastAPI's schema.

The routes answer with ready-made ``JSONResponse``s (positions in headers, CSV on request), so
FastAPI cannot see their bodies; the models say what they are, and the tests hold the routes to
them (a generated client parses real answers with them).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from adapters.http.models import RESPONSES

REF = "#/components/schemas/{model}"
# Parameters FastAPI documents without a description, by name: what each one means.
PARAMETERS: dict[str, str] = {
    "account": "an account id (acct_…): only its objects; an account key sees its own only",
    "account_id": "the account's id, acct_…",
    "currency": "a lowercase ISO 4217 currency code, usd",
    "type": "a balance transaction type: charge, payment, refund, payout, …",
    "source": "the id of the object that caused the movement",
    "created[gte]": "created at or after, unix seconds",
    "created[lt]": "created before, unix seconds",
    "limit": "page size, 1 to 100",
    "starting_after": "an object id: the page after it (the previous page's last id)",
    "status": "a payout status",
    "format": "csv for a CSV rendering (or send Accept: text/csv)",
    "from": "the period's start",
    "to": "the period's end (exclusive)",
    "as_of": "balances as of this instant (effective time), unix seconds",
    "recorded_as_of": "only what Sluice had recorded by this instant, unix seconds",
    "after": "log position: the events after it",
    "checkpoint": "a checkpoint's tree size (default: the latest)",
    "position": "a log position",
    "transfer_id": "the transfer's id, tr_…",
    "payout_id": "the payout's id, po_…",
    "payment_id": "the payment's id, py_…",
    "Idempotency-Key": "required on every POST: the same key and body return the first result",
    "Stripe-Signature": "Stripe's signature of the raw body (t=…,v1=…)",
}
GENERIC = "see the operation's description"


def typed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with response models and parameter descriptions filled in (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _, defs = models_json_schema(
        [(model, "serialization") for model in RESPONSES.values()], ref_template=REF
    )
    components.update(defs.get("$defs", {}))
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            model = RESPONSES.get(operation.get("operationId", ""))
            ok = operation.get("responses", {}).get("200")
            if model is not None and ok is not None:
                content = ok.setdefault("content", {})
                content["application/json"] = {"schema": {"$ref": REF.format(model=model.__name__)}}
            for param in operation.get("parameters", []):
                if not param.get("description"):
                    param["description"] = PARAMETERS.get(param["name"], GENERIC)
    return schema
