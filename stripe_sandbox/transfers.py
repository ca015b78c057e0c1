"""Transfers to connected accounts (`/v1/transfers`) and their reversals.

A transfer books three things: `transfer` (-amount) on the platform, a `py_…` payment (a Charge
object with `source_transfer`) on the destination, and its `payment` (+amount) there. A reversal
books `transfer_refund` (+) on the platform and a refund of the `py_…` (`payment_refund`, -) on the
destination.
"""

from __future__ import annotations

from stripe_sandbox.errors import insufficient_funds, invalid, missing
from stripe_sandbox.forms import Params, merge_metadata
from stripe_sandbox.store import (
    SOURCE_TYPES,
    Ctx,
    Handler,
    Obj,
    SandboxCore,
    fee_detail,
    require_platform,
    round_half_up,
)

TRANSFER_PARAMS = (
    "amount",
    "currency",
    "destination",
    "source_transaction",
    "transfer_group",
    "description",
    "metadata",
    "source_type",
)
INSUFFICIENT_TRANSFER = (
    "You have insufficient funds in your Stripe account for this transfer. Your {source} balance "
    "is too low. You can use the /v1/balance endpoint to view your Stripe balance (for more "
    "details, see stripe.com/docs/api#balance)."
)


class TransfersMixin(SandboxCore):
    # --- API -------------------------------------------------------------------------------------

    def create_transfer(self, ctx: Ctx, p: Params) -> Obj:
        require_platform(ctx, "Transfers")
        p.reject_unknown(TRANSFER_PARAMS)
        amount = p.amount() or 0
        currency = p.currency() or ""
        destination = self.connected_account(p.required_str("destination"), "destination")
        self._check_transfers_capability(destination, "destination")
        source_type = p.choice("source_type", SOURCE_TYPES, default="card") or "card"
        group = p.str("transfer_group")
        source_id = p.str("source_transaction")
        if source_id is None:
            available = self.available(self.platform_id, currency, source_type)
            if available < amount:
                raise insufficient_funds(INSUFFICIENT_TRANSFER.format(source=source_type))
            available_on = None
            charge = None
        else:
            charge = self._source_charge(source_id, amount, currency)
            group = group or self._ensure_group(charge)
            available_on = self.objects[charge["balance_transaction"]]["available_on"]
        transfer = self.make_transfer(
            destination=destination["id"],
            amount=amount,
            currency=currency,
            source_charge=charge,
            transfer_group=group,
            available_on=available_on,
            source_type=source_type,
        )
        transfer["description"] = p.str("description")
        transfer["metadata"] = merge_metadata({}, p.metadata())
        self.emit("transfer.created", transfer, self.platform_id)
        return transfer

    def retrieve_transfer(self, ctx: Ctx, transfer_id: str) -> Obj:
        return self.find("transfer", transfer_id, ctx.scope, "transfer")

    def list_transfers(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(
            ("created", "destination", "transfer_group", "limit", "starting_after", "ending_before")
        )
        destination, group = p.str("destination"), p.str("transfer_group")

        def keep(transfer: Obj) -> bool:
            return (destination is None or transfer["destination"] == destination) and (
                group is None or transfer["transfer_group"] == group
            )

        items = self.stored(ctx.scope, "transfer")
        return self.page(items, p, "/v1/transfers", "transfer", keep)

    def create_reversal(self, ctx: Ctx, transfer_id: str, p: Params) -> Obj:
        transfer = self.find("transfer", transfer_id, ctx.scope, "transfer")
        p.reject_unknown(("amount", "description", "metadata", "refund_application_fee"))
        remaining = transfer["amount"] - transfer["amount_reversed"]
        if remaining == 0:
            raise invalid(f"Transfer {transfer_id} has already been reversed.")
        amount = p.amount(required=False) or remaining
        if amount > remaining:
            raise invalid(
                f"Reversal amount ({amount}) is greater than the amount left on the transfer "
                f"({remaining}).",
                param="amount",
                code="amount_too_large",
            )
        destination = transfer["destination"]
        available = self.available(destination, transfer["currency"])
        if available < amount:
            raise insufficient_funds(
                f"Insufficient funds in the destination account {destination} to reverse "
                f"{amount} {transfer['currency']}: its available balance is {available}."
            )
        reversal = self.reverse_transfer(transfer, amount, metadata=p.metadata() or {})
        if p.bool("refund_application_fee"):
            self._refund_fee_with_reversal(transfer, amount)
        return reversal

    def list_reversals(self, ctx: Ctx, transfer_id: str, p: Params) -> Obj:
        transfer = self.find("transfer", transfer_id, ctx.scope, "transfer")
        p.reject_unknown(("limit", "starting_after", "ending_before"))
        items = [self.objects[i] for i in transfer["_reversal_ids"]]
        return self.page(items, p, f"/v1/transfers/{transfer_id}/reversals", "transfer_reversal")

    def retrieve_reversal(self, ctx: Ctx, transfer_id: str, reversal_id: str) -> Obj:
        transfer = self.find("transfer", transfer_id, ctx.scope, "transfer")
        if reversal_id not in transfer["_reversal_ids"]:
            raise missing("transfer_reversal", reversal_id)
        return self.objects[reversal_id]

    # --- money movement --------------------------------------------------------------------------

    def make_transfer(
        self,
        *,
        destination: str,
        amount: int,
        currency: str,
        source_charge: Obj | None,
        transfer_group: str | None,
        available_on: int | None,
        source_type: str = "card",
        application_fee_amount: int | None = None,
    ) -> Obj:
        """Books a transfer and the destination's payment. With `available_on` the funds follow
        the source charge's pending period on both sides; without, they move available now."""
        transfer_id, payment_id = self.ids.new("tr_"), self.ids.new("py_")
        # Undocumented: the platform's `transfer` BT takes the source charge's `available_on`
        # (so a sourced transfer never overdraws the platform's available balance).
        platform_bt = self.book(
            self.platform_id,
            type_="transfer",
            amount=-amount,
            currency=currency,
            source=transfer_id,
            available_on=available_on,
            source_type=source_type,
        )
        transfer = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": platform_bt["id"],
            "created": self.clock.now(),
            "currency": currency,
            "description": None,
            "destination": destination,
            "destination_payment": payment_id,
            "livemode": False,
            "metadata": {},
            "reversals": None,
            "reversed": False,
            "source_transaction": source_charge["id"] if source_charge else None,
            "source_type": source_type,
            "transfer_group": transfer_group,
            "_reversal_ids": [],
        }
        self.put(transfer, self.platform_id)
        # Undocumented: the destination's payment keeps the transfer's source type (card, or
        # bank_account for top-up funds), and it sends no events of its own.
        fees = []
        if application_fee_amount:
            # Reference §1.2 [INF]: the application fee shows as a fee on the destination payment.
            fees.append(
                fee_detail(
                    application_fee_amount,
                    currency,
                    "application_fee",
                    "Application fee",
                    self.application_id,
                )
            )
        payment_bt = self.book(
            destination,
            type_="payment",
            amount=amount,
            currency=currency,
            source=payment_id,
            available_on=available_on,
            fee_details=fees,
            source_type=source_type,
        )
        payment = self.payment_object(
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            balance_transaction=payment_bt["id"],
            source_transfer=transfer_id,
        )
        self.put(payment, destination)
        return transfer

    def reverse_transfer(
        self,
        transfer: Obj,
        amount: int,
        *,
        source_refund: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Obj:
        """Books a reversal: the platform gets `amount` back, the destination's payment is
        refunded by the same amount (available now on both sides)."""
        reversal_id = self.ids.new("trr_")
        destination, currency = transfer["destination"], transfer["currency"]
        source_type = self.objects[transfer["balance_transaction"]]["_source_type"]
        platform_bt = self.book(
            self.platform_id,
            type_="transfer_refund",
            amount=amount,
            currency=currency,
            source=reversal_id,
            source_type=source_type,
        )
        payment = self.objects[transfer["destination_payment"]]
        refund_id = self.ids.new("re_")
        payment_bt = self.book(
            destination,
            type_="payment_refund",
            amount=-amount,
            currency=currency,
            source=refund_id,
            source_type=source_type,
        )
        refund = self.refund_object(
            payment,
            amount,
            payment_bt["id"],
            id=refund_id,
            source_transfer_reversal=reversal_id,
            destination_details=None,
            payment_intent=None,
        )
        self.put(refund, destination)
        payment["amount_refunded"] += amount
        payment["refunded"] = payment["amount_refunded"] == payment["amount"]
        payment["_refund_ids"].append(refund_id)
        reversal = {
            "id": reversal_id,
            "object": "transfer_reversal",
            "amount": amount,
            "balance_transaction": platform_bt["id"],
            "created": self.clock.now(),
            "currency": currency,
            "destination_payment_refund": refund_id,
            "metadata": metadata or {},
            "source_refund": source_refund,
            "transfer": transfer["id"],
        }
        self.put(reversal, self.platform_id)
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        transfer["_reversal_ids"].append(reversal_id)
        self.emit("transfer.reversed", transfer, self.platform_id)
        return reversal

    # --- helpers ---------------------------------------------------------------------------------

    def _check_transfers_capability(self, account: Obj, param: str) -> None:
        if account["capabilities"].get("transfers") != "active":
            raise invalid(
                "Your destination account needs to have at least one of the following "
                "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                param=param,
            )

    def _source_charge(self, charge_id: str, amount: int, currency: str) -> Obj:
        charge = self.objects.get(charge_id)
        if charge is None or charge["object"] != "charge" or charge["_owner"] != self.platform_id:
            raise missing("charge", charge_id, "source_transaction")
        if charge["status"] != "succeeded":
            raise invalid(
                f"The source_transaction {charge_id} has not succeeded.",
                param="source_transaction",
            )
        if charge["currency"] != currency:
            raise invalid(
                f"The currency of source_transaction's balance transaction "
                f"({charge['currency']}) must be the same as the transfer currency ({currency}).",
                param="currency",
            )
        # Undocumented: reversed amounts do not free capacity; the destination-charge transfer
        # of a charge counts against it too.
        sourced = sum(
            t["amount"]
            for t in self.stored(self.platform_id, "transfer")
            if t["source_transaction"] == charge_id
        )
        if sourced + amount > charge["amount"]:
            raise invalid(
                f"The sum of transfers from source_transaction {charge_id} ({sourced} + {amount}) "
                f"would exceed the charge amount ({charge['amount']}).",
                param="amount",
            )
        return charge

    def _ensure_group(self, charge: Obj) -> str:
        """Stripe gives a sourced charge a transfer_group: its own, or `group_` + PaymentIntent."""
        if charge["transfer_group"]:
            group: str = charge["transfer_group"]
            return group
        group = f"group_{charge['payment_intent']}"
        charge["transfer_group"] = group
        intent = self.objects.get(charge["payment_intent"] or "")
        if intent is not None and not intent["transfer_group"]:
            intent["transfer_group"] = group
        return group

    def _refund_fee_with_reversal(self, transfer: Obj, amount: int) -> None:
        """`refund_application_fee` on a reversal: the whole fee on a full reversal, else
        proportionally (TransferReversalCreateParams)."""
        charge = self.objects.get(transfer["source_transaction"] or "")
        if charge is None or not charge["application_fee"]:
            return
        fee = self.objects[charge["application_fee"]]
        remaining = fee["amount"] - fee["amount_refunded"]
        if transfer["reversed"]:
            share = remaining
        else:
            share = min(remaining, round_half_up(amount * fee["amount"], transfer["amount"]))
        if share > 0:
            self.refund_application_fee(fee, share, {})


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/transfers", TransfersMixin.create_transfer),
    ("GET", "/v1/transfers", TransfersMixin.list_transfers),
    (
        "GET",
        "/v1/transfers/{transfer}",
        lambda st, c, p, transfer: st.retrieve_transfer(c, transfer),
    ),
    (
        "POST",
        "/v1/transfers/{transfer}/reversals",
        lambda st, c, p, transfer: st.create_reversal(c, transfer, p),
    ),
    (
        "GET",
        "/v1/transfers/{transfer}/reversals",
        lambda st, c, p, transfer: st.list_reversals(c, transfer, p),
    ),
    (
        "GET",
        "/v1/transfers/{transfer}/reversals/{reversal}",
        lambda st, c, p, transfer, reversal: st.retrieve_reversal(c, transfer, reversal),
    ),
]
