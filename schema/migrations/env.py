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

config = context.config
# Programmatic callers keep their own logging; the CLI gets the ini's.
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
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
