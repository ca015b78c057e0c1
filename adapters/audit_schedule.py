"""Scheduled checkpoints: the projector signs a checkpoint now and then, off the write path.

``follow_log`` (``adapters.bootstrap``) calls a ``ScheduledCheckpoints`` after each projector
step. It does nothing until its interval passed and the log grew; then it appends at most
``step_events`` leaves (the Checkpointer's own page transactions, in the read-model database)
and, once the tree reached the head it saw, signs one checkpoint. A backlog (a first run over a
million events) is worked off a bounded step at a time, so the projector's own steps go on in
between. It only reads the events table, so writers never wait on it: on PostgreSQL it takes no
lock a writer needs; on SQLite its write transactions are one page of leaves long, like a
projection batch's. A failure (the store away, a second checkpointer racing) is logged and tried
again after the interval: checkpoints must never stop the read models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from adapters.audit_format import Checkpoint
from adapters.audit_log import Checkpointer, MerkleStore, signing_key
from adapters.settings import Settings
from ledger.application import Ledger
from projections.store import ReadModel

log = logging.getLogger("sluice.audit")

# The defaults of the settings SLUICE_AUDIT_CHECKPOINT_INTERVAL_S and _STEP_EVENTS: a signed
# checkpoint at most once a minute bounds the checkpoints table to ~1 440 rows a day; 20 000
# leaves a step is ~1 s of work at the measured rate, short beside a projector step's deadline.
CHECKPOINT_INTERVAL_S = 60.0
CHECKPOINT_STEP_EVENTS = 20_000


class ScheduledCheckpoints:
    """Callable after each projector step; returns the checkpoint it signed, if any."""

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        interval_s: float = CHECKPOINT_INTERVAL_S,
        step_events: int = CHECKPOINT_STEP_EVENTS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0 or step_events < 1:
            raise ValueError("interval_s must be ≥ 0 and step_events ≥ 1")
        self.checkpointer = checkpointer
        self.interval_s = interval_s
        self.step_events = step_events
        self.monotonic = monotonic
        self.next_at = 0.0  # the first step may sign at once: the log may have grown while down
        self.signed = 0
        self.failures = 0

    def __call__(self) -> Checkpoint | None:
        now = self.monotonic()
        if now < self.next_at:
            return None
        try:
            return self._step(now)
        except Exception as error:  # the store away, a racing checkpointer: next interval
            self.failures += 1
            self.next_at = now + self.interval_s
            log.warning(
                "scheduled checkpoint failed (%s); next try in %.0f s", error, self.interval_s
            )
            return None

    def _step(self, now: float) -> Checkpoint | None:
        ledger = self.checkpointer.ledger
        head = int(ledger.recorder.max_notification_id() or 0)
        tree = self.checkpointer.store.head()
        latest = self.checkpointer.store.checkpoint()
        if head <= tree.last_position and latest is not None and latest.tree_size == tree.tree_size:
            self.next_at = now + self.interval_s  # nothing new since the last checkpoint
            return None
        appended = self.checkpointer.catch_up(self.step_events)
        if appended >= self.step_events:
            return None  # a backlog: the next step goes on (the interval bounds signing only)
        checkpoint = self.checkpointer.checkpoint(max_events=0)
        self.signed += 1
        self.next_at = now + self.interval_s
        log.info("signed checkpoint of %d events", checkpoint.tree_size)
        return checkpoint


def scheduled_checkpoints(
    ledger: Ledger, view: ReadModel, settings: Settings
) -> ScheduledCheckpoints | None:
    """The projector's checkpoint schedule, or None when no signing key is configured."""
    if not (settings.audit_signing_key or settings.audit_signing_key_file):
        return None
    checkpointer = Checkpointer(
        ledger, MerkleStore(view), key=signing_key(settings), origin=settings.audit_log_origin
    )
    return ScheduledCheckpoints(
        checkpointer,
        interval_s=settings.audit_checkpoint_interval_s,
        step_events=settings.audit_checkpoint_step_events,
    )
