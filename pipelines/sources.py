"""The backfill's file ledger: which post files were read, and what they held then.

``load`` reads every ``source_files`` row once per run (path -> ``FileRecord``) so the
archive spider can pass over files that have not changed since; ``write`` upserts rows
inside the store's own transactions (``pipelines.store``), so a file is recorded in the
same transaction as what it produced: its article, or its reject. No Scrapy here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from pipelines.upsert import insert_for
from schema.models import SourceFile

SOURCE_FILES: Table = SourceFile.__table__  # type: ignore[assignment]

# source_files.status: the file's item went to storage, or a rejects row says why not.
ARTICLE = "article"
REJECTED = "rejected"

_UPDATED = ("size", "mtime_ns", "sha256", "info_code", "status", "read_at", "run_id")


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A ``source_files`` row, without its path (the key it is found by)."""

    size: int
    mtime_ns: int
    sha256: str
    info_code: str | None
    status: str


def load(conn: Connection) -> dict[str, FileRecord]:
    """Every recorded file by path."""
    columns = SOURCE_FILES.c
    query = select(
        columns.path,
        columns.size,
        columns.mtime_ns,
        columns.sha256,
        columns.info_code,
        columns.status,
    )
    return {path: FileRecord(*rest) for path, *rest in conn.execute(query)}


def write(
    conn: Connection, rows: Sequence[dict[str, Any]], *, run_id: int | None, now: datetime
) -> None:
    """Upsert ``rows`` (path, size, mtime_ns, sha256, info_code, status) read by ``run_id``."""
    if not rows:
        return
    by_path = {row["path"]: {**row, "run_id": run_id, "read_at": now} for row in rows}
    stmt = insert_for(conn, SOURCE_FILES)
    stmt = stmt.on_conflict_do_update(
        index_elements=["path"], set_={c: stmt.excluded[c] for c in _UPDATED}
    )
    conn.execute(stmt, list(by_path.values()))
