"""What ``finews browse`` (``analysis.browse``) gives Datasette: the metadata
(``metadata.py``: descriptions, hidden tables, canned queries) and the plugin
(``plugin.py``: search through ``schema.search``).

Only ``plugin.py`` imports Datasette, so the rest loads without it. Nothing here writes to
the database.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

BUSY_TIMEOUT = 30.0  # seconds: a reader waits for WAL recovery rather than failing


def read_only_engine(path: str | Path) -> Engine:
    """An engine that can only read the SQLite file at ``path`` (``mode=ro``).

    Not ``schema.db.make_engine``: its pragmas set the journal mode, which a read-only
    connection must not try. A database in WAL mode (the default here) is read with its
    ``-wal`` file, so what a running crawl has committed is seen at once.
    """
    database = "file:" + quote(str(Path(path).resolve()))
    url = URL.create("sqlite", database=database, query={"mode": "ro", "uri": "true"})
    return create_engine(url, connect_args={"timeout": BUSY_TIMEOUT})
