"""ConnectedAccount: onboarding state, capabilities and payout schedule. Closed, never deleted."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.errors import AccountClosedError, InvalidParameterError, PayoutsDisabledError
from ledger.events import When
from ledger.ids import account_aggregate_id
from ledger.money import check_amount, check_currency
from ledger.requirements import blocking, no_requirements

ACCOUNT_KINDS = ("platform", "connected")
# Stripe's bank account statuses; "errored" (a payout bounced) pauses payouts until it changes.
EXTERNAL_ACCOUNT_STATUSES = (
    "unknown",
    "new",
    "validated",
    "verified",
    "verification_failed",
    "errored",
)
VERIFICATION_STATUSES = ("unverified", "pending", "verified", "rejected")
CAPABILITY_STATUSES = ("active", "inactive", "pending", "unrequested")
INTERVALS = ("daily", "weekly", "monthly", "manual")
WEEKLY_ANCHORS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DELAY_DAYS_MAX = 365
CAPABILITIES_MAX = 32
# Stripe's metadata limits: 50 keys, keys up to 40 characters, values up to 500.
METADATA_KEYS_MAX = 50
METADATA_KEY_LEN_MAX = 40
METADATA_VALUE_LEN_MAX = 500
PROFILE_TEXT_LEN_MAX = 255


def _choice(value: object, allowed: tuple[str, ...], param: str) -> str:
    if value not in allowed:
        raise InvalidParameterError(f"{param} must be one of {', '.join(allowed)}", param=param)
    return str(value)


def _flag(value: object, param: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(f"{param} must be true or false", param=param)
    return value


def _profile_text(value: object, param: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > PROFILE_TEXT_LEN_MAX or not value.isprintable():
        raise InvalidParameterError(
            f"{param} must be printable text of at most {PROFILE_TEXT_LEN_MAX} characters",
            param=param,
        )
    return value


def check_metadata(metadata: object, param: str = "metadata") -> dict[str, str]:
    """Stripe's metadata: a small map of printable strings to printable strings."""
    if not isinstance(metadata, dict) or len(metadata) > METADATA_KEYS_MAX:
        raise InvalidParameterError(
            f"{param} must be a map of at most {METADATA_KEYS_MAX} keys", param=param
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not 0 < len(key) <= METADATA_KEY_LEN_MAX:
            raise InvalidParameterError(
                f"{param} keys are 1 to {METADATA_KEY_LEN_MAX} characters", param=param
            )
        if not isinstance(value, str) or len(value) > METADATA_VALUE_LEN_MAX:
            raise InvalidParameterError(
                f"{param}[{key}] must be text of at most {METADATA_VALUE_LEN_MAX} characters",
                param=f"{param}[{key}]",
            )
        if not (key.isprintable() and value.isprintable()):
            raise InvalidParameterError(f"{param} must be printable text", param=param)
    return {str(k): str(v) for k, v in metadata.items()}


class ConnectedAccount(Aggregate):
    """A seller's Stripe account, or the platform's own (kind ``platform``)."""

    class Opened(Aggregate.Created):
        account_id: str
        kind: str
        country: str
        default_currency: str
        effective_at: datetime

        def apply(self, account: ConnectedAccount) -> None:
            account.account_id = self.account_id
            account.kind = self.kind
            account.country = self.country
            account.default_currency = self.default_currency
            account.verification_status = "unverified"
            account.capabilities = {}
            account.charges_enabled = False
            account.payouts_enabled = False
            account.external_account_status = "unknown"
            account.schedule = {
                "interval": "daily",
                "delay_days": 2,
                "weekly_anchor": None,
                "monthly_anchor": None,
                "minimum_minor": {},
            }
            account.closed = False
            account.name = None
            account.email = None
            account.metadata = {}
            account.requirements = no_requirements()

    class Updated(Aggregate.Event):
        verification_status: str
        capabilities: dict[str, str]
        charges_enabled: bool
        payouts_enabled: bool
        effective_at: datetime
        # Added later, so with a default: events recorded before it read as "unknown".
        external_account_status: str = "unknown"

        def apply(self, account: ConnectedAccount) -> None:
            account.verification_status = self.verification_status
            account.capabilities = dict(self.capabilities)
            account.charges_enabled = self.charges_enabled
            account.payouts_enabled = self.payouts_enabled
            account.external_account_status = self.external_account_status

    class PayoutScheduleSet(Aggregate.Event):
        interval: str
        delay_days: int
        weekly_anchor: str | None
        monthly_anchor: int | None
        minimum_minor: dict[str, int]
        effective_at: datetime

        def apply(self, account: ConnectedAccount) -> None:
            account.schedule = {
                "interval": self.interval,
                "delay_days": self.delay_days,
                "weekly_anchor": self.weekly_anchor,
                "monthly_anchor": self.monthly_anchor,
                "minimum_minor": dict(self.minimum_minor),
            }

    class ProfileSet(Aggregate.Event):
        """The account's display name, email and metadata (as Stripe holds them): for finding
        an account, never for deciding about money."""

        name: str | None
        email: str | None
        metadata: dict[str, str]
        effective_at: datetime

        def apply(self, account: ConnectedAccount) -> None:
            account.name = self.name
            account.email = self.email
            account.metadata = dict(self.metadata)

    class RequirementsSet(Aggregate.Event):
        """Stripe's onboarding requirements for the account (``ledger.requirements``)."""

        currently_due: list[str]
        past_due: list[str]
        eventually_due: list[str]
        disabled_reason: str | None
        current_deadline: datetime | None
        effective_at: datetime

        def apply(self, account: ConnectedAccount) -> None:
            account.requirements = {
                "currently_due": list(self.currently_due),
                "past_due": list(self.past_due),
                "eventually_due": list(self.eventually_due),
                "disabled_reason": self.disabled_reason,
                "current_deadline": self.current_deadline,
            }

    class ExternalAccountsSet(Aggregate.Event):
        """Per currency, the status of the external account payouts in it go to
        (``ledger.payout_fx``)."""

        by_currency: dict[str, str]
        effective_at: datetime

        def apply(self, account: ConnectedAccount) -> None:
            account.external_accounts = dict(self.by_currency)

    class Closed(Aggregate.Event):
        effective_at: datetime

        def apply(self, account: ConnectedAccount) -> None:
            account.closed = True

    account_id: str
    kind: str
    country: str
    default_currency: str
    verification_status: str
    capabilities: dict[str, str]
    charges_enabled: bool
    payouts_enabled: bool
    external_account_status: str  # of the bank account payouts go to
    schedule: dict[str, Any]
    closed: bool
    name: str | None
    email: str | None
    metadata: dict[str, str]
    requirements: dict[str, Any]
    external_accounts: dict[str, str]  # set by ExternalAccountsSet (absent until reported)

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @classmethod
    def open(
        cls, account_id: str, kind: str, country: str, default_currency: str, when: When
    ) -> ConnectedAccount:
        if not isinstance(account_id, str) or not account_id.startswith("acct_"):
            raise InvalidParameterError("account id must start with 'acct_'", param="account")
        if len(account_id) > 64 or not all(
            ch.isascii() and (ch.isalnum() or ch == "_") for ch in account_id
        ):
            raise InvalidParameterError(
                "account ids are at most 64 letters, digits and _", param="account"
            )
        _choice(kind, ACCOUNT_KINDS, "kind")
        if not isinstance(country, str) or len(country) != 2 or not country.isupper():
            raise InvalidParameterError("country must be an ISO 3166 alpha-2 code", param="country")
        check_currency(default_currency, "default_currency")
        return cls._create(
            cls.Opened,
            id=account_aggregate_id(account_id),
            account_id=account_id,
            kind=kind,
            country=country,
            default_currency=default_currency,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    @property
    def aggregate_id(self) -> UUID:
        return self.id

    def require_open(self, param: str = "account") -> None:
        if self.closed:
            raise AccountClosedError(f"account {self.account_id} is closed", param=param)

    def require_payouts_enabled(self) -> None:
        self.require_open()
        if not self.payouts_enabled:
            raise PayoutsDisabledError(
                f"payouts are not enabled on {self.account_id}", param="account"
            )
        if self.external_account_status == "errored":
            raise PayoutsDisabledError(
                f"the bank account of {self.account_id} is errored; payouts are paused until "
                "it is updated",
                param="account",
            )
        # getattr: an account snapshot taken before requirements were kept has none.
        blocked = blocking(getattr(self, "requirements", None))
        if blocked is not None:
            raise PayoutsDisabledError(
                f"payouts to {self.account_id} are paused: {blocked}", param="account"
            )

    def update(
        self,
        when: When,
        *,
        verification_status: str | None = None,
        capabilities: dict[str, str] | None = None,
        charges_enabled: bool | None = None,
        payouts_enabled: bool | None = None,
        external_account_status: str | None = None,
    ) -> None:
        self.require_open()
        status = self.verification_status
        bank = self.external_account_status
        if external_account_status is not None:
            bank = _choice(
                external_account_status, EXTERNAL_ACCOUNT_STATUSES, "external_account_status"
            )
        if verification_status is not None:
            status = _choice(verification_status, VERIFICATION_STATUSES, "verification_status")
        caps = dict(self.capabilities)
        if capabilities is not None:
            if not isinstance(capabilities, dict) or len(capabilities) > CAPABILITIES_MAX:
                raise InvalidParameterError(
                    "capabilities must be a small map", param="capabilities"
                )
            for name, value in capabilities.items():
                if not isinstance(name, str) or not name:
                    raise InvalidParameterError(
                        "capability names are strings", param="capabilities"
                    )
                caps[name] = _choice(value, CAPABILITY_STATUSES, f"capabilities[{name}]")
        charges = (
            self.charges_enabled
            if charges_enabled is None
            else _flag(charges_enabled, "charges_enabled")
        )
        payouts = (
            self.payouts_enabled
            if payouts_enabled is None
            else _flag(payouts_enabled, "payouts_enabled")
        )
        self.trigger_event(
            self.Updated,
            verification_status=status,
            capabilities=caps,
            charges_enabled=charges,
            payouts_enabled=payouts,
            external_account_status=bank,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def set_payout_schedule(
        self,
        when: When,
        *,
        interval: str,
        delay_days: int,
        weekly_anchor: str | None = None,
        monthly_anchor: int | None = None,
        minimum_minor: dict[str, int] | None = None,
    ) -> None:
        self.require_open()
        _choice(interval, INTERVALS, "interval")
        if not isinstance(delay_days, int) or isinstance(delay_days, bool):
            raise InvalidParameterError("delay_days must be an integer", param="delay_days")
        if not 0 <= delay_days <= DELAY_DAYS_MAX:
            raise InvalidParameterError(
                f"delay_days must be between 0 and {DELAY_DAYS_MAX}", param="delay_days"
            )
        if interval == "weekly":
            _choice(weekly_anchor, WEEKLY_ANCHORS, "weekly_anchor")
        elif weekly_anchor is not None:
            raise InvalidParameterError(
                "weekly_anchor is for weekly schedules", param="weekly_anchor"
            )
        if interval == "monthly":
            if not isinstance(monthly_anchor, int) or not 1 <= monthly_anchor <= 31:
                raise InvalidParameterError(
                    "monthly_anchor must be a day of the month, 1 to 31", param="monthly_anchor"
                )
        elif monthly_anchor is not None:
            raise InvalidParameterError(
                "monthly_anchor is for monthly schedules", param="monthly_anchor"
            )
        minimums: dict[str, int] = {}
        for currency, amount in (minimum_minor or {}).items():
            check_currency(currency, "minimum_amount")
            minimums[currency] = check_amount(amount, currency, "minimum_amount", allow_zero=True)
        self.trigger_event(
            self.PayoutScheduleSet,
            interval=interval,
            delay_days=delay_days,
            weekly_anchor=weekly_anchor,
            monthly_anchor=monthly_anchor,
            minimum_minor=minimums,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def set_profile(
        self,
        when: When,
        *,
        name: str | None,
        email: str | None,
        metadata: dict[str, str],
    ) -> None:
        """Replaces the profile whole (Stripe's account object is the source of it)."""
        self.trigger_event(
            self.ProfileSet,
            name=_profile_text(name, "name"),
            email=_profile_text(email, "email"),
            metadata=check_metadata(metadata),
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def set_requirements(self, when: When, requirements: dict[str, Any]) -> None:
        """Replaces the requirements whole (checked by ``ledger.requirements``)."""
        self.trigger_event(
            self.RequirementsSet,
            **requirements,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def set_external_accounts(self, when: When, by_currency: dict[str, str]) -> None:
        """Replaces the external accounts whole (checked by ``ledger.payout_fx``)."""
        self.trigger_event(
            self.ExternalAccountsSet,
            by_currency=by_currency,
            effective_at=when.effective_at,
            timestamp=when.recorded_at,
        )

    def close(self, when: When) -> None:
        self.require_open()
        self.trigger_event(self.Closed, effective_at=when.effective_at, timestamp=when.recorded_at)
