"""One article, several copies: the stored article does not depend on which copy came first.

The three real emnews/outlet pairs of the corpus are stored in both orders, in one run and
in two, by crawl (a mirror, one request at a time so the order is the one asked for) and by
backfill, on SQLite and PostgreSQL: every combination ends with the same rows, those of the
emnews copy's text with the digest and the union of both copies' securities. A database
written before copies were recorded (``fixtures/legacy``) upgrades and completes the merge.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime, MetaData, select, text

from crawler.pages.post import parse_post
from fixtures.server import MirrorServer, MirrorSite
from pipelines.upsert import stock_rows_of
from schema.db import make_engine
from schema.migrate import upgrade
from tests.crawling import ROOT, environment, post_paths, run_cron, table_rows
from tests.test_backfill import backfill

pytestmark = pytest.mark.slow

POSTS = ROOT / "fixtures" / "corpus" / "posts"
LEGACY = ROOT / "fixtures" / "legacy" / "finews-0004.json"
# The emnews copy's file and the outlet copy's, by infoCode.
PAIRS = {
    code: (f"{day}-{code[2:]}.md", f"{day}-{code}.md")
    for day, code in (("2022-05-31", "NW202205312398034850"),
                      ("2022-01-07", "NW202201072239307540"),
                      ("2022-05-26", "NW202205262391921712"))
}  # fmt: skip
OUTLETS = "cailianshe,quanshangzhongguo,shanghaizhengquanbao"
# What must not differ between combinations (where and when a row was written may).
ARTICLE_COLUMNS = ("info_code", "title", "published_at", "category", "outlet", "source",
                   "digest", "paragraphs", "body_text", "body_html", "images", "source_url",
                   "content_hash", "revision")  # fmt: skip


def copies(code: str) -> tuple[Any, Any]:
    emnews, outlet = (parse_post((POSTS / name).read_bytes(), "file:///x") for name in PAIRS[code])
    return emnews, outlet


def expected_rows() -> tuple[list[tuple], list[tuple]]:
    """The merged rows, read off the post files: the emnews copy's text and digest; stock
    rows over both copies, the name from the copy that has one, primary if either charts
    it, the most mentions of either."""
    articles, stocks = [], []
    for code in sorted(PAIRS):
        emnews, outlet = copies(code)
        assert emnews.category == "emnews" and outlet.category in OUTLETS.split(",")
        row = {**vars(emnews), "body_text": "\n".join(emnews.paragraphs), "revision": 1}
        row["content_hash"] = emnews.content_hash()
        articles.append(tuple(row[c] for c in ARTICLE_COLUMNS))
        union = {(r["market"], r["code"]): r for r in stock_rows_of(emnews)}
        for r in stock_rows_of(outlet):
            have = union.setdefault((r["market"], r["code"]), r)
            have["is_primary"] = have["is_primary"] or r["is_primary"]
            have["mentions"] = max(have["mentions"], r["mentions"])
        stocks += [(code, *(r[c] for c in STOCK_COLUMNS)) for r in union.values()]
    return articles, sorted(stocks)


STOCK_COLUMNS = ("market", "code", "symbol", "name", "kind", "is_primary", "mentions")


def stored_rows(db_url: str) -> tuple[list[tuple], list[tuple], set[tuple[str, str]]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            meta = MetaData()
            meta.reflect(conn, only=["articles", "stock_mentions", "article_categories"])
            a, s, links = (meta.tables[t] for t in ("articles", "stock_mentions",
                                                     "article_categories"))  # fmt: skip
            articles = conn.execute(
                select(*(a.c[c] for c in ARTICLE_COLUMNS)).order_by(a.c.info_code)
            ).all()
            stocks = conn.execute(select(s.c.info_code, *(s.c[c] for c in STOCK_COLUMNS))).all()
            linked = conn.execute(select(links.c.info_code, links.c.category)).all()
    finally:
        engine.dispose()
    # Reflected columns come back raw: times as text on SQLite, booleans as 0/1.
    return (
        [tuple(_plain(v) for v in row) for row in articles],
        sorted(tuple(_plain(v) for v in row) for row in stocks),
        {tuple(row) for row in linked},
    )


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value[:2] == "20" and value[10:11] == " " and "+08:00" in value:
        return datetime.fromisoformat(value)
    return value


def check_merged(db_url: str) -> None:
    articles, stocks = expected_rows()
    got_articles, got_stocks, linked = stored_rows(db_url)
    for got, want in zip(got_articles, articles, strict=True):
        assert got == want, [
            c for c, x, y in zip(ARTICLE_COLUMNS, got, want, strict=True) if x != y
        ]
    assert got_stocks == stocks
    emnews = {code: copies(code)[0] for code in PAIRS}
    assert len(emnews["NW202205312398034850"].stocks) == 40, "the 40 securities of the pair"
    for code, copy in emnews.items():
        mine = {(s.market, s.code) for s in copy.stocks}
        assert mine <= {(row[1], row[2]) for row in got_stocks if row[0] == code}
        assert {category for c, category in linked if c == code} == {
            "emnews", copies(code)[1].category,
        }  # fmt: skip


# -- backfill -----------------------------------------------------------------------------------


def tree(root: Path, emnews_first: bool) -> Path:
    """The six files; the backfill reads in path order (``_posts/`` before ``old_post/``)."""
    first, second = (0, 1) if emnews_first else (1, 0)
    for names in PAIRS.values():
        for index, folder in ((first, "_posts"), (second, "old_post")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(POSTS / names[index], root / folder / names[index])
    return root


@pytest.mark.parametrize("emnews_first", [True, False], ids=["emnews-first", "outlet-first"])
@pytest.mark.parametrize("runs", [1, 2], ids=["one-run", "two-runs"])
def test_backfill_merges_copies_in_any_order(tmp_path, db_url, runs, emnews_first):
    root = tree(tmp_path / "site", emnews_first)
    if runs == 1:
        backfill(root, db_url)
    else:
        order = ["emnews", OUTLETS] if emnews_first else [OUTLETS, "emnews"]
        for categories in order:
            backfill(root, db_url, "-a", f"categories={categories}")
    check_merged(db_url)


# -- crawl --------------------------------------------------------------------------------------


@pytest.mark.parametrize("emnews_first", [True, False], ids=["emnews-first", "outlet-first"])
@pytest.mark.parametrize("runs", [1, 2], ids=["one-run", "two-runs"])
def test_crawl_merges_copies_in_any_order(tmp_path, db_url, runs, emnews_first):
    files = [(str(POSTS / n), n, (POSTS / n).read_bytes()) for pair in PAIRS.values() for n in pair]
    site = MirrorSite(tmp_path / "site", files)
    site.build()
    order = ["emnews", OUTLETS] if emnews_first else [OUTLETS, "emnews"]
    # One request at a time, first in first out: posts in the order of the categories asked.
    fifo = "SCHEDULER_MEMORY_QUEUE=scrapy.squeues.FifoMemoryQueue"
    one = ("-s", "CONCURRENT_REQUESTS=1", "-s", "AUTOTHROTTLE_ENABLED=False", "-s", fifo)
    with MirrorServer(site.root) as server:
        lock = tmp_path / "crawl.lock"
        arguments = [",".join(order)] if runs == 1 else order
        for categories in arguments:
            result = run_cron(db_url, server.url, lock, "-a", f"categories={categories}", *one)
            assert result.returncode == 0, result.stderr[-3000:]
        fetched = post_paths(server.paths(None))
    assert len(fetched) == 6, "each copy downloaded once"
    first = [path.split("/")[1] for path in fetched][:3]
    assert (first == ["emnews"] * 3) == emnews_first, fetched  # the order asked for
    check_merged(db_url)


def test_a_crawl_that_sees_emnews_later_downloads_it_once(tmp_path, sqlite_url):
    files = [(str(POSTS / n), n, (POSTS / n).read_bytes()) for pair in PAIRS.values() for n in pair]
    site = MirrorSite(tmp_path / "site", files)
    site.build()
    with MirrorServer(site.root) as server:
        lock = tmp_path / "crawl.lock"
        assert run_cron(sqlite_url, server.url, lock, "-a", f"categories={OUTLETS}").returncode == 0
        server.clear()
        later = run_cron(sqlite_url, server.url, lock)
        assert later.returncode == 0, later.stderr[-3000:]
        assert sorted(p.split("/")[1] for p in post_paths(server.paths(None))) == ["emnews"] * 3
        assert (later.stats["finews/updated"], later.stats["finews/skipped/stored"]) == (3, 3)
        check_merged(sqlite_url)
        server.clear()
        assert run_cron(sqlite_url, server.url, lock).returncode == 0
        assert post_paths(server.paths(None)) == [], "a third crawl downloads no post page"


# -- a database from before copies were recorded ------------------------------------------------


def load_legacy(url: str) -> dict[str, list[dict]]:
    """``fixtures/legacy/finews-0004.json`` written into a new database at revision 0004."""
    data = json.loads(LEGACY.read_text(encoding="utf-8"))
    upgrade(url, data["alembic_version"])
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            meta = MetaData()
            meta.reflect(conn)
            for name, rows in data["tables"].items():
                table = meta.tables[name]
                times = [c.name for c in table.columns if isinstance(c.type, DateTime)]
                for row in rows:  # PostgreSQL's timestamptz wants datetimes
                    row.update({c: datetime.fromisoformat(row[c]) for c in times if row[c]})
                if rows:
                    conn.execute(table.insert(), rows)
            if engine.dialect.name == "postgresql":  # ids given: move the sequences past them
                for name in ("crawl_runs", "rejects"):
                    sequence = f"pg_get_serial_sequence('{name}', 'id')"
                    last = f"(SELECT coalesce(max(id), 0) + 1 FROM {name})"
                    conn.execute(text(f"SELECT setval({sequence}, {last}, false)"))
    finally:
        engine.dispose()
    return data["tables"]


def test_an_older_database_upgrades_keeps_every_row_and_refresh_completes_it(
    tmp_path, empty_db_url
):
    legacy = load_legacy(empty_db_url)
    before = table_rows(empty_db_url, *legacy)
    migrate = subprocess.run(
        [sys.executable, "-m", "schema.migrate"],  # what `make migrate` runs
        cwd=ROOT, env={**environment(), "FINEWS_DATABASE_URL": empty_db_url},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    after = table_rows(empty_db_url, *legacy)
    for name, rows in before.items():
        assert len(after[name]) == len(rows) == len(legacy[name]), name
        if name != "article_categories":  # it gained three columns
            assert after[name] == rows, name
    articles = {row["info_code"]: row for row in legacy["articles"]}
    code = "NW202205312398034850"
    assert articles[code]["category"] == "cailianshe", "the outlet copy came first"
    recorded = table_rows(empty_db_url, "article_categories")["article_categories"]
    assert sum(1 for row in recorded if row[5] is not None) == len(articles), (
        "the stored copy of each article is recorded, the others not: they were never kept"
    )

    root = tree(tmp_path / "site", emnews_first=True)
    backfill(root, empty_db_url, "-a", "refresh=1")
    articles_now, stocks_now, _ = stored_rows(empty_db_url)
    want_articles, want_stocks = expected_rows()
    assert [r for r in articles_now if r[0] in PAIRS] == want_articles
    assert [r for r in stocks_now if r[0] in PAIRS] == want_stocks
