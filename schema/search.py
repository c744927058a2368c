"""Full-text search over article titles and bodies, the same answers on SQLite and PostgreSQL.

A query is one literal string (trimmed), looked for as a substring of the title or the body:
``茅台``, ``新市民``, ``HFO-1234yf``. Migration 0006 builds the index this module reads (see
``schema/README.md``, "Full-text search"):

- SQLite: queries of 3+ characters are one phrase MATCHed in the FTS5 trigram table
  ``articles_fts`` (case-insensitive). A 2-character query is the OR of the indexed
  trigrams that start with it, read from the index's vocabulary (the index ends every
  text with a newline, so a word at the very end starts one too). Articles whose text
  waits to be indexed (``articles_fts_pending``, fewer than 500) are scanned besides. A
  1-character query, or a 2-character one that starts more than MAX_TERMS trigrams, scans
  ``articles`` (``instr``; ``LIKE`` when the query has letters, so that ASCII letters
  match in either case).
- PostgreSQL: ``LIKE`` (``ILIKE`` when the query has letters) served by the GIN trigram
  indexes on ``title`` and ``body_text`` for 3+ characters; shorter patterns scan.

This module only reads, apart from ``rebuild``, which rebuilds the index from ``articles``.
Writers never call it: triggers (SQLite) and the indexes themselves (PostgreSQL) keep the
index in step with every write.

    python -m schema.search rebuild [--url URL]   rebuild the index of FINEWS_DATABASE_URL
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.exc import DBAPIError

from schema.db import make_engine, redact
from schema.models import Article, StockMention
from schema.types import BEIJING

ARTICLES: Table = Article.__table__  # type: ignore[assignment]
STOCKS: Table = StockMention.__table__  # type: ignore[assignment]

# What migration 0006 creates besides the views; none of it is in the models.
FTS_TABLE = "articles_fts"  # SQLite; FTS5 adds articles_fts_data, _idx and _config
FTS_SOURCE = "articles_fts_source"  # the view it indexes: title and body, newline-ended
FTS_TERMS = "articles_fts_terms"  # its vocabulary (fts5vocab): the trigrams indexed
FTS_PENDING = "articles_fts_pending"  # rowids of articles whose text waits to be indexed
FTS_TRIGGERS = (
    "articles_fts_insert",
    "articles_fts_delete",
    "articles_fts_update",
    "articles_fts_flush",
)
TRIGRAM_INDEXES = ("ix_articles_title_trgm", "ix_articles_body_text_trgm")  # PostgreSQL
VIEWS = ("article_stocks", "daily_outlet_counts", "run_health")

INDEXED_LENGTH = 3  # a trigram index serves queries of at least this many characters
# SQLite: an OR of 1,000 trigrams took 0.05 s at 100k articles, of 3,000 0.4 s, of 5,000
# 1.6 s; a scan takes ~0.5 s. Beyond this many, scan.
MAX_TERMS = 500
SNIPPET_CONTEXT = 30  # characters either side of the hit
PROBE_PER_HIT = 250  # PostgreSQL scans: newest articles looked at first, per hit asked for
_ESCAPE = "!"  # LIKE escape character: "\\" would need dialect-specific quoting
_CHUNK = 500  # info_codes per IN (...) list


class SearchIndexMissing(RuntimeError):
    """The database lacks the search index of migration 0006 (or part of it)."""


@dataclass(frozen=True)
class Hit:
    """One article that contains the query."""

    info_code: str
    published_at: datetime  # aware, at +08:00 (schema.types.BEIJING)
    outlet: str | None
    title: str | None
    stocks: list[str]  # symbols of its stock_mentions: primary first, then by mentions desc
    snippet: str  # about 30 characters either side of the first hit, "…" where cut


def is_index_table(name: str) -> bool:
    """True for the SQLite FTS table, the shadow tables FTS5 keeps beside it, its vocabulary
    table and the view it reads (names that start with ``articles_fts``)."""
    return name == FTS_TABLE or name.startswith(FTS_TABLE + "_")


def search(
    engine: Engine,
    query: str,
    *,
    since: date | None = None,
    until: date | None = None,
    stock: str | None = None,
    outlet: str | None = None,
    limit: int = 20,
) -> list[Hit]:
    """Articles whose title or body contains ``query``, newest first (then by info_code).

    ``since``/``until``: inclusive Beijing calendar days of ``published_at``. ``stock``: a
    symbol (``600160.SH``) the article mentions. ``outlet``: ``articles.outlet`` exactly.
    """
    needle = (query or "").strip()
    if not needle:
        raise ValueError("empty search query: give a word or phrase to look for (茅台, 新市民)")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    a = ARTICLES.c
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(a.published_at >= _midnight(since))
    if until is not None:
        where.append(a.published_at < _midnight(until + timedelta(days=1)))
    if outlet is not None:
        where.append(a.outlet == outlet)
    if stock is not None:
        s = STOCKS.c
        where.append(exists().where(s.info_code == a.info_code, s.symbol == stock))
    with engine.connect() as conn:
        try:
            rows = _newest_hits(conn, _contains(conn, needle), where, limit, len(needle))
        except DBAPIError as exc:
            conn.rollback()
            _require_index(conn, exc)
            raise
        symbols = _symbols(conn, [row.info_code for row in rows])
    return [
        Hit(
            info_code=row.info_code,
            published_at=row.published_at,
            outlet=row.outlet,
            title=row.title,
            stocks=symbols.get(row.info_code, []),
            snippet=snippet(needle, row.title, row.body_text),
        )
        for row in rows
    ]


def _newest_hits(
    conn: Connection,
    contains: ColumnElement[bool],
    where: list[ColumnElement[bool]],
    limit: int,
    length: int,
) -> Sequence[Any]:
    a = ARTICLES.c
    columns = (a.info_code, a.published_at, a.outlet, a.title, a.body_text)
    if conn.dialect.name != "postgresql":
        query = select(*columns).where(contains, *where)
        return conn.execute(
            query.order_by(a.published_at.desc(), a.info_code.desc()).limit(limit)
        ).all()
    # Not the index's order: else, for a rare word, the planner walks published_at backwards
    # and reads every row in that order (0.8 s at 100k articles; a sequential scan: 0.4 s).
    newest = literal_column(f"{ARTICLES.name}.published_at + interval '0 seconds'")
    order = (newest.desc(), a.info_code.desc())
    if length < INDEXED_LENGTH:
        # A scan: first among the newest articles only, enough when the word is common
        # (0.05 s instead of 0.5 s). Any hit beyond them is older than theirs.
        recent = select(a.info_code).where(*where).limit(PROBE_PER_HIT * limit)
        recent = recent.order_by(a.published_at.desc(), a.info_code.desc())
        query = select(*columns).where(a.info_code.in_(recent), contains)
        rows = conn.execute(query.order_by(*order).limit(limit)).all()
        if len(rows) == limit:
            return rows
        # Then all of them, in parallel where the server allows: the planner's estimates
        # of a LIKE make it scan alone (0.6-0.9 s at 100k articles; with 2 workers 0.55 s).
        conn.execute(text("SET LOCAL parallel_setup_cost = 10"))
        conn.execute(text("SET LOCAL parallel_tuple_cost = 0.001"))
    query = select(*columns).where(contains, *where)
    return conn.execute(query.order_by(*order).limit(limit)).all()


def rebuild(engine: Engine) -> int:
    """Rebuild the search index from ``articles``; return the number of articles indexed.

    SQLite: the FTS5 ``rebuild`` command (reads every title and body again). PostgreSQL:
    ``REINDEX`` of the trigram indexes, which blocks writes to ``articles`` meanwhile.
    """
    with engine.begin() as conn:
        _require_index(conn)
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')")
            conn.exec_driver_sql(f"DELETE FROM {FTS_PENDING}")  # all of it is indexed now
        else:
            for name in TRIGRAM_INDEXES:
                conn.exec_driver_sql(f"REINDEX INDEX {name}")
        return int(conn.execute(select(func.count()).select_from(ARTICLES)).scalar_one())


def snippet(needle: str, title: str | None, body: str | None) -> str:
    """About SNIPPET_CONTEXT characters either side of the first hit in the title, else in
    the body, on one line, with "…" where the text was cut."""
    pattern = re.compile(re.escape(needle), re.IGNORECASE)
    for field in (title or "", body or ""):
        found = pattern.search(field)
        if found:
            start = max(0, found.start() - SNIPPET_CONTEXT)
            end = min(len(field), found.end() + SNIPPET_CONTEXT)
            return _cut(field, start, end)
    # Only where the database folds case differently from Python: the body's start.
    field = body or title or ""
    return _cut(field, 0, min(len(field), 2 * SNIPPET_CONTEXT + len(needle)))


def _cut(field: str, start: int, end: int) -> str:
    middle = " ".join(field[start:end].split())
    return ("…" if start > 0 else "") + middle + ("…" if end < len(field) else "")


def _contains(conn: Connection, needle: str) -> ColumnElement[bool]:
    """The condition "title or body contains needle", in the form the index can serve."""
    if conn.dialect.name == "sqlite":
        if len(needle) >= INDEXED_LENGTH:
            return or_(_fts_match(_phrase(needle)), _waiting(needle))
        if len(needle) == INDEXED_LENGTH - 1:
            terms = _terms_starting_with(conn, needle.lower())
            if not terms:
                return _waiting(needle)
            if len(terms) <= MAX_TERMS:
                return or_(_fts_match(" OR ".join(map(_phrase, terms))), _waiting(needle))
    return _scan(conn.dialect.name, needle)


def _waiting(needle: str) -> ColumnElement[bool]:
    """SQLite: the article's text waits to be indexed (at most 499 do) and contains needle."""
    pending = table(FTS_PENDING, column("article_rowid"))
    waiting = literal_column(f"{ARTICLES.name}.rowid").in_(select(pending.c.article_rowid))
    return and_(waiting, _scan("sqlite", needle))


def _fts_match(expression: str) -> ColumnElement[bool]:
    fts = table(FTS_TABLE, column("rowid"))
    matched = select(fts.c.rowid).where(
        literal_column(FTS_TABLE).op("MATCH")(bindparam("fts_query", expression))
    )
    # "+": SQLite then walks published_at newest first and looks each row up in the set of
    # matches, instead of sorting every match (0.01 s instead of 0.15 s for 13,000 matches).
    return literal_column(f"+{ARTICLES.name}.rowid").in_(matched)


def _phrase(text: str) -> str:
    """``text`` as one FTS5 string: "" escapes a quote; -, *, :, ( ) and OR stay literal."""
    return '"' + text.replace('"', '""') + '"'


def _terms_starting_with(conn: Connection, prefix: str) -> list[str]:
    """The indexed trigrams that start with ``prefix`` (case-folded, as the index holds them)."""
    query = text(
        f"SELECT term FROM {FTS_TERMS} WHERE term >= :low AND term <= :low || char(1114111)"
    )
    return list(conn.execute(query, {"low": prefix}).scalars())


def _scan(dialect: str, needle: str) -> ColumnElement[bool]:
    a = ARTICLES.c
    cased = needle.lower() != needle.upper()  # has letters: match either case
    if dialect == "sqlite" and not cased:
        return or_(func.instr(a.title, needle) > 0, func.instr(a.body_text, needle) > 0)
    pattern = "%" + _escape_like(needle) + "%"
    if cased and dialect != "sqlite":  # SQLite's LIKE already ignores ASCII case
        return or_(
            a.title.ilike(pattern, escape=_ESCAPE), a.body_text.ilike(pattern, escape=_ESCAPE)
        )
    return or_(a.title.like(pattern, escape=_ESCAPE), a.body_text.like(pattern, escape=_ESCAPE))


def _escape_like(text: str) -> str:
    for char in (_ESCAPE, "%", "_"):
        text = text.replace(char, _ESCAPE + char)
    return text


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), BEIJING)


def _symbols(conn: Connection, codes: Sequence[str]) -> dict[str, list[str]]:
    s = STOCKS.c
    found: dict[str, list[str]] = {}
    for start in range(0, len(codes), _CHUNK):
        query = (
            select(s.info_code, s.symbol)
            .where(s.info_code.in_(codes[start : start + _CHUNK]))
            .order_by(s.info_code, s.is_primary.desc(), s.mentions.desc(), s.symbol)
        )
        for code, symbol in conn.execute(query):
            symbols = found.setdefault(code, [])
            if symbol not in symbols:
                symbols.append(symbol)
    return found


def _require_index(conn: Connection, cause: Any = None) -> None:
    """Raise SearchIndexMissing, saying what to run, if part of the index is missing."""
    if conn.dialect.name == "sqlite":
        names = set(
            conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger')"
            ).scalars()
        )
        wanted: tuple[str, ...] = (FTS_TABLE, FTS_SOURCE, FTS_TERMS, FTS_PENDING, *FTS_TRIGGERS)
    else:
        names = {
            name
            for name in TRIGRAM_INDEXES
            if conn.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar()
        }
        wanted = TRIGRAM_INDEXES
    missing = [name for name in wanted if name not in names]
    if missing:
        raise SearchIndexMissing(
            f"The database has no full-text search index ({', '.join(missing)} missing): "
            "run `make migrate` (python -m schema.migrate) to create it."
        ) from cause


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schema.search", description="Rebuild the full-text search index."
    )
    parser.add_argument("command", choices=["rebuild"])
    parser.add_argument("--url", help="database URL (default: FINEWS_DATABASE_URL)")
    args = parser.parse_args(argv)
    engine = make_engine(args.url)
    try:
        indexed = rebuild(engine)
    except SearchIndexMissing as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{redact(engine.url)}: search index rebuilt, {indexed} articles.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
