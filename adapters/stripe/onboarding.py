"""An account's onboarding requirements, from Stripe's account object to Sluice's command.

Stripe decides what it still needs from a seller (``requirements``); the fold records it as
reported whenever it changed (``account.updated``, or a refreshed account), so the ledger's payout
policy and the API see what Stripe sees. Pure translation: no fetching, no clock.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from ledger.instants import from_seconds
from ledger.requirements import (
    DISABLED_REASONS,
    REQUIREMENT_LEN_MAX,
    REQUIREMENT_LISTS,
    REQUIREMENTS_PER_LIST_MAX,
    SetAccountRequirements,
    no_requirements,
)

Json = dict[str, Any]


def _names(value: object) -> list[str]:
    """A requirement list as the ledger keeps it: printable names within their bound (Stripe's
    names are short dotted paths; anything else is tidied, never a reason to park the event)."""
    if not isinstance(value, list):
        return []
    names = {
        "".join(ch if ch.isprintable() else " " for ch in str(name))[:REQUIREMENT_LEN_MAX]
        for name in value
    }
    return sorted(name for name in names if name)[:REQUIREMENTS_PER_LIST_MAX]


def account_requirements(acct: Json) -> Json:
    """``requirements`` of a Stripe account, in the ledger's shape (deadline as an instant)."""
    found = acct.get("requirements") or {}
    reason = found.get("disabled_reason")
    # A reason newer than Sluice's vocabulary still disables the account: kept as "other".
    if reason is not None and reason not in DISABLED_REASONS:
        reason = "other"
    deadline = found.get("current_deadline")
    return {
        **{key: _names(found.get(key)) for key in REQUIREMENT_LISTS},
        "disabled_reason": reason,
        "current_deadline": from_seconds(deadline) if isinstance(deadline, int) else None,
    }


def requirements_change(
    account_id: str, known: Json | None, acct: Json, effective_at: datetime
) -> SetAccountRequirements | None:
    """The command recording Stripe's requirements, None when the ledger holds them already
    (``known``: the ledger account's requirements). The key names the old and the new state,
    so a change back is recorded too."""
    now = account_requirements(acct)
    before = {**no_requirements(), **(known or {})}
    if before == now:
        return None
    text = json.dumps([before, now], sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return SetAccountRequirements(
        idempotency_key=f"stripe:account:{account_id}:requirements:{digest}",
        effective_at=effective_at,
        account_id=account_id,
        currently_due=tuple(now["currently_due"]),
        past_due=tuple(now["past_due"]),
        eventually_due=tuple(now["eventually_due"]),
        disabled_reason=now["disabled_reason"],
        current_deadline=now["current_deadline"],
    )
