"""Domain errors. Each carries a stable machine-readable ``code`` (and the ``param`` at fault).

User mistakes raise a ``SluiceError`` subclass; programmer mistakes raise ``InvariantViolation``
(never caught, never shown to users as a 4xx).
"""

from __future__ import annotations


class SluiceError(Exception):
    """A command was rejected; nothing was recorded."""

    code = "invalid_request"
    http_status = 400

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "param": self.param}


class InvalidAmountError(SluiceError):
    code = "amount_invalid"


class AmountTooLargeError(SluiceError):
    code = "amount_too_large"


class UnknownCurrencyError(SluiceError):
    code = "currency_unknown"


class CurrencyMismatchError(SluiceError):
    code = "currency_mismatch"


class InvalidParameterError(SluiceError):
    code = "parameter_invalid"


class NotFoundError(SluiceError):
    code = "resource_missing"
    http_status = 404


class AccountNotFoundError(NotFoundError):
    code = "account_not_found"


class PaymentNotFoundError(NotFoundError):
    code = "payment_not_found"


class TransferNotFoundError(NotFoundError):
    code = "transfer_not_found"


class PayoutNotFoundError(NotFoundError):
    code = "payout_not_found"


class AccountExistsError(SluiceError):
    code = "account_exists"
    http_status = 409


class AccountClosedError(SluiceError):
    code = "account_closed"


class PayoutsDisabledError(SluiceError):
    code = "payouts_disabled"


class ChargesDisabledError(SluiceError):
    code = "charges_disabled"


class InsufficientFundsError(SluiceError):
    code = "insufficient_funds"
    http_status = 402


class RefundExceedsChargeError(SluiceError):
    code = "refund_exceeds_charge"


class TransferExceedsSourceError(SluiceError):
    code = "transfer_exceeds_source"


class ReversalExceedsTransferError(SluiceError):
    code = "reversal_exceeds_transfer"


class ChargeDisputedError(SluiceError):
    code = "charge_disputed"


class InvalidTransitionError(SluiceError):
    code = "invalid_state_transition"
    http_status = 409


class PendingLotsExceededError(SluiceError):
    code = "pending_lots_exceeded"


class SplitRuleError(SluiceError):
    code = "split_rule_invalid"


class IdempotencyConflictError(SluiceError):
    """The same idempotency key was used with different parameters."""

    code = "idempotency_conflict"
    http_status = 409


class ConcurrencyError(SluiceError):
    """Another writer kept winning the race for the same aggregates; safe to retry."""

    code = "concurrent_modification"
    http_status = 409


class InvariantViolation(Exception):
    """A programmer's mistake: a rule the code itself must never break."""


def invariant(condition: bool, message: str, *args: object) -> None:
    """Checks a rule the code guarantees. Unlike ``assert`` it survives ``python -O``. With
    ``args`` the message is ``message % args``, formatted only when the rule is broken: on the
    write path these checks run a dozen times a payment, and an f-string is built every time."""
    if not condition:
        raise InvariantViolation(message % args if args else message)
