"""Alembic environment: migrates FINEWS_DATABASE_URL, in batch mode on SQLite.

Called by the alembic CLI (``-c schema/alembic.ini``) and by ``schema.migrate``, which
passes the URL in ``config.attributes["url"]``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from schema.db import database_url, make_engine
from schema.models import Base
from schema.search import TRIGRAM_INDEXES, VIEWS, is_index_table

config = context.config
# Programmatic callers keep their own logging; the CLI gets the ini's.
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _in_models(name: str | None, type_: str, _parents: object) -> bool:
    """False for what migration 0006 made for analysts and search (views, the SQLite FTS
    table and its shadow tables, PostgreSQL's trigram indexes): not models, never dropped."""
    if type_ == "table":
        return not (name in VIEWS or is_index_table(name or ""))
    return not (type_ == "index" and name in TRIGRAM_INDEXES)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        include_name=_in_models,
        # SQLite cannot ALTER most things: Alembic copies the table instead.
        render_as_batch=kwargs.pop("dialect_name") == "sqlite",
        **kwargs,
    )


def run_offline() -> None:
    url = database_url(config.attributes.get("url"))
    _configure(url=url, literal_binds=True, dialect_name=url.get_backend_name())
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # Batch mode recreates tables; SQLite must not enforce foreign keys meanwhile.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    _configure(connection=connection, dialect_name=connection.dialect.name)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(config.attributes.get("url"))
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
