"""Helpers for the HTTP API tests: a real uvicorn server in a thread, a stdlib client, CSV."""

from __future__ import annotations

import csv
import http.client
import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from adapters.bootstrap import read_model
from adapters.http.server import serving
from adapters.keys import create_key
from adapters.settings import Settings

SERVER_START_TIMEOUT_S = 15
AUTO = object()  # "generate an Idempotency-Key"


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a free local port; yields ``host:port``."""
    with serving(app) as base_url:
        yield base_url.removeprefix("http://")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def error(self) -> dict[str, Any]:
        body = self.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"type", "code", "message", "param"}, body
        return dict(body["error"])

    def rows(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.text)))


class Client:
    def __init__(self, address: str, key: str | None = None) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.key = key

    def as_key(self, key: str | None) -> Client:
        return Client(f"{self.host}:{self.port}", key)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: Any = None,
        content_type: str = "application/json",
    ) -> Reply:
        sent = {"Accept": "application/json"}
        if self.key is not None:
            sent["Authorization"] = f"Bearer {self.key}"
        if idempotency_key is AUTO:
            idempotency_key = f"test-{uuid.uuid4().hex}"
        if idempotency_key is not None:
            sent["Idempotency-Key"] = str(idempotency_key)
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = content_type
        sent |= headers or {}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8")
            got = {k.lower(): v for k, v in response.getheaders()}
            return Reply(response.status, got, text)
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        kwargs.setdefault("idempotency_key", AUTO)
        return self.request("POST", path, body=body, **kwargs)


def new_key(settings: Settings, role: str) -> str:
    view = read_model(settings)
    try:
        return create_key(view, role)[1]
    finally:
        view.datastore.close()


def csv_equals_json(rows: list[dict[str, str]], objects: list[dict[str, Any]]) -> None:
    """Parses CSV cells back (integers, JSON for nested values, '' for null) and compares."""
    assert len(rows) == len(objects)
    for row, obj in zip(rows, objects, strict=True):
        assert list(row) == list(obj), (list(row), list(obj))
        for name, value in obj.items():
            cell = row[name]
            if value is None:
                assert cell == "", (name, cell)
            elif isinstance(value, bool):
                assert cell == str(value), (name, cell)
            elif isinstance(value, int):
                assert int(cell) == value and cell == str(value), (name, cell, value)
            elif isinstance(value, dict | list):
                assert json.loads(cell) == value, (name, cell, value)
            else:
                assert cell == str(value), (name, cell, value)
