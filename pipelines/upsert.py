"""Batched, idempotent writes of articles with their stock rows and category links.

One call writes one batch inside the caller's transaction, with one statement per table
through the dialect's ``INSERT … ON CONFLICT`` (SQLite and PostgreSQL share it) and one
SELECT to learn which articles are already stored. No Scrapy here: the store drives it.

The rule for an article already stored (``articles.category`` names the category whose
sighting supplied the stored text):
- same content hash: only missing category links are added;
- different hash, same category: the text is revised (``revision`` + 1, stock rows replaced);
- different hash, other category: another category's markup of the same article (emnews
  carries a digest and stock links, outlets do not); only the link is added, so re-runs
  never flip the text between the two versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from crawler.items import Article
from schema.models import Article as ArticleRow
from schema.models import ArticleCategory, Category, StockMention

ARTICLES: Table = ArticleRow.__table__  # type: ignore[assignment]
CATEGORIES: Table = Category.__table__  # type: ignore[assignment]
LINKS: Table = ArticleCategory.__table__  # type: ignore[assignment]
STOCKS: Table = StockMention.__table__  # type: ignore[assignment]

# What a revision rewrites; url, first_seen_at and category keep their first values.
_REVISED = (
    "title",
    "published_at",
    "outlet",
    "source",
    "digest",
    "paragraphs",
    "body_text",
    "body_html",
    "images",
    "source_url",
    "content_hash",
    "updated_at",
    "run_id",
)
_STOCK_FIELDS = ("symbol", "name", "kind", "is_primary", "mentions")
_CHUNK = 500  # bound parameters per IN (...) list, well under every dialect's limit


@dataclass(frozen=True)
class Link:
    """An article seen under a category, at a URL."""

    info_code: str
    category: str
    url: str


@dataclass
class Outcome:
    """What a batch did, by infoCode."""

    stored: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    other_category: list[str] = field(default_factory=list)  # unchanged: another's markup
    orphans: list[Link] = field(default_factory=list)  # links to articles that are not stored
    categories: dict[str, str | None] = field(default_factory=dict)  # slug -> outlet written


def links_of(article: Article) -> list[Link]:
    """The category links an item carries: its own category and those dedupe merged in."""
    assert article.info_code
    links = [Link(article.info_code, article.category, article.url)] if article.category else []
    links += [Link(article.info_code, slug, url) for slug, url in article.more_categories.items()]
    return links


def write_batch(
    conn: Connection,
    articles: Sequence[Article],
    links: Sequence[Link] = (),
    *,
    run_id: int | None,
    now: datetime,
    known_categories: dict[str, str | None] | None = None,
) -> Outcome:
    """Write ``articles`` (unique infoCodes) and extra ``links``; returns what happened.

    ``known_categories`` (slug -> outlet) lists categories committed earlier, to skip them.
    """
    hashes = {a.info_code: a.content_hash() for a in articles if a.info_code}
    stored = _stored_state(conn, set(hashes) | {link.info_code for link in links})
    outcome = Outcome()
    changed: list[Article] = []
    new: list[Article] = []
    for article in articles:
        code = article.info_code
        assert code
        state = stored.get(code)
        if state is None:
            new.append(article)
            outcome.stored.append(code)
        elif state[0] == hashes[code]:
            outcome.unchanged.append(code)
        elif state[1] == article.category:
            changed.append(article)
            outcome.updated.append(code)
        else:
            outcome.unchanged.append(code)
            outcome.other_category.append(code)
    all_links = [link for a in articles for link in links_of(a)]
    for link in links:
        if link.info_code in stored or link.info_code in hashes:
            all_links.append(link)
        else:
            outcome.orphans.append(link)

    outcome.categories = _upsert_categories(conn, articles, all_links, now, known_categories or {})
    if new or changed:
        _upsert_articles(conn, [*new, *changed], hashes, run_id, now)
    if changed:
        codes = [a.info_code for a in changed]
        for chunk in _chunks(codes):
            conn.execute(delete(STOCKS).where(STOCKS.c.info_code.in_(chunk)))
    stock_rows = [row for a in (*new, *changed) for row in stock_rows_of(a)]
    if stock_rows:
        stmt = _insert(conn, STOCKS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["info_code", "market", "code"],
            set_={c: stmt.excluded[c] for c in _STOCK_FIELDS},
        )
        conn.execute(stmt, stock_rows)
    link_rows = _link_rows(all_links, run_id, now)
    if link_rows:
        stmt = _insert(conn, LINKS).on_conflict_do_nothing(index_elements=["info_code", "category"])
        conn.execute(stmt, link_rows)
    return outcome


def article_row(article: Article, content_hash: str, run_id: int | None, now: datetime) -> dict:
    return {
        "info_code": article.info_code,
        "title": article.title,
        "published_at": article.published_at,
        "category": article.category,
        "outlet": article.outlet,
        "source": article.source,
        "digest": article.digest,
        "paragraphs": list(article.paragraphs),
        "body_text": "\n".join(article.paragraphs),
        "body_html": article.body_html,
        "images": list(article.images),
        "source_url": article.source_url,
        "url": article.url,
        "content_hash": content_hash,
        "revision": 1,
        "first_seen_at": now,
        "updated_at": now,
        "run_id": run_id,
    }


def stock_rows_of(article: Article) -> list[dict[str, Any]]:
    """One row per (market, code): forms the extractor did not merge are merged here."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for stock in article.stocks:
        key = (stock.market, stock.code)
        row = rows.get(key)
        if row is None:
            rows[key] = {
                "info_code": article.info_code,
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
    return list(rows.values())


def _stored_state(conn: Connection, codes: set[str]) -> dict[str, tuple[str, str | None]]:
    state: dict[str, tuple[str, str | None]] = {}
    columns = (ARTICLES.c.info_code, ARTICLES.c.content_hash, ARTICLES.c.category)
    for chunk in _chunks(sorted(codes)):
        for code, content_hash, category in conn.execute(
            select(*columns).where(ARTICLES.c.info_code.in_(chunk))
        ):
            state[code] = (content_hash, category)
    return state


def _upsert_categories(
    conn: Connection,
    articles: Iterable[Article],
    links: Iterable[Link],
    now: datetime,
    known: dict[str, str | None],
) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {link.category: None for link in links}
    for article in articles:
        if article.category and article.outlet:
            wanted[article.category] = article.outlet
    rows = [
        {"slug": slug, "outlet": outlet, "first_seen_at": now}
        for slug, outlet in sorted(wanted.items())
        if slug not in known or (known[slug] is None and outlet is not None)
    ]
    if rows:
        stmt = _insert(conn, CATEGORIES)
        stmt = stmt.on_conflict_do_update(
            index_elements=["slug"],
            set_={"outlet": stmt.excluded.outlet},
            # The first outlet name wins; a link-only sighting never erases it.
            where=CATEGORIES.c.outlet.is_(None) & stmt.excluded.outlet.is_not(None),
        )
        conn.execute(stmt, rows)
    return {row["slug"]: row["outlet"] for row in rows}


def _upsert_articles(
    conn: Connection,
    articles: Sequence[Article],
    hashes: dict[str, str],
    run_id: int | None,
    now: datetime,
) -> None:
    stmt = _insert(conn, ARTICLES)
    stmt = stmt.on_conflict_do_update(
        index_elements=["info_code"],
        set_={**{c: stmt.excluded[c] for c in _REVISED}, "revision": ARTICLES.c.revision + 1},
        # The same rule as in write_batch, repeated so a concurrent writer cannot bump twice.
        where=(ARTICLES.c.content_hash != stmt.excluded.content_hash)
        & ARTICLES.c.category.is_not_distinct_from(stmt.excluded.category),
    )
    rows = [article_row(a, hashes[a.info_code], run_id, now) for a in articles if a.info_code]
    conn.execute(stmt, rows)


def _link_rows(links: Iterable[Link], run_id: int | None, now: datetime) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for link in links:
        rows.setdefault(
            (link.info_code, link.category),
            {
                "info_code": link.info_code,
                "category": link.category,
                "url": link.url,
                "first_seen_at": now,
                "run_id": run_id,
            },
        )
    return list(rows.values())


def _insert(conn: Connection, table: Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
