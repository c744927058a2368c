"""Engines for FINEWS_DATABASE_URL: the same behaviour on SQLite and PostgreSQL.

Only connection set-up lives here: URL defaults, SQLite pragmas, JSON that keeps Chinese
readable, and URLs with the password hidden for logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

DEFAULT_URL = "sqlite:///data/finews.db"


def database_url(url: str | URL | None = None) -> URL:
    """The URL to use: the argument, else FINEWS_DATABASE_URL, else the SQLite default.

    ``postgresql://`` means psycopg 3, the only PostgreSQL driver installed.
    """
    parsed = make_url(url or os.environ.get("FINEWS_DATABASE_URL") or DEFAULT_URL)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def redact(url: str | URL) -> str:
    """The URL as it may appear in logs and messages: password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database."""
    database = make_url(url).database or ""
    if database.startswith("file:"):  # a URI filename (?uri=true)
        database = database[len("file:") :].partition("?")[0]
    if database in ("", ":memory:"):
        return None
    return Path(database).expanduser()


def dump_json(value: Any) -> str:
    """JSON with Chinese as characters, not \\u escapes, so raw SQL stays readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys as on PostgreSQL; WAL so readers do not block the crawl;
    # NORMAL sync is safe under WAL; wait for a second writer instead of failing.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """An engine for the database; for SQLite the file's directory is created on demand."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql":
        # A crawl can sit idle for minutes; test the pooled connection before each batch.
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(parsed, json_serializer=dump_json, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine
