"""`sluice keys`: API keys for the HTTP API, for whoever grants access: create, list, revoke,
rotate. A key is printed once, at creation; only its hash is stored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from adapters.cli.common import DatabaseUrl, _day, _settings, console

keys_app = typer.Typer(no_args_is_help=True, help="API keys")

LIST_WIDTH_PIPED = 200  # wide enough for every column in full (ids are 20 characters)
_DURATION = re.compile(r"^(\d{1,9})([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _view(database_url: str | None) -> Any:
    from adapters.bootstrap import read_model

    return read_model(_settings(database_url))


@contextmanager
def _store(database_url: str | None) -> Iterator[Any]:
    """The read-model store for one command, closed after it; a store that is unreachable or
    not migrated is one line, not a traceback."""
    from eventsourcing.persistence import PersistenceError

    view = _view(database_url)
    try:
        yield view
    except PersistenceError as error:
        first = (str(error).strip().splitlines() or ["?"])[0]
        _fail(f"the store refused ({first}); is it migrated? run `sluice db migrate`")
    finally:
        view.datastore.close()


def _print_secret(key_id: str, role: str, key: str, verb: str) -> None:
    console.print(
        f"{verb} {key_id} with role {role}; store it now, it is not shown again:", soft_wrap=True
    )
    print(key)


def grace_seconds(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` → seconds."""
    found = _DURATION.match(text.strip())
    if found is None:
        _fail(f"--grace: use seconds or a number with s, m, h or d (like 1h), got {text!r}")
    return int(found.group(1)) * _SECONDS[found.group(2)]


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, finance, auditor or account:<acct_id>")],
    label: Annotated[str | None, typer.Option(help="Who or what the key is for")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    from adapters.keys import RoleError, create_key

    with _store(database_url) as view:
        try:
            key_id, key = create_key(view, role, label)
        except RoleError as error:
            _fail(str(error))
    _print_secret(key_id, role, key, "created")


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None) -> None:
    """Every key: id, role, label, created, revoked (or when a rotated key stops). Never the key."""
    import time

    from adapters.keys import list_keys

    with _store(database_url) as view:
        found = list_keys(view)
    now = time.time()
    table = Table(title="API keys")
    for column in ("id", "role", "label", "created (UTC)", "stops (UTC)", "state", "replaced by"):
        table.add_column(column, no_wrap=column != "label")
    for info in found:
        state = "active" if info.active(now) else "revoked"
        if info.revoked is not None and info.active(now):
            state = "grace"  # rotated: works until "stops"
        row = (info.label or "", _day(info.created), _day(info.revoked), state)
        table.add_row(info.id, info.role, *row, info.replaced_by or "")
    # Piped or captured, the table keeps whole ids rather than the 80 columns of a dumb terminal.
    (console if console.is_terminal else Console(width=LIST_WIDTH_PIPED)).print(table)
    console.print(f"{len(found)} key(s)")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (key_…)")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key now. Servers refuse it within SLUICE_HTTP_KEY_REFRESH_S."""
    from adapters.keys import KeyRefused, revoke_key

    with _store(database_url) as view:
        try:
            info = revoke_key(view, key_id)
        except KeyRefused as error:
            _fail(str(error))
    console.print(f"revoked {info.id} (role {info.role})")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key to replace (key_…)")],
    grace: Annotated[
        str, typer.Option(help="How long the old key keeps working (like 1h; default: stop now)")
    ] = "0",
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key with the same role and label, print it once, and revoke the old one (now,
    or after --grace, so clients can switch over)."""
    from adapters.keys import KeyRefused, rotate_key

    seconds = grace_seconds(grace)
    with _store(database_url) as view:
        try:
            info, key = rotate_key(view, key_id, seconds)
        except KeyRefused as error:
            _fail(str(error))
    stops = "now" if seconds == 0 else f"at {_day(int(info.created) + seconds)} UTC"
    console.print(f"{key_id} stops working {stops}", soft_wrap=True)
    _print_secret(info.id, info.role, key, "created")
