"""`sluice relay`: publishes the messages the Ledger's events call for, from a tracked position.

It follows the notification log after its position (table ``sl_relay_position``), publishes
for each event that needs one (``Payout.Requested`` → ``submit_payout``), and stores its new
position only after the broker confirmed the messages (RabbitMQ ``confirm_delivery``: ``send``
returns after the confirm). A crash in between republishes: message ids derive from the event's
position, so a replay publishes the same ids, and every effect is idempotent anyway.

It wakes on PostgreSQL ``LISTEN`` on the events table's channel (eventsourcing NOTIFYs it on
every insert), polling as a fallback (every 0.5 s on SQLite). Exactly one relay is active: a
session advisory lock held for the relay's life; a second one waits and takes over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from adapters import deadlines, sql_store
from adapters.settings import Settings
from ledger.application import Ledger
from ledger.payments import Payment
from ledger.payouts import Payout
from projections.store import ReadModel
from workers.actors import message_id, send
from workers.singleton import RELAY_LOCK, Singleton

log = logging.getLogger("sluice.workers")

CHECKPOINT_EVERY = 200  # events between position writes within one pass
PASS_EVENTS_MAX = 10_000
POLL_S = 0.5  # SQLite, or no notification
LISTEN_WAIT_S = 5.0  # PostgreSQL: wait this long for a NOTIFY before looking anyway
FAILURE_PAUSE_S = 1.0  # after a failed pass (store or broker away): pause, then try again

Publish = Callable[..., Any]


class Relay:
    def __init__(
        self,
        ledger: Ledger,
        view: ReadModel,
        settings: Settings,
        *,
        name: str = "default",
        publish: Publish = send,
    ) -> None:
        self.ledger = ledger
        self.view = view
        self.settings = settings
        self.name = name
        self.publish = publish
        self.published = 0
        self.singleton = Singleton(settings, RELAY_LOCK)

    # Position ---------------------------------------------------------------------------------

    def position(self) -> int:
        return sql_store.relay_position(self.view, self.name)

    def set_position(self, position: int) -> None:
        sql_store.set_relay_position(self.view, self.name, position)

    # Publishing -------------------------------------------------------------------------------

    def messages_for(self, position: int, event: Any) -> list[tuple[str, tuple[Any, ...], str]]:
        """(actor, args, message id) for one event."""
        if isinstance(event, Payment.RoutingPlanned):
            return [
                (
                    "route_payment",
                    (event.payment_id,),
                    message_id("relay", str(position), "route_payment"),
                )
            ]
        if isinstance(event, Payout.Requested):
            return [
                (
                    "submit_payout",
                    (event.payout_id,),
                    message_id("relay", str(position), "submit_payout"),
                )
            ]
        return []

    def run_once(self, max_events: int = PASS_EVENTS_MAX) -> int:
        """Publishes everything after the position (bounded); returns events passed."""
        start = position = self.position()
        seen = 0
        for position, event in self.ledger.iter_events(after=start):
            for actor_name, args, msg_id in self.messages_for(position, event):
                self.publish(actor_name, *args, msg_id=msg_id)  # returns after the confirm
                self.published += 1
            seen += 1
            if seen % CHECKPOINT_EVERY == 0:
                self.set_position(position)
            if seen >= max_events:
                break
        if position != start:
            self.set_position(position)
        return seen

    def run(self, stop: threading.Event) -> None:
        """Waits to be the one active relay, then follows the log until ``stop`` is set. Each
        pass has a deadline (``worker_step_timeout_s``); a failed pass (the store or the broker
        away) is retried after a pause, and a lost lock session is acquired again first."""
        if not self.singleton.acquire(stop):
            return
        log.info("relay %s active from position %d", self.name, self.position())
        try:
            listening = self._listen()
            while not stop.is_set():
                if not self.singleton.alive():
                    log.warning("relay %s lost its lock session; acquiring it again", self.name)
                    self.singleton.close()
                    if not self.singleton.acquire(stop):
                        return
                    listening = self._listen()
                try:
                    with deadlines.within(self.settings.worker_step_timeout_s):
                        passed = self.run_once()
                except Exception as error:  # store or broker away: the next pass retries
                    log.warning("relay pass failed (%s); retrying", error)
                    stop.wait(FAILURE_PAUSE_S)
                    continue
                if passed:
                    continue
                conn = self.singleton.conn
                if listening and conn is not None:
                    try:
                        for _ in conn.notifies(timeout=LISTEN_WAIT_S, stop_after=1):
                            pass
                    except Exception as error:  # the session broke: re-acquired above
                        log.warning("relay lost its LISTEN session (%s)", error)
                        self.singleton.broken = True
                        stop.wait(FAILURE_PAUSE_S)
                else:
                    stop.wait(POLL_S)
        finally:
            self.singleton.close()

    def _listen(self) -> bool:
        """LISTENs on the events channel on the lock's session; False where there is none."""
        conn = self.singleton.conn
        channel = getattr(self.ledger.recorder, "channel_name", None)
        if conn is None or not channel:
            return False
        from psycopg import sql

        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except Exception as error:  # the session broke: polling until it is back
            log.warning("relay cannot LISTEN (%s)", error)
            self.singleton.broken = True
            return False
        return True
