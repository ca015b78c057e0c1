"""The sandbox's settings: every number of Stripe's behaviour that the sandbox has to pick.

Stripe computes processing fees, dispute fees and settlement timing itself; Sluice records them as
they come. The sandbox has to produce *some* numbers, so they are explicit here, with Stripe's US
defaults where Stripe publishes them and a marked choice where it does not.

| setting | default | meaning |
|---|---|---|
| `seed` | 0 | makes every id, secret and chaos draw reproducible |
| `secret_key` | derived from `seed` | the only API key accepted (`sk_test_…`) |
| `start_time` | 1793577600 | the sandbox clock's first instant (2026-11-02T00:00:00Z, a Monday) |
| `processing_fees` | `{"usd": 2.9% + 30}` | per-currency card fee, `FeeRule(bps, fixed)` |
| `fallback_processing_fee` | 2.9% + 0 | for currencies missing from `processing_fees` |
| `dispute_fees` | `{"usd": 1500}` | withdrawn with each dispute |
| `fallback_dispute_fee` | 1500 | for currencies missing from `dispute_fees` |
| `dispute_fee_refunded_on_win` | True | the won-dispute reinstatement also returns the fee |
| `platform_country` / `platform_currency` | US / usd | the platform's country and currency |
| `platform_settlement_currencies` | () | currencies the platform settles in besides |
|  |  | `platform_currency`; None: every currency (see below) |
| `cross_region_destination_needs_on_behalf_of` | True | refuse destination charges to an |
|  |  | account outside the platform's region without `on_behalf_of`, as Stripe does |
| `platform_delay_days` / `default_delay_days` | 2 / 2 | settlement delay (Stripe's US minimum); |
|  |  | a connected account's `delay_days` cannot go below the larger of the two |
| `platform_payout_interval` / `default_payout_interval` | manual / daily | payout schedules |
| `payout_submit_delay_s` | 3600 | pending → in_transit |
| `payout_transit_days` | 2 | arrival_date = start of creation day (UTC) + this |
| `payout_paid_then_failed_delay_s` | 86400 | paid → failed for the paid-then-failed test account |
| `topup_availability_days` | 5 | top-up funds become available (pending → succeeded) |
| `dispute_evidence_due_days` | 7 | evidence_details.due_by |
| `dispute_resolution_delay_s` | 3600 | submitted test evidence → won/lost |
| `webhook_retry_delays_s` | (300, 1800, 7200) | sandbox seconds between failed attempts |
| `webhook_timeout_s` | 5.0 | per delivery attempt (wall clock) |
| `webhook_delivery` | "background" | "background": a thread sends due events; "manual": |
|  |  | only `flush` and `advance` send |
| `idempotency_key_ttl_s` | 86400 | keys are forgotten after this long in sandbox time |
| `instant_payout_fee_bps` | 100 | Stripe's fee on an Instant Payout (1% in the US; |
|  |  | `stripe_sandbox.instant`), on the payout's balance transaction |
| `payout_platform_fees` | {} | the platform's fee on its sellers' payouts per method |
|  |  | (`"instant=100+0,standard=0+25"`; Stripe's platform pricing tools, collected as an |
|  |  | application fee; `stripe_sandbox.instant`) |
| `fx_rates` | {} | fixed exchange rates a payout converts at (`"usd:eur=0.9238,…"`, one |
|  |  | unit of the first is that many of the second; `stripe_sandbox.fx`); none: refused |
| `onboarding_required` | False | new accounts start with requirements due (disabled) until |
|  |  | onboarded (`stripe_sandbox.requirements`); False: enabled at once |
| `chaos` | none | webhook chaos from the start (and after a reset): `Chaos(duplicate,` |
|  |  | `duplicate_count, reorder, delay_seconds, seed)`; `POST /_sandbox/webhooks/chaos` |
|  |  | changes it while running |

Two refusals follow Stripe by default and can be relaxed for experiments:
- `platform_settlement_currencies` (default `()`: the platform settles in `platform_currency`
  only; a list adds currencies it holds bank accounts in): a charge that would put funds on the
  platform in a currency it does not settle in is refused, where Stripe would convert them (the
  sandbox converts nothing yet). None lets the platform hold every currency.
- `cross_region_destination_needs_on_behalf_of` (default True): Stripe's refusal of destination
  charges across regions without `on_behalf_of`.
Connected accounts always settle in their `default_currency` and their bank accounts' currencies
only.

Setting them: in-process, `Sandbox(processing_fees={"usd": FeeRule(290, 30)}, …)`; from strings,
`SandboxSettings.from_options(processing_fees="usd=290+30,jpy=360+0", chaos="duplicate=0.5")`;
from a TOML file, `SandboxSettings.from_file("sandbox.toml")` (keys are field names, values
TOML's own or the same strings, chaos in a `[chaos]` table). `sluice sandbox --settings-file
sandbox.toml --set NAME=VALUE …` (`--set chaos.reorder=true` for one chaos field) uses these;
an unknown name or a bad value raises `SettingError`, whose message starts with the setting's
name.

```toml
processing_fees = { usd = "290+30", jpy = "360+0" }   # or [processing_fees] usd = "290+30"
dispute_fee_refunded_on_win = false
webhook_retry_delays_s = [60, 600]
[chaos]
duplicate = 0.2
reorder = true
```
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from stripe_sandbox.fx import check_fx_rates, parse_fx_rates

API_VERSION = "2026-10-28.endive"  # what stripe-python 16.1.0 pins (stripe.api_version)
START_TIME = 1_793_577_600  # 2026-11-02T00:00:00Z, a Monday
DAY_S = 86_400
BPS_PER_UNIT = 10_000

WEBHOOK_DELIVERY_MODES = ("background", "manual")
PAYOUT_INTERVALS = ("manual", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class FeeRule:
    """A card processing fee: `percent_bps` basis points of the amount plus `fixed_minor`."""

    percent_bps: int
    fixed_minor: int

    def fee_minor(self, amount_minor: int) -> int:
        # Undocumented: Stripe does not publish its rounding; the percentage part rounds half up.
        percent_part = (amount_minor * self.percent_bps * 2 + BPS_PER_UNIT) // (2 * BPS_PER_UNIT)
        return percent_part + self.fixed_minor

    @classmethod
    def parse(cls, text: str) -> FeeRule:
        """`"290+30"` → 2.9% + 30 minor units."""
        percent, _, fixed = text.partition("+")
        return cls(int(percent), int(fixed or 0))


def parse_fee_rules(text: str) -> dict[str, FeeRule]:
    """`"usd=290+30,jpy=360+0"` → per-currency rules (for command lines and environment)."""
    rules: dict[str, FeeRule] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        currency, _, rule = item.partition("=")
        rules[currency.strip().lower()] = FeeRule.parse(rule.strip())
    return rules


DUPLICATE_COUNT_MAX = 10  # extra copies of one delivery, at most


@dataclass(frozen=True)
class Chaos:
    """Delivery faults for tests: `duplicate` is the chance that an event is sent
    `duplicate_count` extra times, `delay_seconds` postpones first attempts (sandbox time),
    `reorder` shuffles each batch of due deliveries; `seed` makes the draws reproducible."""

    duplicate: float = 0.0
    duplicate_count: int = 1
    reorder: bool = False
    delay_seconds: int = 0
    seed: int = 0
    drop: float = 0.0  # drift (stripe_sandbox.drift): the chance an event is never delivered

    def __post_init__(self) -> None:
        if not 0.0 <= self.duplicate <= 1.0:
            raise SettingError("chaos.duplicate", "a probability between 0 and 1")
        if not 0.0 <= self.drop <= 1.0:
            raise SettingError("chaos.drop", "a probability between 0 and 1")
        if not 1 <= self.duplicate_count <= DUPLICATE_COUNT_MAX:
            raise SettingError("chaos.duplicate_count", f"from 1 to {DUPLICATE_COUNT_MAX}")
        if self.delay_seconds < 0:
            raise SettingError("chaos.delay_seconds", "cannot be negative")

    @classmethod
    def parse(cls, text: str) -> Chaos:
        """`"duplicate=0.5,reorder=true,seed=3"` → chaos (the fields not named keep defaults)."""
        return cls.from_mapping(
            dict(item.strip().partition("=")[::2] for item in text.split(",") if item.strip())
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Chaos:
        """Chaos from a table (`[chaos]` of a settings file): values as given or as strings."""
        kinds = {f.name: str(f.type) for f in fields(cls)}
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise SettingError(f"chaos.{unknown[0]}", f"unknown (known: {', '.join(kinds)})")
        return cls(
            **{name: _coerce(f"chaos.{name}", kinds[name], value) for name, value in values.items()}
        )


class SettingError(ValueError):
    """A setting the sandbox cannot take; the message starts with the setting's name."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in BOOL_WORDS:
        raise ValueError(f"not a boolean: {text!r} (true or false)")
    return BOOL_WORDS[word]


def _parse_amounts(text: str) -> dict[str, int]:
    """`"usd=1500,jpy=1500"` → per-currency amounts in minor units."""
    return {
        currency.strip().lower(): int(amount)
        for currency, _, amount in (item.partition("=") for item in text.split(",") if item)
    }


def _parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item.strip())


def _parse_currencies(text: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in text.split(",") if item.strip())


BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# How `from_options` reads a string for each field type (as annotated on SandboxSettings).
OPTION_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "FeeRule": FeeRule.parse,
    "Mapping[str, FeeRule]": parse_fee_rules,
    "Mapping[str, int]": _parse_amounts,
    "tuple[int, ...]": _parse_ints,
    "tuple[str, ...] | None": _parse_currencies,
    "Chaos": Chaos.parse,
    "Mapping[str, str]": parse_fx_rates,
}


def _fee_rule(value: Any) -> FeeRule:
    """A fee rule as a string (`"290+30"`), a table (`{percent_bps, fixed_minor}`) or itself."""
    if isinstance(value, str):
        return FeeRule.parse(value)
    return FeeRule(**value) if isinstance(value, dict) else value


# How a settings file's (TOML) tables and arrays become each field type.
TABLE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "FeeRule": _fee_rule,
    "Mapping[str, FeeRule]": lambda v: {str(k).lower(): _fee_rule(r) for k, r in v.items()},
    "Mapping[str, int]": lambda v: {str(k).lower(): int(n) for k, n in v.items()},
    "tuple[int, ...]": lambda v: tuple(int(n) for n in v),
    "tuple[str, ...] | None": lambda v: tuple(str(c).strip().lower() for c in v),
    "Chaos": lambda v: Chaos.from_mapping(v) if isinstance(v, dict) else v,
    "Mapping[str, str]": lambda v: check_fx_rates(v) if isinstance(v, dict) else v,
}
# What each field must hold once read (a bool is no int here: TOML tells them apart).
EXPECTED_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "str | None": (str, type(None)),
    "FeeRule": (FeeRule,),
    "Mapping[str, FeeRule]": (Mapping,),
    "Mapping[str, int]": (Mapping,),
    "Mapping[str, str]": (Mapping,),
    "tuple[int, ...]": (tuple,),
    "tuple[str, ...] | None": (tuple, type(None)),
}


def _coerce(name: str, kind: str, value: Any) -> Any:
    """One setting's value from a command-line string or a settings file's value; a value
    that cannot be read raises `SettingError` naming the setting."""
    try:
        if isinstance(value, str):
            parse = OPTION_PARSERS.get(kind)
            value = parse(value) if parse is not None else value
        elif isinstance(value, dict | list | tuple) and kind in TABLE_PARSERS:
            value = TABLE_PARSERS[kind](value)
    except SettingError:
        raise
    except (ValueError, TypeError, AttributeError) as error:
        raise SettingError(name, f"cannot read {value!r} ({error})") from None
    expected = EXPECTED_TYPES.get(kind, ())
    wrong_bool = isinstance(value, bool) and bool not in expected
    if expected and (not isinstance(value, expected) or wrong_bool):
        raise SettingError(name, f"expected {kind}, got {value!r}")
    return float(value) if kind == "float" else value


NON_NEGATIVE_FIELDS = (
    "start_time",
    "fallback_dispute_fee",
    "dispute_evidence_due_days",
    "dispute_resolution_delay_s",
    "payout_submit_delay_s",
    "payout_transit_days",
    "payout_paid_then_failed_delay_s",
    "topup_availability_days",
    "idempotency_key_ttl_s",
    "instant_payout_fee_bps",
)


def _default_processing_fees() -> dict[str, FeeRule]:
    return {"usd": FeeRule(percent_bps=290, fixed_minor=30)}


def _default_dispute_fees() -> dict[str, int]:
    return {"usd": 1500}


@dataclass(frozen=True)
class SandboxSettings:
    """Everything a `Sandbox` can be told; see the module docstring for the meaning of each."""

    seed: int = 0
    secret_key: str | None = None
    api_version: str = API_VERSION
    start_time: int = START_TIME
    platform_country: str = "US"
    platform_currency: str = "usd"
    platform_settlement_currencies: tuple[str, ...] | None = ()
    cross_region_destination_needs_on_behalf_of: bool = True
    platform_delay_days: int = 2
    platform_payout_interval: str = "manual"
    default_delay_days: int = 2
    default_payout_interval: str = "daily"
    processing_fees: Mapping[str, FeeRule] = field(default_factory=_default_processing_fees)
    fallback_processing_fee: FeeRule = FeeRule(percent_bps=290, fixed_minor=0)
    dispute_fees: Mapping[str, int] = field(default_factory=_default_dispute_fees)
    fallback_dispute_fee: int = 1500
    dispute_fee_refunded_on_win: bool = True
    dispute_evidence_due_days: int = 7
    dispute_resolution_delay_s: int = 3600
    payout_submit_delay_s: int = 3600
    payout_transit_days: int = 2
    payout_paid_then_failed_delay_s: int = DAY_S
    topup_availability_days: int = 5
    # Undocumented: Stripe's test mode retries "3 times over a few hours"; these are the gaps.
    webhook_retry_delays_s: tuple[int, ...] = (300, 1800, 7200)
    webhook_timeout_s: float = 5.0
    webhook_delivery: str = "background"
    idempotency_key_ttl_s: int = DAY_S
    fx_rates: Mapping[str, str] = field(default_factory=dict)  # stripe_sandbox.fx
    instant_payout_fee_bps: int = 100  # stripe_sandbox.instant
    payout_platform_fees: Mapping[str, FeeRule] = field(default_factory=dict)
    onboarding_required: bool = False
    chaos: Chaos = Chaos()  # the webhook chaos a start (and a reset) begins with

    def __post_init__(self) -> None:
        if self.webhook_delivery not in WEBHOOK_DELIVERY_MODES:
            raise SettingError("webhook_delivery", f"one of {', '.join(WEBHOOK_DELIVERY_MODES)}")
        for name in ("platform_payout_interval", "default_payout_interval"):
            if getattr(self, name) not in PAYOUT_INTERVALS:
                raise SettingError(name, f"one of {', '.join(PAYOUT_INTERVALS)}")
        for name in ("platform_delay_days", "default_delay_days"):
            if getattr(self, name) < 0:
                raise SettingError(name, "cannot be negative")
        if any(delay <= 0 for delay in self.webhook_retry_delays_s):
            raise SettingError("webhook_retry_delays_s", "every delay must be positive")
        if self.webhook_timeout_s <= 0:
            raise SettingError("webhook_timeout_s", "must be positive")
        # Every knob can be set (tests draw them at random): refuse values that cannot work
        # here, rather than fail later in the middle of a request.
        for name in NON_NEGATIVE_FIELDS:
            if getattr(self, name) < 0:
                raise SettingError(name, "cannot be negative")
        if not set(self.payout_platform_fees) <= {"standard", "instant"}:
            raise SettingError("payout_platform_fees", "per method: standard, instant")
        fee_rules = [
            *self.processing_fees.values(),
            self.fallback_processing_fee,
            *self.payout_platform_fees.values(),
        ]
        if any(rule.percent_bps < 0 or rule.fixed_minor < 0 for rule in fee_rules):
            raise SettingError("processing_fees", "fees cannot be negative")
        if any(fee < 0 for fee in self.dispute_fees.values()):
            raise SettingError("dispute_fees", "fees cannot be negative")
        currencies = [self.platform_currency, *(self.platform_settlement_currencies or ())]
        if not all(re.fullmatch(r"[a-z]{3}", currency) for currency in currencies):
            raise SettingError(
                "platform_currency", "currencies are three lowercase letters (ISO 4217), e.g. usd"
            )
        try:
            check_fx_rates(self.fx_rates)
        except ValueError as error:
            raise SettingError("fx_rates", str(error)) from None
        if not re.fullmatch(r"[A-Z]{2}", self.platform_country):
            raise SettingError("platform_country", "two uppercase letters (ISO 3166), e.g. US")

    @classmethod
    def from_options(cls, **options: Any) -> SandboxSettings:
        """Settings from command-line style values: every field can be given as a string
        (`processing_fees="usd=290+30,jpy=360+0"`, `dispute_fees="usd=1500"`,
        `fallback_processing_fee="290+0"`, `webhook_retry_delays_s="300,1800"`,
        `platform_settlement_currencies="usd,eur"`, `dispute_fee_refunded_on_win="false"`,
        `default_delay_days="7"`); other values pass through. Unknown names fail."""
        types = {f.name: str(f.type) for f in fields(cls)}
        unknown = sorted(set(options) - set(types))
        if unknown:
            raise SettingError(unknown[0], "no such sandbox setting (see SandboxSettings)")
        return cls(**{name: _coerce(name, types[name], v) for name, v in options.items()})

    @classmethod
    def from_file(cls, path: str, **overrides: Any) -> SandboxSettings:
        """Settings from a TOML file: keys are field names, values TOML's own types or the
        command-line strings (`processing_fees = "usd=290+30"` or `[processing_fees]` with
        `usd = "290+30"`), webhook chaos in a `[chaos]` table; `overrides` (e.g. `--set`)
        win over the file's. A file that cannot be read raises `SettingError`."""
        import tomllib

        try:
            with open(path, "rb") as file:
                values = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingError(f"settings file {path}", str(error)) from None
        return cls.from_options(**{**values, **overrides})

    def minimum_delay_days(self) -> int:
        """The lowest `delay_days` of a connected account (what `minimum` sets). Stripe: "The
        delay_days value cannot be less than your own payout schedule or less than the default
        payout schedule for the account" (docs.stripe.com/connect/manage-payout-schedule)."""
        return max(self.platform_delay_days, self.default_delay_days)

    def processing_fee(self, amount_minor: int, currency: str) -> int:
        rule = self.processing_fees.get(currency, self.fallback_processing_fee)
        return rule.fee_minor(amount_minor)

    def dispute_fee(self, currency: str) -> int:
        return self.dispute_fees.get(currency, self.fallback_dispute_fee)
