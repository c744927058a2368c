"""``finews browse``: the SQLite database in Datasette, read-only, on a local port.

Datasette serves the file at FINEWS_DATABASE_URL (or ``--url``) with the metadata of
``analysis.datasette.metadata`` (what every table, view and column holds; the search index
hidden; the canned queries ``search`` and the worked queries) and the plugin of
``analysis.datasette.plugin`` (search through ``schema.search``). It runs in this process
until Ctrl-C.

The file is opened read-only (``mode=ro``), not as immutable: the database is in WAL mode,
and an immutable open would not read what sits in the ``-wal`` file, so a crawl writing
meanwhile is seen as it commits. Nothing here writes to the database.

PostgreSQL is not browsed (Datasette reads SQLite files): the command says what to use
instead. That, a missing file, an outdated schema or a missing Datasette: exit status 1.

    python -m analysis.browse [--url URL] [--host HOST] [--port PORT] [--open]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import text
from sqlalchemy.engine import URL

from analysis.datasette import read_only_engine
from analysis.datasette.metadata import SEARCH_QUERY, build_metadata
from schema.db import database_url, redact, sqlite_file
from schema.migrate import SchemaOutdated, require_current

PROG = "finews browse"
OK, FAILED = 0, 1  # as every finews command: 1 for a problem the user can fix
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
# Search runs in a Python function that Datasette's time limit (1 s by default) cannot stop,
# but a query that outlasts the limit is cut off once SQLite runs on: a 1-character search
# takes ~0.8 s at 100,000 articles (schema/README.md). A local, read-only server can wait.
SQL_TIME_LIMIT_MS = 10_000
INSTALL = "`make browse` installs it (or: .venv/bin/pip install -e '.[browse]')"
EXAMPLE_QUERY = (
    "SELECT published_at, title, symbol FROM article_stocks "
    "WHERE symbol = '600160.SH' ORDER BY published_at DESC LIMIT 20"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="the SQLite database's URL (default: FINEWS_DATABASE_URL, else "
        "sqlite:///data/finews.db)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    parser.add_argument("--open", action="store_true", help="open it in a web browser")


def run(args: argparse.Namespace) -> int:
    url = database_url(args.url)
    if url.get_backend_name() != "sqlite":
        print(not_sqlite(url), file=sys.stderr)
        return FAILED
    path = sqlite_file(url)
    if path is None:
        message = f"{PROG}: {redact(url)} is not a database file: give a sqlite:/// URL of one."
        print(message, file=sys.stderr)
        return FAILED
    if not path.is_file():
        print(
            f"{PROG}: there is no database at {path}. `make demo` builds one from the bundled "
            "articles; `make crawl` or `make backfill` fill it from the site.",
            file=sys.stderr,
        )
        return FAILED
    try:
        import datasette  # noqa: F401
    except ImportError:
        print(f"{PROG}: Datasette is not installed: {INSTALL}.", file=sys.stderr)
        return FAILED
    engine = read_only_engine(path)
    try:
        require_current(engine)
        tables, views = names(engine)
    except SchemaOutdated as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return FAILED
    finally:
        engine.dispose()

    database = path.stem  # the name Datasette gives it, and its URLs
    metadata = build_metadata(database, tables, views, worked_queries())
    port = args.port or free_port(args.host)
    base = f"http://{args.host}:{port}/{quote(database)}"
    print(
        f"{PROG}: {path} at {base} (read-only); search: {base}/{SEARCH_QUERY}. Ctrl-C stops.",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="finews-browse-") as tmp:
        metadata_file = Path(tmp) / "metadata.json"
        metadata_file.write_text(json.dumps(metadata, ensure_ascii=False), encoding="utf-8")
        return serve(path, metadata_file, args.host, port, args.open)


def serve(path: Path, metadata_file: Path, host: str, port: int, open_browser: bool) -> int:
    """Datasette's own ``serve`` command, in this process, with the finews plugin."""
    import click
    from datasette.cli import cli
    from datasette.plugins import pm

    from analysis.datasette import plugin

    if not pm.is_registered(plugin):
        pm.register(plugin, name="finews")
    argv = ["serve", str(path), "--metadata", str(metadata_file), "--host", host]
    argv += ["--port", str(port), "--setting", "sql_time_limit_ms", str(SQL_TIME_LIMIT_MS)]
    if open_browser:
        argv.append("--open")
    try:
        cli.main(argv, prog_name="datasette", standalone_mode=False)
    except KeyboardInterrupt:
        pass  # uvicorn has shut down; Ctrl-C is how this command ends
    except click.ClickException as exc:
        print(f"{PROG}: {exc.format_message()}", file=sys.stderr)
        return FAILED
    print(f"{PROG}: stopped.", file=sys.stderr)
    return OK


def worked_queries() -> list[Any]:
    """The guide's worked queries (``analysis.worked``); none, said once, if it cannot be read:
    browsing goes on without them."""
    try:
        from analysis.worked import worked_queries as read_guide

        return read_guide()
    except (ImportError, OSError, ValueError) as exc:  # ValueError: analysis.worked.GuideError
        print(f"{PROG}: the worked queries are left out: {exc}", file=sys.stderr)
        return []


def not_sqlite(url: URL) -> str:
    """What to do instead, for a database Datasette cannot open (PostgreSQL)."""
    # Without the password: psql asks for it (or reads ~/.pgpass, PGPASSWORD).
    psql = URL.create(
        url.get_backend_name(), url.username, None, url.host, url.port, url.database, url.query
    )
    return (
        f"{PROG}: Datasette reads SQLite files only, and the database is {redact(url)}.\n"
        "Query it with psql instead; the views article_stocks, daily_outlet_counts and "
        "run_health are there as on SQLite (schema/README.md):\n\n"
        f"    psql '{psql.render_as_string(hide_password=False)}' -c \"{EXAMPLE_QUERY}\"\n\n"
        "`finews search WORD` searches titles and bodies, `finews report` sums up the last "
        "days, and `finews export --format csv OUT` writes the articles to files.\n"
        "Datasette browses a SQLite database: --url sqlite:///data/finews.db (`make demo` "
        "builds one)."
    )


def names(engine) -> tuple[list[str], list[str]]:
    """The database's tables and views."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view')")
        ).all()
    return [n for t, n in rows if t == "table"], [n for t, n in rows if t == "view"]


def free_port(host: str) -> int:
    """A port free on ``host`` now (Datasette binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.browse", description="Browse the database in Datasette."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
