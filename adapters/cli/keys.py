"""`sluice keys`: API keys for the HTTP API, for whoever grants access."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.cli.common import DatabaseUrl, _settings, console

keys_app = typer.Typer(no_args_is_help=True, help="API keys")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, finance, auditor or account:<acct_id>")],
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    from adapters.bootstrap import read_model
    from adapters.keys import RoleError, create_key

    try:
        key_id, key = create_key(read_model(_settings(database_url)), role)
    except RoleError as error:
        raise typer.BadParameter(str(error)) from None
    console.print(f"created {key_id} with role {role}; store it now, it is not shown again:")
    print(key)
