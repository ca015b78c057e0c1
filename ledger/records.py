"""CommandRecord: the first acceptance of an idempotency key, its parameters' fingerprint and
its result. A repeat with the same fingerprint returns the result; a different one is refused."""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from ledger.events import When
from ledger.ids import aggregate_id, command_record_id


class CommandRecord(Aggregate):
    class Accepted(Aggregate.Created):
        idempotency_key: str
        command: str
        fingerprint: str
        result: dict[str, str]

        def apply(self, record: CommandRecord) -> None:
            record.idempotency_key = self.idempotency_key
            record.command = self.command
            record.fingerprint = self.fingerprint
            record.result = dict(self.result)

    idempotency_key: str
    command: str
    fingerprint: str
    result: dict[str, str]

    def __init__(self) -> None:
        """State comes from the created event's apply(); annotations above are for typing."""

    @classmethod
    def accept(
        cls,
        idempotency_key: str,
        command: str,
        fingerprint: str,
        result: dict[str, str],
        at: object,
    ) -> CommandRecord:
        return cls._create(
            cls.Accepted,
            id=command_record_id(idempotency_key),
            idempotency_key=idempotency_key,
            command=command,
            fingerprint=fingerprint,
            result=result,
            timestamp=at,
        )


class IdClaim(Aggregate):
    """Claims a client-chosen id that has no aggregate of its own (a top-up's ``tu_`` id), so a
    second use is refused instead of booking a second journal entry under the same id."""

    class Claimed(Aggregate.Created):
        kind: str
        object_id: str

    def __init__(self) -> None:
        """Nothing to hold: existing is the point."""

    @classmethod
    def claim(cls, kind: str, object_id: str, when: When) -> IdClaim:
        return cls._create(
            cls.Claimed,
            id=aggregate_id("claim", kind, object_id),
            kind=kind,
            object_id=object_id,
            timestamp=when.recorded_at,
        )
