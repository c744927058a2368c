"""The analysts' views of migration 0006 (article_stocks, daily_outlet_counts, run_health) on
SQLite and PostgreSQL, read as raw SQL like an analyst would; and the downgrade of 0006.

Expected rows were read in ``fixtures/corpus/posts``:

- ``NW202205262391921712`` (2022-05-26 00:19:55 +08:00, emnews copy ``2022-05-26-2022052623
  91921712.md`` merged with the 上海证券报 copy): NIO (106) charted in a K-line block and
  marked up twice (蔚来), 300343 (联创股份) and 600160 (巨化股份) three times, 600636 (国新文化)
  and board BK0493 (新能源) twice, board BK0839 (知识产权) once; BK0473 sits in the source
  line and is no mention. The outlet copy adds NIO once, charted.
- Days: the 60 distinct infoCodes of the files dated 2021-12-08 are all emnews (东财滚动);
  2022-01-07, 2022-05-26 and 2022-05-31 hold one emnews article each (with an outlet copy,
  whose text loses to emnews), 2022-04-27 one 证券日报网 article. The 2021-12-01 posts have no
  infoCode and the undated copy of …391921712 no date: they are refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime

import pytest
from alembic import command
from sqlalchemy import Engine, insert, text

from crawler.items import Article
from schema.db import make_engine
from schema.migrate import alembic_config, upgrade
from schema.models import CrawlRun
from schema.types import BEIJING
from tests.conftest import BACKENDS, make_article, pg_database
from tests.test_search import HFO, XINSHIMIN, stored_corpus
from tests.test_storage_corpus import corpus_files


@pytest.fixture(scope="module", params=BACKENDS)
def corpus_engine(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Engine]:
    """The real corpus, stored once per backend for the module's read-only tests."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("corpus") / "finews.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield from stored_corpus(f"sqlite:///{path}")
    else:
        admin, template = (request.getfixturevalue(f) for f in ("pg_admin", "pg_template"))
        with pg_database(admin, template=template) as url:
            yield from stored_corpus(url)


def rows(engine: Engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), params)]


def instant(value: str | datetime) -> datetime:
    """A timestamp as raw SQL returns it: text at +08:00 on SQLite, a datetime on PostgreSQL."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# -- article_stocks -----------------------------------------------------------------------------


def test_article_stocks_gives_each_security_of_an_article_with_its_secid(corpus_engine):
    found = rows(
        corpus_engine,
        "SELECT secid, symbol, name, kind, is_primary, mentions, info_code, published_at, "
        "title, outlet FROM article_stocks WHERE info_code = :code",
        code=HFO,
    )

    securities = sorted((r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in found)
    assert securities == [
        ("0.300343", "300343.SZ", "联创股份", "stock", False, 3),
        ("1.600160", "600160.SH", "巨化股份", "stock", False, 3),
        ("1.600636", "600636.SH", "国新文化", "stock", False, 2),
        ("106.NIO", "NIO.N", "蔚来", "stock", True, 3),
        ("90.BK0493", "BK0493", "新能源", "board", False, 2),
        ("90.BK0839", "BK0839", "知识产权", "board", False, 1),
    ]
    assert {(r[6], instant(r[7]), r[8], r[9]) for r in found} == {
        (HFO, datetime(2022, 5, 26, 0, 19, 55, tzinfo=BEIJING),
         "国内首次！蔚来汽车启用这款“绿色”制冷液 哪些A股公司早有布局？", "东财滚动"),
    }  # fmt: skip


def test_article_stocks_has_one_row_per_stock_mention(corpus_engine):
    [(view, table)] = rows(
        corpus_engine,
        "SELECT (SELECT count(*) FROM article_stocks), (SELECT count(*) FROM stock_mentions)",
    )
    assert view == table > 6
    by_secid = rows(
        corpus_engine,
        "SELECT info_code, symbol, is_primary FROM article_stocks WHERE secid = '1.601818'",
    )
    assert [(code, symbol, bool(primary)) for code, symbol, primary in by_secid] == [
        (XINSHIMIN, "601818.SH", True)
    ]


# -- daily_outlet_counts ------------------------------------------------------------------------


def test_daily_outlet_counts_of_the_corpus(corpus_engine):
    found = rows(corpus_engine, "SELECT day, outlet, articles FROM daily_outlet_counts")

    assert [(str(day), outlet, n) for day, outlet, n in found] == [
        ("2022-05-31", "东财滚动", 1),
        ("2022-05-26", "东财滚动", 1),  # 00:19:55 Beijing time: 2022-05-25 in UTC
        ("2022-04-27", "证券日报网", 1),
        ("2022-01-07", "东财滚动", 1),
        ("2021-12-08", "东财滚动", 60),
    ]


def test_the_day_is_the_beijing_day(db_url, engine, pipeline_run):
    def at(code: str, *moment: int, **fields) -> Article:
        return make_article(code, published_at=datetime(*moment, tzinfo=BEIJING), **fields)

    pipeline_run(db_url, [
        at("NW202204282361734681", 2022, 4, 28, 0, 30),  # 16:30 the day before in UTC
        at("NW202204272361734682", 2022, 4, 27, 23, 59, 59),
        at("NW202204272361734683", 2022, 4, 27, 8, 0),  # midnight UTC
        at("NW202204272361734684", 2022, 4, 27, 0, 0, outlet="上海证券报"),
    ])  # fmt: skip
    with engine.begin() as conn:
        # Written by hand at another offset: still the Beijing day (the 28th, 00:30).
        conn.execute(
            text("UPDATE articles SET published_at = :t WHERE info_code = :c"),
            {"t": "2022-04-27 16:30:00+00:00", "c": "NW202204272361734683"},
        )
        if engine.dialect.name == "postgresql":  # the session's zone must not matter
            conn.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
        found = conn.execute(text("SELECT day, outlet, articles FROM daily_outlet_counts")).all()

    assert [(str(day), outlet, n) for day, outlet, n in found] == [
        ("2022-04-28", "证券日报网", 2),
        ("2022-04-27", "上海证券报", 1),
        ("2022-04-27", "证券日报网", 1),
    ]


# -- run_health -----------------------------------------------------------------------------


def test_run_health_shows_the_newest_runs_first_with_their_duration(db_url, engine):
    def run(started: datetime, finished: datetime | None, status: str, **columns) -> dict:
        row = {"spider": "finews", "mode": "crawl", "arguments": {}, "started_at": started,
               "finished_at": finished, "status": status, "close_reason": None,
               "exit_status": None}  # fmt: skip
        counts = dict.fromkeys(("seen", "stored", "unchanged", "rejected", "errors"), 0)
        return {**row, **counts, **columns}

    with engine.begin() as conn:
        conn.execute(insert(CrawlRun), [
            run(datetime(2022, 5, 26, 10, 0, tzinfo=BEIJING),
                datetime(2022, 5, 26, 10, 2, 3, 500000, tzinfo=BEIJING), "finished",
                seen=10, stored=7, unchanged=2, rejected=1, errors=1, exit_status=0),
            run(datetime(2022, 5, 27, 9, 0, tzinfo=BEIJING), None, "running", seen=3),
            run(datetime(2022, 5, 26, 23, 30, tzinfo=BEIJING),
                datetime(2022, 5, 27, 0, 0, 1, tzinfo=BEIJING), "failed",
                close_reason="database_unavailable", exit_status=3),
        ])  # fmt: skip
    found = rows(
        engine,
        "SELECT id, status, close_reason, exit_status, duration_s, seen, stored, unchanged, "
        "rejected, errors, started_at, finished_at FROM run_health",
    )

    assert [r[:10] for r in found] == [
        (2, "running", None, None, None, 3, 0, 0, 0, 0),
        (3, "failed", "database_unavailable", 3, 1801.0, 0, 0, 0, 0, 0),
        (1, "finished", None, 0, 123.5, 10, 7, 2, 1, 1),
    ]
    assert instant(found[0][10]) == datetime(2022, 5, 27, 9, 0, tzinfo=BEIJING)
    assert found[0][11] is None


def test_run_health_of_the_corpus_run(corpus_engine):
    [(status, seen, stored, duration)] = rows(
        corpus_engine, "SELECT status, seen, stored, duration_s FROM run_health"
    )
    assert (status, seen, stored) == ("finished", len(corpus_files()), 64)
    assert 0 <= duration < 60


# -- the migration ------------------------------------------------------------------------------


def schema_objects(url: str) -> set[tuple[str, str]]:
    """(kind, name) of everything in the database's schema, extensions included."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                query = "SELECT type, name FROM sqlite_master"
            else:
                query = (
                    "SELECT CAST(relkind AS text), relname FROM pg_class "
                    "WHERE relnamespace = 'public'::regnamespace "
                    "UNION SELECT 'extension', extname FROM pg_extension "
                    "UNION SELECT 'trigger', tgname FROM pg_trigger WHERE NOT tgisinternal"
                )
            return {(kind, name) for kind, name in conn.execute(text(query))}
    finally:
        engine.dispose()


CREATED = {
    "sqlite": {
        ("view", "article_stocks"), ("view", "daily_outlet_counts"), ("view", "run_health"),
        ("view", "articles_fts_source"), ("table", "articles_fts"),
        ("table", "articles_fts_data"), ("table", "articles_fts_idx"),
        ("table", "articles_fts_config"), ("table", "articles_fts_terms"),
        ("table", "articles_fts_pending"), ("trigger", "articles_fts_insert"),
        ("trigger", "articles_fts_delete"), ("trigger", "articles_fts_update"),
        ("trigger", "articles_fts_flush"),
    },
    "postgresql": {
        ("v", "article_stocks"), ("v", "daily_outlet_counts"), ("v", "run_health"),
        ("i", "ix_articles_title_trgm"), ("i", "ix_articles_body_text_trgm"),
        ("extension", "pg_trgm"),
    },
}  # fmt: skip


def test_0006_downgrades_to_exactly_0005_and_upgrades_again(empty_db_url):
    config = alembic_config(empty_db_url)
    upgrade(empty_db_url, "0005")
    before = schema_objects(empty_db_url)
    upgrade(empty_db_url)
    created = schema_objects(empty_db_url) - before

    command.downgrade(config, "0005")
    after_downgrade = schema_objects(empty_db_url)
    upgrade(empty_db_url)
    command.check(config)  # raises if autogenerate finds a difference

    backend = "sqlite" if empty_db_url.startswith("sqlite") else "postgresql"
    assert created == CREATED[backend]
    assert after_downgrade == before
    assert schema_objects(empty_db_url) - before == CREATED[backend]
