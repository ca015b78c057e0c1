"""Stripe's error envelope: `{"error": {"type", "code", "message", "param", "doc_url"}}`.

The HTTP status decides the SDK's exception class (stripe-python 16 `specific_v1_api_error`):
400/404 `invalid_request_error` → InvalidRequestError, 400 `idempotency_error` → IdempotencyError,
401 → AuthenticationError, 402 → CardError, 403 → PermissionError, other → APIError.
"""

from __future__ import annotations

from typing import Any

DOC_URL = "https://stripe.com/docs/error-codes/"


class StripeApiError(Exception):
    """An API error. `saved=False` marks parameter-validation failures: like Stripe, the
    idempotency layer does not remember them, so a corrected retry with the same key runs."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        saved: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.saved = saved

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = DOC_URL + self.code.replace("_", "-")
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def invalid(
    message: str, *, param: str | None = None, code: str | None = None, saved: bool = True
) -> StripeApiError:
    return StripeApiError(
        400, "invalid_request_error", message, code=code, param=param, saved=saved
    )


def bad_param(message: str, param: str, code: str | None = None) -> StripeApiError:
    """Parameter validation: never saved under an idempotency key."""
    return invalid(message, param=param, code=code, saved=False)


def missing(kind: str, object_id: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def insufficient_funds(message: str) -> StripeApiError:
    return invalid(message, code="balance_insufficient")


def unauthorized(message: str) -> StripeApiError:
    return StripeApiError(401, "invalid_request_error", message, saved=False)
