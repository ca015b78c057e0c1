"""Stripe's failures on demand: the next N `/v1` calls (optionally only those of one method and
under one path prefix) are answered with one of Stripe's errors instead of being served.

    POST   /_sandbox/faults  error=invalid_api_key|api_key_expired|account_invalid|permission|
                             rate_limit|api_error|idempotency_error|refusal|card_declined
                             [count=N (1..1000, default 1)] [method=POST] [path=/v1/payouts]
                             [code=… (refusal: the invalid_request_error code, default
                             balance_insufficient; card_declined: the decline code)]
    GET    /_sandbox/faults  the armed faults, in the order they fire
    DELETE /_sandbox/faults  disarms them all

A fault answers with Stripe's envelope and status, so stripe-python raises the class Stripe's
own answer would make it raise (401 AuthenticationError, 403 PermissionError, 429
RateLimitError, 500 APIError, 400 IdempotencyError, 400 InvalidRequestError, 402 CardError). It
is checked before authentication, state and the idempotency layer: a faulted request changes
nothing and is never stored under its Idempotency-Key, so the same key served later runs anew.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stripe_sandbox.errors import StripeApiError, bad_param
from stripe_sandbox.forms import Params

FAULT_COUNT_MAX = 1000  # one arming never outlives a test by much
FAULTS_ARMED_MAX = 100  # armed faults at once


@dataclass(frozen=True)
class FaultKind:
    status: int
    type: str
    code: str | None
    message: str


KINDS: dict[str, FaultKind] = {
    "invalid_api_key": FaultKind(
        401, "invalid_request_error", None, "Invalid API Key provided: sk_test_********fake"
    ),
    "api_key_expired": FaultKind(
        401, "invalid_request_error", "api_key_expired", "Expired API Key provided."
    ),
    "account_invalid": FaultKind(
        403,
        "invalid_request_error",
        "account_invalid",
        "The provided key does not have access to account or application (or that account "
        "does not exist).",
    ),
    "permission": FaultKind(
        403,
        "invalid_request_error",
        None,
        "The provided key 'rk_test_********fake' does not have the required permissions for "
        "this endpoint.",
    ),
    "rate_limit": FaultKind(
        429,
        "invalid_request_error",
        "rate_limit",
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
    ),
    "api_error": FaultKind(500, "api_error", None, "An unknown error occurred"),
    "idempotency_error": FaultKind(
        400,
        "idempotency_error",
        None,
        "Keys for idempotent requests can only be used with the same parameters they were "
        "first used with.",
    ),
    "refusal": FaultKind(400, "invalid_request_error", "balance_insufficient", "Refused."),
    "card_declined": FaultKind(402, "card_error", "card_declined", "Your card was declined."),
}
METHODS = ("GET", "POST", "DELETE")


@dataclass
class Fault:
    error: str
    remaining: int
    method: str | None = None
    path: str | None = None  # a prefix of the request path, e.g. /v1/payouts
    code: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )

    def answer(self) -> StripeApiError:
        kind = KINDS[self.error]
        code = self.code or kind.code
        extra: dict[str, Any] = {}
        message = kind.message
        if self.error == "card_declined":
            extra["decline_code"] = self.code or "generic_decline"
            code = "card_declined"
        elif self.error == "refusal" and self.code:
            message = f"Refused with {self.code}."
        return StripeApiError(kind.status, kind.type, message, code=code, extra=extra, saved=False)


class Faults:
    """The armed faults of one sandbox (guarded by the state's lock)."""

    def __init__(self) -> None:
        self.armed: list[Fault] = []

    def arm(
        self,
        error: str,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        code: str | None = None,
    ) -> Fault:
        if error not in KINDS:
            raise bad_param(f"error must be one of {', '.join(KINDS)}.", "error")
        if not 1 <= count <= FAULT_COUNT_MAX:
            raise bad_param(f"count must be between 1 and {FAULT_COUNT_MAX}.", "count")
        if method is not None and method not in METHODS:
            raise bad_param(f"method must be one of {', '.join(METHODS)}.", "method")
        if path is not None and not path.startswith("/v1/"):
            raise bad_param("path is a prefix of a /v1/ path.", "path")
        if len(self.armed) >= FAULTS_ARMED_MAX:
            raise bad_param(f"at most {FAULTS_ARMED_MAX} faults are armed at once.", "error")
        fault = Fault(error, count, method, path, code)
        self.armed.append(fault)
        return fault

    def take(self, method: str, path: str) -> StripeApiError | None:
        """The error the first matching fault answers this request with (counted down), or
        None: serve it."""
        for fault in self.armed:
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.armed.remove(fault)
                return fault.answer()
        return None

    def clear(self) -> None:
        self.armed.clear()

    def listing(self) -> dict[str, Any]:
        return {"object": "list", "data": [asdict(f) for f in self.armed]}


def control(state: Any, method: str, p: Params) -> dict[str, Any]:
    """``/_sandbox/faults``: POST arms one, GET lists them, DELETE disarms them all."""
    with state.lock:
        faults: Faults = state.faults
        if method == "POST":
            p.reject_unknown(("error", "count", "method", "path", "code"))
            faults.arm(
                p.str("error", required=True) or "",
                p.int("count", default=1, minimum=1, maximum=FAULT_COUNT_MAX) or 1,
                method=p.str("method"),
                path=p.str("path"),
                code=p.str("code"),
            )
        elif method == "DELETE":
            faults.clear()
        return faults.listing()
