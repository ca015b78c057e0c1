"""Sluice's versioned schema: plain SQL files, one directory per dialect, applied in file-name
order by yoyo-migrations (``sluice db migrate``; the runner is ``adapters/schema.py``).

- ``NNNN.what.sql``: a migration's id is its file name without ``.sql``; a new one starts with
  a comment saying what it is for and ``-- depends: <previous id>``.
- The PostgreSQL and SQLite files of one version make the same tables; they differ only where
  the dialects do. Table names are unqualified: on PostgreSQL the runner sets ``search_path`` to
  the store's ``?schema=``.
- Applied files are frozen: the database records their ids, not their text.

This package holds data only (no imports), so any layer may locate it.
"""

from __future__ import annotations

from pathlib import Path

DIALECTS = ("postgresql", "sqlite")


def directory(dialect: str) -> Path:
    """The migrations of ``dialect`` (``postgresql`` or ``sqlite``)."""
    if dialect not in DIALECTS:
        raise ValueError(f"no migrations for {dialect!r}: use one of {', '.join(DIALECTS)}")
    return Path(__file__).parent / dialect
