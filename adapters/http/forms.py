"""Form-encoded bodies, as Stripe takes them: ``amount=100&split[0][account]=acct_1&a[b]=c``.

``FormBodies`` turns an ``application/x-www-form-urlencoded`` body of a POST to an API route into
the JSON the route's model reads: brackets nest (``a[b]=c``, ``a[0]=x``, ``a[]=x``), and each
value is read as the model's field wants it (``"100"`` an integer, ``"true"`` a boolean) by
pydantic's lax mode. Whatever does not fit stays a string, so the route's strict model refuses
it with its usual 400 envelope. The body was already bounded by ``errors.BodyLimit``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.auth import match_route
from adapters.http.errors import INVALID_REQUEST, BodyTooLarge, envelope

FORM_TYPE = "application/x-www-form-urlencoded"
FORM_FIELDS_MAX = 1_000  # pairs in one body (a 50-part split is ~150)
LIST_INDEX_MAX = 1_000
CHUNKS_MAX = 100_000  # ASGI messages of one body
_KEY_PART = re.compile(r"\[([^\]]*)\]")


def _split_key(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_KEY_PART.findall("[" + rest)]


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested dicts from decoded pairs; a dict whose keys are all indices becomes a list. A key
    used both as a value and as a parent keeps the value (the model then refuses the body)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        node = root
        parts = _split_key(key)
        for i, part in enumerate(parts):
            name = str(len(node)) if part == "" else part
            if i == len(parts) - 1:
                node[name] = value
                break
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                break
            node = child
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() and int(key) < LIST_INDEX_MAX for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def _body_model(route: APIRoute) -> type[BaseModel] | None:
    for field in route.dependant.body_params:
        annotation = getattr(field, "type_", None) or getattr(field.field_info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
    return None


def form_to_json(raw: bytes, model: type[BaseModel] | None) -> bytes:
    """The JSON body a form body stands for (typed by ``model`` where the values fit it)."""
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    data = parse_pairs(pairs[:FORM_FIELDS_MAX])
    if len(pairs) > FORM_FIELDS_MAX:
        data["__too_many_fields__"] = True  # the closed model refuses it: a 400, not a cut
    if model is not None:
        try:
            typed = model.model_validate(data, strict=False)
            data = typed.model_dump(mode="json", exclude_unset=True, by_alias=True)
        except ValidationError:
            pass  # the route's strict model says what is wrong, with its own error codes
    return json.dumps(data).encode()


class FormBodies:
    """ASGI middleware: form-encoded POST bodies of the API's routes become JSON bodies."""

    def __init__(self, app: ASGIApp, routes: Sequence[APIRoute]) -> None:
        self.app = app
        self.routes = list(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not _is_form(scope):
            await self.app(scope, receive, send)
            return
        found = match_route(self.routes, scope)
        if found is None or found[0].name == "stripe_webhook":  # webhooks are signed JSON
            await self.app(scope, receive, send)
            return
        try:
            raw = await _read(receive)
        except BodyTooLarge:
            too_large = envelope(413, INVALID_REQUEST, "body_too_large", "the body is too large")
            await too_large(scope, receive, send)
            return
        body = form_to_json(raw, _body_model(found[0]))
        headers = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the disconnect, whenever it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


def _is_form(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower() == FORM_TYPE.encode()
    return False


async def _read(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    for _ in range(CHUNKS_MAX):  # errors.BodyLimit also stops the body at its size limit
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
