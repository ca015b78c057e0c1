"""The sandbox clock: Unix seconds that move only when told (`Sandbox.advance`), never by wall time,
so every `created`, `available_on` and `arrival_date` is reproducible."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from stripe_sandbox.settings import DAY_S


class SandboxClock:
    def __init__(self, start: int) -> None:
        self._start = start
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> int:
        with self._lock:
            return self._now

    def isoformat(self) -> str:
        return datetime.fromtimestamp(self.now(), UTC).isoformat()

    def _move_to(self, instant: int) -> None:
        """Moves forward only: the sandbox never travels back (reset aside)."""
        with self._lock:
            if instant < self._now:
                raise ValueError(f"the sandbox clock cannot go back ({instant} < {self._now})")
            self._now = instant

    def _reset(self) -> None:
        with self._lock:
            self._now = self._start


def day_start(instant: int) -> int:
    return instant - instant % DAY_S
