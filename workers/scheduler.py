"""`sluice scheduler`: every tick, enqueues the work the clock calls for.

- ``release_due(account, currency, until)`` for each balance with pending funds due
  (``rm_balance_transactions`` pending with ``available_on`` ≤ now; ``until`` is the latest due
  instant, so the release's key is stable across ticks);
- ``evaluate_payout(account, currency, today)`` for each connected account with a non-manual
  schedule and positive available funds (``rm_balances``); the actor decides if today is a
  payout day and pays a slot at most once;
- ``process_inbox`` and ``sweep``;
- ``reconcile`` every ``SLUICE_RECONCILE_INTERVAL_S`` and ``sync_accounts`` (connected accounts
  created at Stripe that no event told Sluice of) every ``SLUICE_SYNC_ACCOUNTS_INTERVAL_S``, each
  with a message id per interval, so several ticks in one interval enqueue it once.

It reads the read models, so ``sluice project run`` must be running. Exactly one scheduler is
active (a session advisory lock); a second one waits and takes over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from adapters import deadlines
from adapters.settings import Settings
from ledger.application import Ledger
from projections import queries
from projections.store import ReadModel
from workers.actors import message_id, send
from workers.singleton import SCHEDULER_LOCK, Singleton

log = logging.getLogger("sluice.workers")

TICK_S = 10.0


class Scheduler:
    def __init__(
        self,
        ledger: Ledger,
        view: ReadModel,
        settings: Settings,
        *,
        publish: Callable[..., Any] = send,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.view = view
        self.settings = settings
        self.publish = publish
        self.clock = clock or ledger.clock
        self.singleton = Singleton(settings, SCHEDULER_LOCK)
        self._periodic: dict[str, int] = {}  # the interval each periodic job was last sent in

    def tick(self, now: datetime | None = None) -> dict[str, int]:
        now = now or self.clock()
        counts = {"release_due": 0, "evaluate_payout": 0}
        for account_id, currency, until in queries.due_releases(self.view, now):
            self.publish("release_due", account_id, currency, until.isoformat())
            counts["release_due"] += 1
        slot = now.astimezone(UTC).date().isoformat()
        for account_id, currency in queries.funded_balances(self.view):
            account = self.ledger.get_account(account_id)
            if account is None or account.kind != "connected" or account.closed:
                continue
            if account.schedule.get("interval") == "manual":
                continue
            self.publish("evaluate_payout", account_id, currency, slot)
            counts["evaluate_payout"] += 1
        self.publish("process_inbox")
        self.publish("sweep")
        for name, every_s in (
            ("reconcile", self.settings.reconcile_interval_s),
            ("sync_accounts", self.settings.sync_accounts_interval_s),
        ):
            if every_s <= 0:
                continue  # turned off
            window = int(now.timestamp() // every_s)
            if self._periodic.get(name) != window:
                self._periodic[name] = window
                self.publish(name, msg_id=message_id(name, str(every_s), str(window)))
                counts[name] = 1
        return counts

    def run(self, stop: threading.Event, tick_s: float = TICK_S) -> None:
        if not self.singleton.acquire(stop):
            return
        counts: dict[str, int] | None = None  # the last tick's, to log only changes
        try:
            while not stop.is_set():
                if not self.singleton.alive():
                    log.warning("scheduler lost its lock session; acquiring it again")
                    self.singleton.close()
                    if not self.singleton.acquire(stop):
                        return
                try:
                    with deadlines.within(self.settings.worker_step_timeout_s):
                        counts, last = self.tick(), counts
                        # INFO when what a tick enqueued changed (every tick enqueues the inbox
                        # pass and the sweep); the same line again and again is DEBUG.
                        level = logging.INFO if counts != last else logging.DEBUG
                        log.log(level, "scheduler tick: %s", counts)
                except Exception:  # a tick failing (database blip) must not end the loop
                    log.exception("scheduler tick failed")
                stop.wait(tick_s)
        finally:
            self.singleton.close()
