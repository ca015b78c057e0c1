"""An account's onboarding requirements as the API shows them (``GET /v1/accounts/{id}``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.requirements import no_requirements
from projections.requirements import requirements_object


def requirements_out(requirements: dict[str, Any] | None) -> dict[str, Any]:
    """Stripe's requirements as the ledger last recorded them (none for an account recorded
    before they were kept), in the read model's shape (deadline in unix seconds)."""
    found = {**no_requirements(), **(requirements or {})}
    deadline = found["current_deadline"]
    return requirements_object(
        found["currently_due"],
        found["past_due"],
        found["eventually_due"],
        found["disabled_reason"],
        int(deadline.timestamp()) if isinstance(deadline, datetime) else None,
    )
