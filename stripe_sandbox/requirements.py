"""Onboarding requirements of connected accounts (`account.requirements`) and what they gate.

With the setting `onboarding_required`, a new connected account starts as one does in Stripe's
test mode before its initial information is provided (docs.stripe.com/connect/testing-verification:
"Start by creating a new connected account …, adding a bank account, and showing that the
account holder accepted the Stripe Services Agreement"): the missing fields are due, and past
due at once, so the account is disabled (`disabled_reason: requirements.past_due`), its
`card_payments` and `transfers` capabilities are inactive, and `charges_enabled` and
`payouts_enabled` are false. Providing a field (`business_type`, `tos_acceptance[date|ip]`, an
`external_account`) satisfies it; the sandbox control `POST /_sandbox/accounts/{id}/onboard`
satisfies everything at once (standing in for Stripe's verification test values).

`POST /_sandbox/accounts/{id}/requirements` sets requirements the way Stripe adds them later
(`currently_due`, `eventually_due`, `past_due`, `current_deadline`, `disabled_reason`): fields
still due when `current_deadline` passes become past due and disable the account ("If not
collected by current_deadline, these fields appear in past_due as well, and the account is
disabled", Account.Requirements). Each change sends `account.updated`.

Gating, as Stripe does: a direct charge on a disabled account is refused (`charges_enabled`), a
destination charge or a transfer to it is refused (its `transfers` capability is inactive), and
so is a payout (`payouts_enabled`); automatic payouts skip it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stripe_sandbox.accounts import _diff
from stripe_sandbox.errors import StripeApiError, bad_param
from stripe_sandbox.forms import Params
from stripe_sandbox.store import Obj, SandboxCore

if TYPE_CHECKING:
    from stripe_sandbox.state import SandboxState

# The fields a new account must provide, and when each counts as provided.
# Undocumented: Stripe's initial list depends on country, business type and capabilities; the
# sandbox asks for these four, the ones Stripe's testing guide provides first.
INITIAL_FIELDS: dict[str, Callable[[Obj], bool]] = {
    "business_type": lambda a: a["business_type"] is not None,
    "external_account": lambda a: bool(a["_external_ids"]),
    "tos_acceptance.date": lambda a: a["tos_acceptance"]["date"] is not None,
    "tos_acceptance.ip": lambda a: a["tos_acceptance"]["ip"] is not None,
}
GATED_CAPABILITIES = ("card_payments", "transfers")
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
REQUIREMENT_LISTS = ("currently_due", "eventually_due", "past_due")
REQUIREMENTS_PER_LIST_MAX = 100
PAST_DUE = "requirements.past_due"


class RequirementsMixin(SandboxCore):
    def start_requirements(self, account: Obj) -> None:
        """A new connected account's initial requirements (none unless onboarding_required)."""
        if not self.settings.onboarding_required:
            return
        due = [name for name, met in INITIAL_FIELDS.items() if not met(account)]
        requirements = account["requirements"]
        for key in REQUIREMENT_LISTS:
            requirements[key] = list(due)

    def refresh_requirements(self, account: Obj) -> None:
        """Drops what the account has provided, derives `disabled_reason` from `past_due` and
        gates the capabilities by it (called after every change to the account)."""
        requirements = account["requirements"]
        met = {name for name, check in INITIAL_FIELDS.items() if check(account)}
        # Stripe: past_due ⊆ currently_due ⊆ eventually_due ("If not collected by
        # current_deadline, these fields appear in past_due as well"; eventually_due's fields
        # "appear in currently_due as well" as they become required).
        past = set(requirements["past_due"]) - met
        current = (set(requirements["currently_due"]) | past) - met
        eventually = (set(requirements["eventually_due"]) | current) - met
        for key, names in (("past_due", past), ("currently_due", current)):
            requirements[key] = sorted(names)
        requirements["eventually_due"] = sorted(eventually)
        if not requirements["currently_due"]:
            requirements["current_deadline"] = None
        if requirements["past_due"] and requirements["disabled_reason"] is None:
            requirements["disabled_reason"] = PAST_DUE
        elif not requirements["past_due"] and requirements["disabled_reason"] == PAST_DUE:
            requirements["disabled_reason"] = None
        self._gate_capabilities(account, requirements["disabled_reason"] is not None)

    def _gate_capabilities(self, account: Obj, disabled: bool) -> None:
        """A disabled account's active capabilities turn inactive, and come back once it is
        enabled again (the ones the sandbox turned off, nothing else)."""
        held: list[str] = account.setdefault("_held_capabilities", [])
        capabilities = account["capabilities"]
        if disabled:
            for name in GATED_CAPABILITIES:
                if capabilities.get(name) == "active":
                    capabilities[name] = "inactive"
                    held.append(name)
            return
        for name in held:
            if capabilities.get(name) == "inactive":
                capabilities[name] = "active"
        held.clear()

    def onboard(self, account: Obj) -> Obj:
        """Everything due is provided and verified (the control's test shortcut)."""
        return self._change_requirements(
            account, {key: [] for key in REQUIREMENT_LISTS} | {"disabled_reason": None}
        )

    def set_requirements(self, account: Obj, p: Params) -> Obj:
        p.reject_unknown((*REQUIREMENT_LISTS, "current_deadline", "disabled_reason"))
        changes: dict[str, Any] = {}
        for key in REQUIREMENT_LISTS:
            if p.has(key):
                names = p.str_list(key)
                if len(names) > REQUIREMENTS_PER_LIST_MAX:
                    raise bad_param(f"At most {REQUIREMENTS_PER_LIST_MAX} fields.", key)
                changes[key] = sorted(set(names))
        if p.has("current_deadline"):
            changes["current_deadline"] = p.int("current_deadline", minimum=0)
        if p.has("disabled_reason"):
            reason = p.str("disabled_reason") or None  # an empty value clears it
            if reason is not None and reason not in DISABLED_REASONS:
                raise bad_param(
                    f"disabled_reason must be one of {', '.join(DISABLED_REASONS)}.",
                    "disabled_reason",
                )
            changes["disabled_reason"] = reason
        deadline = changes.get("current_deadline")
        if deadline is not None and deadline > self.clock.now():
            self.schedule(deadline, "requirements_deadline", account["id"], deadline)
        return self._change_requirements(account, changes)

    def _task_requirements_deadline(self, account_id: str, deadline: int) -> None:
        """The deadline passed: what is still due is past due (a later deadline replaced this
        one: nothing to do)."""
        account = self.objects[account_id]
        requirements = account["requirements"]
        if requirements["current_deadline"] != deadline or not requirements["currently_due"]:
            return
        past_due = sorted(set(requirements["past_due"]) | set(requirements["currently_due"]))
        self._change_requirements(account, {"past_due": past_due})

    def _change_requirements(self, account: Obj, changes: dict[str, Any]) -> Obj:
        before = self.render(account)
        account["requirements"].update(changes)
        self._refresh_enabled(account)
        changed = _diff(before, self.render(account))
        changed.pop("external_accounts", None)
        if changed:
            self.emit("account.updated", account, account["id"], changed)
        return account

    def _refresh_enabled(self, account: Obj) -> None:
        """The accounts mixin's (flags follow capabilities and requirements); it comes first."""
        raise NotImplementedError


def control(state: SandboxState, method: str, path: str, p: Params) -> Any:
    """`POST /_sandbox/accounts/{id}/onboard` and `POST /_sandbox/accounts/{id}/requirements`."""
    parts = path.split("/")
    if method == "POST" and len(parts) == 5 and parts[4] in ("onboard", "requirements"):
        with state.lock:
            account = state.objects.get(parts[3])
            if account is None or account["object"] != "account" or parts[3] == state.platform_id:
                raise bad_param(f"No such connected account: {parts[3]}", "account")
            if parts[4] == "onboard":
                p.reject_unknown(())
                state.onboard(account)
            else:
                state.set_requirements(account, p)
            return state.render(account)
    raise StripeApiError(404, "invalid_request_error", f"Unrecognized sandbox route ({path}).")
