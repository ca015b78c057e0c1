"""One log format for every Sluice process, configured once at its start (``configure``).

structlog renders every record, its own and the standard library's: the code base logs with
``logging.getLogger(...)``, and so do uvicorn, dramatiq and pika, so the root logger gets one
handler whose ``ProcessorFormatter`` runs the same processors on all of them. Two renderings:
``json`` (one object a line: ``timestamp``, ``level``, ``logger``, ``event``, ``process`` and
whatever context is bound, such as ``request_id`` and a POST's ``idempotency_key``) for
containers and log shippers, and
``console`` for a person at a terminal. The default is ``console`` on a TTY and ``json``
otherwise; ``SLUICE_LOG_FORMAT`` or ``--log-format`` choose, ``SLUICE_LOG_LEVEL`` sets the level.

Secrets never reach a line: keys that name one (authorization, api keys, webhook secrets,
passwords) are replaced by ``[redacted]`` whatever logged them.

Every command and fact the ledger runs logs one ``command`` line (``log_command``, called by the
engine's observer in ``adapters.metrics``: ``ledger`` imports no logging library) with the
command's name, outcome, idempotency key and the ids it touched (``account_id``, ``payout_id``,
``payment_id``, …). Group commit records concurrent requests' commands in one thread's batch:
a command line carries the ``request_id`` only of the request whose command it is.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LOG_FORMAT_ENV = "SLUICE_LOG_FORMAT"
LOG_LEVEL_ENV = "SLUICE_LOG_LEVEL"
FORMATS = ("json", "console")
REQUEST_ID_HEADER = "request-id"  # Stripe's name for it; X-Request-Id is accepted too
REQUEST_ID_LEN_MAX = 200  # a client's id is echoed and logged: bounded, printable only
IDEMPOTENCY_KEY_LEN_MAX = 255  # the API's own bound (longer ones are refused, not logged)

# Context keys whose values are secrets, matched on the lowercased key.
SECRET_KEY_PARTS = ("authorization", "api_key", "secret", "password", "token", "signing_key")
# Third-party loggers that are too talkative at INFO for a production log.
# (stripe-python logs every request and response at INFO.)
QUIET_LOGGERS = {
    "pika": logging.WARNING,
    "httpx": logging.WARNING,
    "urllib3": logging.WARNING,
    "stripe": logging.WARNING,
}


def log_settings() -> tuple[str | None, str | None]:
    """(format, level) from the settings (None: auto format, the process's default level)."""
    from adapters.settings import Settings

    settings = Settings()
    fmt = None if settings.log_format == "auto" else settings.log_format
    return fmt, settings.log_level


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(part in key.lower() for part in SECRET_KEY_PARTS):
            event[key] = "[redacted]"
    for key in ("request_id", "idempotency_key"):
        if key in event and event[key] is None:
            del event[key]  # unset by log_command: another request's command
    return event


def _shared(process: str | None) -> list[Any]:
    """Processors for every record, structlog's own and the standard library's."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    if process:

        def add_process(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
            event.setdefault("process", process)
            return event

        processors.append(add_process)
    return processors


def _renderer(fmt: str) -> list[Any]:
    if fmt == "json":
        return [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer(colors=False)]


def configure(
    fmt: str | None = None,
    level: str | None = None,
    *,
    process: str | None = None,
    stream: TextIO | None = None,
    default_level: str = "INFO",
) -> str:
    """Routes every log record of this process through structlog in one format; returns it.

    Call it once at a process's start (again replaces the configuration). ``process`` names the
    process on each line (api, relay, scheduler, projector, worker)."""
    env_fmt, env_level = log_settings()
    stream = stream or sys.stderr
    fmt = fmt or env_fmt or ("console" if stream.isatty() else "json")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    shared = _shared(process)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # configure() may run again (tests, exec'd children)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderer(fmt)],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel((level or env_level or default_level).upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        # Their own handlers would print a second, differently formatted line.
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
    return fmt


# Request ids ----------------------------------------------------------------------------------


# Generated ids: ``req_`` + 20 random hex digits per process + a 12-digit counter (32 hex digits,
# as uuid4's were). Unique within a process by the counter, across processes by the prefix; no
# urandom call per request (each was a syscall, and a GIL hand-off, on the event loop).
class _RequestIds:
    __slots__ = ("counter", "prefix")

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = "req_" + os.urandom(10).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


_request_ids = _RequestIds()
os.register_at_fork(after_in_child=_request_ids.renew)  # a forked worker must not repeat ids


def new_request_id() -> str:
    return _request_ids.next()


def _request_id(scope: MutableMapping[str, Any]) -> str:
    for name, value in scope.get("headers", []):
        if name in (b"request-id", b"x-request-id"):
            text = value.decode("latin-1")[:REQUEST_ID_LEN_MAX]
            if text.isprintable() and text.strip():
                return text
    return new_request_id()


def _idempotency_key(scope: MutableMapping[str, Any]) -> str | None:
    """A POST's Idempotency-Key as sent (bounded, printable), for its lines; not a secret."""
    for name, value in scope.get("headers", []):
        if name == b"idempotency-key":
            text = value.decode("latin-1")
            if len(text) <= IDEMPOTENCY_KEY_LEN_MAX and text.isprintable() and text.strip():
                return text
    return None


class RequestContext:
    """Binds a ``request_id`` to every log line a request causes (its handler's thread
    included: Starlette copies the context into its thread pool) and answers it in the
    ``Request-Id`` header. A client's own ``Request-Id``/``X-Request-Id`` is kept."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        bound: dict[str, Any] = {"request_id": request_id}
        if (key := _idempotency_key(scope)) is not None:
            bound["idempotency_key"] = key
        tokens = structlog.contextvars.bind_contextvars(**bound)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


# `sluice` commands that run until stopped log at INFO by default; the others (a report, the
# demo) print their results and log warnings only, unless a level is asked for.
LONG_RUNNING = frozenset({"serve", "sandbox", "relay", "scheduler", "worker", "project"})


def use(fmt: str | None, level: str | None, *, process: str | None = None) -> str:
    """A process's command-line choice (``--log-format``, ``--log-level``): configures this
    process and exports it, so a process it execs (relay, scheduler, workers) logs alike."""
    if fmt:
        os.environ[LOG_FORMAT_ENV] = fmt
    if level:
        os.environ[LOG_LEVEL_ENV] = level
    default = "INFO" if process in LONG_RUNNING else "WARNING"
    return configure(fmt, level, process=process, default_level=default)


# Commands ---------------------------------------------------------------------------------------

command_log = logging.getLogger("sluice.commands")


def _own(result_key: str, request_key: Any) -> bool:
    """Whether a command's idempotency key is the current request's (or one of its sub-keys:
    an account update issues ``<key>/update``, ``<key>/schedule``, …)."""
    return isinstance(request_key, str) and (
        result_key == request_key or result_key.startswith(f"{request_key}/")
    )


def command_fields(name: str, result: Any, outcome: str, seconds: float) -> dict[str, Any]:
    """A command line's fields: name, outcome, duration, and from its result the idempotency
    key, the ids it touched (``account_id``, ``payout_id``, …) and a refusal's code."""
    fields: dict[str, Any] = {
        "command": name,
        "outcome": outcome,
        "duration_ms": round(seconds * 1000, 1),
    }
    if result is not None:
        fields["idempotency_key"] = result.idempotency_key
        fields |= {f"{kind}_id": value for kind, value in sorted(result.ids.items())}
        if result.error is not None:
            fields["error_code"] = result.error.code
    context = structlog.contextvars.get_contextvars()
    if "request_id" in context and (
        result is None or not _own(result.idempotency_key, context.get("idempotency_key"))
    ):
        fields["request_id"] = None  # recorded in this request's batch, but not its command
    if "idempotency_key" not in fields and "idempotency_key" in context:
        fields["idempotency_key"] = None  # the batch failed: this request's key is not its own
    return fields


def log_command(name: str, result: Any, outcome: str, seconds: float) -> None:
    """One line per command or fact run (INFO; a refusal is INFO too: the caller answers it)."""
    command_log.info("command", extra=command_fields(name, result, outcome, seconds))
