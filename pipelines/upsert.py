"""Batched, idempotent writes of articles merged from their copies, with stock rows and links.

One article (one infoCode) may be published under several categories: the emnews copy and
an outlet's copy hold the same text with different markup (the emnews copy carries a digest
and tags every security; an outlet's copy often keeps only the K-line block). Each copy read
is recorded on its category link (``article_categories``: its content hash, digest and stock
rows), and the stored article is a function of the set of copies read, never of the order
they came in (in one batch, across runs, by crawl or backfill):

- the text (title, time, outlet, source, paragraphs, body, images, source URL, the copy's
  URL as first seen, its content hash) comes from the preferred copy: emnews, else the
  outlet categories in slug order (``rank``); ``articles.category`` names it;
- the digest, from the first copy in that order that has one;
- stock rows are the union over the copies, one per (market, code): the name from the first
  copy that names it, ``is_primary`` if any copy charts it, ``mentions`` the most of any copy.

A copy read again with another content hash replaces only its own contribution; if it is the
preferred copy, that is a revision of the text (``revision`` + 1). A better copy taking over
the text is a merge, not a revision. A copy without a category (the site gives every post
one) has no link to be recorded on: it is stored as before, ranked after every category.

One call writes one batch inside the caller's transaction, one statement per table through
the dialect's ``INSERT … ON CONFLICT`` (SQLite and PostgreSQL share it). Writers are first
serialised (workers of a scaled-out crawl write to one database): PostgreSQL by an advisory
lock held to the end of the transaction, SQLite by a first write, which takes the database's
write lock; what is read next is then what the merge builds on. No Scrapy here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, case, delete, false, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from crawler.items import Article
from schema.models import Article as ArticleRow
from schema.models import ArticleCategory, Category, StockMention

ARTICLES: Table = ArticleRow.__table__  # type: ignore[assignment]
CATEGORIES: Table = Category.__table__  # type: ignore[assignment]
LINKS: Table = ArticleCategory.__table__  # type: ignore[assignment]
STOCKS: Table = StockMention.__table__  # type: ignore[assignment]

EMNEWS = "emnews"  # the site's own rolling category: the fullest copy of an article
# What the preferred copy writes; first_seen_at stays, digest and revision are the merge's.
_TEXT = ("title", "published_at", "category", "outlet", "source", "paragraphs", "body_text",
         "body_html", "images", "source_url", "url", "content_hash")  # fmt: skip
_COPY = ("content_hash", "digest", "stocks")  # what a link records of its copy
_WRITERS_LOCK = 0x66696E657773  # PostgreSQL advisory lock key of batch writers ("finews")
_CHUNK = 500  # bound parameters per IN (...) list, well under every dialect's limit


@dataclass(frozen=True)
class Copy:
    """What one copy of an article contributes besides its text."""

    content_hash: str
    digest: str | None
    stocks: list[dict[str, Any]]  # stock rows without info_code (``stock_rows_of``)


@dataclass
class _State:
    """An article as stored, then as this batch leaves it."""

    category: str | None = None  # of the copy whose text is stored
    content_hash: str | None = None  # of that copy
    revision: int = 0  # 0: not stored
    digest: str | None = None
    stocks: list[dict[str, Any]] = field(default_factory=list)
    copies: dict[str | None, Copy] = field(default_factory=dict)  # by category

    def merged(self) -> tuple[Any, ...]:
        return self.category, self.content_hash, self.digest, self.stocks


@dataclass
class Outcome:
    """What a batch did, by infoCode, one entry per copy written."""

    stored: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    categories: dict[str, str | None] = field(default_factory=dict)  # slug -> outlet written


def rank(category: str | None) -> tuple[bool, bool, str]:
    """The order of preference of copies: emnews, then categories by slug, then none."""
    return category != EMNEWS, category is None, category or ""


def merge(copies: Mapping[str | None, Copy]) -> tuple[str | None, str | None, list[dict]]:
    """(the preferred copy's category, the digest, the stock rows) of an article's copies."""
    order = sorted(copies, key=rank)
    digest = next((copies[c].digest for c in order if copies[c].digest), None)
    union: dict[tuple[str, str], dict[str, Any]] = {}
    for category in order:
        for row in copies[category].stocks:
            have = union.get((row["market"], row["code"]))
            if have is None:
                union[row["market"], row["code"]] = dict(row)
            else:
                have["name"] = have["name"] or row["name"]
                have["is_primary"] = have["is_primary"] or row["is_primary"]
                have["mentions"] = max(have["mentions"], row["mentions"])
    return order[0], digest, [union[key] for key in sorted(union)]


def write_batch(
    conn: Connection,
    articles: Sequence[Article],
    *,
    run_id: int | None,
    now: datetime,
    known_categories: dict[str, str | None] | None = None,
) -> Outcome:
    """Write ``articles``: copies in the order they came, several may share an infoCode.

    ``known_categories`` (slug -> outlet) lists categories committed earlier, to skip them.
    """
    _serialise_writers(conn)
    states = _stored(conn, sorted({a.info_code for a in articles if a.info_code}))
    outcome = Outcome()
    texts: dict[str, Article] = {}  # the copy whose text an article takes from this batch
    changed: set[str] = set()
    links: dict[tuple[str, str], dict[str, Any]] = {}
    for article in articles:
        code = article.info_code
        assert code
        copy = Copy(article.content_hash(), article.digest, stock_rows_of(article))
        state = states.setdefault(code, _State())
        known = state.copies.get(article.category)
        if known is None and article.category is None and state.category is None:
            known = Copy(state.content_hash or "", None, [])  # stored from a copy like it
        if known is not None and known.content_hash == copy.content_hash:
            outcome.unchanged.append(code)
            continue
        before = state.merged()
        state.copies[article.category] = copy
        preferred, state.digest, state.stocks = merge(state.copies)
        if preferred == article.category:  # this copy supplies the text
            revised = state.revision and state.category == preferred
            state.revision = state.revision + 1 if revised else max(state.revision, 1)
            state.category, state.content_hash = preferred, copy.content_hash
            texts[code] = article
        if article.category:
            links[code, article.category] = {
                "info_code": code, "category": article.category, "url": article.url,
                "first_seen_at": now, "run_id": run_id, "content_hash": copy.content_hash,
                "digest": copy.digest, "stocks": copy.stocks,
            }  # fmt: skip
        if not before[1]:
            outcome.stored.append(code)
        elif state.merged() != before:
            outcome.updated.append(code)
        else:
            outcome.unchanged.append(code)
            continue
        changed.add(code)

    outcome.categories = _upsert_categories(conn, articles, now, known_categories or {})
    if texts:
        _upsert_articles(conn, [(a, states[c]) for c, a in texts.items()], run_id, now)
    merged_only = [
        {"k_code": code, "digest": states[code].digest, "updated_at": now, "run_id": run_id}
        for code in sorted(changed - texts.keys())
    ]
    if merged_only:
        where = ARTICLES.c.info_code == bindparam("k_code")
        conn.execute(update(ARTICLES).where(where), merged_only)
    for chunk in _chunks(sorted(changed)):
        conn.execute(delete(STOCKS).where(STOCKS.c.info_code.in_(chunk)))
    stock_rows = [{**row, "info_code": code} for code in changed for row in states[code].stocks]
    if stock_rows:
        conn.execute(insert_for(conn, STOCKS), stock_rows)
    if links:
        stmt = insert_for(conn, LINKS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["info_code", "category"], set_={c: stmt.excluded[c] for c in _COPY}
        )
        conn.execute(stmt, list(links.values()))
    return outcome


def stock_rows_of(article: Article) -> list[dict[str, Any]]:
    """One row per (market, code), without info_code: forms the extractor did not merge are
    merged here."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for stock in article.stocks:
        row = rows.get((stock.market, stock.code))
        if row is None:
            rows[stock.market, stock.code] = {
                "market": stock.market,
                "code": stock.code,
                "symbol": stock.symbol,
                "name": stock.name,
                "kind": stock.kind,
                "is_primary": bool(stock.primary),
                "mentions": stock.mentions,
            }
        else:
            row["mentions"] += stock.mentions
            row["is_primary"] = row["is_primary"] or bool(stock.primary)
            row["name"] = row["name"] or stock.name
    return [rows[key] for key in sorted(rows)]


def _serialise_writers(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_WRITERS_LOCK)))
    else:  # a write that changes nothing still takes the write lock (busy_timeout waits)
        conn.execute(update(CATEGORIES).where(false()).values(slug=CATEGORIES.c.slug))


def _stored(conn: Connection, codes: Sequence[str]) -> dict[str, _State]:
    states: dict[str, _State] = {}
    a, link = ARTICLES.c, LINKS.c
    for chunk in _chunks(codes):
        query = select(a.info_code, a.category, a.content_hash, a.revision, a.digest)
        for code, *stored in conn.execute(query.where(a.info_code.in_(chunk))):
            states[code] = _State(*stored)
        query = select(link.info_code, link.category, *(link[c] for c in _COPY))
        query = query.where(link.info_code.in_(chunk), link.content_hash.is_not(None))
        for code, category, content_hash, digest, stocks in conn.execute(query):
            if code in states:
                states[code].copies[category] = Copy(content_hash, digest, stocks or [])
    for state in states.values():
        state.stocks = merge(state.copies)[2] if state.copies else []
    return states


def _upsert_categories(
    conn: Connection, articles: Iterable[Article], now: datetime, known: dict[str, str | None]
) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {}
    for article in articles:
        if article.category and not wanted.get(article.category):
            wanted[article.category] = article.outlet
    rows = [
        {"slug": slug, "outlet": outlet, "first_seen_at": now}
        for slug, outlet in sorted(wanted.items())
        if slug not in known or (known[slug] is None and outlet is not None)
    ]
    if rows:
        stmt = insert_for(conn, CATEGORIES)
        stmt = stmt.on_conflict_do_update(
            index_elements=["slug"],
            set_={"outlet": stmt.excluded.outlet},
            # The first outlet name wins; a sighting without one never erases it.
            where=CATEGORIES.c.outlet.is_(None) & stmt.excluded.outlet.is_not(None),
        )
        conn.execute(stmt, rows)
    return {row["slug"]: row["outlet"] for row in rows}


def _upsert_articles(
    conn: Connection, texts: Sequence[tuple[Article, _State]], run_id: int | None, now: datetime
) -> None:
    stmt = insert_for(conn, ARTICLES)
    revised = {c: stmt.excluded[c] for c in (*_TEXT, "digest", "revision", "updated_at", "run_id")}
    # A copy keeps the URL it was first seen at; another copy taking over brings its own.
    other = ARTICLES.c.category.is_distinct_from(stmt.excluded.category)
    revised["url"] = case((other, stmt.excluded.url), else_=ARTICLES.c.url)
    stmt = stmt.on_conflict_do_update(index_elements=["info_code"], set_=revised)
    conn.execute(stmt, [article_row(a, s, run_id, now) for a, s in texts])


def article_row(article: Article, state: _State, run_id: int | None, now: datetime) -> dict:
    return {
        "info_code": article.info_code,
        "title": article.title,
        "published_at": article.published_at,
        "category": article.category,
        "outlet": article.outlet,
        "source": article.source,
        "digest": state.digest,
        "paragraphs": list(article.paragraphs),
        "body_text": "\n".join(article.paragraphs),
        "body_html": article.body_html,
        "images": list(article.images),
        "source_url": article.source_url,
        "url": article.url,
        "content_hash": state.content_hash,
        "revision": state.revision,
        "first_seen_at": now,
        "updated_at": now,
        "run_id": run_id,
    }


def insert_for(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update`` on both databases."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
