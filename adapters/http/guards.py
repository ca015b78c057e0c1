"""The request deadline: every request is answered within its budget (plus a short grace).

``RequestDeadline`` opens a deadline (``adapters.deadlines``) for each request. Inside it, the
database calls are bounded by the watchdog and answer ``503 deadline_exceeded`` themselves; this
middleware is the backstop for everything else a request can wait on (a thread-pool slot, an
in-process lock held by a stalled writer): if no response has started ``grace_s`` after the
deadline, it answers 503 itself and drops whatever the request says later. The abandoned work
keeps running only until its own database call hits the same deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters import deadlines
from adapters.http.errors import deadline_response

log = logging.getLogger("sluice.http")

# Paths that never touch the store and answer at once: no deadline machinery for them.
UNGUARDED_PATHS = frozenset({"/healthz"})


class RequestDeadline:
    def __init__(self, app: ASGIApp, budget_s: float, grace_s: float = 0.5) -> None:
        self.app = app
        self.budget_s = budget_s
        self.grace_s = grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNGUARDED_PATHS:
            await self.app(scope, receive, send)
            return
        started = False
        abandoned = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if abandoned:
                return  # the 503 went out already: the late answer is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with deadlines.within(self.budget_s):
            # The task copies the context now, deadline included, and carries it into the
            # thread pool where the route runs.
            task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.budget_s + self.grace_s)
        if task in done or started:
            await task  # finished, or already answering: let it finish (bounded by its sends)
            return
        abandoned = True
        task.add_done_callback(_collect)
        log.warning(
            "request past its deadline: %s %s answered 503", scope.get("method"), scope.get("path")
        )
        await deadline_response(self.budget_s)(scope, receive, send)


def _collect(task: asyncio.Future[Any]) -> None:
    """Retrieves an abandoned request's outcome so asyncio does not warn about it."""
    if not task.cancelled() and task.exception() is not None:
        log.info("abandoned request ended with %r", task.exception())
