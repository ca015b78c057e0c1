"""Routing: the transfers a payment's recorded plan asks for, made at Stripe exactly once.

The ledger decides the routing (``ledger.facts.plan_routing`` allocates the charge's split rule
and records ``Payment.RoutingPlanned``); this edge only carries the plan out: for each seller not
yet paid from the charge it finds the transfer Stripe already made (Stripe keeps idempotency keys
for a day, so a retry after that must look before it creates) or creates it with a deterministic
``Idempotency-Key``, then records what Stripe made as a fact. Run again, it does nothing more.

When Stripe does not take a transfer (``adapters.stripe.errors``): the retry class is raised (the
caller retries it); a hold (a key or permission an operator must fix) is recorded on the payment
(``Payment.RoutingHeld``) and the routing stops there, nothing failed, to be carried on by the
sweeper; once every transfer is made the hold ends (``Payment.RoutingResumed``); a refusal is
raised as it always was (the message is dead-lettered, the inbox event parked).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from adapters.stripe.gateway import GatewayError, StripeGateway, idempotency_key
from ledger.application import Ledger

ROUTED_METADATA_KEY = "sluice_payment"
log = logging.getLogger("sluice.routing")


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
            try:
                found = self.gateway.find_transfers(
                    destination=destination, source_transaction=payment_id
                )
                data = found[0].data if found else self._create(payment, destination, amount)
            except GatewayError as error:
                if not error.held:
                    raise
                self._hold(payment, destination, error)
                return made
            self.recorder.record_transfer(data)
            made.append(str(data["id"]))
        if payment.routing_held is not None:
            self.ledger.resume_routing(
                idempotency_key=f"routing:resumed:{payment_id}:v{payment.version}",
                payment_id=payment_id,
            )
        return made

    def _hold(self, payment: Any, destination: str, error: GatewayError) -> None:
        # Keyed by the payment's version: a retry in the same state records nothing more, a
        # later attempt (after other events on the payment) is a hold of its own.
        self.ledger.hold_routing(
            idempotency_key=f"routing:held:{payment.payment_id}:v{payment.version}",
            payment_id=payment.payment_id,
            destination=destination,
            reason_code=error.reason_code,
            message=error.reason_message,
        )
        log.error(
            "Stripe did not take the transfer of %s to %s (routing held): %s",
            payment.payment_id,
            destination,
            error,
        )

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
