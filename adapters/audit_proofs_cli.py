"""`sluice audit …` for the tamper-evident log: checkpoints, proofs, and their verification.

    checkpoint [--list]                    sign a checkpoint of the log as it is (or list them)
    prove --position N [--checkpoint SIZE] an event and its inclusion proof
    prove --account A [--as-of T]          every event behind A's balances, each with its proof
    consistency OLD NEW                    proof that checkpoint NEW extends checkpoint OLD
    verify-proof FILE --public-key K       offline: no database (also python -m
                                           adapters.proof_verifier)
    verify-log [--checkpoint SIZE]         re-read the event store against a checkpoint
    export-public-key [--format pem|raw|hex]
    generate-key FILE                      a new Ed25519 signing key (PEM, mode 0600)

Every failure is one line on stderr and a non-zero exit: 1 when a proof or the log does not
verify, 2 for anything else (bad input, a missing key, the store away).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from adapters.audit_format import FormatError, format_instant
from adapters.audit_log import (
    LIST_LIMIT_MAX,
    AuditError,
    generate_key_file,
    key_fingerprint,
    open_checkpointer,
    public_key_bytes,
    signing_key,
)
from adapters.proof_verifier import VerificationError, load_public_key, verify_files
from adapters.settings import Settings

EXIT_FAILED = 1  # a proof or the log does not verify
EXIT_ERROR = 2  # bad input, missing key, store unavailable
# click's UsageError (typer ≥ 0.2x vendors click, so it is reached through typer's own class).
USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]


class OneLineErrors(TyperGroup):
    """Usage errors (a missing option, a bad value) as one line, not click's usage box."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except USAGE_ERROR as error:
            _fail(str(getattr(error, "format_message", error.__str__)()).replace("\n", " "))


class OneLineCommand(TyperCommand):
    """The same for a command's own parameters, wherever the command is mounted."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except USAGE_ERROR as error:
            _fail(str(getattr(error, "format_message", error.__str__)()).replace("\n", " "))


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Tamper-evident history: signed Merkle checkpoints, proofs, offline verification",
)

F = TypeVar("F", bound=Callable[..., Any])
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Overrides SLUICE_DATABASE_URL")
]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write here, not stdout")]
CheckpointSize = Annotated[
    int | None,
    typer.Option("--checkpoint", min=0, help="A checkpoint's tree size (default: the latest)"),
]


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line_errors(command: F) -> F:
    """Turns every exception of a command into one line on stderr and an exit status."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except VerificationError as error:
            _fail(f"does not verify: {error}", EXIT_FAILED)
        except (AuditError, FormatError) as error:
            _fail(str(error))
        except OSError as error:
            _fail(f"{getattr(error, 'filename', None) or ''} {error.strerror or error}".strip())
        except Exception as error:  # the store away, a bad URL, a bug: still one line
            _fail(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")

    return run  # type: ignore[return-value]


def _settings(database_url: str | None) -> Settings:
    return Settings(database_url=database_url) if database_url else Settings()


@contextmanager
def _opened(database_url: str | None, *, need_key: bool = False) -> Iterator[Any]:
    """The Checkpointer on the configured store (closed afterwards)."""
    from adapters.bootstrap import bootstrap, read_model

    settings = _settings(database_url)
    ledger = bootstrap(settings)
    view = read_model(settings)
    try:
        yield open_checkpointer(ledger, view, settings, need_key=need_key)
    finally:
        ledger.close()
        datastore = getattr(view, "datastore", None)
        if datastore is not None and hasattr(datastore, "close"):
            datastore.close()


def _emit(document: Any, output: Path | None) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def _instant(text: str | None) -> datetime | None:
    """ISO 8601 (a naive one is UTC) or unix seconds."""
    if text is None:
        return None
    try:
        value = (
            datetime.fromtimestamp(int(text), UTC)
            if text.isdigit()
            else datetime.fromisoformat(text)
        )
    except (ValueError, OverflowError, OSError):
        raise AuditError(f"--as-of: use ISO 8601 or unix seconds, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.command("checkpoint", cls=OneLineCommand)
@one_line_errors
def checkpoint(
    list_: Annotated[bool, typer.Option("--list", help="List checkpoints, newest first")] = False,
    limit: Annotated[
        int, typer.Option(min=1, max=LIST_LIMIT_MAX, help="how many, newest first")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: JSON")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Append the new events to the Merkle log and sign a checkpoint (prints it as JSON)."""
    with _opened(database_url, need_key=not list_) as checkpointer:
        if not list_:
            _emit(checkpointer.checkpoint().as_json(), None)
            return
        found = checkpointer.store.checkpoints(limit)
    if as_json:
        _emit([c.as_json() for c in found], None)
        return
    if not found:
        typer.echo("no checkpoints yet")
    for c in found:
        typer.echo(
            f"{c.tree_size:>12}  last position {c.last_position:>12}  "
            f"{format_instant(c.timestamp_us)}  root {c.root_hash.hex()}  key {c.key_id}"
        )


@app.command("prove", cls=OneLineCommand)
@one_line_errors
def prove(
    position: Annotated[int | None, typer.Option(min=1, help="An event's log position")] = None,
    account: Annotated[str | None, typer.Option(help="An account: its balance's events")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="With --account: ISO 8601 or unix seconds")
    ] = None,
    checkpoint_size: CheckpointSize = None,
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """A proof file: one event (--position), or every event behind an account's balances."""
    from adapters.audit_proofs import account_proof, inclusion_proof

    if (position is None) == (account is None):
        raise AuditError("give exactly one of --position or --account")
    if as_of is not None and account is None:
        raise AuditError("--as-of goes with --account")
    when = _instant(as_of)
    with _opened(database_url) as c:
        if position is not None:
            document = inclusion_proof(c.ledger, c.store, position, checkpoint_size)
        else:
            document = account_proof(c.ledger, c.store, str(account), when, checkpoint_size)
    _emit(document, output)


@app.command("consistency", cls=OneLineCommand)
@one_line_errors
def consistency(
    old: Annotated[int, typer.Argument(min=0, help="The older checkpoint's tree size")],
    new: Annotated[int, typer.Argument(min=0, help="The newer checkpoint's tree size")],
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """A proof file showing checkpoint NEW extends checkpoint OLD (RFC 9162 §2.1.4)."""
    from adapters.audit_proofs import consistency_proof

    with _opened(database_url) as c:
        document = consistency_proof(c.store, old, new)
    _emit(document, output)


@app.command("verify-proof", cls=OneLineCommand)
@one_line_errors
def verify_proof(
    proof: Annotated[Path, typer.Argument(help="A proof file (JSON)")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="The log's public key: PEM, raw or hex")
    ],
) -> None:
    """Verify a proof file offline: signatures, leaf encodings, inclusion and consistency."""
    for line in verify_files(proof, public_key):
        typer.echo(f"ok: {line}")
    typer.echo("proof verifies")


@app.command("verify-log", cls=OneLineCommand)
@one_line_errors
def verify_log(
    checkpoint_size: CheckpointSize = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Check signatures with this key (default: own key)"),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-read every event a checkpoint covers; name the first position that was altered."""
    from adapters.audit_proofs import verify_log as verify

    settings = _settings(database_url)
    key = (
        load_public_key(public_key.read_bytes())
        if public_key is not None
        else signing_key(settings).public_key()
    )
    with _opened(database_url) as c:
        report = verify(c.ledger, c.store, key, checkpoint_size)
    if not report.ok:
        where = f" (first bad position {report.first_bad_position})"
        _fail(report.describe() + (where if report.first_bad_position else ""), EXIT_FAILED)
    typer.echo(report.describe())


@app.command("export-public-key", cls=OneLineCommand)
@one_line_errors
def export_public_key(
    fmt: Annotated[str, typer.Option("--format", help="pem, raw (32 bytes) or hex")] = "pem",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The checkpoint signing key's public half, for auditors."""
    key = signing_key(_settings(database_url)).public_key()
    data = public_key_bytes(key, fmt)
    if output is not None:
        output.write_bytes(data)
        typer.echo(f"wrote {output} (key id {key_fingerprint(key)})", err=True)
    elif fmt == "raw":
        raise AuditError("--format raw writes binary: give --output FILE")
    else:
        sys.stdout.write(data.decode("ascii"))


@app.command("generate-key", cls=OneLineCommand)
@one_line_errors
def generate_key(path: Annotated[Path, typer.Argument(help="Where to write the key")]) -> None:
    """A new Ed25519 signing key in PEM (mode 0600); never overwrites a file."""
    key = generate_key_file(path)
    typer.echo(
        f"wrote {path} (key id {key_fingerprint(key.public_key())}):"
        f" set SLUICE_AUDIT_SIGNING_KEY_FILE={path}"
    )


def main() -> None:  # python -m adapters.audit_proofs_cli (the lead mounts `app` under audit)
    app()


if __name__ == "__main__":
    main()
