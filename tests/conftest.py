"""Database fixtures: every storage test runs on SQLite and on the machine's real PostgreSQL.

- ``db_url``: a migrated, empty database, parametrised ``sqlite`` (a file under tmp_path)
  and ``postgresql`` (a database ``finews_test_<random>`` created for the test and dropped
  after it, cloned from a template migrated once per session).
- ``empty_db_url``: the same, never migrated.
- ``sqlite_url`` / ``postgres_url``: one backend only.
- ``pipeline_run``: drive validate → dedupe → store directly, as Scrapy would.

PostgreSQL is expected at FINEWS_TEST_POSTGRES_URL (default: user postgres, trust auth, on
127.0.0.1:5432). If it is not reachable the PostgreSQL tests fail, saying so; ``.ci/run``
starts it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from scrapy import Spider
from scrapy.exceptions import DropItem
from scrapy.utils.test import get_crawler
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from crawler.items import Article, Stock
from schema.db import redact
from schema.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "FINEWS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BEIJING = timezone(timedelta(hours=8))
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


# -- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An autocommit engine on the server's maintenance database, to create databases."""
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    problem = None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        problem = str(exc.orig).strip()
    if problem is not None:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {redact(PG_ADMIN_URL)} ({problem}). "
            "Start it (`.ci/run` does: pg_ctlcluster <version> main start) or point "
            "FINEWS_TEST_POSTGRES_URL at a server where this user may create databases.",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@contextmanager
def pg_database(admin: Engine, template: str | None = None) -> Iterator[str]:
    """A new database (a copy of ``template`` if given), dropped on exit; yields its URL."""
    name = f"finews_test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_template(pg_admin: Engine) -> Iterator[str]:
    """The name of a database migrated to head once per session, to clone per test."""
    with pg_database(pg_admin) as url:
        upgrade(url)
        yield make_url(url).database or ""


@pytest.fixture
def postgres_url(pg_admin: Engine, pg_template: str) -> Iterator[str]:
    with pg_database(pg_admin, template=pg_template) as url:
        yield url


@pytest.fixture
def empty_postgres_url(pg_admin: Engine) -> Iterator[str]:
    with pg_database(pg_admin) as url:
        yield url


# -- SQLite -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "finews.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "finews.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'finews.db'}"


def add_foreign_table(url: str) -> None:
    """Make ``url`` a database of another application: one table that is not ours."""
    from schema.db import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()


# -- both ---------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database on each backend."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(name)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend, never migrated."""
    name = "empty_sqlite_url" if request.param == "sqlite" else "empty_postgres_url"
    return request.getfixturevalue(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    from schema.db import make_engine

    engine = make_engine(db_url)
    yield engine
    engine.dispose()


# -- items --------------------------------------------------------------------------------------


def make_article(info_code: str | None = "NW202204272361734680", **fields: Any) -> Article:
    """A small valid article; any field can be overridden."""
    article = Article(
        info_code=info_code,
        title="光大银行联合美团发力“新市民”",
        published_at=datetime(2022, 4, 27, 15, 22, 47, tzinfo=BEIJING),
        category="zhengquanribaowang",
        outlet="证券日报网",
        source="证券日报网",
        digest=None,
        paragraphs=["4月27日，光大银行、美团宣布联合发起新市民小微生意支持计划。", "第二段。"],
        images=["https://dfscdn.dfcfw.com/download/D1.jpg"],
        body_html="<p>4月27日，光大银行、美团宣布联合发起新市民小微生意支持计划。</p><p>第二段。</p>",
        source_url=f"http://finews.zning.xyz/html_News/NewsShare.html?infoCode={info_code}",
        url=f"https://finews.withounder.com/zhengquanribaowang/2022/04/27/{info_code}.html",
        stocks=[
            Stock("116", "03690", "03690.HK", None, "stock", True, 1),
            Stock("1", "601818", "601818.SH", "光大银行", "stock", True, 2),
        ],
    )
    return replace(article, **fields)


# -- pipelines ----------------------------------------------------------------------------------


class StorageTestSpider(Spider):
    name = "storage-test"
    mode = "test"
    arguments = {"note": "pipelines driven by the tests"}


class PipelineRun:
    """validate → dedupe → store on a test crawler, driven the way Scrapy drives them."""

    def __init__(self, db_url: str, settings: dict[str, Any] | None = None) -> None:
        from pipelines.dedupe import DedupePipeline
        from pipelines.store import StorePipeline
        from pipelines.validate import ValidatePipeline

        self.crawler = get_crawler(
            StorageTestSpider, {"FINEWS_DATABASE_URL": db_url, **(settings or {})}
        )
        self.crawler.spider = StorageTestSpider.from_crawler(self.crawler)
        self.pipelines = [
            cls.from_crawler(self.crawler)
            for cls in (ValidatePipeline, DedupePipeline, StorePipeline)
        ]
        self.stored: list[Article] = []
        self.dropped: list[str] = []

    @property
    def store(self) -> Any:
        return self.crawler.finews_store  # type: ignore[attr-defined]

    @property
    def stats(self) -> dict[str, Any]:
        return self.crawler.stats.get_stats()

    def open(self) -> PipelineRun:
        for pipeline in self.pipelines:
            if hasattr(pipeline, "open_spider"):
                pipeline.open_spider()
        return self

    def feed(self, *items: Any) -> PipelineRun:
        for item in items:
            try:
                for pipeline in self.pipelines:
                    item = pipeline.process_item(item)
            except DropItem as exc:
                self.dropped.append(str(exc))
            else:
                self.stored.append(item)
        return self

    def close(self, reason: str = "finished") -> PipelineRun:
        for pipeline in reversed(self.pipelines):
            if hasattr(pipeline, "close_spider"):
                pipeline.close_spider()
        # What the store's spider_closed handler does (test_storage_crawl covers the signal).
        self.store.finish(reason)
        return self


@pytest.fixture
def pipeline_run() -> Callable[..., PipelineRun]:
    """``pipeline_run(db_url, items, **settings)``: one whole run; returns the PipelineRun."""

    def run(db_url: str, items: Any = (), reason: str = "finished", **settings: Any) -> PipelineRun:
        return PipelineRun(db_url, settings).open().feed(*items).close(reason)

    return run


REDIS_URL = os.environ.get("FINEWS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_client() -> Iterator[Any]:
    """The machine's Redis (FINEWS_TEST_REDIS_URL); each test uses keys of its own."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(
            f"Redis is not reachable at {REDIS_URL} ({exc}): start redis-server, or point "
            "FINEWS_TEST_REDIS_URL at one"
        )
    yield client
    client.close()
