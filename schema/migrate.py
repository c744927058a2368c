"""Upgrade the database at FINEWS_DATABASE_URL to the newest schema (``make migrate``).

    python -m schema.migrate                 upgrade to head
    python -m schema.migrate --check         say whether the database is current; exit 1 if not
    python -m schema.migrate --url URL REV   upgrade another database to revision REV

Other Alembic commands: ``.venv/bin/alembic -c schema/alembic.ini history|downgrade|check``.

The pipelines never migrate behind the operator's back: they refuse to run against an
outdated database (``require_current``) unless FINEWS_AUTO_MIGRATE is set.

Checking and changing the schema happen under one lock per database (``schema_lock``): a
file lock beside a SQLite file, an advisory lock on PostgreSQL. Of two first runs on a blank
database, one creates the schema and the other waits, then finds it at head.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from schema.db import database_url, make_engine, redact, sqlite_file

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
HOW_TO_MIGRATE = "run `make migrate` (python -m schema.migrate) with the same FINEWS_DATABASE_URL"
LOCK_KEY = 0x66696E657773  # "finews": the PostgreSQL advisory lock (per database) of its schema
LOCK_TIMEOUT = 120.0  # seconds to wait for another process's migration before giving up
LOCK_NOTICE = 2.0  # seconds of waiting before saying what for
LOCK_POLL = 0.05

logger = logging.getLogger(__name__)


class SchemaOutdated(RuntimeError):
    """The database is not at the schema this code writes."""


class SchemaLocked(SchemaOutdated):
    """Another process held the schema lock (creating or upgrading the schema) too long."""


def alembic_config(url: str | URL | None = None) -> Config:
    """Alembic's configuration for ``url`` (default: FINEWS_DATABASE_URL)."""
    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = database_url(url)
    config.attributes["configure_logger"] = False
    return config


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def is_blank(engine: Engine) -> bool:
    """True for a database with no tables at all: creating the schema there loses nothing."""
    return not inspect(engine).get_table_names()


def require_current(engine: Engine) -> None:
    """Raise SchemaOutdated, saying what to run, unless the database is at head."""
    current, head = current_revisions(engine), head_revisions()
    if current == head:
        return
    where = redact(engine.url)
    if not current:
        state = "has no finews schema (never migrated)"
    elif current - head and not head - current:
        state = f"is at {sorted(current)}, newer than this code's {sorted(head)}"
    else:
        state = f"is at {sorted(current)}, not at the newest revision {sorted(head)}"
    raise SchemaOutdated(f"The database {where} {state}: {HOW_TO_MIGRATE}.")


def lock_file(url: str | URL) -> Path | None:
    """The file locked beside a SQLite database while its schema changes; None in memory."""
    path = sqlite_file(database_url(url))
    return None if path is None else path.with_name(path.name + ".migrate.lock")


def _wait(try_lock: Callable[[], bool], what: str) -> None:
    """Call ``try_lock`` until it returns True; give up after LOCK_TIMEOUT seconds."""
    started, told = time.monotonic(), False
    while not try_lock():
        waited = time.monotonic() - started
        if waited >= LOCK_TIMEOUT:
            raise SchemaLocked(
                f"Gave up after {waited:.0f} s waiting for {what}: another process held it "
                "all that time, creating or upgrading the schema (or hanging while it did)."
            )
        if not told and waited >= LOCK_NOTICE:
            logger.warning("Waiting for %s: another process is creating or upgrading the "
                           "schema (giving up after %.0f s)", what, LOCK_TIMEOUT)  # fmt: skip
            told = True
        time.sleep(LOCK_POLL)


@contextmanager
def schema_lock(url: str | URL | None = None) -> Iterator[None]:
    """Hold the database's schema lock: check and change the schema only inside it.

    SQLite: ``fcntl.flock`` on ``<database>.migrate.lock`` (none for ``:memory:``).
    PostgreSQL: ``pg_advisory_lock(LOCK_KEY)`` on a connection of its own, held throughout.
    Waits at most LOCK_TIMEOUT s, then raises SchemaLocked.
    """
    parsed = database_url(url)
    where = redact(parsed)
    if parsed.get_backend_name() == "postgresql":
        engine = make_engine(parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                query = text("SELECT pg_try_advisory_lock(:key)").bindparams(key=LOCK_KEY)
                what = f"the schema lock of {where} (pg_advisory_lock({LOCK_KEY}))"
                _wait(lambda: bool(conn.execute(query).scalar()), what)
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        finally:
            engine.dispose()
        return
    path = lock_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:

        def try_lock() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        _wait(try_lock, f"the schema lock of {where} ({path})")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(
    url: str | URL | None = None, revision: str = "head", *, blank_only: bool = False
) -> bool:
    """Upgrade the database to ``revision`` under the schema lock; with ``blank_only``, only a
    database without tables. True if it ran. Downgrades go through the alembic CLI."""
    config = alembic_config(url)
    where = config.attributes["url"]
    with schema_lock(where):
        if blank_only:
            engine = make_engine(where)
            try:
                if not is_blank(engine):
                    return False
            finally:
                engine.dispose()
        logger.info("Migrating %s to %s", redact(where), revision)
        command.upgrade(config, revision)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schema.migrate", description="Upgrade the finews database schema."
    )
    parser.add_argument("revision", nargs="?", default="head", help="target revision (head)")
    parser.add_argument("--url", help="database URL (default: FINEWS_DATABASE_URL)")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if outdated")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url = database_url(args.url)
    if args.check:
        engine = make_engine(url)
        try:
            with schema_lock(url):  # a migration under way: wait for its outcome
                require_current(engine)
        except SchemaOutdated as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            engine.dispose()
        print(f"{redact(url)} is at the newest schema.")
        return 0
    upgrade(url, args.revision)
    engine = make_engine(url)
    try:
        print(f"{redact(url)} is at {', '.join(sorted(current_revisions(engine))) or 'base'}.")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
