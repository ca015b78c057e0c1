"""Payouts (`/v1/payouts`, manual and on the account's schedule) and top-ups (`/v1/topups`).

A payout books `payout` (-amount, available) when created, moves pending → in_transit after
`payout_submit_delay_s`, and at `arrival_date` becomes `paid` or, for Stripe's failing test bank
accounts, `failed` with a `payout_failure` BT (+amount) that returns the funds. Canceling a pending
manual payout books `payout_cancel` (+amount). Automatic payouts run at 00:00 UTC on the
schedule's days and sweep every available, not yet swept balance transaction of one currency and
source type; `GET /v1/balance_transactions?payout=po_…` lists them with the payout's own BT.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from stripe_sandbox.accounts import (
    COUNTRY_CURRENCIES,
    PAYOUT_FAILURE_ACCOUNTS,
    PAYOUT_PAID_THEN_FAILED_ACCOUNTS,
    WEEKDAYS,
)
from stripe_sandbox.clock import day_start
from stripe_sandbox.errors import insufficient_funds, invalid, missing
from stripe_sandbox.forms import Params, merge_metadata
from stripe_sandbox.fx import conversion_bank, convert_payout
from stripe_sandbox.ids import token
from stripe_sandbox.instant import (
    INSTANT_ARRIVAL_S,
    application_fee_details,
    check_instant_destination,
    collect_payout_application_fee,
    instant_fee_details,
    instant_fee_minor,
    returned_fee_details,
)
from stripe_sandbox.settings import DAY_S
from stripe_sandbox.store import (
    SOURCE_TYPES,
    Ctx,
    Handler,
    Obj,
    SandboxCore,
    range_matches,
    require_platform,
)

# Payout.failure_code meanings (reference §4.3, Stripe's payout object docs).
FAILURE_MESSAGES = {
    "account_closed": "The bank account has been closed.",
    "account_frozen": "The bank account has been frozen.",
    "bank_account_restricted": "The bank account has restrictions on either the type, or the "
    "number, of payouts allowed.",
    "could_not_process": "The bank could not process this payout.",
    "debit_not_authorized": "Debit transactions are not approved on the bank account. (Stripe "
    "requires bank accounts to be set up for both credit and debit payouts.)",
    "declined": "The bank has declined this transfer.",
    "insufficient_funds": "Your Stripe account has insufficient funds to cover the payout.",
    "invalid_account_number": "The routing number seems correct, but the account number is "
    "invalid.",
    "invalid_currency": "The bank was unable to process this payout because of its currency.",
    "no_account": "The bank account details on file are probably incorrect. No bank account "
    "could be located with those details.",
}
PAYOUT_PARAMS = (
    "amount",
    "currency",
    "destination",
    "method",
    "description",
    "metadata",
    "statement_descriptor",
    "source_type",
)
PAYOUT_STATUSES = ("pending", "in_transit", "paid", "failed", "canceled")
FAILABLE = ("pending", "in_transit", "paid")


class PayoutsMixin(SandboxCore):
    # --- API -------------------------------------------------------------------------------------

    def create_payout(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(PAYOUT_PARAMS)
        account = self.objects[ctx.scope]
        amount = p.amount() or 0
        currency = p.currency() or ""
        method = p.choice("method", ("standard", "instant"), default="standard") or "standard"
        source_type = p.choice("source_type", SOURCE_TYPES, default="card") or "card"
        bank = self._payout_destination(account, p.str("destination"), currency)
        fee = 0
        if method == "instant":  # stripe_sandbox.instant
            check_instant_destination(bank, currency)
            fee = instant_fee_minor(amount, self.settings.instant_payout_fee_bps)
        pricing = self.settings.payout_platform_fees.get(method)  # payout monetization
        platform_fee = pricing.fee_minor(amount) if pricing is not None else 0
        if not account["payouts_enabled"]:
            raise invalid(
                f"Payouts are not enabled for account {account['id']}.",
                code="payouts_not_allowed",
            )
        available = self.available(account["id"], currency, source_type)
        if available < amount + fee + platform_fee:
            raise insufficient_funds(
                f"You have insufficient funds in your Stripe account for this payout: the "
                f"available {source_type} balance is {available} {currency}."
            )
        return self.make_payout(
            account["id"],
            amount=amount,
            currency=currency,
            bank=bank,
            source_type=source_type,
            automatic=False,
            description=p.str("description"),
            metadata=merge_metadata({}, p.metadata()),
            statement_descriptor=p.str("statement_descriptor"),
            method=method,
            fee=fee,
            platform_fee=platform_fee,
        )

    def retrieve_payout(self, ctx: Ctx, payout_id: str) -> Obj:
        return self.find("payout", payout_id, ctx.scope, "payout", "payout")

    def list_payouts(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(
            (
                "status",
                "destination",
                "arrival_date",
                "created",
                "limit",
                "starting_after",
                "ending_before",
            )
        )
        status = p.choice("status", PAYOUT_STATUSES)
        destination = p.str("destination")

        def keep(payout: Obj) -> bool:
            return (
                (status is None or payout["status"] == status)
                and (destination is None or payout["destination"] == destination)
                and range_matches(payout["arrival_date"], p, "arrival_date")
            )

        return self.page(self.stored(ctx.scope, "payout"), p, "/v1/payouts", "payout", keep)

    def cancel_payout(self, ctx: Ctx, payout_id: str, p: Params) -> Obj:
        payout = self.retrieve_payout(ctx, payout_id)
        p.reject_unknown(())
        if payout["automatic"]:
            raise invalid("You can't cancel automatic Stripe payouts.", param="payout")
        if payout["status"] != "pending":
            raise invalid(
                f"Payouts can only be canceled while they are pending; {payout_id} is "
                f"{payout['status']}.",
                param="payout",
            )
        self._return_funds(payout, "canceled", "payout_cancel")
        return payout

    # --- lifecycle -------------------------------------------------------------------------------

    def make_payout(
        self,
        account_id: str,
        *,
        amount: int,
        currency: str,
        bank: Obj,
        source_type: str,
        automatic: bool,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        statement_descriptor: str | None = None,
        method: str = "standard",
        fee: int = 0,
        platform_fee: int = 0,
    ) -> Obj:
        payout_id = self.ids.new("po_")
        bt = self.book(
            account_id,
            type_="payout",
            amount=-amount,
            currency=currency,
            source=payout_id,
            source_type=source_type,
            fee_details=instant_fee_details(fee, currency)
            + application_fee_details(platform_fee, currency, self.application_id),
        )
        # Cross-border: Stripe converts; the payout is what reaches the bank (stripe_sandbox.fx).
        amount, currency = convert_payout(bt, bank["currency"], self.settings.fx_rates)
        now = self.clock.now()
        arrival = self._arrival(now, method)
        payout = {
            "id": payout_id,
            "object": "payout",
            "amount": amount,
            "application_fee": None,
            "application_fee_amount": None,
            "arrival_date": arrival,
            "automatic": automatic,
            "balance_transaction": bt["id"],
            "created": now,
            "currency": currency,
            "description": description or ("STRIPE PAYOUT" if automatic else None),
            "destination": bank["id"],
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": metadata or {},
            "method": method,
            "original_payout": None,
            "payout_method": None,
            "reconciliation_status": "in_progress" if automatic else "not_applicable",
            "reversed_by": None,
            "source_type": source_type,
            "statement_descriptor": statement_descriptor,
            "status": "pending",
            "trace_id": {"status": "pending", "value": None},
            "type": "bank_account",
        }
        self.put(payout, account_id)
        if platform_fee:
            collect_payout_application_fee(self, payout, account_id, platform_fee)
        submit_at = min(now + self.settings.payout_submit_delay_s, arrival)
        self.schedule(submit_at, "payout_in_transit", payout_id)
        self.schedule(arrival, "payout_arrive", payout_id)
        self.emit("payout.created", payout, account_id)
        return payout

    def _arrival(self, now: int, method: str) -> int:
        if method == "instant":
            return now + INSTANT_ARRIVAL_S  # stripe_sandbox.instant
        # Undocumented: arrival is whole days after the creation day, without a bank calendar.
        return max(now, day_start(now) + self.settings.payout_transit_days * DAY_S)

    def fail_payout(self, payout: Obj, failure_code: str) -> Obj:
        """Fails a pending, in-transit or paid payout; the funds come back as `payout_failure`."""
        if payout["status"] not in FAILABLE:
            raise invalid(
                f"Payout {payout['id']} is {payout['status']} and cannot fail.", param="payout"
            )
        if failure_code not in FAILURE_MESSAGES:
            raise invalid(
                f"Unknown failure_code {failure_code}; one of {', '.join(FAILURE_MESSAGES)}.",
                param="failure_code",
            )
        payout["failure_code"] = failure_code
        payout["failure_message"] = FAILURE_MESSAGES[failure_code]
        bank = self.objects.get(payout["destination"])
        if bank is not None:
            # Stripe errors the external account after a failure and pauses scheduled payouts to it.
            bank["status"] = "errored"
        self._return_funds(payout, "failed", "payout_failure")
        return payout

    def _return_funds(self, payout: Obj, status: str, bt_type: str) -> None:
        old = payout["status"]
        taken = self.objects[payout["balance_transaction"]]  # converted: the balance's side
        bt = self.book(
            payout["_owner"],
            type_=bt_type,
            amount=-taken["amount"],
            currency=taken["currency"],
            source=payout["id"],
            source_type=payout["source_type"],
            fee_details=returned_fee_details(taken["fee_details"]),
        )
        bt["exchange_rate"] = taken["exchange_rate"]
        payout["status"] = status
        payout["failure_balance_transaction"] = bt["id"]
        self._emit_status(payout, old)

    def _emit_status(self, payout: Obj, old: str) -> None:
        # Undocumented: every status change sends payout.updated (previous status) and then the
        # specific event (paid, failed, canceled) when there is one.
        owner = payout["_owner"]
        self.emit("payout.updated", payout, owner, {"status": old})
        if payout["status"] in ("paid", "failed", "canceled"):
            self.emit(f"payout.{payout['status']}", payout, owner)

    def _task_payout_in_transit(self, payout_id: str) -> None:
        payout = self.objects[payout_id]
        if payout["status"] == "pending":
            payout["status"] = "in_transit"
            self._emit_status(payout, "pending")

    def _task_payout_arrive(self, payout_id: str) -> None:
        payout = self.objects[payout_id]
        if payout["status"] not in ("pending", "in_transit"):
            return
        bank = self.objects[payout["destination"]]
        number = bank["_account_number"]
        if number in PAYOUT_FAILURE_ACCOUNTS:
            self.fail_payout(payout, PAYOUT_FAILURE_ACCOUNTS[number])
            return
        old = payout["status"]
        payout["status"] = "paid"
        payout["trace_id"] = {"status": "supported", "value": token(payout_id, 15).upper()}
        self._emit_status(payout, old)
        if payout["automatic"]:
            payout["reconciliation_status"] = "completed"
            self.emit("payout.reconciliation_completed", payout, payout["_owner"])
        if number in PAYOUT_PAID_THEN_FAILED_ACCOUNTS:
            due = self.clock.now() + self.settings.payout_paid_then_failed_delay_s
            self.schedule(due, "payout_fail", payout_id, PAYOUT_PAID_THEN_FAILED_ACCOUNTS[number])

    def _task_payout_fail(self, payout_id: str, failure_code: str) -> None:
        payout = self.objects[payout_id]
        if payout["status"] == "paid":
            self.fail_payout(payout, failure_code)

    # --- automatic payouts -----------------------------------------------------------------------

    def has_automatic_schedules(self) -> bool:
        return any(
            account["settings"]["payouts"]["schedule"]["interval"] != "manual"
            for account in self.stored(self.platform_id, "account")
        )

    def run_automatic_payouts(self, day: int) -> None:
        """Pays out each account's available balance on its schedule's days (at 00:00 UTC)."""
        # Undocumented: the time of day, one payout per currency and source type, and
        # reconciliation_status `completed` once the payout is paid.
        for account in self.stored(self.platform_id, "account"):
            if not _is_payout_day(account["settings"]["payouts"]["schedule"], day):
                continue
            if account["requirements"]["disabled_reason"] is not None:
                continue  # a disabled account is not paid out (stripe_sandbox.requirements)
            unswept: dict[tuple[str, str], list[Obj]] = {}
            for bt in self.stored(account["id"], "balance_transaction"):
                if bt["_payout"] is None and bt["available_on"] <= day:
                    unswept.setdefault((bt["currency"], bt["_source_type"]), []).append(bt)
            for (currency, source_type), bts in sorted(unswept.items()):
                amount = sum(bt["net"] for bt in bts)
                bank = self.default_external_account(account, currency) or self._converting_bank(
                    account, currency
                )
                if amount <= 0 or bank is None or bank["status"] == "errored":
                    continue
                payout = self.make_payout(
                    account["id"],
                    amount=amount,
                    currency=currency,
                    bank=bank,
                    source_type=source_type,
                    automatic=True,
                )
                for bt in [*bts, self.objects[payout["balance_transaction"]]]:
                    bt["_payout"] = payout["id"]

    # --- helpers ---------------------------------------------------------------------------------

    def _payout_destination(self, account: Obj, bank_id: str | None, currency: str) -> Obj:
        if bank_id is not None:
            if bank_id not in account["_external_ids"]:
                raise missing("external account", bank_id, "destination")
            bank: Obj = self.objects[bank_id]
            if bank["currency"] != currency:
                raise invalid(
                    f"The destination {bank_id} takes {bank['currency']}, not {currency}.",
                    param="destination",
                )
            return bank
        default = self.default_external_account(account, currency) or self._converting_bank(
            account, currency
        )
        if default is None:
            raise invalid(
                f"You don't have any external accounts in that currency ({currency}).",
                param="currency",
            )
        return default

    def _converting_bank(self, account: Obj, currency: str) -> Obj | None:
        """Cross-border: the bank a payout in `currency` converts to, if a rate is set."""
        # Undocumented: which bank a converted payout goes to (stripe_sandbox.fx).
        banks = [self.objects[bank_id] for bank_id in account["_external_ids"]]
        country_currency = COUNTRY_CURRENCIES.get(account["country"], account["default_currency"])
        found = conversion_bank(banks, currency, country_currency, self.settings.fx_rates)
        return found[0] if found is not None else None

    # --- top-ups ---------------------------------------------------------------------------------

    def create_topup(self, ctx: Ctx, p: Params) -> Obj:
        require_platform(ctx, "Top-ups")
        p.reject_unknown(
            (
                "amount",
                "currency",
                "description",
                "metadata",
                "source",
                "statement_descriptor",
                "transfer_group",
            )
        )
        amount = p.amount() or 0
        currency = p.currency() or ""
        topup_id = self.ids.new("tu_")
        now = self.clock.now()
        # Undocumented: top-up funds arrive `topup_availability_days` after the creation day.
        available_on = max(now, day_start(now) + self.settings.topup_availability_days * DAY_S)
        bt = self.book(
            self.platform_id,
            type_="topup",
            amount=amount,
            currency=currency,
            source=topup_id,
            available_on=available_on,
            source_type="bank_account",
        )
        topup = {
            "id": topup_id,
            "object": "topup",
            "amount": amount,
            "balance_transaction": bt["id"],
            "created": now,
            "currency": currency,
            "description": p.str("description"),
            "expected_availability_date": available_on,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": merge_metadata({}, p.metadata()),
            "source": None,
            "statement_descriptor": p.str("statement_descriptor"),
            "status": "pending",
            "transfer_group": p.str("transfer_group"),
        }
        self.put(topup, self.platform_id)
        self.schedule(available_on, "topup_succeed", topup_id)
        self.emit("topup.created", topup, self.platform_id)
        return topup

    def retrieve_topup(self, ctx: Ctx, topup_id: str) -> Obj:
        return self.find("topup", topup_id, ctx.scope, "topup", "topup")

    def list_topups(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(
            ("amount", "created", "status", "limit", "starting_after", "ending_before")
        )
        status = p.choice("status", ("canceled", "failed", "pending", "succeeded"))

        def keep(topup: Obj) -> bool:
            return (status is None or topup["status"] == status) and range_matches(
                topup["amount"], p, "amount"
            )

        return self.page(self.stored(ctx.scope, "topup"), p, "/v1/topups", "topup", keep)

    def _task_topup_succeed(self, topup_id: str) -> None:
        topup = self.objects[topup_id]
        if topup["status"] == "pending":
            topup["status"] = "succeeded"
            self.emit("topup.succeeded", topup, self.platform_id)


def _is_payout_day(schedule: Obj, day: int) -> bool:
    interval = schedule["interval"]
    if interval == "daily":
        return True
    date = datetime.fromtimestamp(day, UTC)
    if interval == "weekly":
        return WEEKDAYS[date.weekday()] == schedule["weekly_anchor"]
    if interval == "monthly":
        last_day = calendar.monthrange(date.year, date.month)[1]
        return date.day == min(schedule["monthly_anchor"] or 1, last_day)
    return False


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/payouts", PayoutsMixin.create_payout),
    ("GET", "/v1/payouts", PayoutsMixin.list_payouts),
    ("GET", "/v1/payouts/{payout}", lambda st, c, p, payout: st.retrieve_payout(c, payout)),
    (
        "POST",
        "/v1/payouts/{payout}/cancel",
        lambda st, c, p, payout: st.cancel_payout(c, payout, p),
    ),
    ("POST", "/v1/topups", PayoutsMixin.create_topup),
    ("GET", "/v1/topups", PayoutsMixin.list_topups),
    ("GET", "/v1/topups/{topup}", lambda st, c, p, topup: st.retrieve_topup(c, topup)),
]
