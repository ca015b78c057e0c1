"""Progress for long auditor and operator commands: a rich bar on a terminal, nothing otherwise
(a log or a pipe gets the command's result lines only, never bar redraws)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

POLL_S = 0.5  # how often a polled progress re-reads its source (a committed position)

Advance = Callable[[int], None]  # called with the position reached


def on_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress(
    description: str, total: int | None, *, enabled: bool | None = None
) -> Iterator[Advance]:
    """Yields ``update(position)``; draws on stderr when it is a terminal, else does nothing."""
    if not (on_terminal() if enabled is None else enabled):
        yield lambda _: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total or None)
        yield lambda position: bar.update(task, completed=position)


@contextmanager
def polled(description: str, total: int, read: Callable[[], int]) -> Iterator[None]:
    """Progress of work that reports nothing itself (a projection rebuild): ``read`` is polled
    every ``POLL_S`` from a thread, on a terminal only. Each batch commits its position, so
    the committed position is an honest measure."""
    if not on_terminal():
        yield
        return
    stop = threading.Event()
    with progress(description, total, enabled=True) as update:

        def poll() -> None:
            while not stop.wait(POLL_S):  # ends with the work (stop is set after it)
                try:
                    update(read())
                except Exception:  # a read racing the rebuild's transaction: next poll
                    continue

        poller = threading.Thread(target=poll, name="sluice-progress", daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join(POLL_S * 4)
