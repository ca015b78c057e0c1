"""The classification table (``adapters.stripe.errors``): every Stripe answer falls in exactly one
of retry, hold and refuse. Errors are built by stripe-python's own status-and-body → exception
mapping (the one its requestor applies to Stripe's answers), so each row is what the SDK would
raise for that HTTP answer."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import stripe
from stripe._api_requestor import _APIRequestor

from adapters.jobs import HOLD_RETRY_BASE, HOLD_RETRY_MAX, hold_retry_after
from adapters.stripe.errors import (
    HOLD,
    HOLD_CODES,
    REFUSE,
    REFUSE_CODES,
    RETRY,
    RETRY_CODES,
    UNKNOWN_CODE_CLASS,
    classify,
)
from adapters.stripe.gateway import GatewayError, map_stripe_error


def answer(status: int, type_: str, code: str | None = None) -> stripe.StripeError:
    """What stripe-python raises for Stripe's HTTP answer ``status`` with this error body."""
    error: dict[str, Any] = {"type": type_, "message": f"{type_} {code or ''}".strip()}
    if code is not None:
        error["code"] = code
    body = {"error": error}
    raised = _APIRequestor.specific_v1_api_error(
        None,  # type: ignore[arg-type]  # the mapping reads nothing of the requestor
        json.dumps(body),
        status,
        body,
        {},
        error,
    )
    assert isinstance(raised, stripe.StripeError)
    return raised


TABLE = [
    # --- retry -----------------------------------------------------------------------------
    (lambda: stripe.APIConnectionError("timed out"), stripe.APIConnectionError, RETRY),
    (lambda: answer(429, "invalid_request_error", "rate_limit"), stripe.RateLimitError, RETRY),
    (lambda: answer(400, "invalid_request_error", "rate_limit"), stripe.RateLimitError, RETRY),
    (lambda: answer(500, "api_error"), stripe.APIError, RETRY),
    (lambda: answer(503, "api_error"), stripe.APIError, RETRY),
    (lambda: answer(424, "api_error"), stripe.APIError, RETRY),
    (lambda: answer(409, "idempotency_error"), stripe.APIError, RETRY),
    (
        lambda: answer(409, "invalid_request_error", "idempotency_key_in_use"),
        stripe.APIError,
        RETRY,
    ),
    (
        lambda: answer(400, "invalid_request_error", "lock_timeout"),
        stripe.InvalidRequestError,
        RETRY,
    ),
    # --- hold ------------------------------------------------------------------------------
    (lambda: answer(401, "invalid_request_error"), stripe.AuthenticationError, HOLD),
    (
        lambda: answer(401, "invalid_request_error", "api_key_expired"),
        stripe.AuthenticationError,
        HOLD,
    ),
    (lambda: answer(403, "invalid_request_error"), stripe.PermissionError, HOLD),
    (lambda: answer(403, "invalid_request_error", "account_invalid"), stripe.PermissionError, HOLD),
    (lambda: answer(400, "idempotency_error"), stripe.IdempotencyError, HOLD),
    (
        lambda: answer(400, "invalid_request_error", "platform_api_key_expired"),
        stripe.InvalidRequestError,
        HOLD,
    ),
    (
        lambda: answer(400, "invalid_request_error", "secret_key_required"),
        stripe.InvalidRequestError,
        HOLD,
    ),
    (
        lambda: answer(400, "invalid_request_error", "livemode_mismatch"),
        stripe.InvalidRequestError,
        HOLD,
    ),
    (
        lambda: answer(400, "invalid_request_error", "a_code_stripe_adds_next_year"),
        stripe.InvalidRequestError,
        HOLD,
    ),
    (lambda: answer(405, "invalid_request_error"), stripe.APIError, HOLD),
    # --- refuse ----------------------------------------------------------------------------
    (lambda: answer(402, "card_error", "card_declined"), stripe.CardError, REFUSE),
    (lambda: answer(402, "card_error", "a_new_decline"), stripe.CardError, REFUSE),
    (
        lambda: answer(400, "invalid_request_error", "balance_insufficient"),
        stripe.InvalidRequestError,
        REFUSE,
    ),
    (
        lambda: answer(400, "invalid_request_error", "payouts_not_allowed"),
        stripe.InvalidRequestError,
        REFUSE,
    ),
    (
        lambda: answer(400, "invalid_request_error", "amount_too_small"),
        stripe.InvalidRequestError,
        REFUSE,
    ),
    (
        lambda: answer(400, "invalid_request_error", "charge_already_refunded"),
        stripe.InvalidRequestError,
        REFUSE,
    ),
    (
        lambda: answer(400, "invalid_request_error", "parameter_invalid_integer"),
        stripe.InvalidRequestError,
        REFUSE,
    ),
    (
        lambda: answer(400, "invalid_request_error", "bank_account_unusable"),
        stripe.InvalidRequestError,
        REFUSE,
    ),
    (
        lambda: answer(404, "invalid_request_error", "resource_missing"),
        stripe.InvalidRequestError,
        REFUSE,
    ),
    (lambda: answer(400, "invalid_request_error"), stripe.InvalidRequestError, REFUSE),
]


@pytest.mark.parametrize(("build", "sdk_class", "expected"), TABLE)
def test_every_stripe_answer_falls_in_its_one_class(
    build: Any, sdk_class: type[stripe.StripeError], expected: str
) -> None:
    error = build()
    assert type(error) is sdk_class
    assert classify(error) == expected
    mapped = map_stripe_error(error)
    assert mapped.failure_class == expected
    assert mapped.retryable is (expected == RETRY)  # the old question still gets its answer
    assert mapped.held is (expected == HOLD)


def test_errors_built_without_a_status_are_classified_by_what_their_class_stands_for() -> None:
    # Raised by code that never saw an HTTP answer (as the SDK does for some paths).
    assert classify(stripe.APIError("unknown", http_status=None)) == RETRY
    assert classify(stripe.InvalidRequestError("nope", "amount", code="amount_too_large")) == (
        REFUSE
    )
    assert classify(stripe.InvalidRequestError("locked", None, code="lock_timeout")) == RETRY
    assert classify(stripe.CardError("declined", None, "card_declined")) == REFUSE


def test_the_code_tables_do_not_overlap() -> None:
    assert not RETRY_CODES & HOLD_CODES
    assert not RETRY_CODES & REFUSE_CODES
    assert not HOLD_CODES & REFUSE_CODES
    assert UNKNOWN_CODE_CLASS == HOLD  # an unknown code never moves money back on a guess


def test_a_key_or_permission_problem_holds_whatever_code_it_carries() -> None:
    # A 401 or 403 with a refusal's code is still a key problem: nothing was refused.
    assert classify(answer(403, "invalid_request_error", "balance_insufficient")) == HOLD
    assert classify(answer(401, "invalid_request_error", "card_declined")) == HOLD


def test_the_hold_reason_is_a_short_code_and_one_printable_line() -> None:
    held = map_stripe_error(answer(403, "invalid_request_error", "account_invalid"))
    assert held.reason_code == "account_invalid"
    assert map_stripe_error(answer(401, "invalid_request_error")).reason_code == (
        "authentication_error"
    )
    assert map_stripe_error(answer(403, "invalid_request_error")).reason_code == "permission_error"
    assert map_stripe_error(answer(400, "idempotency_error")).reason_code == "idempotency_error"
    odd = GatewayError("line one\nline\ttwo\x00" + "x" * 400, failure_class=HOLD)
    assert odd.reason_message.isprintable() and len(odd.reason_message) == 255
    assert odd.reason_message.startswith("line one line two")


def test_gateway_errors_built_the_old_way_keep_their_meaning() -> None:
    assert GatewayError("blip", retryable=True).failure_class == RETRY
    assert GatewayError("no", retryable=False).failure_class == REFUSE
    with pytest.raises(ValueError, match="unknown failure class"):
        GatewayError("?", failure_class="maybe")  # type: ignore[arg-type]


def test_held_work_is_retried_with_a_doubling_backoff_capped_at_an_hour() -> None:
    waits = [hold_retry_after(n) for n in range(1, 12)]
    assert waits[:3] == [HOLD_RETRY_BASE, 2 * HOLD_RETRY_BASE, 4 * HOLD_RETRY_BASE]
    assert waits == sorted(waits) and waits[-1] == HOLD_RETRY_MAX == timedelta(hours=1)
    assert hold_retry_after(0) == HOLD_RETRY_BASE
    assert hold_retry_after(10**9) == HOLD_RETRY_MAX  # no overflow, however long it waited
