"""The long-running servers: `sluice serve` (the HTTP API) and `sluice sandbox` (the Stripe
Connect sandbox)."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, NoReturn

import typer

from adapters.cli.common import DatabaseUrl, _settings, console

commands = typer.Typer()


@commands.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
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
    port: Annotated[int, typer.Option(help="port to listen on")] = 12111,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    seed: Annotated[
        int | None, typer.Option(help="Makes ids and chaos reproducible (default 0)")
    ] = None,
    settings_file: Annotated[
        str | None,
        typer.Option(help="A TOML file of sandbox settings (field names; chaos in \\[chaos])"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="NAME=VALUE, repeatable, over the file's: processing_fees=usd=290+30,jpy=360+0,"
            " dispute_fee_refunded_on_win=false, webhook_delivery=manual, chaos.duplicate=0.5 …"
            " (every field of stripe_sandbox.SandboxSettings)",
        ),
    ] = None,
) -> None:
    """Serve the stateful Stripe Connect sandbox (Stripe's API subset Sluice uses)."""
    from stripe_sandbox import run_sandbox

    settings = _sandbox_settings(settings_file, set_ or [], seed)
    changed = _changed_settings(settings)
    if changed:
        print(f"sandbox settings: {changed}", flush=True)
    try:
        run_sandbox(host=host, port=port, **_fields(settings))
    except OSError as error:
        _fail(f"cannot serve the sandbox on {host}:{port}: {error}")


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _sandbox_settings(path: str | None, pairs: list[str], seed: int | None) -> Any:
    """The sandbox's settings from a file, then ``--set`` pairs (``chaos.NAME`` into the chaos
    table), then ``--seed``; a bad name or value exits 2 with one line naming it."""
    from stripe_sandbox import SandboxSettings
    from stripe_sandbox.settings import SettingError

    options: dict[str, Any] = {}
    chaos: dict[str, Any] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            _fail(f"--set: expected NAME=VALUE, got {pair!r}")
        name = name.strip()
        if name.startswith("chaos."):
            chaos[name.removeprefix("chaos.")] = value
        else:
            options[name] = value
    if seed is not None:
        options["seed"] = seed
    try:
        base = SandboxSettings.from_file(path) if path else SandboxSettings()
        if chaos:
            options["chaos"] = {**_chaos_table(base), **chaos}
        return SandboxSettings.from_options(**{**_fields(base), **options})
    except SettingError as error:
        _fail(str(error))  # it starts with the setting's name


def _fields(settings: Any) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


def _chaos_table(settings: Any) -> dict[str, Any]:
    return _fields(settings.chaos)


def _changed_settings(settings: Any) -> str:
    """The settings that differ from the defaults, for the start-up banner."""
    from stripe_sandbox import SandboxSettings

    default = SandboxSettings()
    return ", ".join(
        f"{name}={value}"
        for name, value in _fields(settings).items()
        if value != getattr(default, name)
    )
