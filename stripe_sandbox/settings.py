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
| `platform_delay_days` / `default_delay_days` | 2 / 2 | settlement delay (Stripe's US minimum) |
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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

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

    def __post_init__(self) -> None:
        if self.webhook_delivery not in WEBHOOK_DELIVERY_MODES:
            raise ValueError(f"webhook_delivery must be one of {WEBHOOK_DELIVERY_MODES}")
        for interval in (self.platform_payout_interval, self.default_payout_interval):
            if interval not in PAYOUT_INTERVALS:
                raise ValueError(f"payout interval must be one of {PAYOUT_INTERVALS}")
        if self.platform_delay_days < 0 or self.default_delay_days < 0:
            raise ValueError("delay days cannot be negative")
        if any(delay <= 0 for delay in self.webhook_retry_delays_s):
            raise ValueError("webhook retry delays must be positive")

    @classmethod
    def from_options(cls, **options: Any) -> SandboxSettings:
        """Settings from command-line style values: `processing_fees="usd=290+30,jpy=360+0"`,
        `dispute_fees="usd=1500"`, `fallback_processing_fee="290+0"`,
        `webhook_retry_delays_s="300,1800"`; other values pass through. Unknown names fail."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown sandbox settings: {', '.join(unknown)}")
        coerced = dict(options)
        if isinstance(coerced.get("processing_fees"), str):
            coerced["processing_fees"] = parse_fee_rules(coerced["processing_fees"])
        if isinstance(coerced.get("fallback_processing_fee"), str):
            coerced["fallback_processing_fee"] = FeeRule.parse(coerced["fallback_processing_fee"])
        if isinstance(coerced.get("dispute_fees"), str):
            coerced["dispute_fees"] = {
                currency.strip().lower(): int(amount)
                for currency, _, amount in (
                    item.partition("=") for item in coerced["dispute_fees"].split(",") if item
                )
            }
        if isinstance(coerced.get("webhook_retry_delays_s"), str):
            delays = coerced["webhook_retry_delays_s"].split(",")
            coerced["webhook_retry_delays_s"] = tuple(int(d) for d in delays if d.strip())
        return cls(**coerced)

    def processing_fee(self, amount_minor: int, currency: str) -> int:
        rule = self.processing_fees.get(currency, self.fallback_processing_fee)
        return rule.fee_minor(amount_minor)

    def dispute_fee(self, currency: str) -> int:
        return self.dispute_fees.get(currency, self.fallback_dispute_fee)
