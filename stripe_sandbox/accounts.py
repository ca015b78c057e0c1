"""Connected accounts (`/v1/accounts`, `/v1/account`) and their external bank accounts."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

from stripe_sandbox.errors import StripeApiError, bad_param, invalid, missing
from stripe_sandbox.forms import Params, merge_metadata
from stripe_sandbox.settings import PAYOUT_INTERVALS
from stripe_sandbox.store import Ctx, Handler, Obj, SandboxCore, require_platform

# Legacy `type` → controller properties (reference §5.1; Standard/Express/Custom mapping).
LEGACY_CONTROLLERS = {
    "standard": ("account", "stripe", "stripe", "full"),
    "express": ("application_express", "application", "stripe", "express"),
    "custom": ("application_custom", "application", "application", "none"),
}
CONTROLLER_TYPES = {
    ("account", "stripe", "stripe", "full"): "standard",
    ("application", "application", "stripe", "express"): "express",
    ("application", "application", "application", "none"): "custom",
}
COUNTRY_CURRENCIES = {
    "US": "usd",
    "CA": "cad",
    "GB": "gbp",
    "JP": "jpy",
    "AU": "aud",
    "NZ": "nzd",
    "CH": "chf",
    "SG": "sgd",
    "HK": "hkd",
    "MX": "mxn",
    "BR": "brl",
}
EUROZONE = {"AT", "BE", "DE", "ES", "FI", "FR", "IE", "IT", "LU", "NL", "PT"}
# The European Economic Area: one region for destination charges ("both in the US" is Stripe's
# example of a region; docs.stripe.com/connect/destination-charges). Every other country is a
# region of its own.
EEA = EUROZONE | {
    "BG", "CY", "CZ", "DK", "EE", "GR", "HR", "HU", "IS", "LI", "LT", "LV", "MT", "NO", "PL",
    "RO", "SE", "SI", "SK",
}  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHLY_ANCHOR_MAX = 31
ACCOUNT_PARAMS = (
    "type",
    "controller",
    "country",
    "email",
    "default_currency",
    "business_type",
    "business_profile",
    "capabilities",
    "external_account",
    "settings",
    "metadata",
    "tos_acceptance",
    "company",
    "individual",
)
BUSINESS_PROFILE_FIELDS = (
    "mcc",
    "name",
    "product_description",
    "support_email",
    "support_phone",
    "support_url",
    "url",
)
# Stripe's documented payout test bank accounts (docs.stripe.com/connect/testing, routing
# 110000000): payouts to these fail with the code given.
PAYOUT_FAILURE_ACCOUNTS = {
    "000111111113": "account_closed",
    "000222222227": "insufficient_funds",
    "000333333335": "debit_not_authorized",
    "000444444440": "invalid_currency",
}
# Undocumented: Stripe lists 000111111116 as "payout fails with no_account" without saying when;
# the sandbox lets it show `paid` first and fail a day later, to exercise paid → failed (which
# Stripe documents: "some payouts that fail might initially show as paid, then change to failed").
PAYOUT_PAID_THEN_FAILED_ACCOUNTS = {"000111111116": "no_account"}
INSTANT_INELIGIBLE_ACCOUNTS = {"000888888883"}


def _empty_requirements() -> Obj:
    return {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": [],
        "disabled_reason": None,
        "errors": [],
        "eventually_due": [],
        "past_due": [],
        "pending_verification": [],
    }


def region(country: str) -> str:
    """The Connect region of a country, for Stripe's same-region rule of destination charges."""
    return "EEA" if country in EEA else country


def _diff(old: Any, new: Any) -> Any:
    """Stripe's `previous_attributes`: old values of changed keys (nested dicts: changed parts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed = {}
        for key in old.keys() | new.keys():
            if key.startswith("_") or old.get(key) == new.get(key):
                continue
            changed[key] = _diff(old.get(key), new.get(key))
        return changed
    return old


class AccountsMixin(SandboxCore):
    # stripe_sandbox.requirements.RequirementsMixin's, in the state's other bases.
    start_requirements: Callable[[Obj], None]
    refresh_requirements: Callable[[Obj], None]

    def _make_platform(self) -> None:
        settings = self.settings
        schedule = self._schedule(
            settings.platform_payout_interval, settings.platform_delay_days, None, None
        )
        account = self._account_skeleton(
            self.platform_id,
            country=settings.platform_country,
            currency=settings.platform_currency,
            controller={"type": "account"},
            type_="standard",
            schedule=schedule,
            debit_negative_balances=True,
        )
        account["capabilities"] = {"card_payments": "active", "transfers": "active"}
        account["charges_enabled"] = True
        account["payouts_enabled"] = True
        self.put(account, self.platform_id)

    def _account_skeleton(
        self,
        account_id: str,
        *,
        country: str,
        currency: str,
        controller: Obj,
        type_: str,
        schedule: Obj,
        debit_negative_balances: bool,
    ) -> Obj:
        return {
            "id": account_id,
            "object": "account",
            "business_profile": dict.fromkeys(BUSINESS_PROFILE_FIELDS),
            "business_type": None,
            "capabilities": {},
            "charges_enabled": False,
            "controller": controller,
            "country": country,
            "created": self.clock.now(),
            "default_currency": currency,
            "details_submitted": True,
            "email": None,
            "external_accounts": None,
            "future_requirements": _empty_requirements(),
            "metadata": {},
            "payouts_enabled": False,
            "requirements": _empty_requirements(),
            "settings": {
                "dashboard": {"display_name": None, "timezone": "Etc/UTC"},
                "payments": {"statement_descriptor": None},
                "payouts": {
                    "debit_negative_balances": debit_negative_balances,
                    "schedule": schedule,
                    "statement_descriptor": None,
                },
            },
            "tos_acceptance": {"date": None, "ip": None, "user_agent": None},
            "type": type_,
            "_external_ids": [],
        }

    # --- lookups ---------------------------------------------------------------------------------

    def account(self, account_id: str, param: str = "id") -> Obj:
        obj = self.objects.get(account_id)
        if obj is None or obj["object"] != "account":
            raise missing("account", account_id, param)
        return obj

    def connected_account(self, account_id: str, param: str) -> Obj:
        if account_id == self.platform_id:
            raise bad_param(f"{param} cannot be your own account.", param)
        return self.account(account_id, param)

    def check_scope(self, stripe_account: str | None) -> str:
        """The account a request acts as; unknown `Stripe-Account` values are refused (403)."""
        if not stripe_account or stripe_account == self.platform_id:
            return self.platform_id
        obj = self.objects.get(stripe_account)
        if obj is None or obj["object"] != "account":
            # Undocumented: status and code as observed from Stripe's API, not in its docs.
            raise StripeApiError(
                403,
                "invalid_request_error",
                f"The provided key '{self.secret_key[:12]}…' does not have access to account "
                f"'{stripe_account}' (or that account does not exist). Application access may "
                "have been revoked.",
                code="account_invalid",
                saved=False,
            )
        return stripe_account

    # --- API -------------------------------------------------------------------------------------

    def create_account(self, ctx: Ctx, p: Params) -> Obj:
        require_platform(ctx, "Creating accounts")
        p.reject_unknown(ACCOUNT_PARAMS)
        controller, type_ = self._controller(p)
        country = (p.str("country") or self.settings.platform_country).upper()
        currency = p.currency("default_currency", required=False) or self._country_currency(country)
        requirement_collection = controller.get("requirement_collection", "stripe")
        # Stripe: the default is "the lowest permitted value for the account" (Standard) or the
        # platform's own payout speed (Express, Custom): here the larger of the two settings.
        schedule = self._schedule(
            self.settings.default_payout_interval, self.settings.minimum_delay_days(), None, None
        )
        account = self._account_skeleton(
            self.ids.new("acct_"),
            country=country,
            currency=currency,
            controller=controller,
            type_=type_,
            schedule=schedule,
            debit_negative_balances=requirement_collection != "application",
        )
        # Undocumented: no onboarding is simulated; requested capabilities are active at once and
        # an account created without `capabilities` gets card_payments and transfers.
        account["capabilities"] = {"card_payments": "active", "transfers": "active"}
        if p.has("capabilities"):
            account["capabilities"] = self._capabilities(p.nested("capabilities"), {})
        self._apply_profile(account, p)
        self.put(account, self.platform_id)
        if p.has("external_account"):
            self._add_external_account(account, p.data["external_account"], True, emit=False)
        self.start_requirements(account)  # stripe_sandbox.requirements
        self._refresh_enabled(account)
        return account

    def update_account(self, ctx: Ctx, account_id: str, p: Params) -> Obj:
        account = self._visible_account(ctx, account_id)
        p.reject_unknown(
            tuple(name for name in ACCOUNT_PARAMS if name not in ("type", "controller", "country"))
        )
        before = self.render(account)
        unchanged = copy.deepcopy(account)
        try:
            if p.has("capabilities"):
                account["capabilities"] = self._capabilities(
                    p.nested("capabilities"), account["capabilities"]
                )
            self._apply_profile(account, p)
        except StripeApiError:
            # A refused update changes nothing (the schedule is checked after other fields).
            account.clear()
            account.update(unchanged)
            raise
        if p.has("external_account"):
            self._add_external_account(account, p.data["external_account"], True, emit=True)
        self._refresh_enabled(account)
        changed = _diff(before, self.render(account))
        changed.pop("external_accounts", None)
        if changed:
            self.emit("account.updated", account, account["id"], changed)
        return account

    def retrieve_account(self, ctx: Ctx, account_id: str | None) -> Obj:
        return self._visible_account(ctx, account_id or ctx.scope)

    def list_accounts(self, ctx: Ctx, p: Params) -> Obj:
        require_platform(ctx, "Listing accounts")
        p.reject_unknown(("created", "limit", "starting_after", "ending_before"))
        accounts = [a for a in self.stored(self.platform_id, "account") if a["id"] != ctx.scope]
        return self.page(accounts, p, "/v1/accounts", "account")

    def create_external_account(self, ctx: Ctx, account_id: str, p: Params) -> Obj:
        account = self._visible_account(ctx, account_id)
        p.reject_unknown(("external_account", "default_for_currency", "metadata"))
        if not p.has("external_account"):
            raise bad_param(
                "Missing required param: external_account.", "external_account", "parameter_missing"
            )
        bank = self._add_external_account(
            account, p.data["external_account"], p.bool("default_for_currency"), emit=True
        )
        bank["metadata"] = merge_metadata(bank["metadata"], p.metadata())
        self._refresh_enabled(account)
        return bank

    def list_external_accounts(self, ctx: Ctx, account_id: str, p: Params) -> Obj:
        account = self._visible_account(ctx, account_id)
        p.reject_unknown(("object", "limit", "starting_after", "ending_before"))
        banks = [self.objects[i] for i in account["_external_ids"]]
        url = f"/v1/accounts/{account_id}/external_accounts"
        return self.page(banks, p, url, "external account")

    def retrieve_external_account(self, ctx: Ctx, account_id: str, bank_id: str) -> Obj:
        account = self._visible_account(ctx, account_id)
        if bank_id not in account["_external_ids"]:
            raise missing("external account", bank_id)
        return self.objects[bank_id]

    # --- helpers ---------------------------------------------------------------------------------

    def _visible_account(self, ctx: Ctx, account_id: str) -> Obj:
        account = self.account(account_id)
        if not ctx.is_platform and account_id != ctx.scope:
            raise missing("account", account_id)
        return account

    def _controller(self, p: Params) -> tuple[Obj, str]:
        type_ = p.choice("type", LEGACY_CONTROLLERS)
        if type_ is not None and p.has("controller"):
            raise bad_param(
                "You cannot specify both `type` and `controller`.", "type", "parameters_exclusive"
            )
        if type_ is not None:
            payer, losses, collection, dashboard = LEGACY_CONTROLLERS[type_]
        else:
            c = p.nested("controller")
            c.reject_unknown(("fees", "losses", "requirement_collection", "stripe_dashboard"))
            payer = c.nested("fees").choice("payer", ("account", "application")) or "account"
            losses = c.nested("losses").choice("payments", ("application", "stripe")) or "stripe"
            collection = c.choice("requirement_collection", ("application", "stripe")) or "stripe"
            dashboard = (
                c.nested("stripe_dashboard").choice("type", ("express", "full", "none")) or "full"
            )
            if losses == "application" and payer != "application":
                raise bad_param(
                    "controller[losses][payments]=application requires "
                    "controller[fees][payer]=application.",
                    "controller[losses][payments]",
                )
            # Undocumented: the response `type` names the legacy type the properties match.
            type_ = CONTROLLER_TYPES.get((payer, losses, collection, dashboard), "none")
        controller = {
            "fees": {"payer": payer},
            "is_controller": True,
            "losses": {"payments": losses},
            "requirement_collection": collection,
            "stripe_dashboard": {"type": dashboard},
            "type": "application",
        }
        return controller, type_

    def settlement_currencies(self, account: Obj) -> set[str] | None:
        """The currencies `account` keeps balances in (None: every currency). Stripe: "When the
        presentment currency differs from your settlement currency—that accepted by any of your
        bank accounts or debit cards—we'll automatically convert the payment to your default
        settlement currency" (docs.stripe.com/currencies/conversions)."""
        currencies = {account["default_currency"]}
        currencies |= {self.objects[bank_id]["currency"] for bank_id in account["_external_ids"]}
        if account["id"] == self.platform_id:
            extra = self.settings.platform_settlement_currencies
            if extra is None:
                return None
            currencies |= set(extra)
        return currencies

    def check_settles_in(self, account_id: str, currency: str) -> None:
        """Refuses funds for `account_id` in a currency it does not settle in."""
        account = self.objects[account_id]
        settles = self.settlement_currencies(account)
        if settles is None or currency in settles:
            return
        who = "your platform account" if account_id == self.platform_id else "the account"
        # Undocumented: Stripe converts such funds (exchange_rate on the balance transaction);
        # the sandbox converts nothing, so it refuses them, with a code of its own.
        raise bad_param(
            f"The sandbox does not convert currencies, and {who} {account_id} does not settle "
            f"in {currency} (it settles in {', '.join(sorted(settles))}). Charge in one of "
            "those currencies, or add a bank account in this currency.",
            "currency",
            "currency_conversion_unsupported",
        )

    def _country_currency(self, country: str) -> str:
        if country in EUROZONE:
            return "eur"
        return COUNTRY_CURRENCIES.get(country, self.settings.platform_currency)

    def _capabilities(self, p: Params, current: Obj) -> Obj:
        capabilities = dict(current)
        for name in p.data:
            requested = p.nested(name).bool("requested", default=True)
            capabilities[name] = "active" if requested else "inactive"
        return capabilities

    def _schedule(
        self, interval: str, delay_days: int, weekly_anchor: str | None, monthly_anchor: int | None
    ) -> Obj:
        return {
            "delay_days": delay_days,
            "interval": interval,
            "monthly_anchor": monthly_anchor,
            "weekly_anchor": weekly_anchor,
        }

    def _apply_profile(self, account: Obj, p: Params) -> None:
        account["email"] = p.str("email", default=account["email"])
        account["business_type"] = p.choice(
            "business_type",
            ("company", "government_entity", "individual", "non_profit"),
            default=account["business_type"],
        )
        account["metadata"] = merge_metadata(account["metadata"], p.metadata())
        profile = p.nested("business_profile")
        for name in BUSINESS_PROFILE_FIELDS:
            if profile.has(name):
                account["business_profile"][name] = profile.str(name)
        tos = p.nested("tos_acceptance")
        for name in ("date", "ip", "user_agent"):
            if tos.has(name):
                value = tos.int(name) if name == "date" else tos.str(name)
                account["tos_acceptance"][name] = value
        settings = p.nested("settings")
        settings.reject_unknown(("payouts", "payments", "dashboard", "branding", "card_payments"))
        payments = settings.nested("payments")
        if payments.has("statement_descriptor"):
            account["settings"]["payments"]["statement_descriptor"] = payments.str(
                "statement_descriptor"
            )
        payouts = settings.nested("payouts")
        payouts.reject_unknown(("debit_negative_balances", "schedule", "statement_descriptor"))
        current = account["settings"]["payouts"]
        if payouts.has("debit_negative_balances"):
            current["debit_negative_balances"] = payouts.bool("debit_negative_balances")
        if payouts.has("statement_descriptor"):
            current["statement_descriptor"] = payouts.str("statement_descriptor")
        if payouts.has("schedule"):
            current["schedule"] = self._updated_schedule(
                current["schedule"], payouts.nested("schedule")
            )

    def _updated_schedule(self, current: Obj, p: Params) -> Obj:
        p.reject_unknown(
            ("interval", "delay_days", "weekly_anchor", "monthly_anchor", "weekly_payout_days")
        )
        interval = p.choice("interval", PAYOUT_INTERVALS) or current["interval"]
        delay_days = current["delay_days"]
        minimum = self.settings.minimum_delay_days()
        if p.str("delay_days") == "minimum":
            delay_days = minimum
        elif p.has("delay_days"):
            delay_days = p.int("delay_days", minimum=0)
            if delay_days is not None and delay_days < minimum:
                # Stripe: "The delay_days value cannot be less than your own payout schedule or
                # less than the default payout schedule for the account."
                # Undocumented: the message and code of Stripe's refusal.
                raise bad_param(
                    f"Invalid settings[payouts][schedule][delay_days]: {delay_days} is below "
                    f"this account's minimum of {minimum} days; pass `minimum` for the lowest "
                    "permitted value.",
                    "settings[payouts][schedule][delay_days]",
                    "parameter_invalid_integer",
                )
        weekly = p.choice("weekly_anchor", WEEKDAYS) or current["weekly_anchor"]
        monthly = p.int("monthly_anchor", minimum=1, maximum=MONTHLY_ANCHOR_MAX)
        monthly = monthly if monthly is not None else current["monthly_anchor"]
        if interval == "weekly" and weekly is None:
            raise bad_param(
                "weekly_anchor is required when interval is weekly.",
                "settings[payouts][schedule][weekly_anchor]",
                "parameter_missing",
            )
        if interval == "monthly" and monthly is None:
            raise bad_param(
                "monthly_anchor is required when interval is monthly.",
                "settings[payouts][schedule][monthly_anchor]",
                "parameter_missing",
            )
        return self._schedule(
            interval,
            delay_days if delay_days is not None else current["delay_days"],
            weekly if interval == "weekly" else None,
            monthly if interval == "monthly" else None,
        )

    def _add_external_account(
        self, account: Obj, raw: Any, make_default: bool, *, emit: bool
    ) -> Obj:
        if not isinstance(raw, dict):
            # Undocumented: the sandbox has no /v1/tokens; bank details must come inline.
            raise bad_param(
                "The sandbox takes external_account as a hash "
                "(object=bank_account, country, currency, account_number, routing_number).",
                "external_account",
            )
        p = Params(raw, "external_account")
        p.reject_unknown(
            (
                "object",
                "country",
                "currency",
                "account_number",
                "routing_number",
                "account_holder_name",
                "account_holder_type",
                "default_for_currency",
                "metadata",
            )
        )
        if p.choice("object", ("bank_account",), default="bank_account") != "bank_account":
            raise invalid("Only bank accounts are supported.", param="external_account[object]")
        number = p.required_str("account_number")
        routing = p.str("routing_number")
        currency = p.currency(required=False) or account["default_currency"]
        existing = [self.objects[i] for i in account["_external_ids"]]
        first_in_currency = not any(b["currency"] == currency for b in existing)
        default = make_default or p.bool("default_for_currency") or first_in_currency
        if default:
            for other in existing:
                if other["currency"] == currency:
                    other["default_for_currency"] = False
        fingerprint = hashlib.sha256(f"{routing}:{number}".encode()).hexdigest()[:16]
        bank = {
            "id": self.ids.new("ba_"),
            "object": "bank_account",
            "account": account["id"],
            "account_holder_name": p.str("account_holder_name"),
            "account_holder_type": p.choice("account_holder_type", ("company", "individual")),
            "account_type": None,
            "available_payout_methods": ["standard"]
            if number in INSTANT_INELIGIBLE_ACCOUNTS
            else ["instant", "standard"],
            "bank_name": "STRIPE TEST BANK",
            "country": (p.str("country") or account["country"]).upper(),
            "currency": currency,
            "default_for_currency": default,
            "fingerprint": fingerprint,
            "last4": number[-4:],
            "metadata": {},
            "routing_number": routing,
            "status": "new",
            "_account_number": number,
        }
        self.put(bank, account["id"])
        account["_external_ids"].append(bank["id"])
        if emit:
            self.emit("account.external_account.created", bank, account["id"])
        return bank

    def _refresh_enabled(self, account: Obj) -> None:
        # Undocumented: no verification is simulated; charges follow the card_payments capability
        # and payouts need an external account. Requirements (stripe_sandbox.requirements) past
        # due, or a disabled account, turn both off.
        self.refresh_requirements(account)
        account["charges_enabled"] = account["capabilities"].get("card_payments") == "active"
        account["payouts_enabled"] = (
            bool(account["_external_ids"]) and account["requirements"]["disabled_reason"] is None
        )

    def default_external_account(self, account: Obj, currency: str) -> Obj | None:
        for bank_id in account["_external_ids"]:
            bank = self.objects[bank_id]
            if bank["currency"] == currency and bank["default_for_currency"]:
                return bank
        return None


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/account", lambda st, c, p: st.retrieve_account(c, None)),
    ("POST", "/v1/accounts", AccountsMixin.create_account),
    ("GET", "/v1/accounts", AccountsMixin.list_accounts),
    (
        "GET",
        "/v1/accounts/{account}",
        lambda st, c, p, account: st.retrieve_account(c, account),
    ),
    (
        "POST",
        "/v1/accounts/{account}",
        lambda st, c, p, account: st.update_account(c, account, p),
    ),
    (
        "POST",
        "/v1/accounts/{account}/external_accounts",
        lambda st, c, p, account: st.create_external_account(c, account, p),
    ),
    (
        "GET",
        "/v1/accounts/{account}/external_accounts",
        lambda st, c, p, account: st.list_external_accounts(c, account, p),
    ),
    (
        "GET",
        "/v1/accounts/{account}/external_accounts/{bank}",
        lambda st, c, p, account, bank: st.retrieve_external_account(c, account, bank),
    ),
]
