"""Folds stored Stripe events into ledger commands.

Rules that make this safe under duplicated, delayed and reordered delivery:
- An event is a trigger, not a source of truth: the objects it names are fetched fresh from
  Stripe (its snapshot may already be stale), and what is missing is fetched too (a refund whose
  charge Sluice has not seen yet records the charge first).
- Every command's idempotency key is derived from Stripe's object ids (``stripe:charge:ch_…``),
  so the same fact reached through different events is recorded once.
- Stripe's ids become Sluice's (``ch_`` payments, ``tr_`` transfers, ``re_`` refunds, …) and
  Stripe's numbers are recorded as given (fees, ``available_on``, reversal and reinstatement
  amounts), read from Stripe's objects and balance transactions, never re-derived.
- Money movements enter the ledger through its facts door (``Ledger.record``, ``ledger.facts``):
  Stripe already made them, so no Sluice policy (floors, caps) refuses them; what they break is
  flagged in the outcome. Only Sluice's own intents (the split transfers it issues) are commands.
- A refusal (a fact whose object Sluice has not seen yet) parks the event for a later pass; one
  that persists ends as ``failed`` for a person, never as an endless loop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.settings import Settings
from adapters.stripe import failures, holds, inbox, onboarding, reserves, translate
from adapters.stripe.errors import HOLD
from adapters.stripe.gateway import GatewayError, StripeGateway
from adapters.stripe.payout_fx import external_accounts_reported, payout_facts
from adapters.stripe.routing import Router
from adapters.stripe.translate import SPLIT_METADATA_KEY
from ledger import commands as c
from ledger import facts
from ledger.application import CommandResult, Ledger
from ledger.errors import SluiceError
from ledger.payouts import CANCELED, FAILED, HELD, IN_TRANSIT, PAID, PENDING_STATUS
from ledger.splits import SplitPart
from projections.store import ReadModel

ATTEMPTS_MAX = 8  # passes over a parked event before it is marked failed
INBOX_BATCH_MAX = 500
PAYOUT_RANK = {PENDING_STATUS: 0, IN_TRANSIT: 1, PAID: 2, FAILED: 3, CANCELED: 3}
SLUICE_PAYOUT_METADATA_KEY = "sluice_payout_id"
# Known types that move no money Sluice books (kept and counted apart from unknown types).
NOTHING_TO_FOLD = frozenset(
    {
        "payment_intent.created",
        "payment_intent.processing",
        "payment_intent.requires_action",
        "payment_intent.payment_failed",
        "charge.failed",
        "charge.pending",
        "charge.updated",
        "balance.pending",
        "payout.reconciliation_completed",
        "webhook_endpoint.updated",
    }
)


class Ignored(Exception):
    """The event is kept but folds into nothing (counted under its reason)."""


_at = translate.at


def payout_details(payout: dict[str, Any]) -> dict[str, str | int | bool | None]:
    """What Stripe says of a payout, verbatim (``Payout.Reported``): its id, arrival date,
    destination (the external account's id) and failure."""
    destination = payout.get("destination")
    if isinstance(destination, dict):
        destination = destination.get("id")  # expanded
    arrival = payout.get("arrival_date")
    return {
        "automatic": bool(payout.get("automatic")),
        "stripe_payout_id": str(payout["id"]),
        "arrival_date": int(arrival) if arrival is not None else None,
        "destination": str(destination) if destination is not None else None,
        "failure_code": payout.get("failure_code"),
        "failure_message": payout.get("failure_message"),
    }


def _details_digest(details: dict[str, Any]) -> str:
    """A short, stable name of the details: a details-only fact's idempotency key."""
    text = json.dumps(details, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PassReport:
    processed: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    parked: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)  # recorded facts that broke expectations


class Folder:
    def __init__(
        self,
        ledger: Ledger,
        gateway: StripeGateway,
        settings: Settings,
        *,
        route_inline: bool = True,
    ) -> None:
        self.ledger = ledger
        # Inline (embedded, demo, tests): planned routings are made right after the charge is
        # recorded. The workers pass False: the relay publishes each plan to route_payment.
        self.route_inline = route_inline
        self.gateway = gateway
        self.settings = settings
        self.platform = settings.platform_account_id
        self._platform_stripe_id = settings.stripe_platform_account_id
        self._event_created = 0  # the event being folded (a balance carries no instant)
        self.handlers: dict[str, Callable[[dict[str, Any], str | None], None]] = {
            "account.updated": self._account_event,
            "account.application.authorized": self._account_event,
            "capability.updated": self._account_event,
            "account.external_account.created": self._account_event,
            "account.external_account.updated": self._account_event,
            "account.external_account.deleted": self._account_event,
            "charge.succeeded": self._charge_event,
            "charge.captured": self._charge_event,
            "payment_intent.succeeded": self._payment_intent_event,
            "charge.refunded": self._charge_refunded,
            "refund.created": self._refund_event,
            "refund.updated": self._refund_event,
            "charge.refund.updated": self._refund_event,
            "charge.dispute.created": self._dispute_event,
            "charge.dispute.funds_withdrawn": self._dispute_event,
            "charge.dispute.updated": self._dispute_event,
            "charge.dispute.closed": self._dispute_event,
            "charge.dispute.funds_reinstated": self._dispute_event,
            "transfer.created": self._transfer_event,
            "transfer.updated": self._transfer_event,
            "transfer.reversed": self._transfer_event,
            "application_fee.created": self._application_fee_event,
            "application_fee.refunded": self._application_fee_event,
            "application_fee.refund.updated": self._application_fee_event,
            "payout.created": self._payout_event,
            "payout.updated": self._payout_event,
            "payout.paid": self._payout_event,
            "payout.failed": self._payout_event,
            "payout.canceled": self._payout_event,
            "balance.available": self._balance_available,
            "topup.created": self._topup_event,
            "topup.succeeded": self._topup_event,
            "reserve.hold.created": self._reserve_event,
            "reserve.hold.updated": self._reserve_event,
            "reserve.release.created": self._reserve_event,
        }
        # Authorization holds (manual capture) and their charges: adapters/stripe/holds.py.
        self.handlers.update(holds.handlers(self))
        # Refunds that fail after Stripe reported them: adapters/stripe/failures.py.
        self.handlers.update(failures.handlers(self))

    # The inbox pass ---------------------------------------------------------------------------

    def process(self, view: ReadModel, limit: int = INBOX_BATCH_MAX) -> PassReport:
        """One bounded pass over due events, oldest first."""
        report = PassReport()
        for stored in inbox.due(view, min(limit, INBOX_BATCH_MAX)):
            try:
                outcome = self.fold(stored.payload)
            except Ignored as why:
                reason = str(why)
                report.ignored[reason] = report.ignored.get(reason, 0) + 1
                inbox.mark(view, stored.event_id, inbox.IGNORED, reason, None)
            except (SluiceError, GatewayError) as error:
                held = isinstance(error, GatewayError) and error.failure_class == HOLD
                retry = not isinstance(error, GatewayError) or error.retryable
                final = not held and (stored.attempts + 1 >= ATTEMPTS_MAX or not retry)
                status = inbox.HELD if held else inbox.FAILED if final else inbox.PARKED
                report.failed += final
                report.parked += not final
                message = f"{type(error).__name__}: {error}"
                report.errors.append(f"{stored.event_id} {stored.type}: {message}")
                inbox.mark(view, stored.event_id, status, "refused", message)
            else:
                report.processed += 1
                inbox.mark(view, stored.event_id, inbox.PROCESSED, outcome, None)
                if outcome != "folded":
                    report.flagged.append(f"{stored.event_id} {stored.type}: {outcome}")
        return report

    def fold(self, event: dict[str, Any]) -> str:
        if bool(event.get("livemode")) != self.settings.livemode:
            raise Ignored("livemode mismatch")
        kind = str(event.get("type"))
        handler = self.handlers.get(kind)
        if handler is None:
            raise Ignored("nothing to fold" if kind in NOTHING_TO_FOLD else "unknown type")
        self._ensure_platform()
        self._event_created = int(event.get("created") or 0)
        self._flags: list[str] = []
        handler(event["data"]["object"], self._stripe_account(event.get("account")))
        return f"folded; flagged: {'; '.join(self._flags)}" if self._flags else "folded"

    # Helpers ----------------------------------------------------------------------------------

    def _stripe_account(self, account: object) -> str | None:
        """Stripe's account of an event: None for the platform itself."""
        if not account or account == self.platform_stripe_id:
            return None
        return str(account)

    @property
    def platform_stripe_id(self) -> str | None:
        return self._platform_stripe_id

    def _sluice_account(self, stripe_account: str | None) -> str:
        return self.platform if stripe_account is None else stripe_account

    def _run(self, command: c.Command) -> CommandResult:
        return self.ledger.execute(command)

    def _record(self, fact: facts.Fact) -> CommandResult:
        """Records what Stripe did; an expectation it breaks is kept for the outcome."""
        result = self.ledger.record(fact)
        if "flagged" in result.ids:
            self._flags.append(result.ids["flagged"])
        return result

    def ensure_platform(self) -> None:
        """Opens the platform's account if the ledger has not yet: the first fold does, and
        reconcile does when every event was lost (its breaks are booked on the account)."""
        self._ensure_platform()

    def _ensure_platform(self) -> None:
        if self.ledger.get_account(self.platform) is None:
            self._run(
                c.OpenAccount(
                    idempotency_key="stripe:platform:open",
                    effective_at=_at(0),
                    account_id=self.platform,
                    kind="platform",
                )
            )

    def sync_account(self, account_id: str) -> None:
        """Brings a connected account's flags and capabilities in step with Stripe now."""
        self._ensure_account(account_id, refresh=True)

    def _ensure_account(self, account_id: str, *, refresh: bool = False) -> None:
        """A connected account: opened on first sight, its flags kept in step with Stripe."""
        existing = self.ledger.get_account(account_id)
        if existing is not None and not refresh:
            return
        acct = self.gateway.retrieve("account", account_id).data
        created = _at(acct.get("created"))
        if existing is None:
            self._run(
                c.OpenAccount(
                    idempotency_key=f"stripe:account:{account_id}:open",
                    effective_at=created,
                    account_id=account_id,
                    country=str(acct.get("country") or "US"),
                    default_currency=str(acct.get("default_currency") or "usd"),
                )
            )
        capabilities = {
            name: status if status in ("active", "inactive", "pending") else "inactive"
            for name, status in (acct.get("capabilities") or {}).items()
        }
        banks = [
            b
            for b in (acct.get("external_accounts") or {}).get("data", [])
            if b.get("object") == "bank_account"
        ]
        state = {
            "charges_enabled": bool(acct.get("charges_enabled")),
            "payouts_enabled": bool(acct.get("payouts_enabled")),
            "capabilities": capabilities,
            # An errored bank account pauses Sluice's payouts until it is updated.
            "external_account_status": str(banks[0].get("status") or "unknown")
            if banks
            else "unknown",
        }
        verified = state["charges_enabled"] and state["payouts_enabled"]
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        self._run(
            c.UpdateAccount(
                idempotency_key=f"stripe:account:{account_id}:state:{digest}",
                effective_at=created,
                account_id=account_id,
                verification_status="verified" if verified else "pending",
                **state,
            )
        )
        self._sync_profile(account_id, acct, created)
        # External accounts per currency: where payouts in each go (adapters.stripe.payout_fx).
        banks = external_accounts_reported(
            account_id, acct, self.ledger.get_account(account_id), created
        )
        if banks is not None:
            self._record(banks)
        self._sync_requirements_and_liability(account_id, acct, created)

    def _sync_requirements_and_liability(
        self, account_id: str, acct: dict[str, Any], created: datetime
    ) -> None:
        """Onboarding requirements (adapters.stripe.onboarding) and who covers the account's
        losses (adapters.stripe.reserves), as Stripe holds them; recorded when they changed."""
        current = self.ledger.get_account(account_id)
        known = getattr(current, "requirements", None)
        change = onboarding.requirements_change(account_id, known, acct, created)
        if change is not None:
            self._run(change)
        liability = reserves.liability_change(self.ledger, account_id, acct)
        if liability is not None:
            self._run(liability)

    def _sync_profile(self, account_id: str, acct: dict[str, Any], created: datetime) -> None:
        """Name, email and metadata as Stripe holds them; recorded only when they changed (the
        key names the old and the new profile, so a change back is recorded too)."""
        profile = translate.account_profile(acct)
        current = self.ledger.get_account(account_id)
        # getattr: an account snapshot taken before profiles existed has none.
        before = (
            translate.profile_of(
                getattr(current, "name", None),
                getattr(current, "email", None),
                getattr(current, "metadata", None) or {},
            )
            if current is not None
            else None
        )
        if before == profile:
            return
        digest = hashlib.sha256(json.dumps([before, profile]).encode()).hexdigest()[:16]
        self._run(
            c.SetAccountProfile(
                idempotency_key=f"stripe:account:{account_id}:profile:{digest}",
                effective_at=created,
                account_id=account_id,
                display_name=profile["name"],
                email=profile["email"],
                metadata=tuple(sorted(profile["metadata"].items())),
            )
        )

    def _account_event(self, obj: dict[str, Any], account: str | None) -> None:
        """Account, capability and external-account changes: refetch the account and apply
        its current state (so an older event arriving late cannot roll it back)."""
        account_id = account or (str(obj["id"]) if obj.get("object") == "account" else None)
        if account_id is None or account_id == self.platform_stripe_id:
            raise Ignored("platform account event")
        self._ensure_account(account_id, refresh=True)

    # Charges ----------------------------------------------------------------------------------

    def _payment_intent_event(self, obj: dict[str, Any], account: str | None) -> None:
        if obj.get("latest_charge"):
            self._ensure_payment(str(obj["latest_charge"]), account, route=True)

    def _charge_event(self, obj: dict[str, Any], account: str | None) -> None:
        self._ensure_payment(str(obj["id"]), account, route=True)

    def _ensure_payment(
        self, charge_id: str, account: str | None, *, route: bool = False
    ) -> str | None:
        """Records a succeeded charge (once). Returns the payment id, None for ``py_`` payments
        (the receiving side of a transfer, booked with the transfer). With ``route``, a
        separate charge's planned routing is (re)checked even when the charge is known: a
        routing cut short by an error is completed on the retry."""
        if charge_id.startswith("py_"):
            return None
        if self.ledger.get_payment(charge_id) is not None:
            if route:
                self._route(charge_id)
            return charge_id
        charge = self.gateway.retrieve("charge", charge_id, account=account).data
        if charge.get("status") != "succeeded" or not charge.get("captured", True):
            raise Ignored("charge not succeeded")
        txn = self.gateway.retrieve(
            "balance_transaction", str(charge["balance_transaction"]), account=account
        ).data
        split = self._split_of(charge, account)
        intent = (
            self.gateway.retrieve("payment_intent", str(charge["payment_intent"]), account=account)
            if charge.get("payment_intent")
            else None
        )
        metadata = translate.payment_metadata(charge, intent.data if intent else None)
        fact = translate.charge_succeeded(
            charge, txn, account=account, split=split, metadata=metadata
        )
        for seller in {fact.account_id, fact.on_behalf_of, *(p.account_id for p in split)}:
            if seller is not None:
                self._ensure_account(seller)
        recorded = self._record(fact)
        if recorded.ids.get("routing", "planned") != "planned":
            self._flags.append(f"{charge_id} {recorded.ids['routing']}")
        currency = str(charge["currency"])
        holders = [self._sluice_account(account), *([fact.account_id] if fact.account_id else [])]
        self._settle(txn, holders, currency, f"stripe:charge:{charge_id}")
        if charge.get("application_fee") and fact.charge_type == "direct":
            # A direct charge's fee lands on the platform with a balance transaction of its own.
            fee = self.gateway.retrieve("application_fee", str(charge["application_fee"])).data
            fee_txn = self.gateway.retrieve(
                "balance_transaction", str(fee["balance_transaction"])
            ).data
            self._settle(fee_txn, [self.platform], currency, f"stripe:{fee['id']}")
        if split:
            self._route(charge_id)
        return charge_id

    def _split_of(self, charge: dict[str, Any], account: str | None) -> tuple[SplitPart, ...]:
        """A separate charge's routing rule, from its metadata or its PaymentIntent's."""
        if translate.charge_type(charge, account is not None) != "separate":
            return ()
        metadata = charge.get("metadata") or {}
        if SPLIT_METADATA_KEY not in metadata and charge.get("payment_intent"):
            intent = self.gateway.retrieve(
                "payment_intent", str(charge["payment_intent"]), account=account
            ).data
            metadata = intent.get("metadata") or {}
        try:
            return translate.split_parts(metadata)
        except translate.Untranslatable as why:
            self._flags.append(f"{charge['id']} {why}")
            return ()

    def _route(self, payment_id: str) -> None:
        """Makes the transfers the payment's recorded routing plan asks for (when this folder
        routes inline; the workers route from the relay instead)."""
        if self.route_inline:
            Router(self.ledger, self.gateway, self).route(payment_id)

    def _settle(self, txn: dict[str, Any], holders: list[str], currency: str, key: str) -> None:
        """Stripe says (fresh, at fold time) that these funds are available already: release
        them now, whatever ``balance.available`` events were missed, reordered or are yet to
        come (e.g. ``pm_card_bypassPending``, or a movement folded after its release)."""
        if txn.get("status") != "available":
            return
        for holder in dict.fromkeys(holders):
            self._release(holder, currency, _at(txn["available_on"]), f"{key}:available:{holder}")

    def _release(self, account: str, currency: str, until: datetime, key: str) -> None:
        self._record(
            facts.FundsAvailable(
                idempotency_key=key,
                effective_at=until,
                account_id=account,
                currency=currency,
                until=until,
            )
        )

    # Transfers --------------------------------------------------------------------------------

    def _transfer_event(self, obj: dict[str, Any], account: str | None) -> None:
        transfer = self.gateway.retrieve("transfer", str(obj["id"])).data
        self.record_transfer(transfer)
        recorded = self.ledger.get_transfer(str(transfer["id"]))
        for reversal in (transfer.get("reversals") or {}).get("data", []):
            if recorded is None or reversal["id"] in recorded.reversals:
                continue
            if reversal.get("source_refund"):
                self._fold_refund(str(reversal["source_refund"]), None)
                continue
            self._record(translate.transfer_reversed(str(transfer["id"]), reversal))

    def record_transfer(self, transfer: dict[str, Any]) -> None:
        """Records a transfer Stripe made (once), with its source charge first."""
        transfer_id = str(transfer["id"])
        source = transfer.get("source_transaction")
        if source:
            self._ensure_payment(str(source), None)
        if self.ledger.get_transfer(transfer_id) is not None:
            return  # a destination charge's transfer, recorded with its charge
        self._ensure_account(str(transfer["destination"]))
        # When the funds become available is Stripe's to say: its balance transaction's.
        txn = self.gateway.retrieve(
            "balance_transaction", str(transfer["balance_transaction"])
        ).data
        self._record(translate.transfer_created(transfer, txn))
        holders = [self.platform, str(transfer["destination"])]
        self._settle(txn, holders, str(transfer["currency"]), f"stripe:transfer:{transfer_id}")

    # Refunds and application fees ------------------------------------------------------------

    def _charge_refunded(self, obj: dict[str, Any], account: str | None) -> None:
        self._ensure_payment(str(obj["id"]), account)
        for refund in self.gateway.list_refunds(charge=str(obj["id"]), account=account):
            self._fold_refund(refund.id, account, refund.data)

    def _refund_event(self, obj: dict[str, Any], account: str | None) -> None:
        self._fold_refund(str(obj["id"]), account)

    def _fold_refund(
        self, refund_id: str, account: str | None, refund: dict[str, Any] | None = None
    ) -> None:
        refund = refund or self.gateway.retrieve("refund", refund_id, account=account).data
        if refund.get("status") not in ("succeeded", "pending"):
            raise Ignored(f"refund {refund.get('status')}")
        payment_id = self._ensure_payment(str(refund["charge"]), account)
        payment = self.ledger.get_payment(payment_id) if payment_id else None
        if payment is None or refund_id in payment.refunds:
            return
        reversal_id = refund.get("transfer_reversal")
        reversal = None
        if reversal_id and payment.destination_transfer_id:
            reversal = self.gateway.retrieve(
                "transfer_reversal", str(reversal_id), parent=payment.destination_transfer_id
            ).data
        self._record(translate.charge_refunded(refund, payment.payment_id, reversal))

    def _application_fee_event(self, obj: dict[str, Any], account: str | None) -> None:
        fee = self.gateway.retrieve("application_fee", str(obj["id"])).data
        if (fee.get("fee_source") or {}).get("type") == "payout":
            return  # a payout's fee: folded with the payout (adapters.stripe.payout_fx)
        charge_id = str(fee.get("originating_transaction") or fee["charge"])
        direct_on = (
            None if fee.get("originating_transaction") else self._stripe_account(fee.get("account"))
        )
        payment_id = self._ensure_payment(charge_id, direct_on)
        payment = self.ledger.get_payment(payment_id) if payment_id else None
        if payment is None:
            return
        for fee_refund in (fee.get("refunds") or {}).get("data", []):
            if fee_refund["id"] not in payment.fee_refunds:
                self._record(translate.application_fee_refunded(payment.payment_id, fee_refund))

    # Disputes ---------------------------------------------------------------------------------

    def _dispute_event(self, obj: dict[str, Any], account: str | None) -> None:
        """Withdrawal and reinstatement as their balance transactions say (amount and fee:
        whether a won dispute returns its fee is Stripe's pricing, never Sluice's guess)."""
        dispute = self.gateway.retrieve("dispute", str(obj["id"]), account=account).data
        payment_id = self._ensure_payment(str(dispute["charge"]), account)
        if payment_id is None:
            return
        payment = self.ledger.get_payment(payment_id)
        known = (payment.dispute if payment is not None else None) or {}
        status = known.get("status")
        for fact in translate.dispute_facts(dispute, payment_id, status, obj.get("created")):
            self._record(fact)

    # Payouts ----------------------------------------------------------------------------------

    def _payout_event(self, obj: dict[str, Any], account: str | None) -> None:
        payout = self.gateway.retrieve("payout", str(obj["id"]), account=account).data
        holder = self._sluice_account(account)
        if holder != self.platform:
            # A failed payout errors the bank account: refresh it (payouts pause until fixed).
            self._ensure_account(holder, refresh=payout.get("status") == FAILED)
        payout_id = (payout.get("metadata") or {}).get(SLUICE_PAYOUT_METADATA_KEY) or payout["id"]
        at = _at(payout.get("created"))
        recorded = self.ledger.get_payout(str(payout_id))
        # Created (automatic payouts) and converted (cross-border): adapters.stripe.payout_fx.
        missing = payout_facts(
            self.gateway, payout, str(payout_id), holder, recorded, account, self.platform
        )
        for fact in missing:
            self._record(fact)
        if missing:
            recorded = self.ledger.get_payout(str(payout_id))
        target = str(payout["status"])
        if recorded is None or target not in PAYOUT_RANK:
            raise Ignored(f"payout status {target}")
        submit = (
            payout["id"]
            if recorded.stripe_payout_id is None and payout_id != payout["id"]
            else None
        )
        # A held payout Stripe made after all (an earlier attempt went through): its
        # submission ends the hold (ledger.payouts), so it counts as pending here.
        status = PENDING_STATUS if recorded.status == HELD else recorded.status
        moves = PAYOUT_RANK[target] > PAYOUT_RANK[status] or (status == PAID and target == FAILED)
        details = payout_details(payout)
        metadata = translate.payout_metadata(payout)
        same_metadata = dict(metadata) == recorded.reported_metadata
        if not moves and submit is None and details == recorded.reported and same_metadata:
            return  # already there (or further): a stale or repeated event
        # A details-only fact is keyed by what it says (its metadata too, once that changes).
        said: dict[str, Any] = details if same_metadata else {**details, "metadata": metadata}
        when = self._payout_moved_at(payout, target, obj, account)
        self._record(
            facts.PayoutStatusReported(
                idempotency_key=f"stripe:payout:{payout['id']}:{target if moves else 'submitted'}"
                + ("" if moves or submit is not None else f":{_details_digest(said)}"),
                effective_at=when if moves else at,
                payout_id=str(payout_id),
                status=target if moves else status,
                stripe_payout_id=submit,
                failure_code=str(payout.get("failure_code") or "unknown")
                if target == FAILED
                else None,
                details=details,
                metadata=metadata,
            )
        )

    def _payout_moved_at(
        self, payout: dict[str, Any], target: str, obj: dict[str, Any], account: str | None
    ) -> datetime:
        """When the payout reached ``target``, as Stripe dates it: its arrival date once paid, the
        returning balance transaction's instant once failed or canceled."""
        if target == PAID:
            return _at(payout.get("arrival_date"))
        returned = payout.get("failure_balance_transaction")
        if target in (FAILED, CANCELED) and returned:
            txn = self.gateway.retrieve("balance_transaction", str(returned), account=account).data
            return _at(txn["created"])
        return _at(obj.get("created") or payout.get("created"))

    # Reserves ---------------------------------------------------------------------------------

    def _reserve_event(self, obj: dict[str, Any], account: str | None) -> None:
        """A hold and its releases, as their balance transactions say (adapters.stripe.reserves)."""
        try:
            reserves.fold_reserve(self, obj, account)
        except reserves.NotAReserve as why:
            raise Ignored(str(why)) from None

    # Balance and top-ups ------------------------------------------------------------------------

    def _balance_available(self, obj: dict[str, Any], account: str | None) -> None:
        """Funds became available: release what the ledger holds as due by then."""
        holder = self._sluice_account(account)
        if account is not None:
            self._ensure_account(account)
        now = self._event_time(obj)
        for row in obj.get("available", []):
            self._release(
                holder,
                str(row["currency"]),
                now,
                f"stripe:balance:{holder}:{row['currency']}:{int(now.timestamp())}",
            )

    def _event_time(self, obj: dict[str, Any]) -> datetime:
        return _at(self._event_created)

    def _topup_event(self, obj: dict[str, Any], account: str | None) -> None:
        topup = self.gateway.retrieve("topup", str(obj["id"])).data
        txn = self.gateway.retrieve("balance_transaction", str(topup["balance_transaction"])).data
        self._record(translate.topup_succeeded(topup, txn, self.platform))
        self._settle(txn, [self.platform], str(topup["currency"]), f"stripe:topup:{topup['id']}")
