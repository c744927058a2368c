"""End to end: ``scrapy cron`` crawls a mirror of the corpus plus synthetic posts, three times.

1. The first crawl stores every article of the mirror once, with the fields the post-file
   extractor gives for its post file, and every category it is published under.
2. A second crawl of the unchanged mirror downloads only the home and category pages and
   changes no row.
3. After 30 posts are added, a third crawl downloads exactly those 30 post pages.

On SQLite and on PostgreSQL. The mirror server's request log is the record of downloads.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from crawler.pages.site import category_url
from crawler.processors import info_code_from_name
from fixtures.server import MirrorServer, MirrorSite, corpus_files, synthetic_files
from pipelines.upsert import stock_rows_of
from schema.db import make_engine
from schema.models import Article, CrawlRun, Reject
from tests.crawling import (
    ROOT,
    Expected,
    environment,
    expected_from,
    later_posts,
    post_paths,
    run_cron,
    table_rows,
)

pytestmark = pytest.mark.slow

SYNTHETIC = 520
CATEGORIES = 24  # outlet categories; with emnews and the corpus's own, 27 in all
FIELDS = (
    "title", "published_at", "category", "outlet", "source", "digest", "paragraphs",
    "images", "body_html", "source_url",
)  # fmt: skip
DATA_TABLES = ("articles", "article_categories", "stock_mentions", "categories")
STOCK_FIELDS = ("market", "code", "symbol", "name", "kind", "is_primary", "mentions")


@pytest.fixture
def site(tmp_path: Path) -> MirrorSite:
    files = corpus_files() + synthetic_files(
        SYNTHETIC, seed=11, categories=CATEGORIES, duplicates=0.03, broken=0.02
    )
    site = MirrorSite(tmp_path / "site", files)
    site.build()
    return site


def check_stored(db_url: str, expected: Expected, server_url: str) -> None:
    """Every expected article stored once, its fields as extracted from its post file."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            rows = session.scalars(
                select(Article).options(
                    selectinload(Article.categories), selectinload(Article.stocks)
                )
            ).all()
            wrong: list[str] = []
            for row in rows:
                sightings = expected.articles.get(row.info_code)
                if sightings is None:
                    wrong.append(f"{row.info_code}: not an article of the mirror")
                    continue
                # The copies merged: the emnews copy's text, else the first outlet's by slug.
                copies = [sightings[c] for c in sorted(sightings, key=lambda c: (c != "emnews", c))]
                item = copies[0]
                digest = next((copy.digest for copy in copies if copy.digest), None)
                for name in FIELDS:
                    want = digest if name == "digest" else getattr(item, name)
                    if getattr(row, name) != want:
                        wrong.append(f"{row.info_code}.{name}")
                if row.content_hash != item.content_hash():
                    wrong.append(f"{row.info_code}.content_hash")
                stocks = sorted(tuple(getattr(s, f) for f in STOCK_FIELDS) for s in row.stocks)
                if stocks != sorted(tuple(r[f] for f in STOCK_FIELDS) for r in union(copies)):
                    wrong.append(f"{row.info_code}.stocks")
                links = {link.category for link in row.categories}
                if links != set(sightings):
                    wrong.append(f"{row.info_code}.categories {links} != {set(sightings)}")
                for link in row.categories:
                    if not link.url.startswith(server_url):
                        wrong.append(f"{row.info_code}.url {link.url}")
            assert not wrong, f"{len(wrong)} differences, e.g. {wrong[:10]}"
            assert len(rows) == len(expected.articles)
            rejected = {r.url.removeprefix(server_url.rstrip("/")) for r in session.scalars(
                select(Reject))}  # fmt: skip
            assert rejected == expected.rejected_paths
    finally:
        engine.dispose()


def union(copies: list) -> list[dict]:
    """Stock rows over an article's copies: the first name, primary if any, most mentions."""
    rows: dict[tuple[str, str], dict] = {}
    for copy in copies:
        for row in stock_rows_of(copy):
            have = rows.setdefault((row["market"], row["code"]), row)
            have["name"] = have["name"] or row["name"]
            have["is_primary"] = have["is_primary"] or row["is_primary"]
            have["mentions"] = max(have["mentions"], row["mentions"])
    return list(rows.values())


def runs(db_url: str) -> list[CrawlRun]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))
    finally:
        engine.dispose()


def test_first_second_and_third_crawl(site: MirrorSite, db_url: str, tmp_path: Path):
    lock = tmp_path / "crawl.lock"
    expected = expected_from(site)
    categories = {p.category for p in site.manifest.posts}
    synthetic = [p for p in site.manifest.posts if p.source.startswith("synthetic:")]
    assert len(synthetic) >= 500  # besides every corpus file the site would render
    assert len(categories) >= 20
    assert sum(len(s) > 1 for s in expected.articles.values()) >= 10  # one article, two slugs

    with MirrorServer(site.root) as server:
        # 1. The first crawl stores everything once.
        first = run_cron(db_url, server.url, lock)
        assert first.returncode == 0, first.stderr[-3000:]
        requested = Counter(post_paths(server.paths(None)))
        assert max(requested.values()) == 1, "a post page was downloaded twice"
        # A page not downloaded must be a republished twin whose infoCode was already known
        # from its other page: it got its category link without a download.
        code_of = {p.path: info_code_from_name(p.name) for p in site.manifest.posts}
        fetched_codes = {code_of[path] for path in requested}
        unfetched = {p.path for p in site.manifest.posts} - set(requested)
        assert all(code_of[path] in fetched_codes for path in unfetched), unfetched
        check_stored(db_url, expected, server.url)
        assert first.stats["finews/stored"] == len(expected.articles)

        # 2. Unchanged mirror: home and category pages only, no row changes.
        before = table_rows(db_url, *DATA_TABLES)
        server.clear()
        second = run_cron(db_url, server.url, lock)
        assert second.returncode == 0, second.stderr[-3000:]
        assert post_paths(server.paths(None)) == []
        pages = 1 + 1 + len(categories)  # robots.txt, home, one page per category
        assert second.stats["downloader/request_count"] == pages
        assert second.stats["finews/skipped"] == len(site.manifest.posts)
        assert "finews/stored" not in second.stats
        assert table_rows(db_url, *DATA_TABLES) == before

        # 3. Thirty new posts: exactly their pages are downloaded, and they are stored.
        added = later_posts(site, 30, seed=12)
        known = {p.path for p in site.manifest.posts}
        site.add(added)
        new_paths = {p.path for p in site.manifest.posts} - known
        assert len(new_paths) == 30
        server.clear()
        third = run_cron(db_url, server.url, lock)
        assert third.returncode == 0, third.stderr[-3000:]
        assert sorted(post_paths(server.paths(None))) == sorted(new_paths)
        categories = {p.category for p in site.manifest.posts}
        assert third.stats["downloader/request_count"] == 1 + 1 + len(categories) + 30
        assert third.stats["finews/stored"] == 30
        check_stored(db_url, expected_from(site), server.url)

    ledger = runs(db_url)
    assert [(r.status, r.exit_status, r.mode) for r in ledger] == [
        ("finished", 0, "incremental")
    ] * 3
    assert [r.stored for r in ledger] == [len(expected.articles), 0, 30]
    assert ledger[1].skipped == len(site.manifest.posts) - 30


def test_a_later_copy_is_downloaded_once_and_merged(tmp_path: Path, sqlite_url: str):
    posts = synthetic_files(40, seed=3, duplicates=0.25)
    names = [name for _, name, _ in posts]
    # A republished twin carries its original's infoCode: hold the twins back at first.
    seen: set[str] = set()
    first, twins = [], []
    for post, name in zip(posts, names, strict=True):
        code = name.rsplit("-", 1)[-1].removesuffix(".md").removeprefix("NW")
        (twins if code in seen else first).append(post)
        seen.add(code)
    assert twins
    site = MirrorSite(tmp_path / "site", first)
    site.build()
    lock = tmp_path / "crawl.lock"
    with MirrorServer(site.root) as server:
        assert run_cron(sqlite_url, server.url, lock).returncode == 0
        site.add(twins)
        server.clear()
        again = run_cron(sqlite_url, server.url, lock)
        assert again.returncode == 0, again.stderr[-3000:]
        sources = {source for source, _, _ in twins}
        twin_paths = [post.path for post in site.manifest.posts if post.source in sources]
        assert sorted(post_paths(server.paths(None))) == sorted(twin_paths), "each once"
        check_stored(sqlite_url, expected_from(site), server.url)
        server.clear()
        assert run_cron(sqlite_url, server.url, lock).returncode == 0
        assert post_paths(server.paths(None)) == []


def test_refresh_fetches_every_post_again_and_changes_nothing(tmp_path: Path, sqlite_url: str):
    site = MirrorSite(tmp_path / "site", corpus_files()[:20] + synthetic_files(20, seed=8))
    site.build()
    lock = tmp_path / "crawl.lock"
    with MirrorServer(site.root) as server:
        assert run_cron(sqlite_url, server.url, lock).returncode == 0
        before = table_rows(sqlite_url, *DATA_TABLES)
        server.clear()
        again = run_cron(sqlite_url, server.url, lock, "-a", "refresh=1")
        assert again.returncode == 0, again.stderr[-3000:]
        assert sorted(post_paths(server.paths(None))) == sorted(p.path for p in site.manifest.posts)
        assert table_rows(sqlite_url, *DATA_TABLES) == before
    assert runs(sqlite_url)[-1].mode == "refresh"


def test_only_the_named_categories(tmp_path: Path, sqlite_url: str):
    site = MirrorSite(tmp_path / "site", synthetic_files(40, seed=9))
    site.build()
    wanted = ["zhengquanribaowang", "21shijijingjibaodao 21caijingAPP"]
    with MirrorServer(site.root) as server:
        crawl = run_cron(
            sqlite_url, server.url, tmp_path / "lock", "-a", f"categories={','.join(wanted)}"
        )
        assert crawl.returncode == 0, crawl.stderr[-3000:]
        fetched = server.paths(None)
    expected_posts = {p.path for p in site.manifest.posts if p.category in wanted}
    assert expected_posts
    assert set(post_paths(fetched)) == expected_posts
    pages = {category_url("", slug) for slug in wanted}
    assert set(fetched) - set(post_paths(fetched)) == {"/robots.txt"} | pages


# A user's own script, as Scrapy's docs show it: no ``if __name__ == "__main__"`` guard.
SCRIPT = """
import sys

from scrapy.crawler import CrawlerProcess
from scrapy.utils.project import get_project_settings

settings = get_project_settings()
settings.set("FINEWS_DATABASE_URL", sys.argv[1])
settings.set("FINEWS_STORE_BATCH_SIZE", 10)
settings.set("TELNETCONSOLE_ENABLED", False)
settings.set("AUTOTHROTTLE_START_DELAY", 0)
process = CrawlerProcess(settings)
process.crawl("finews", base_url=sys.argv[2])
process.start()
print("SCRIPT RAN", flush=True)
"""


def test_a_script_without_a_main_guard_crawls_once(tmp_path: Path, sqlite_url: str):
    site = MirrorSite(tmp_path / "site", synthetic_files(30, seed=12))
    site.build()
    script = tmp_path / "my_crawl.py"
    script.write_text(SCRIPT, encoding="utf-8")
    with MirrorServer(site.root) as server:
        result = subprocess.run(
            [sys.executable, str(script), sqlite_url, server.url],
            cwd=ROOT,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        fetched = Counter(post_paths(server.paths(None)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("SCRIPT RAN") == 1
    assert set(fetched) == {p.path for p in site.manifest.posts}
    assert max(fetched.values()) == 1
    [run] = runs(sqlite_url)
    assert (run.status, run.stored) == ("finished", len(site.manifest.posts))
