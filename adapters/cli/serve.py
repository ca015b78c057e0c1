"""The long-running servers: `sluice serve` (the HTTP API) and `sluice sandbox` (the Stripe
Connect sandbox)."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.cli.common import DatabaseUrl, _settings

commands = typer.Typer()


@commands.command("serve")
def serve_cmd(
    host: str = "127.0.0.1",
    port: int = 8000,
    projector: Annotated[
        bool, typer.Option(help="Run the read models in this process (one projector per store)")
    ] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (with an embedded projector unless --no-projector)."""
    from adapters.http.app import serve

    serve(_settings(database_url), host=host, port=port, run_projector=projector)


@commands.command("sandbox")
def sandbox_cmd(
    port: int = 12111,
    host: str = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Makes ids and chaos reproducible")] = 0,
) -> None:
    """Serve the stateful Stripe Connect sandbox (Stripe's API subset Sluice uses)."""
    from stripe_sandbox import run_sandbox

    run_sandbox(host=host, port=port, seed=seed)
