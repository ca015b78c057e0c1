"""A stateful, in-memory sandbox of the Stripe API subset Sluice uses, served over real HTTP.

Stripe cannot be reached from here and no installable emulator covers Connect with state, so
this package plays Stripe for the real `stripe` SDK (16.x, API version `2026-10-28.endive`):

    with Sandbox(seed=7, webhook_delivery="manual") as sb:
        client = sb.client()    # stripe.StripeClient(key, base_addresses={"api": sb.base_url})
        ...
        sb.advance(2 * 86_400)  # the sandbox clock: funds settle, payouts move, webhooks go out

Behaviour follows `reference/stripe-connect.md`; where Stripe does not document a behaviour the
code says so in a comment starting `# Undocumented:`. Settings: `SandboxSettings` (fees, delays,
webhook retries, starting chaos, …; see `settings.py`), also read from strings (`from_options`)
and TOML files (`from_file`). Served from the command line by `run_sandbox(host, port,
**settings)` (`sluice sandbox --port N --settings-file F --set NAME=VALUE`).

Stripe API served (`/v1`, secret key auth, `Stripe-Account`, `Idempotency-Key`, `expand[]`):
- accounts: create (legacy `type` or `controller`), retrieve, update, list, `GET /v1/account`;
  capabilities, `charges_enabled`, `payouts_enabled`, `settings.payouts.schedule` (`delay_days`
  below the account's minimum, the larger of `platform_delay_days` and `default_delay_days`, is
  refused with 400 on `settings[payouts][schedule][delay_days]`; `minimum` sets it); external bank
  accounts (inline `external_account` hash with test account/routing numbers) create/list/get.
  Onboarding (`onboarding_required`; `requirements.py`): a new account starts with its initial
  fields due and past due (disabled, `disabled_reason: requirements.past_due`, `card_payments`
  and `transfers` inactive, `charges_enabled`/`payouts_enabled` false) until they are provided
  or `POST /_sandbox/accounts/{id}/onboard`; `POST /_sandbox/accounts/{id}/requirements` adds
  requirements with a `current_deadline` after which they are past due. Direct and destination
  charges, transfers and payouts to a disabled account are refused; automatic payouts skip it.
- payment_intents: create (`confirm`), retrieve, update, list, confirm, cancel; test methods
  `pm_card_visa` (pending until `available_on`), `pm_card_bypassPending` (available at once),
  `pm_card_chargeDeclined` (402 `card_declined`), `pm_card_chargeDeclinedInsufficientFunds`,
  `pm_card_createDispute` (succeeds, then disputed), `pm_card_mastercard`, `pm_card_visa_debit`;
  direct (`Stripe-Account`), destination (`transfer_data[destination|amount]`,
  `application_fee_amount`, `on_behalf_of`) and separate charges (`transfer_group`).
  Settlement: an account settles in its `default_currency` and its bank accounts' currencies
  (the platform: also `platform_settlement_currencies`; by default every currency). A charge
  that would put funds in another currency on any account it touches (the one it lives on, the
  destination, `on_behalf_of`, the platform for a direct charge's fees) is refused with 400
  `currency_conversion_unsupported` on `currency`, since the sandbox converts nothing. With
  `cross_region_destination_needs_on_behalf_of`, a destination charge to an account outside the
  platform's region (a country, or the EEA) without `on_behalf_of` is refused as Stripe refuses
  it (400 on `transfer_data[destination]`, Stripe's message). The platform's currency refusal and
  the region refusal are off by default, as the demo makes such charges (see `settings.py`).
- manual capture (`captures.py`): `capture_method=manual` holds the amount (`requires_capture`,
  `amount_capturable`, the charge uncaptured with `capture_before` 7 days on); `capture` (all,
  or `amount_to_capture`: the rest is released) books the charge then; `cancel` releases it;
  on the clock an uncaptured hold expires (`charge.expired`, `cancellation_reason=expired`).
- charges (incl. `py_…` destination payments): retrieve, list.
- balance; balance_transactions: retrieve, list (`type`, `source`, `payout`, `currency`,
  `created`, cursors). `balance.available` is sent for an account whose funds become available,
  whether pending funds reach `available_on` (sent by the clock) or a positive balance
  transaction is available as it is booked (bypassPending charges, transfers from the available
  balance or from an available source charge, reversals, returned payouts, won disputes; sent
  once per account at the end of the request or clock step); never for negative transactions.
- transfers (`source_transaction` rules, available-balance check): create, retrieve, list;
  reversals: create, retrieve, list.
- refunds (`reverse_transfer`, `refund_application_fee`, proportional): create, retrieve, list;
  on `pm_card_refundFail` charges a refund fails an hour later (`refund_failures.py`:
  `refund_failure` balance transaction, `charge.refund.updated`, `refund.failed`).
- application_fees: retrieve, list; their refunds: create, retrieve, list.
- payouts (standard): create, retrieve, list, cancel; clock-driven pending → in_transit → paid,
  failures by Stripe's test bank accounts (000111111113 account_closed, 000222222227
  insufficient_funds, 000333333335 debit_not_authorized, 000444444440 invalid_currency; 000111111116
  no_account after first showing paid); automatic payouts on daily/weekly/monthly schedules.
  Every currency with a `default_for_currency` external account pays out to it; a payout in a
  currency with none is refused, unless `fx_rates` has a rate to one the account has a bank in:
  then it is converted (cross-border, `fx.py`: the payout is what reaches the bank, its balance
  transaction what left the balance, with `exchange_rate`). Instant Payouts (`instant.py`:
  `method=instant`, 30 minutes, Stripe's fee `instant_payout_fee_bps` on the balance
  transaction) and the platform's fee on payouts (`payout_platform_fees`: an application fee
  with `fee_source.type=payout`, named on the payout).
- reserves (`reserves.py`; Stripe's Reserves API objects, no SDK service): holds placed by
  `POST /_sandbox/accounts/{id}/reserves` (`amount`, `currency`, `release_after`), a
  `reserve_hold` balance transaction of -amount at once, released at midnight UTC after
  `release_after` (`reserve.release`, `reserve_release` +amount); `GET /v1/reserve/holds[/{id}]`,
  `GET /v1/reserve/releases/{id}`; events `reserve.hold.created`, `reserve.hold.updated`,
  `reserve.release.created`.
- disputes: retrieve, list, update (evidence, `winning_evidence` / `losing_evidence`), close.
- topups (platform): create, retrieve, list; failed or reversed by `POST /_sandbox/topups/{id}/
  fail|reverse` (`topup_failures.py`: `topup_reversal`, `topup.failed`, `topup.reversed`).
- payout reversals (`payout_reversals.py`): `POST /v1/payouts/{id}/reverse` on a connected
  account's paid payout, a new payout with `original_payout` / `reversed_by`.
- events: retrieve, list; webhook_endpoints: create (`url`, `enabled_events` incl. `["*"]`,
  `connect`, `api_version`, `description`, `metadata`; `secret` shown only here), retrieve,
  update (`url`, `enabled_events`, `disabled`, `description`, `metadata`; not `api_version` nor
  `connect`, as at Stripe), list, delete, with signed, retried delivery (`connect=true`
  endpoints get connected accounts' events, the others the platform's).

Not covered: customers, payment methods beyond the test ids above, setup
intents, tokens, debit-card external accounts, top-up cancel, pending refunds, currency
conversion of charges and transfers (charges that would
need it are refused, transfers are not checked; only payouts convert), the `recipient` service
agreement, country-specific payout delays, a separate dispute countered fee, the platform's
`connect_reserved` for negative balances and negative-balance recovery, reserve plans,
capabilities endpoints, persons,
balance settings, search endpoints, thin (v2) events, rate limits, `Stripe-Version` rendering.

Control routes (not Stripe's; no auth): `GET /_sandbox/info`, `GET /_sandbox/clock`,
`POST /_sandbox/clock/advance` (`seconds`, `deliver_webhooks`), `POST /_sandbox/webhooks/flush`,
`GET|POST /_sandbox/webhooks/chaos` (`duplicate`, `duplicate_count`, `reorder`, `delay_seconds`,
`seed`, `drop`: events lost for good), `GET /_sandbox/webhooks/attempts`, `POST /_sandbox/reset`,
`POST /_sandbox/drift/balance_transactions` (a movement Stripe makes on its own; `drift.py`),
`POST /_sandbox/payouts/{id}/fail` (`failure_code`), `POST /_sandbox/disputes/{id}/resolve`
(`outcome` won|lost), `GET|POST|DELETE /_sandbox/faults` (the next N `/v1` calls answered
with one of Stripe's errors: 401, 403, 429, 500, 400 idempotency or a refusal; see `faults.py`;
`Sandbox.arm_fault` in-process). Bodies may be JSON or form-encoded.
"""

from stripe_sandbox.app import create_sandbox_app
from stripe_sandbox.server import Sandbox, main, run_sandbox
from stripe_sandbox.settings import Chaos, FeeRule, SandboxSettings, SettingError, parse_fee_rules
from stripe_sandbox.state import SandboxState

__all__ = [
    "Chaos",
    "FeeRule",
    "Sandbox",
    "SandboxSettings",
    "SandboxState",
    "SettingError",
    "create_sandbox_app",
    "main",
    "parse_fee_rules",
    "run_sandbox",
]
