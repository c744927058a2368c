"""The store's writers (``pipelines.writer``): the writer process keeps the store's promises.

Each test runs on SQLite and PostgreSQL. Batches go through ``Store`` as in a crawl, with
``writer="process"`` unless the test compares both kinds.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crawler.items import Stock
from pipelines import writer as writers
from pipelines.store import Store, writer_setting
from pipelines.writer import Batch, LocalWriter, ProcessWriter
from schema.db import database_url
from schema.models import Article, ArticleCategory, CrawlRun, Reject, StockMention
from tests.conftest import make_article

pytestmark = pytest.mark.slow


def code(n: int) -> str:
    return f"NW{n:018d}"


def rows(engine: Engine) -> dict[str, tuple]:
    """Every article with what a writer decides: revision, text, stocks, categories."""
    with Session(engine) as session:
        links = {(c.info_code, c.category) for c in session.scalars(select(ArticleCategory))}
        stocks = {(s.info_code, s.code, s.mentions) for s in session.scalars(select(StockMention))}
        return {
            a.info_code: (
                a.revision,
                a.title,
                a.category,
                sorted(slug for info, slug in links if info == a.info_code),
                sorted((c, m) for info, c, m in stocks if info == a.info_code),
            )
            for a in session.scalars(select(Article))
        }


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def a_run(store: Store) -> None:
    """Articles over several batches: new ones, a revision in a later batch, a second
    category for an article written earlier, and an article seen twice in one batch."""
    for n in range(1, 27):
        store.add(make_article(code(n)))
    # code(26) is queued: the store hands its batch over first, then queues the revision.
    store.add(make_article(code(26), title="revised while queued"))
    store.add(make_article(code(3), title="revised title"))  # batches after code(3)'s
    store.add_link(code(1), "emnews", "https://finews.withounder.com/emnews/x.html")


@pytest.mark.parametrize("kind", ["local", "process"])
def test_both_writers_store_the_same_rows(db_url, engine, kind):
    store = Store(db_url, batch_size=4, writer=kind)
    store.open("writer-test")
    a_run(store)
    assert store.finish() == "finished"

    stored = rows(engine)
    assert len(stored) == 26
    assert stored[code(3)][:2] == (2, "revised title"), "the later batch is written later"
    assert stored[code(26)][:2] == (2, "revised while queued")
    assert stored[code(1)][3] == ["emnews", "zhengquanribaowang"]
    assert stored[code(2)] == (
        1,
        "光大银行联合美团发力“新市民”",
        "zhengquanribaowang",
        ["zhengquanribaowang"],
        [("03690", 1), ("601818", 2)],
    )
    with Session(engine) as session:
        [run] = session.scalars(select(CrawlRun)).all()
    assert (run.stored, run.updated, run.status) == (26, 2, "finished")
    assert store.stats["finews/batches"] == 8  # 6 full, the one before the revision, the rest


def test_every_report_comes_back_when_the_writer_lags(db_url, engine):
    # More batches than the writer may hold: submit waits for reports, and keeps them.
    store = Store(db_url, batch_size=1, writer="process")
    store.open("writer-test")
    assert isinstance(store._writer, ProcessWriter)
    for n in range(1, 3 * writers.IN_FLIGHT + 2):
        store.add(make_article(code(n)))
    assert store.finish() == "finished"

    total = 3 * writers.IN_FLIGHT + 1
    assert store.stats["finews/stored"] == total
    assert count(engine, Article) == total
    with Session(engine) as session:
        assert session.scalars(select(CrawlRun.stored)).one() == total


def test_an_article_on_its_way_to_the_writer_counts_as_stored(db_url):
    store = Store(db_url, batch_size=2, writer="process", flush_seconds=3600)
    store.open("writer-test")
    store.add(make_article(code(1), category="emnews"))
    store.add(make_article(code(2)))  # a full batch: handed to the writer process
    assert store._sent, "the batch is on its way, not reported yet"
    assert store.is_stored(code(1)) and store.is_stored(code(2))
    assert store.is_linked(code(1), "emnews") and not store.is_linked(code(1), "other")
    store.sync()
    assert not store._sent and not store._in_flight
    assert store.is_stored(code(1)) and store.is_linked(code(1), "emnews")
    store.finish()


def test_a_killed_writer_process_loses_nothing(db_url, engine, caplog):
    caplog.set_level(logging.WARNING, logger="pipelines.writer")
    store = Store(db_url, batch_size=5, writer="process")
    store.open("writer-test")
    for n in range(1, 11):
        store.add(make_article(code(n)))
    writer = store._writer
    assert isinstance(writer, ProcessWriter) and writer.pid
    os.kill(writer.pid, signal.SIGKILL)
    for n in range(11, 31):
        store.add(make_article(code(n)))
    assert store.finish() == "finished"

    assert count(engine, Article) == 30
    assert writer.fell_back
    assert "The writer process stopped" in caplog.text
    assert "in the crawl process" in caplog.text
    # Batches the writer had written before it died come back as unchanged, never twice.
    assert store.stats["finews/stored"] + store.stats.get("finews/unchanged", 0) == 30


def test_a_batch_the_database_refuses_is_retried_in_the_writer(db_url, engine):
    broken = make_article(
        code(2), stocks=[Stock(None, "600160", "600160.SH", "x", "stock", False, 1)]
    )
    store = Store(db_url, batch_size=3, writer="process")
    store.open("writer-test")
    for article in (make_article(code(1)), broken, make_article(code(3))):
        store.add(article)
    assert store.finish() == "finished"

    assert count(engine, Article) == 2
    with Session(engine) as session:
        [reject] = session.scalars(select(Reject)).all()
    assert (reject.reason, reject.info_code) == ("database error", code(2))
    assert "market" in (reject.detail or "")
    assert store.stats["finews/batch_failures"] == 1


def test_a_writer_bug_fails_the_run_and_rejects_its_batch(db_url, engine, caplog):
    # A stock that is not a Stock: the writer's own code fails, not the database.
    odd = replace(make_article(code(2)), stocks=["not a stock"])  # type: ignore[list-item]
    store = Store(db_url, batch_size=2, writer="process")
    store.open("writer-test")
    store.add(make_article(code(1)))
    store.add(odd)
    store.add(make_article(code(3)))
    assert store.finish() == "failed"

    assert "Could not write a batch of 2 articles: the writer failed" in caplog.text
    assert "TypeError" in caplog.text
    with Session(engine) as session:
        reasons = {r.info_code: r.reason for r in session.scalars(select(Reject))}
        stored = set(session.scalars(select(Article.info_code)))
    assert reasons == {code(1): "storage error", code(2): "storage error"}
    assert stored == {code(3)}, "the next batch is written as usual"


def test_the_writer_process_gets_the_password(postgres_url):
    # A URL with a password must reach the writer in full (str(URL) would hide it).
    url = database_url(postgres_url.replace("postgres@", "postgres:s3cret-pw@"))
    writer = ProcessWriter(url)
    try:
        writer.submit(Batch(1, None, [make_article(code(1))], [], []))
        [report] = writer.drain()
    finally:
        writer.close()
    assert report.error is None and report.failed is None
    assert [o.stored for o in report.outcomes] == [[code(1)]]


def test_in_memory_sqlite_is_written_in_the_crawl_process():
    # Another process would open another, empty database.
    writer = Store("sqlite://", writer="process")._start_writer()
    assert isinstance(writer, LocalWriter)
    writer.close()


@pytest.mark.parametrize(
    ("value", "cores", "kind"),
    [(None, 2, "process"), (None, 1, "local"), ("False", 2, "local"), (True, 1, "process")],
)
def test_the_writer_setting(monkeypatch, value, cores, kind):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert writer_setting(value) == kind
