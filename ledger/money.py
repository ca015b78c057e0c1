"""Money as integer minor units of a lowercase ISO 4217 currency. No float, no Decimal."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import (
    AmountTooLargeError,
    CurrencyMismatchError,
    InvalidAmountError,
    UnknownCurrencyError,
)

# Stripe's zero-decimal currencies (docs.stripe.com/currencies#zero-decimal).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
# Three-decimal currencies: Stripe requires the last digit of charge amounts to be 0.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
# Two-decimal currencies Stripe presents or settles in. ISK is zero-decimal in ISO 4217 but Stripe
# keeps two-decimal amounts for it (backwards compatibility), so it lives here on purpose.
TWO_DECIMAL = frozenset(
    """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bmd bnd bob brl bsd bwp byn bzd
    cad cdf chf cny cop crc cve czk dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gtq gyd hkd
    hnl htg huf idr ils inr isk jmd kes kgs khr kyd kzt lak lbp lkr lrd lsl mad mdl mkd mmk mnt
    mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd pab pen pgk php pkr pln qar ron rsd rub
    sar sbd scr sek sgd shp sle sos srd std szl thb tjs top try ttd twd tzs uah uyu uzs ves wst
    xcd yer zar zmw
    """.split()
)
EXPONENTS: dict[str, int] = (
    {c: 2 for c in TWO_DECIMAL} | {c: 0 for c in ZERO_DECIMAL} | {c: 3 for c in THREE_DECIMAL}
)

# Stripe: "The amount value supports up to eight digits" (99,999,999 minor units).
AMOUNT_MINOR_MAX = 99_999_999
# Per-currency overrides of the eight-digit limit go here once confirmed against Stripe's table.
AMOUNT_MINOR_MAX_BY_CURRENCY: dict[str, int] = {}


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrencyError(
            f"unknown currency {currency!r}: use a lowercase ISO 4217 code Stripe supports",
            param="currency",
        ) from None


def check_currency(currency: object, param: str = "currency") -> str:
    if not isinstance(currency, str) or currency not in EXPONENTS:
        raise UnknownCurrencyError(
            f"unknown currency {currency!r}: use a lowercase ISO 4217 code Stripe supports",
            param=param,
        )
    return currency


def amount_minor_max(currency: str) -> int:
    return AMOUNT_MINOR_MAX_BY_CURRENCY.get(currency, AMOUNT_MINOR_MAX)


def check_amount(
    amount_minor: object, currency: str, param: str = "amount", *, allow_zero: bool = False
) -> int:
    """A positive (or zero, when allowed) integer amount within Stripe's limit for the currency."""
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        raise InvalidAmountError(
            f"{param} must be an integer number of minor units, got {amount_minor!r}", param=param
        )
    if amount_minor < 0 or (amount_minor == 0 and not allow_zero):
        raise InvalidAmountError(
            f"{param} must be {'zero or more' if allow_zero else 'positive'}, got {amount_minor}",
            param=param,
        )
    limit = amount_minor_max(currency)
    if amount_minor > limit:
        raise AmountTooLargeError(
            f"{param} {amount_minor} exceeds the maximum {limit} for {currency}", param=param
        )
    return amount_minor


@dataclass(frozen=True, slots=True)
class Money:
    """An immutable amount that refuses to mix currencies."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        check_currency(self.currency)
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise InvalidAmountError(f"amount_minor must be an int, got {self.amount_minor!r}")

    def _same(self, other: Money) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatchError(
                f"cannot combine {self.currency} with {other.currency}", param="currency"
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor <= other.amount_minor

    def format(self) -> str:
        """Decimal text for display at the edge, e.g. ``12.50`` or ``-1,000`` for JPY."""
        return format_minor(self.amount_minor, self.currency)


def format_minor(amount_minor: int, currency: str) -> str:
    exp = exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exp)
    text = f"{whole:,}"
    return f"{sign}{text}.{frac:0{exp}d}" if exp else f"{sign}{text}"
