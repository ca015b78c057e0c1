"""The HTTP API's composition: ``create_app(settings)`` for ASGI servers, ``serve`` for the CLI.

With ``run_projector`` the app follows the event log in a background thread (started and
stopped with the app), so its GETs see writes without a separate ``sluice project run``. Run
one projector per store: when several API processes share a store, start them without it and
run the projector once, on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from adapters.audit_schedule import scheduled_checkpoints
from adapters.bootstrap import bootstrap, follow_log, projector_locks, read_model
from adapters.http import (
    accounts,
    api_keys,
    dashboard,
    errors,
    payout_reports,
    proofs,
    reads,
    reconciliation,
    risk,
    webhooks,
    writes,
)
from adapters.http.auth import Authenticate, authorize, authorize_late
from adapters.http.forms import FormBodies
from adapters.http.guards import RequestDeadline
from adapters.http.openapi import typed_schema
from adapters.http.support import Sluice, reject_unknown_query
from adapters.keys import KeyCache
from adapters.metrics import instrument
from adapters.settings import Settings
from ledger.application import Ledger
from projections.runner import Projector
from projections.store import ReadModel

log = logging.getLogger("sluice.http")

SHUTDOWN_JOIN_S = 10.0
BODY_SIZE_MAX = 1_000_000  # bytes; the largest valid request (a 50-part split) is ~5 kB

DESCRIPTION = """\
Sluice's funds ledger over HTTP, on Stripe's conventions: integer `amount`s in minor units with a
lowercase `currency`, prefixed ids, list objects paged with `limit` and `starting_after`, errors
as `{"error": {"type", "code", "message", "param"}}`.

Every POST needs an `Idempotency-Key` header: the same key and body return the first response
(`Idempotent-Replayed: true`); the same key with another body is a 409. POST responses carry the
log `position` of their events; a GET sent with `Sluice-Min-Position: <position>` waits (briefly)
until the read models include it, and every GET served from read models says in `Sluice-Position`
how far they had got. Lists and statements come as CSV with `Accept: text/csv` or `?format=csv`.

Authenticate with `Authorization: Bearer <key>` (`sluice keys create --role …`).

Every request has a deadline (`SLUICE_HTTP_REQUEST_TIMEOUT_S`, 10 s by default): past it the
answer is `503` with `Retry-After` and the code `deadline_exceeded`, and nothing was
half-written (retry a POST with the same `Idempotency-Key`). `GET /healthz` is liveness (no key,
no store, says only `ok`); `GET /readyz` says whether the store answers in time and is migrated;
details need a key (`GET /v1/status`). Admin keys manage API keys under `/v1/keys`.
"""


def _route_id(route: APIRoute) -> str:
    return route.name


def _close_view(view: Any) -> None:
    datastore = getattr(view, "datastore", None)
    if datastore is not None and hasattr(datastore, "close"):
        datastore.close()


def create_app(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    view: ReadModel | None = None,
    run_projector: bool = True,
) -> FastAPI:
    owns_ledger, owns_view = ledger is None, view is None
    ledger = ledger if ledger is not None else bootstrap(settings, role="api")
    view = view if view is not None else read_model(settings, role="api")
    keys = KeyCache(view, refresh_s=settings.http_key_refresh_s)
    sluice = Sluice(
        settings=settings,
        ledger=ledger,
        view=view,
        projector=Projector(ledger, view),
        read_wait_s=settings.http_min_position_wait_s,
        keys=keys,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        keys.load()  # bounded; if the store is down the cache fills once it answers
        keys.start()
        if run_projector:  # with a signing key it signs checkpoints too (audit_schedule)
            checkpoints = scheduled_checkpoints(ledger, view, settings)
            sluice.projector_thread = threading.Thread(
                target=follow_log,
                args=(sluice.projector, stop, settings.worker_step_timeout_s, checkpoints),
                # One projector per read model: beside `sluice project run` (or another serve)
                # this one stands by, and takes over the read models whose holder stops.
                kwargs={"locks": projector_locks(settings, list(sluice.projector.projections))},
                name="sluice-projector",
                daemon=True,
            )
            sluice.projector_thread.start()
        try:
            yield
        finally:
            stop.set()
            keys.stop()
            if sluice.projector_thread is not None:
                sluice.projector_thread.join(SHUTDOWN_JOIN_S)
            if owns_ledger:
                ledger.close()
            if owns_view:
                _close_view(view)

    # /docs and /redoc from the assets packaged with fastapi-offline: no CDN at run time.
    app = FastAPIOffline(
        title="Sluice",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_route_id,
    )
    app.state.sluice = sluice
    app.state.request_timeout_s = settings.http_request_timeout_s
    _add_guards(app, settings)
    instrument(app, ledger, view)  # outermost: request ids, counts of every answer; /metrics
    errors.install(app, authorize_late)
    _include_routers(app)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


def _add_guards(app: FastAPI, settings: Settings) -> None:
    """Outermost last: the deadline covers everything; Stripe's webhooks are answered inside it
    (``WebhookIngest``: the same checks, applied once); authentication comes before any body is
    read; the body limit stops reading at BODY_SIZE_MAX; form bodies become JSON inside it."""
    routers = (
        reads.public_router,
        webhooks.router,
        accounts.router,
        reads.router,
        proofs.router,
        risk.router,
        writes.router,
        api_keys.router,
    )
    api_routes = [route for router in routers for route in router.routes]
    app.add_middleware(FormBodies, routes=api_routes)
    app.add_middleware(errors.BodyLimit, max_bytes=BODY_SIZE_MAX)
    app.add_middleware(Authenticate, fastapi_app=app, routes=api_routes)
    app.add_middleware(webhooks.WebhookIngest, fastapi_app=app, max_bytes=BODY_SIZE_MAX)
    app.add_middleware(RequestDeadline, budget_s=settings.http_request_timeout_s)


def _include_routers(app: FastAPI) -> None:
    """Every route is authorized by its policy; the API's routes also refuse unknown queries."""
    guarded = [Depends(authorize), Depends(reject_unknown_query)]
    app.include_router(reads.public_router)
    app.include_router(webhooks.router, dependencies=[Depends(authorize)])
    for read_router in (
        accounts.router,
        reads.router,
        payout_reports.router,
        proofs.router,
        reconciliation.router,
        risk.router,
    ):
        app.include_router(read_router, dependencies=guarded, responses=errors.COMMON_ERRORS)
    for write_router in (writes.router, api_keys.router):
        app.include_router(
            write_router,
            dependencies=guarded,
            responses=errors.COMMON_ERRORS | errors.WRITE_ERRORS,
        )
    dashboard.mount(app)  # /dashboard: HTML over the same read models, signed in with a key


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema, corrected: validation errors are 400 envelopes (no 422), and the
    Idempotency-Key header, checked by hand for its own error code, is required."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for item in schema["paths"].values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
                    for param in operation.get("parameters", []):
                        if param["in"] == "header" and param["name"] == "Idempotency-Key":
                            param["required"] = True
                            param["schema"] = {"type": "string", "minLength": 1, "maxLength": 255}
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = typed_schema(schema)
        return app.openapi_schema

    return build


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, run_projector: bool = True
) -> None:
    """Serves the API with uvicorn until interrupted (``sluice serve``)."""
    import uvicorn

    uvicorn.run(
        create_app(settings, run_projector=run_projector),
        host=host,
        port=port,
        server_header=False,
        log_level="info",
        log_config=None,  # logging is adapters.logs' (one format); uvicorn's lines join it
        access_log=False,  # adapters.metrics logs one structured line per request instead
    )
