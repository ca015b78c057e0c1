"""Currency conversion: the fixed exchange rates the sandbox converts payouts at.

Stripe converts at its own, moving rates; the sandbox takes fixed ones from its settings
(`fx_rates="usd:eur=0.9238,eur:usd=1.0825"`: one unit of the first currency is that many units
of the second) and reports them as Stripe does, on the balance transaction: `exchange_rate`
with "the amount in currency A, times exchange_rate, would be the amount in currency B"
(Stripe's BalanceTransaction docs). A pair with no rate is not converted: the payout is refused.

Undocumented choices, marked where they are made: a payout in a currency the account has no
external account for goes, converted, to the default external account in the account's country
currency (else in the first currency with a rate); the converted amount rounds half up to the
bank currency's minor unit; a failed or canceled converted payout returns the amount taken, in
the balance's currency (the payout_failure balance transaction carries the same rate).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

# ISO 4217 exponents Stripe uses that differ from 2 (docs.stripe.com/currencies).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
RATE_PATTERN = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")
PAIR_PATTERN = re.compile(r"[a-z]{3}:[a-z]{3}")
RATES_MAX = 64


def exponent(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    return 3 if currency in THREE_DECIMAL else 2


def check_fx_rates(rates: Mapping[str, str]) -> dict[str, str]:
    """`{"usd:eur": "0.9238"}`: pairs of different lowercase currencies, positive decimal
    strings; raises ValueError naming the bad item."""
    if len(rates) > RATES_MAX:
        raise ValueError(f"at most {RATES_MAX} rates")
    checked: dict[str, str] = {}
    for raw_pair, raw_rate in rates.items():
        pair = str(raw_pair).strip().lower()
        rate = str(raw_rate).strip()
        if not PAIR_PATTERN.fullmatch(pair) or pair[:3] == pair[4:]:
            raise ValueError(f"{pair!r} is not a pair of two currencies such as usd:eur")
        if not RATE_PATTERN.fullmatch(rate) or Fraction(rate) <= 0:
            raise ValueError(f"the rate of {pair} must be a positive decimal, not {rate!r}")
        checked[pair] = rate
    return checked


def parse_fx_rates(text: str) -> dict[str, str]:
    """`"usd:eur=0.9238,eur:usd=1.0825"` → `{"usd:eur": "0.9238", "eur:usd": "1.0825"}`."""
    items = (item.partition("=") for item in text.split(",") if item.strip())
    return check_fx_rates({pair: rate for pair, _, rate in items})


def rate_for(rates: Mapping[str, str], source: str, target: str) -> str | None:
    return rates.get(f"{source}:{target}")


def convert_minor(amount_minor: int, source: str, target: str, rate: str) -> int:
    """`amount_minor` of `source` in `target`'s minor units at `rate` (per major unit)."""
    # Undocumented: Stripe does not publish its rounding; half up here, in integers.
    scaled = (
        Fraction(amount_minor)
        * Fraction(rate)
        * Fraction(10) ** (exponent(target) - exponent(source))
    )
    return int((scaled * 2 + 1) // 2)


def convert_payout(
    bt: dict[str, Any], bank_currency: str, rates: Mapping[str, str]
) -> tuple[int, str]:
    """(amount, currency) reaching a bank in `bank_currency` for the payout whose balance
    transaction is `bt`; converted, `bt` reports the rate (a JSON number, as Stripe sends it)."""
    amount, currency = -int(bt["amount"]), str(bt["currency"])
    if bank_currency == currency:
        return amount, currency
    rate = rate_for(rates, currency, bank_currency) or "1"  # the caller found a rate
    bt["exchange_rate"] = float(rate)
    return convert_minor(amount, currency, bank_currency, rate), bank_currency


def conversion_bank(
    banks: list[dict[str, object]], currency: str, country_currency: str, rates: Mapping[str, str]
) -> tuple[dict[str, object], str] | None:
    """The default external account a payout in `currency` converts to, with its rate: one
    in the account's country currency first, else the first (in currency order) with a rate."""
    defaults = sorted(
        (bank for bank in banks if bank.get("default_for_currency")),
        key=lambda bank: (bank.get("currency") != country_currency, str(bank.get("currency"))),
    )
    for bank in defaults:
        rate = rate_for(rates, currency, str(bank.get("currency")))
        if rate is not None:
            return bank, rate
    return None
