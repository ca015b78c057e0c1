"""Stripe's errors in three classes: what Sluice does when a call to Stripe fails.

Decided on the exception class and the HTTP status first, then on Stripe's ``code`` (the
``type`` alone is too coarse: ``invalid_request_error`` covers a bad parameter and a wrong key):

RETRY (retry with backoff, the same Idempotency-Key; past the bounds the object stays pending,
never failed):
    ``APIConnectionError`` (network failure, timeout: no status); ``RateLimitError`` 429;
    ``APIError`` 5xx and 424; 409 (``IdempotencyError``: the same key still in flight);
    codes ``lock_timeout``, ``rate_limit``, ``idempotency_key_in_use``,
    ``payout_reconciliation_not_ready``.
HOLD (nothing fails and no money moves: the payout or routing is recorded held with the code;
an operator fixes the cause; the sweeper retries with a bounded backoff):
    ``AuthenticationError`` 401 (no, invalid, expired or rolled key), whatever the code;
    ``PermissionError`` 403 (restricted key, no access to the connected account,
    ``account_invalid``), whatever the code; ``IdempotencyError`` 400 (``idempotency_error``:
    the key was used with other parameters: our bug, never move money on it); codes
    ``account_invalid``, ``api_key_expired``, ``platform_api_key_expired``,
    ``secret_key_required``, ``livemode_mismatch``, ``testmode_charges_only``,
    ``platform_account_required``, ``tls_version_unsupported``,
    ``not_allowed_on_standard_account``; a 4xx code in none of these tables
    (``UNKNOWN_CODE_CLASS``, argued below); any other 4xx status (405, 410, 413, …).
REFUSE (final: a payout fails and its funds return to available; a refund, reversal or routing
transfer raises as before):
    ``CardError`` 402, whatever the code (``card_declined``, ``insufficient_funds``,
    ``expired_card``, …); ``InvalidRequestError`` 400/404 with a code of ``REFUSE_CODES``:
    ``balance_insufficient``, ``insufficient_funds``, ``payouts_not_allowed``,
    ``transfers_not_allowed``, ``amount_too_small``, ``amount_too_large``,
    ``charge_already_refunded``, ``charge_disputed``, ``charge_not_refundable``,
    ``bank_account_*``, ``parameter_*``, ``resource_missing``, …; ``InvalidRequestError``
    400/404 with no code at all (a rule of the object or a parameter, with its message).
"""

from __future__ import annotations

from typing import Final, Literal

import stripe

FailureClass = Literal["retry", "hold", "refuse"]
RETRY: Final = "retry"
HOLD: Final = "hold"
REFUSE: Final = "refuse"
FAILURE_CLASSES: tuple[FailureClass, ...] = (RETRY, HOLD, REFUSE)

RETRY_CODES: frozenset[str] = frozenset(
    {
        "lock_timeout",  # another request holds the object: Stripe says retry
        "rate_limit",
        "idempotency_key_in_use",  # 409: the first request with this key is still running
        "payout_reconciliation_not_ready",  # the previous payout is still being reconciled
    }
)
HOLD_CODES: frozenset[str] = frozenset(
    {
        "account_invalid",  # 403: the Stripe-Account header names no account we may act for
        "api_key_expired",
        "platform_api_key_expired",
        "secret_key_required",  # a publishable key where a secret one is needed
        "livemode_mismatch",  # test key on live objects or the reverse
        "testmode_charges_only",  # the platform is not activated for live mode
        "platform_account_required",  # the call needs the platform's key, not an account's
        "tls_version_unsupported",
        "not_allowed_on_standard_account",  # the platform's Connect setup, not the seller
        "idempotency_error",  # the type, when Stripe sets it as a code: same key, other params
    }
)
REFUSE_CODES: frozenset[str] = frozenset(
    {
        "amount_too_large",
        "amount_too_small",
        "balance_insufficient",
        "insufficient_funds",
        "payouts_not_allowed",
        "payouts_limit_exceeded",
        "transfers_not_allowed",
        "instant_payouts_unsupported",
        "insufficient_capabilities_for_transfer",
        "charge_already_refunded",
        "charge_disputed",
        "charge_not_refundable",
        "refund_disputed_payment",
        "charge_exceeds_source_limit",
        "transfer_source_balance_parameters_mismatch",
        "currency_conversion_unsupported",
        "bank_account_declined",
        "bank_account_unusable",
        "bank_account_unverified",
        "bank_account_restricted",
        "debit_not_authorized",
        "account_closed",
        "no_account",
        "card_declined",
        "expired_card",
        "incorrect_cvc",
        "processing_error",
        "authentication_required",  # a card decline code (3-D Secure), not a key problem
        "parameter_invalid_empty",
        "parameter_invalid_integer",
        "parameter_invalid_string_blank",
        "parameter_invalid_string_empty",
        "parameter_missing",
        "parameter_unknown",
        "parameters_exclusive",
        "resource_missing",
        "resource_already_exists",
        "status_transition_invalid",
        "invalid_charge_amount",
        "country_unsupported",
    }
)
REFUSE_CODE_PREFIXES = ("parameter_", "bank_account_")  # bad parameters; the seller's bank
# A 4xx code Sluice has never heard of is held, not refused. Refusing a payout returns its funds
# to available and spends the day's slot on a guess; if the code was really a configuration
# problem (a new Stripe code for a key or permission issue), the money moved for nothing and the
# seller waits a day. Holding moves no money: a person reads the code once, and the sweeper
# retries it; adding the code to a table above is then a one-line change.
UNKNOWN_CODE_CLASS: FailureClass = HOLD


def stripe_code(error: stripe.StripeError) -> str | None:
    """Stripe's ``code``: stripe-python sets it on InvalidRequestError and CardError only, so
    for the others (a 403 ``account_invalid``) it is read from the error body."""
    code = getattr(error, "code", None)
    if not code:
        body = getattr(error, "json_body", None)
        detail = body.get("error") if isinstance(body, dict) else None
        code = detail.get("code") if isinstance(detail, dict) else None
    return str(code) if code else None


def classify(error: stripe.StripeError) -> FailureClass:
    """The one place a Stripe error gets its class (the table in the module docstring)."""
    status = getattr(error, "http_status", None)
    code = stripe_code(error)
    if isinstance(error, stripe.APIConnectionError):
        return RETRY
    if isinstance(error, stripe.IdempotencyError):
        return RETRY if status == 409 else HOLD
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError) or status in (
        401,
        403,
    ):
        return HOLD  # whatever the code: a key or permission problem is never a refusal
    if isinstance(error, stripe.RateLimitError) or status in (409, 424, 429):
        return RETRY
    if status is None and isinstance(error, stripe.CardError | stripe.InvalidRequestError):
        status = 402 if isinstance(error, stripe.CardError) else 400  # what the class stands for
    if status is None or status >= 500:
        return RETRY  # Stripe's side failed (or no answer): the first attempt may have worked
    return classify_code(status, code)


def classify_code(status: int, code: str | None) -> FailureClass:
    """A 4xx answer that is neither 401, 403, 409, 424 nor 429, by its code."""
    if code in RETRY_CODES:
        return RETRY
    if code in HOLD_CODES:
        return HOLD
    if code in REFUSE_CODES or (code or "").startswith(REFUSE_CODE_PREFIXES) or status == 402:
        return REFUSE  # 402: valid parameters, the request failed: Stripe's business refusal
    if code is None and status in (400, 404):
        # Stripe validated the request and said no without a code (a parameter or a rule of
        # the object, with a specific message): nothing in it points at configuration.
        return REFUSE
    return UNKNOWN_CODE_CLASS
