"""The Datasette plugin of ``finews browse``: search through ``schema.search``, never FTS MATCH.

Datasette's own search MATCHes an FTS table: on ``articles_fts`` (a trigram index) that
finds nothing for a 2-character word such as 茅台, and misses the articles still waiting in
``articles_fts_pending``. So:

- ``prepare_connection`` registers the SQL function ``finews_search(q, limit[, since,
  until, stock, outlet])``, which runs ``schema.search.search`` on a read-only engine of
  its own and returns a JSON array of ``{"info_code", "stocks", "snippet"}``, newest first;
  the canned query ``search`` (``analysis.datasette.metadata``) reads it with json_each;
- ``filters_from_request`` gives the ``articles`` table and the ``article_stocks`` view a
  search box (``?_search=``) that filters through the same function;
- ``render_cell`` links an ``info_code`` in query results and views to its article.

Imported only where Datasette is installed; reads only.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from datetime import date
from functools import cache
from typing import Any

from datasette import hookimpl
from datasette.filters import FilterArguments
from datasette.utils import tilde_encode
from markupsafe import Markup
from sqlalchemy import Engine

from analysis.datasette import read_only_engine
from analysis.datasette.metadata import SEARCH_FUNCTION
from schema.search import VIEWS, search

SEARCHABLE = ("articles", "article_stocks")  # have info_code, title and published_at
FILTER_LIMIT = 10_000  # hits a table page's search box filters by, newest first
MAX_LIMIT = 10_000
# One page asks the same search many times: its row count, its rows, each facet and each
# facet suggestion are statements of their own (a 1-character search takes ~0.8 s at
# 100,000 articles). An answer is reused for this long, so a crawl's new articles show up
# in searches a few seconds late.
REUSE_SECONDS = 5.0
ANSWERS_KEPT = 32
_answers: OrderedDict[tuple[Any, ...], tuple[float, str]] = OrderedDict()
_answers_lock = threading.Lock()


@cache
def _engine(path: str) -> Engine:
    return read_only_engine(path)


def finews_search(path: str, *args: Any) -> str:
    """The SQL function's body: ``args`` are q, limit, since, until, stock, outlet (blank or
    NULL: not given). A blank q finds nothing, as on a search page not yet filled in."""
    key = (path, *args)
    now = time.monotonic()
    with _answers_lock:
        kept = _answers.get(key)
    if kept is not None and now - kept[0] < REUSE_SECONDS:
        return kept[1]
    answer = _search(path, *args)
    with _answers_lock:
        _answers[key] = (now, answer)
        _answers.move_to_end(key)
        while len(_answers) > ANSWERS_KEPT:
            _answers.popitem(last=False)
    return answer


def _search(path: str, *args: Any) -> str:
    q, limit, since, until, stock, outlet = (list(args) + [None] * 6)[:6]
    if not str(q or "").strip():
        return "[]"
    hits = search(
        _engine(path),
        str(q),
        since=_day(since),
        until=_day(until),
        stock=_text(stock),
        outlet=_text(outlet),
        limit=min(int(limit or 20), MAX_LIMIT),
    )
    found = [
        {"info_code": h.info_code, "stocks": " ".join(h.stocks), "snippet": h.snippet} for h in hits
    ]
    return json.dumps(found, ensure_ascii=False)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip() or None


def _day(value: Any) -> date | None:
    text = _text(value)
    return date.fromisoformat(text) if text else None


@hookimpl
def prepare_connection(conn: Any, database: str, datasette: Any) -> None:
    path = datasette.get_database(database).path
    if not path:  # _internal, _memory: no articles to search
        return

    def function(*args: Any) -> str:
        return finews_search(path, *args)

    conn.create_function(SEARCH_FUNCTION, -1, function)


# trylast: Datasette's own search filter says supports_search=False for these (no FTS table
# of theirs is detected); the last word on the page's context must be this one's.
@hookimpl(trylast=True)
def filters_from_request(request: Any, database: str, table: str, datasette: Any) -> Any:
    if table not in SEARCHABLE or not datasette.get_database(database).path:
        return None
    query = (request.args.get("_search") or "").strip()
    context = {"supports_search": True, "search": query}
    if not query:
        return FilterArguments([], extra_context=context)
    where = (
        "info_code IN (SELECT json_extract(value, '$.info_code') FROM "
        f"json_each({SEARCH_FUNCTION}(:finews_search_q, {FILTER_LIMIT})))"
    )
    return FilterArguments(
        [where],
        params={"finews_search_q": query},
        human_descriptions=[
            f'title or body contains "{query}" (the newest {FILTER_LIMIT:,} such at most)'
        ],
        extra_context=context,
    )


@hookimpl
def render_cell(value: Any, column: str, table: str | None, database: str, datasette: Any) -> Any:
    # Tables link info_code themselves (primary and foreign keys); queries and views do not.
    if column != "info_code" or not isinstance(value, str) or not value:
        return None
    if table is not None and table not in VIEWS:
        return None
    url = datasette.urls.row(database, "articles", tilde_encode(value))
    return Markup('<a href="{}">{}</a>').format(url, value)
