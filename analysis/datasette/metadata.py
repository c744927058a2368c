"""Datasette's metadata for the finews database, as ``finews browse`` serves it.

- a description of every table, view and column (from ``schema/models.py``, the
  migrations and ``schema/README.md``, which says more);
- the search index's own tables hidden (``schema.search.is_index_table``), and the view
  it reads denied: they are machinery, and Datasette's FTS search over them would be wrong;
- canned queries: ``search`` (titles and bodies through ``schema.search``, by the SQL
  function of ``analysis.datasette.plugin``) and the worked queries of the analysts' guide
  (``analysis.worked``; their SQLite SQL).

It builds a dict and nothing else: no Datasette import, no database or file access.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any
from urllib.parse import urlencode

from schema.search import is_index_table

TITLE = "finews"
DESCRIPTION = (
    "Eastmoney news as republished by the finews mirror: one row per article (its "
    "infoCode), its securities, the categories it was seen under, and every crawl and "
    "backfill run. Every time is Beijing time (+08:00). Read-only."
)

SEARCH_QUERY = "search"
SEARCH_FUNCTION = "finews_search"  # registered by analysis.datasette.plugin
SEARCH_LIMIT = 100  # hits the search page shows, newest first
# finews_search(q, limit, since, until, stock, outlet) returns a JSON array of
# {"info_code", "stocks", "snippet"}, newest first. MATERIALIZED: the search runs once,
# never once per article the join looks at.
SEARCH_SQL = f"""WITH hit AS MATERIALIZED (
    SELECT key AS rank, value
    FROM json_each({SEARCH_FUNCTION}(:q, {SEARCH_LIMIT}, :since, :until, :stock, :outlet))
)
SELECT a.info_code,
       a.published_at AS time,
       a.outlet,
       a.title,
       json_extract(hit.value, '$.stocks') AS stocks,
       json_extract(hit.value, '$.snippet') AS snippet
FROM hit JOIN articles AS a ON a.info_code = json_extract(hit.value, '$.info_code')
ORDER BY hit.rank"""
SEARCH_PARAMS = ["q", "since", "until", "stock", "outlet"]
SEARCH_DESCRIPTION_HTML = (
    f"<p>Articles whose title or body contains <b>q</b>, newest first ({SEARCH_LIMIT} at "
    "most): one literal string of any length (茅台, 新市民, HFO-1234yf). Optional: "
    "<b>since</b> / <b>until</b> (YYYY-MM-DD, Beijing days), <b>stock</b> (600160.SH), "
    "<b>outlet</b> (证券日报网). The search of <code>finews search</code>: it finds the "
    "2-character words and the newest articles that an FTS MATCH misses. The articles "
    "table and the article_stocks view search the same way.</p>"
)

# Table or view -> (description, {column: description}). Every column of every table and
# view of the schema, and no other (tests/test_browse.py holds the schema to it).
DESCRIPTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "articles": (
        "One row per article (Eastmoney infoCode), merged from every copy read: the text "
        "comes from the emnews copy, else an outlet's copy (slug order).",
        {
            "info_code": "Eastmoney infoCode: NW + 18 digits, the first 8 the publication day",
            "title": "The article's own title",
            "published_at": "Publication time, Beijing time (+08:00)",
            "category": "Category slug of the copy whose text is stored (emnews first)",
            "outlet": "The outlet: the post's tag minus 新闻 (东财滚动, 证券日报网, …)",
            "source": "The source line without its wrapper (证券日报网)",
            "digest": "The digest of the emnews copy; NULL where no copy has one",
            "paragraphs": "JSON array of the visible text blocks, in order",
            "body_text": "The paragraphs joined by newlines: what search reads besides the title",
            "body_html": "The article's content as sanitised HTML",
            "images": "JSON array of the article's image URLs (K-line charts excluded)",
            "source_url": "The NewsShare or eastmoney.com link; NULL where the post has none",
            "url": "Page URL (or file:// path of a post file) of that copy, as first seen",
            "content_hash": "SHA-256 of what that copy says (not of its wrapper)",
            "revision": "1, plus one for each revision of that copy's text",
            "first_seen_at": "When the article was first stored",
            "updated_at": "When the stored article last changed (a revision or a merge)",
            "run_id": "The crawl_runs row of the run that last wrote the article",
        },
    ),
    "article_categories": (
        "An article seen under a category, with its URL there and what that copy holds "
        "besides the text: emnews and an outlet give two rows for one article.",
        {
            "info_code": "The article",
            "category": "The category slug it was seen under",
            "url": "Its URL under that category",
            "first_seen_at": "When the article was first seen under this category",
            "run_id": "The run that first saw it there",
            "content_hash": "SHA-256 of this copy as last read; NULL: never read",
            "digest": "This copy's digest, if it has one",
            "stocks": "JSON array of this copy's securities (its stock_mentions rows)",
        },
    ),
    "categories": (
        "A category of the site (its slug) and the outlet it republishes.",
        {
            "slug": "Category slug, as in the site's URLs (emnews, zhengquanribaowang, …)",
            "outlet": "The outlet; NULL until an article is seen under the slug itself",
            "first_seen_at": "When the category was first seen",
        },
    ),
    "stock_mentions": (
        "A security or board an article marks up: one row per (article, market, code), "
        "the union over the article's copies.",
        {
            "info_code": "The article",
            "market": "Eastmoney's raw market id (1 Shanghai, 0 Shenzhen/Beijing, 116 HK, …)",
            "code": "The code as written (600160, 03690, NIO, BK0493)",
            "symbol": "Normalised symbol: 600160.SH, 03690.HK, NIO.N, BK0493",
            "name": "Display name where the markup carries one (巨化股份)",
            "kind": "stock, index, fund, bond, board, future or other",
            "is_primary": "1 when a K-line block of the article charts it",
            "mentions": "How many markup elements name it (the most of any one copy)",
        },
    ),
    "crawl_runs": (
        "One row per crawl or backfill process (one per worker of a scaled-out job): "
        "opened running at start, closed with its status and counts.",
        {
            "id": "Run id",
            "spider": "finews (the site) or archive (a backfill of post files)",
            "mode": "incremental, refresh, backfill or backfill-refresh",
            "arguments": "JSON object of the spider's -a arguments",
            "host": "Host name of the machine it ran on",
            "pid": "Process id",
            "started_at": "Start time",
            "finished_at": "Finish time; NULL while running (or killed outright)",
            "status": "running, finished, failed, interrupted or stopped",
            "close_reason": "Scrapy's close reason (finished, shutdown, …)",
            "seen": "Articles or files seen",
            "stored": "New articles stored",
            "updated": "Articles revised or merged with another copy",
            "unchanged": "Copies read again with nothing new",
            "duplicates": "Files that were another file's post (backfill)",
            "rejected": "Pages or files rejected (see rejects)",
            "errors": "Errors: pages lost after retries, failed writes, crashes",
            "exit_status": "Exit status the caller recorded (scrapy cron); negative: a signal",
            "skipped": "Posts or files passed over: already stored, outside the window, …",
            "job": "FINEWS_JOB of a scaled-out crawl; NULL otherwise",
        },
    ),
    "rejects": (
        "Something that could not be stored, with the evidence to find it.",
        {
            "id": "Reject id",
            "run_id": "The run that rejected it",
            "created_at": "When it was rejected",
            "url": "Page URL or file path",
            "info_code": "Its infoCode, where one was found",
            "reason": "Why, in short (missing info_code, download failed, …)",
            "detail": "More about the reason",
            "excerpt": "The start of what was read",
        },
    ),
    "source_files": (
        "A post file a backfill has read, as it was then: an unchanged file is not read again.",
        {
            "path": "Absolute path (symlinks are never followed)",
            "size": "Size in bytes",
            "mtime_ns": "Modification time, nanoseconds since the epoch",
            "sha256": "SHA-256 of the file's bytes",
            "info_code": "The infoCode of the post it held, if any",
            "status": "article (stored) or rejected (a rejects row says why)",
            "read_at": "When it was last read",
            "run_id": "The run that last read it",
        },
    ),
    "alembic_version": (
        "The schema's revision (make migrate upgrades it).",
        {"version_num": "Alembic revision id"},
    ),
    "article_stocks": (
        "View: one row per article and security (a stock_mentions row with its article).",
        {
            "info_code": "The article",
            "published_at": "Its publication time, Beijing time",
            "title": "Its title",
            "outlet": "Its outlet",
            "symbol": "Normalised symbol: 600160.SH",
            "name": "Display name (巨化股份)",
            "kind": "stock, index, fund, bond, board, future or other",
            "is_primary": "1 when a K-line block charts it",
            "mentions": "How many markup elements name it",
            "secid": "Eastmoney's own id market.code (1.600160), for Eastmoney's data",
        },
    ),
    "daily_outlet_counts": (
        "View: articles per Beijing calendar day and outlet, newest day first.",
        {
            "day": "Beijing calendar day, YYYY-MM-DD",
            "outlet": "The outlet; NULL where unknown",
            "articles": "Articles published that day",
        },
    ),
    "run_health": (
        "View: every crawl_runs row with its duration, newest first.",
        {
            "id": "Run id (crawl_runs)",
            "job": "FINEWS_JOB of a scaled-out crawl; NULL otherwise",
            "spider": "finews or archive",
            "mode": "incremental, refresh, backfill or backfill-refresh",
            "status": "running, finished, failed, interrupted or stopped",
            "close_reason": "Scrapy's close reason",
            "exit_status": "Exit status the caller recorded",
            "started_at": "Start time",
            "finished_at": "Finish time; NULL while running",
            "duration_s": "Seconds from start to finish, to the millisecond; NULL until finished",
            "seen": "Articles or files seen",
            "stored": "New articles stored",
            "updated": "Articles revised or merged",
            "unchanged": "Copies read again with nothing new",
            "duplicates": "Files that were another file's post",
            "rejected": "Rejected",
            "skipped": "Passed over",
            "errors": "Errors",
            "host": "Host name",
            "pid": "Process id",
        },
    ),
}
# Shown first and sorted newest first; facets offered on the page.
TABLE_OPTIONS: dict[str, dict[str, Any]] = {
    "articles": {"sort_desc": "published_at", "label_column": "title", "facets": ["outlet"]},
    "categories": {"label_column": "outlet"},
    "article_stocks": {"sort_desc": "published_at", "facets": ["kind"]},
    "rejects": {"sort_desc": "id", "facets": ["reason"]},
    "crawl_runs": {"sort_desc": "started_at", "facets": ["status"]},
    "alembic_version": {"hidden": True},
}


def build_metadata(
    database: str, tables: Iterable[str], views: Iterable[str], worked: Iterable[Any] = ()
) -> dict[str, Any]:
    """Datasette's metadata for the database Datasette calls ``database``, which holds the
    ``tables`` and ``views`` named (as in sqlite_master); ``worked``: the worked queries
    (``analysis.worked.WorkedQuery``) to offer besides the search."""
    views = set(views)
    shown: dict[str, dict[str, Any]] = {}
    for name in sorted({*tables, *views}):
        if is_index_table(name):
            shown[name] = {"hidden": True}
            if name in views:  # Datasette lists every view: deny it instead
                shown[name]["allow"] = False
        elif name in DESCRIPTIONS:
            description, columns = DESCRIPTIONS[name]
            shown[name] = {"description": description, "columns": dict(columns)}
            shown[name].update(TABLE_OPTIONS.get(name, {}))
    link = f'<a href="/{escape(database)}/{SEARCH_QUERY}">{SEARCH_QUERY}</a>'
    return {
        "title": TITLE,
        "description": DESCRIPTION,
        "databases": {
            database: {
                "description_html": (
                    f"<p>{escape(DESCRIPTION)}</p><p>Search titles and bodies: {link}. "
                    "Each table's page says what its columns mean; schema/README.md says "
                    "more.</p>"
                ),
                "tables": shown,
                "queries": canned_queries(worked),
            }
        },
    }


def canned_queries(worked: Iterable[Any] = ()) -> dict[str, dict[str, Any]]:
    """The search query, then the worked queries that have SQLite SQL, in their order."""
    queries = {
        SEARCH_QUERY: {
            "title": "Search titles and bodies",
            "sql": SEARCH_SQL,
            "params": SEARCH_PARAMS,
            "description_html": SEARCH_DESCRIPTION_HTML,
            "hide_sql": True,
        }
    }
    for query in worked:
        sql = query.sql.get("sqlite")
        if sql and query.name not in queries:
            queries[query.name] = worked_query(query, sql)
    return queries


def worked_query(query: Any, sql: str) -> dict[str, Any]:
    """A worked query as a canned query, with a link that fills in the guide's values."""
    description = f"<p>{escape(query.description)}</p>" if query.description else ""
    if query.params:
        example = escape("?" + urlencode(query.params))
        shown = escape(", ".join(f"{k} = {v}" for k, v in query.params.items()))
        description += f'<p>As in the guide: <a href="{example}">{shown}</a></p>'
    return {
        "title": query.title,
        "sql": sql,
        "params": list(query.params),
        "description_html": description,
    }
