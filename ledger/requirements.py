"""Onboarding state: what Stripe still needs from a connected account before (or to keep) it
taking charges and being paid out, as Stripe reports it on the account (``requirements``).

Stripe decides the requirements; Sluice records them as reported (``account.updated``) and reads
them in its own payout policy: an account whose requirements are past due, or that Stripe
disabled for any reason, is not paid out by Sluice (``ledger.payout_policy``, and the
``RequestPayout`` command is refused with ``payouts_disabled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ledger.commands import Command
from ledger.errors import InvalidParameterError
from ledger.events import check_instant

if TYPE_CHECKING:
    from ledger.engine import Scope

# Stripe's `requirements.disabled_reason` vocabulary (stripe-python 16.1, Account.Requirements).
DISABLED_REASONS = (
    "action_required.requested_capabilities",
    "listed",
    "other",
    "platform_paused",
    "rejected.fraud",
    "rejected.incomplete_verification",
    "rejected.listed",
    "rejected.other",
    "rejected.platform_fraud",
    "rejected.platform_other",
    "rejected.platform_terms_of_service",
    "rejected.terms_of_service",
    "requirements.past_due",
    "requirements.pending_verification",
    "under_review",
)
REQUIREMENT_LISTS = ("currently_due", "past_due", "eventually_due")
REQUIREMENTS_PER_LIST_MAX = 200  # Stripe's lists name fields; a few dozen at most in practice
REQUIREMENT_LEN_MAX = 200


def no_requirements() -> dict[str, Any]:
    """An account with nothing due (what accounts opened before requirements were kept read as)."""
    return {
        "currently_due": [],
        "past_due": [],
        "eventually_due": [],
        "disabled_reason": None,
        "current_deadline": None,
    }


def _field_list(value: object, param: str) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) > REQUIREMENTS_PER_LIST_MAX:
        raise InvalidParameterError(
            f"{param} must be a list of at most {REQUIREMENTS_PER_LIST_MAX} field names",
            param=param,
        )
    for name in value:
        if (
            not isinstance(name, str)
            or not 0 < len(name) <= REQUIREMENT_LEN_MAX
            or not name.isprintable()
        ):
            raise InvalidParameterError(
                f"{param} names fields as printable text of 1 to {REQUIREMENT_LEN_MAX} characters",
                param=param,
            )
    return sorted(set(value))


def check_requirements(
    *,
    currently_due: object,
    past_due: object,
    eventually_due: object,
    disabled_reason: object,
    current_deadline: object,
) -> dict[str, Any]:
    """Requirements in the shape the account keeps (sorted, deduplicated lists)."""
    if disabled_reason is not None and disabled_reason not in DISABLED_REASONS:
        raise InvalidParameterError(
            f"disabled_reason must be one of {', '.join(DISABLED_REASONS)}",
            param="disabled_reason",
        )
    if current_deadline is not None:
        check_instant(current_deadline, "current_deadline")
    return {
        "currently_due": _field_list(currently_due, "currently_due"),
        "past_due": _field_list(past_due, "past_due"),
        "eventually_due": _field_list(eventually_due, "eventually_due"),
        "disabled_reason": disabled_reason,
        "current_deadline": current_deadline,
    }


def blocking(requirements: dict[str, Any] | None) -> str | None:
    """Why these requirements stop Sluice paying the account out (None: they do not): Stripe
    disabled it, or fields are past due (Stripe disables the account for those)."""
    if not requirements:
        return None
    if requirements.get("disabled_reason"):
        return f"disabled by Stripe: {requirements['disabled_reason']}"
    past_due = requirements.get("past_due") or []
    if past_due:
        return f"requirements past due: {', '.join(past_due)}"
    return None


@dataclass(frozen=True, kw_only=True)
class SetAccountRequirements(Command):
    """The account's onboarding requirements as Stripe reports them, replaced whole."""

    name = "set_account_requirements"
    account_id: str
    currently_due: tuple[str, ...] = ()
    past_due: tuple[str, ...] = ()
    eventually_due: tuple[str, ...] = ()
    disabled_reason: str | None = None
    current_deadline: datetime | None = None


def set_account_requirements(s: Scope, cmd: SetAccountRequirements) -> dict[str, str]:
    # Recorded on a closed account too: it is Stripe's report, never Sluice's decision.
    s.account(cmd.account_id).set_requirements(
        s.when,
        check_requirements(
            currently_due=cmd.currently_due,
            past_due=cmd.past_due,
            eventually_due=cmd.eventually_due,
            disabled_reason=cmd.disabled_reason,
            current_deadline=cmd.current_deadline,
        ),
    )
    return {"account": cmd.account_id}
