"""Upgrade the database at FINEWS_DATABASE_URL to the newest schema (``make migrate``).

    python -m schema.migrate                 upgrade to head
    python -m schema.migrate --check         say whether the database is current; exit 1 if not
    python -m schema.migrate --url URL REV   upgrade another database to revision REV

Other Alembic commands: ``.venv/bin/alembic -c schema/alembic.ini history|downgrade|check``.

The pipelines never migrate behind the operator's back: they refuse to run against an
outdated database (``require_current``) unless FINEWS_AUTO_MIGRATE is set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import URL

from schema.db import database_url, make_engine, redact

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
HOW_TO_MIGRATE = "run `make migrate` (python -m schema.migrate) with the same FINEWS_DATABASE_URL"

logger = logging.getLogger(__name__)


class SchemaOutdated(RuntimeError):
    """The database is not at the schema this code writes."""


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


def upgrade(url: str | URL | None = None, revision: str = "head") -> None:
    """Upgrade the database to ``revision``; downgrades go through the alembic CLI."""
    config = alembic_config(url)
    logger.info("Migrating %s to %s", redact(config.attributes["url"]), revision)
    command.upgrade(config, revision)


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
