"""Routing: the transfers a payment's recorded plan asks for, made at Stripe exactly once.

The ledger decides the routing (``ledger.facts.plan_routing`` allocates the charge's split rule
and records ``Payment.RoutingPlanned``); this edge only carries the plan out: for each seller not
yet paid from the charge it finds the transfer Stripe already made (Stripe keeps idempotency keys
for a day, so a retry after that must look before it creates) or creates it with a deterministic
``Idempotency-Key``, then records what Stripe made as a fact. Run again, it does nothing more.
"""

from __future__ import annotations

from typing import Any, Protocol

from adapters.stripe.gateway import StripeGateway, idempotency_key
from ledger.application import Ledger

ROUTED_METADATA_KEY = "sluice_payment"


class RecordsTransfers(Protocol):
    def record_transfer(self, transfer: dict[str, Any]) -> None: ...


class Router:
    def __init__(self, ledger: Ledger, gateway: StripeGateway, recorder: RecordsTransfers) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.recorder = recorder

    def route(self, payment_id: str) -> list[str]:
        """Makes what is missing of the payment's plan; returns the transfer ids it recorded."""
        payment = self.ledger.get_payment(payment_id)
        if payment is None or not payment.planned_routing:
            return []
        routed = {
            transfer.destination_account_id
            for transfer_id in payment.sourced_transfers
            if (transfer := self.ledger.get_transfer(transfer_id)) is not None
        }
        made: list[str] = []
        for destination, amount in payment.planned_routing.items():
            if destination in routed:
                continue
            found = self.gateway.find_transfers(
                destination=destination, source_transaction=payment_id
            )
            transfer = found[0].data if found else self._create(payment, destination, amount)
            self.recorder.record_transfer(transfer)
            made.append(str(transfer["id"]))
        return made

    def _create(self, payment: Any, destination: str, amount: int) -> dict[str, Any]:
        created = self.gateway.create_transfer(
            destination=destination,
            amount=amount,
            currency=payment.currency,
            source_transaction=payment.payment_id,
            transfer_group=payment.transfer_group,
            idempotency_key=idempotency_key("split", payment.payment_id, destination),
            metadata={ROUTED_METADATA_KEY: payment.payment_id},
        )
        data: dict[str, Any] = created.data
        return data
