"""Stripe's form encoding (`a[b][c]=v`, `a[0]=v`, `a[]=v`, booleans as `true`/`false`) and typed
reads of the decoded parameters with Stripe's validation errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from stripe_sandbox.errors import bad_param

_KEY_PART = re.compile(r"\[([^\]]*)\]")
LIST_INDEX_MAX = 1000
AMOUNT_MAX = 99_999_999  # eight digits, PaymentIntentCreateParams.amount
TRUE_WORDS = {"true": True, "false": False}


def _split_key(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_KEY_PART.findall("[" + rest)]


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested dict from decoded form pairs; dicts whose keys are all indices become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _split_key(key)
        node = root
        for i, part in enumerate(parts):
            name = str(len(node)) if part == "" else part
            if i == len(parts) - 1:
                node[name] = value
                break
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise bad_param(f"Invalid hash: {key}", parts[0])
            node = child
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() and int(key) < LIST_INDEX_MAX for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


class Params:
    """Typed reads of one level of decoded parameters; `path` names nested params in errors."""

    def __init__(self, data: dict[str, Any] | None = None, path: str = "") -> None:
        self.data = data or {}
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}[{key}]" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def reject_unknown(self, allowed: Iterable[str]) -> None:
        known = set(allowed) | {"expand"}
        for key in self.data:
            if key not in known:
                name = self._name(key)
                raise bad_param(f"Received unknown parameter: {name}", name, "parameter_unknown")

    def str(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                name = self._name(key)
                raise bad_param(f"Missing required param: {name}.", name, "parameter_missing")
            return default
        if not isinstance(value, str):
            name = self._name(key)
            raise bad_param(f"Invalid string: {name}", name)
        return value

    def required_str(self, key: str) -> str:
        value = self.str(key, required=True)
        return value if value is not None else ""  # str(required=True) raised on None

    def choice(self, key: str, choices: Iterable[str], default: str | None = None) -> str | None:
        value = self.str(key, default=default)
        options = list(choices)
        if value is not None and value not in options:
            name = self._name(key)
            raise bad_param(f"Invalid {name}: must be one of {', '.join(options)}", name)
        return value

    def int(
        self,
        key: str,
        *,
        required: bool = False,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        raw = self.str(key, required=required)
        if raw is None:
            return default
        name = self._name(key)
        try:
            value = int(raw)
        except ValueError:
            raise bad_param(f"Invalid integer: {raw}", name, "parameter_invalid_integer") from None
        if minimum is not None and value < minimum:
            raise bad_param(
                f"Invalid {name}: must be at least {minimum}", name, "parameter_invalid_integer"
            )
        if maximum is not None and value > maximum:
            raise bad_param(
                f"Invalid {name}: must be at most {maximum}", name, "parameter_invalid_integer"
            )
        return value

    def required_int(self, key: str, *, minimum: int | None = None) -> int:
        value = self.int(key, required=True, minimum=minimum)
        return value if value is not None else 0  # int(required=True) raised on None

    def amount(self, key: str = "amount", *, required: bool = True) -> int | None:
        return self.int(key, required=required, minimum=1, maximum=AMOUNT_MAX)

    def bool(self, key: str, default: bool = False) -> bool:
        raw = self.str(key)
        if raw is None:
            return default
        if raw.lower() not in TRUE_WORDS:
            name = self._name(key)
            raise bad_param(f"Invalid boolean: {raw}", name)
        return TRUE_WORDS[raw.lower()]

    def currency(self, key: str = "currency", *, required: bool = True) -> str | None:
        value = self.str(key, required=required)
        if value is None:
            return None
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            name = self._name(key)
            raise bad_param(f"Invalid currency: {value}", name)
        return value.lower()

    def nested(self, key: str) -> Params:
        value = self.data.get(key)
        if value is None or value == "":
            return Params({}, self._name(key))
        if not isinstance(value, dict):
            name = self._name(key)
            raise bad_param(f"Invalid hash: {name}", name)
        return Params(value, self._name(key))

    def str_list(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value] if value else []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            name = self._name(key)
            raise bad_param(f"Invalid array: {name}", name)
        return list(value)

    def metadata(self, key: str = "metadata") -> dict[str, str] | None:
        """Metadata as sent: `None` when absent, `{}` when unset with an empty string; a key set
        to `""` deletes that key (see `merge_metadata`)."""
        value = self.data.get(key)
        if value is None:
            return None
        if value == "":
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            name = self._name(key)
            raise bad_param(f"Invalid hash: {name}", name)
        return dict(value)

    def expand(self) -> list[str]:
        return self.str_list("expand") or []


def merge_metadata(current: dict[str, str], update: dict[str, str] | None) -> dict[str, str]:
    if update is None:
        return current
    if not update:
        return {}
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
