"""Views for analysts (article_stocks, daily_outlet_counts, run_health) and the full-text
search index over article titles and bodies (``schema.search`` queries it)

- SQLite: an FTS5 table ``articles_fts`` with the ``trigram`` tokenizer, external content
  on ``articles`` through the view ``articles_fts_source`` (the text is not stored twice),
  its vocabulary ``articles_fts_terms`` (fts5vocab), kept in step by triggers on every
  INSERT, DELETE and UPDATE of the title or body, so that every writer (crawl, backfill,
  revision, merge of copies, a hand-written UPDATE) updates it: new text waits in
  ``articles_fts_pending`` (rowids) until 500 articles go into the index in one statement.
  The upgrade indexes the articles already stored.
- PostgreSQL: the ``pg_trgm`` extension and a GIN trigram index on ``title`` and one on
  ``body_text``; PostgreSQL maintains them itself.

Why trigrams, and which query lengths what serves: ``schema/README.md``, "Full-text
search". The views and the search objects are not in the models: ``migrations/env.py``
keeps autogenerate from proposing to drop them. The downgrade removes all of it (on
PostgreSQL also ``pg_trgm``, unless something else in the database uses it).

The view definitions are frozen here as this revision creates them. A later revision that
rebuilds a table with batch mode on SQLite must drop the views that read it first (SQLite
refuses to rename a table while a view names a missing one), and one that rebuilds
``articles`` loses the triggers with the old table: it must create them again and run the
FTS ``rebuild``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One row per article × security; secid is Eastmoney's own id (1.600160) for joins with
# other Eastmoney data. `primary` is a reserved word: is_primary, as in stock_mentions.
ARTICLE_STOCKS = """
CREATE VIEW article_stocks AS
SELECT a.info_code, a.published_at, a.title, a.outlet,
       s.symbol, s.name, s.kind, s.is_primary, s.mentions,
       s.market || '.' || s.code AS secid
FROM stock_mentions s JOIN articles a ON a.info_code = s.info_code
"""
# The day is the Beijing calendar day on both: SQLite's date() reads the stored offset
# and returns UTC, hence +8 hours; PostgreSQL's INTERVAL zone is east-positive (ISO), a
# fixed +08:00 like schema.types.BEIJING.
BEIJING_DAY = {
    "sqlite": "date(published_at, '+8 hours')",
    "postgresql": "CAST(published_at AT TIME ZONE INTERVAL '+08:00' AS date)",
}
DAILY_OUTLET_COUNTS = """
CREATE VIEW daily_outlet_counts AS
SELECT {day} AS day, outlet, count(*) AS articles
FROM articles
GROUP BY {day}, outlet
ORDER BY day DESC, articles DESC, outlet
"""
# Seconds from start to finish, to the millisecond; NULL while a run has not finished.
DURATION = {
    "sqlite": "round((julianday(finished_at) - julianday(started_at)) * 86400, 3)",
    "postgresql": "CAST(round(CAST(EXTRACT(EPOCH FROM finished_at - started_at) AS numeric), 3)"
    " AS double precision)",
}
RUN_HEALTH = """
CREATE VIEW run_health AS
SELECT id, job, spider, mode, status, close_reason, exit_status,
       started_at, finished_at, {duration} AS duration_s,
       seen, stored, updated, unchanged, duplicates, rejected, skipped, errors, host, pid
FROM crawl_runs
ORDER BY started_at DESC, id DESC
"""
VIEWS = ("run_health", "daily_outlet_counts", "article_stocks")

# SQLite. The index reads the text through a view that ends every title and body with a
# newline, so that a 2-character word at the very end still starts a trigram ("茅台\n"):
# then every article holding a 2-character word holds a trigram starting with it, and
# the vocabulary (articles_fts_terms) lists those. columnsize=0: no per-row sizes, which
# only ranking (bm25) would read.
FTS_SOURCE = """
CREATE VIEW articles_fts_source AS
SELECT rowid AS article_rowid, title || char(10) AS title, body_text || char(10) AS body_text
FROM articles
"""
FTS_TABLE = """
CREATE VIRTUAL TABLE articles_fts USING fts5(
    title, body_text, content='articles_fts_source', content_rowid='article_rowid',
    tokenize='trigram', columnsize=0
)
"""
FTS_TERMS = "CREATE VIRTUAL TABLE articles_fts_terms USING fts5vocab(articles_fts, 'row')"
# A trigger that writes to FTS5 makes it write a segment per row (FTS5 3.40 flushes at
# every statement savepoint, and a statement with triggers has one): the pipelines stored
# ~1,000-1,300 articles/s instead of ~3,000. So new text waits in articles_fts_pending
# and goes into the index FLUSH_AT articles at a time, in one statement; schema.search
# scans what waits.
FLUSH_AT = 500
FTS_PENDING = """
CREATE TABLE articles_fts_pending (article_rowid INTEGER PRIMARY KEY)
"""
# An external-content index must be told the old text to delete exactly what it indexed;
# text still waiting was never indexed. An article is in the index or waiting, never both.
# (No INSERT OR IGNORE: an UPSERT's own conflict handling overrides a trigger's OR clause.)
DELETE_INDEXED = """
    INSERT INTO articles_fts (articles_fts, rowid, title, body_text)
    SELECT 'delete', old.rowid, old.title || char(10), old.body_text || char(10)
    WHERE NOT EXISTS (SELECT 1 FROM articles_fts_pending WHERE article_rowid = old.rowid);
"""
FTS_TRIGGERS = {
    "articles_fts_insert": """
CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
    INSERT INTO articles_fts_pending (article_rowid) VALUES (new.rowid);
END
""",
    "articles_fts_delete": f"""
CREATE TRIGGER articles_fts_delete AFTER DELETE ON articles BEGIN
    {DELETE_INDEXED}
    DELETE FROM articles_fts_pending WHERE article_rowid = old.rowid;
END
""",
    "articles_fts_update": f"""
CREATE TRIGGER articles_fts_update AFTER UPDATE OF title, body_text ON articles BEGIN
    {DELETE_INDEXED}
    INSERT INTO articles_fts_pending (article_rowid) SELECT new.rowid
    WHERE NOT EXISTS (SELECT 1 FROM articles_fts_pending WHERE article_rowid = new.rowid);
END
""",
    "articles_fts_flush": f"""
CREATE TRIGGER articles_fts_flush AFTER INSERT ON articles_fts_pending
WHEN (SELECT count(*) FROM articles_fts_pending) >= {FLUSH_AT} BEGIN
    INSERT INTO articles_fts (rowid, title, body_text)
    SELECT article_rowid, title, body_text FROM articles_fts_source
    WHERE article_rowid IN (SELECT article_rowid FROM articles_fts_pending);
    DELETE FROM articles_fts_pending;
END
""",
}

# PostgreSQL
TRIGRAM_INDEXES = {
    "ix_articles_title_trgm": "title",
    "ix_articles_body_text_trgm": "body_text",
}
# SQLSTATEs of a refused DROP EXTENSION: dependent objects exist; not the owner.
KEEP_EXTENSION = ("2BP01", "42501")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(ARTICLE_STOCKS)
    op.execute(DAILY_OUTLET_COUNTS.format(day=BEIJING_DAY[dialect]))
    op.execute(RUN_HEALTH.format(duration=DURATION[dialect]))
    if dialect == "sqlite":
        op.execute(FTS_SOURCE)
        op.execute(FTS_TABLE)
        op.execute(FTS_TERMS)
        op.execute(FTS_PENDING)
        for trigger in FTS_TRIGGERS.values():
            op.execute(trigger)
        op.execute("INSERT INTO articles_fts (articles_fts) VALUES ('rebuild')")
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, column in TRIGRAM_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON articles USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for trigger in FTS_TRIGGERS:
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE articles_fts_pending")
        op.execute("DROP TABLE articles_fts_terms")
        op.execute("DROP TABLE articles_fts")
        op.execute("DROP VIEW articles_fts_source")
    else:
        for name in TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX {name}")
    for view in VIEWS:
        op.execute(f"DROP VIEW {view}")
    if conn.dialect.name == "postgresql":
        # Unless something else uses it (or another role owns it): then it stays.
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql("DROP EXTENSION IF EXISTS pg_trgm RESTRICT")
        except DBAPIError as exc:
            savepoint.rollback()
            if getattr(exc.orig, "sqlstate", None) not in KEEP_EXTENSION:
                raise
        else:
            savepoint.commit()
