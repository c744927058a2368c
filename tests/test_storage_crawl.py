"""A real Scrapy crawl in a subprocess: the pipelines as configured in crawler/settings.py.

The spider yields hand-built items (no network): it checks the time-based flush from inside
the running reactor, and the store's signal handlers close the run ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.db import make_engine
from schema.models import Article, ArticleCategory, CrawlRun, Reject
from tests.conftest import add_foreign_table

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

SPIDER = """
import asyncio
import sys

from scrapy import Spider
from scrapy.crawler import CrawlerProcess
from scrapy.utils.project import get_project_settings
from sqlalchemy import func, select

from schema.db import make_engine
from schema.models import Article
from tests.conftest import make_article


class ItemsSpider(Spider):
    name = "storage-e2e"
    mode = "test"

    def __init__(self, scenario="ok", **kwargs):
        super().__init__(**kwargs)
        self.scenario = scenario
        self.arguments = {"scenario": scenario}

    async def start(self):
        if self.scenario == "broken":
            raise RuntimeError("start failed on purpose")
        store = self.crawler.finews_store
        print("CHECK known_before", "NW202204272361734680" in store.stored_codes(), flush=True)
        yield make_article()
        yield make_article(category="emnews", url="https://finews.withounder.com/emnews/x.html")
        yield make_article(None, published_at=None, title="", paragraphs=[], digest=None,
                           body_html=None, url="file:///posts/bad.md")
        await asyncio.sleep(1.0)  # FINEWS_STORE_FLUSH_SECONDS is 0.2
        engine = make_engine(self.settings["FINEWS_DATABASE_URL"])
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(Article)).scalar_one()
        engine.dispose()
        print("CHECK stored_before_close", rows, flush=True)


settings = get_project_settings()
settings.set("FINEWS_DATABASE_URL", sys.argv[1])
settings.set("FINEWS_STORE_FLUSH_SECONDS", 0.2)
settings.set("TELNETCONSOLE_ENABLED", False)
process = CrawlerProcess(settings)
process.crawl(ItemsSpider, scenario=sys.argv[2])
process.start()
"""


def crawl(tmp_path: Path, db_url: str, scenario: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "crawl_items.py"
    script.write_text(SPIDER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FINEWS_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, str(script), db_url, scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def checks(output: str) -> dict[str, str]:
    lines = [line.split()[1:] for line in output.splitlines() if line.startswith("CHECK ")]
    return {key: value for key, value in lines}


def test_a_real_crawl_stores_merges_rejects_and_closes_its_run(tmp_path, db_url):
    # PostgreSQL here trusts local users and ignores the password: it must only stay unlogged.
    with_password = db_url.replace("postgres@", "postgres:s3cret-pw@")
    result = crawl(tmp_path, with_password, "ok")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "s3cret-pw" not in result.stdout + result.stderr

    assert checks(result.stdout) == {"known_before": "False", "stored_before_close": "1"}
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            [run] = session.scalars(select(CrawlRun)).all()
            [article] = session.scalars(select(Article)).all()
            categories = set(session.scalars(select(ArticleCategory.category)))
            [reject] = session.scalars(select(Reject)).all()
    finally:
        engine.dispose()
    assert (run.spider, run.mode, run.arguments) == ("storage-e2e", "test", {"scenario": "ok"})
    assert (run.status, run.close_reason, run.finished_at is not None) == (
        "finished",
        "finished",
        True,
    )
    # The emnews copy of the same article is merged in: its category's text is preferred.
    assert (run.seen, run.stored, run.updated, run.duplicates, run.rejected) == (3, 1, 1, 0, 1)
    assert article.category == "emnews"
    assert article.run_id == run.id
    assert categories == {"zhengquanribaowang", "emnews"}
    assert (reject.url, reject.run_id) == ("file:///posts/bad.md", run.id)
    assert reject.reason.startswith("missing info_code")
    assert "'drop_item/article/missing_info_code': 1" in result.stderr
    assert "'item_dropped_count': 1" in result.stderr


def test_a_crawl_that_fails_to_start_still_closes_its_run(tmp_path, sqlite_url):
    result = crawl(tmp_path, sqlite_url, "broken")
    assert result.returncode == 0, result.stderr[-3000:]

    engine = make_engine(sqlite_url)
    try:
        with Session(engine) as session:
            [run] = session.scalars(select(CrawlRun)).all()
    finally:
        engine.dispose()
    assert (run.status, run.close_reason, run.finished_at is not None) == (
        "failed",
        "start_error",
        True,
    )
    assert run.errors >= 1


def test_a_crawl_refuses_a_database_it_did_not_create(tmp_path, empty_sqlite_url):
    add_foreign_table(empty_sqlite_url)
    result = crawl(tmp_path, empty_sqlite_url, "ok")

    assert "has no finews schema (never migrated): run `make migrate`" in result.stderr
    assert "CHECK" not in result.stdout, "the spider never started"
