"""What the actors work with: the Ledger, the read-model store, the Stripe gateway and a
PostgreSQL advisory lock. Built lazily from ``Settings()`` (the environment) in a worker
process, or installed explicitly with ``set_context`` (embedded mode, tests)."""

from __future__ import annotations

import threading

from adapters.jobs import Context, build_context, conninfo, is_postgres

__all__ = ["Context", "build_context", "conninfo", "get_context", "is_postgres", "set_context"]

_holder: dict[str, Context] = {}
_context_lock = threading.Lock()


def get_context() -> Context:
    with _context_lock:
        if "current" not in _holder:
            _holder["current"] = build_context()
        return _holder["current"]


def set_context(context: Context | None) -> Context | None:
    """Installs ``context`` for the actors of this process; returns the previous one."""
    with _context_lock:
        previous = _holder.pop("current", None)
        if context is not None:
            _holder["current"] = context
        return previous
