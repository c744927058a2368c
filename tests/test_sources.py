"""The backfill's file ledger on SQLite and PostgreSQL: a file's row rides with its item.

``Store.track_file`` holds a ``source_files`` row until the item from the same URL is
queued (an article or a reject), then writes it in that batch's transaction.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crawler.items import Stock
from pipelines import sources
from pipelines.store import Store
from schema.models import Article, Reject, SourceFile
from tests.conftest import make_article

URL = "file:///archive/_posts/2022-04-27-NW202204272361734680.md"
CODE = "NW202204272361734680"


def file_row(path: str = "/archive/_posts/2022-04-27-NW202204272361734680.md") -> dict:
    return {"path": path, "size": 3000, "mtime_ns": 1_650_000_000_000_000_000, "sha256": "a" * 64}


def recorded(engine: Engine) -> dict[str, SourceFile]:
    with Session(engine, expire_on_commit=False) as session:
        return {row.path: row for row in session.scalars(select(SourceFile))}


def open_store(url: str) -> Store:
    store = Store(url, flush_seconds=3600)
    store.open("test-sources", mode="test")
    return store


def test_a_file_is_recorded_with_its_article_not_before(db_url, engine):
    store = open_store(db_url)
    store.track_file(URL, {**file_row(), "info_code": CODE})
    store.flush()
    assert recorded(engine) == {}, "no item queued yet: nothing may say the file was read"

    store.add(make_article(url=URL))
    store.flush()
    row = recorded(engine)[file_row()["path"]]
    assert (row.info_code, row.status, row.size, row.run_id) == (CODE, "article", 3000, 1)
    store.finish()

    later = open_store(db_url)
    assert later.source_files()[row.path] == sources.FileRecord(
        3000, 1_650_000_000_000_000_000, "a" * 64, CODE, "article"
    )
    later.finish()


def test_a_rejected_file_is_recorded_with_its_reject(db_url, engine):
    store = open_store(db_url)
    store.track_file(URL, {**file_row(), "info_code": None})
    store.reject(URL, "not UTF-8: undecodable byte 0xb2 at offset 7", detail="/archive/x.md")
    store.finish()

    (row,) = recorded(engine).values()
    assert (row.status, row.info_code) == ("rejected", None)


def test_released_files_and_upserts(db_url, engine):
    store = open_store(db_url)
    store.track_file(URL, {**file_row(), "info_code": CODE, "status": "article"})
    store.release_file(URL)
    store.release_file("file:///never/tracked.md")  # nothing to record
    store.flush()
    assert set(recorded(engine)) == {file_row()["path"]}

    store.track_file(URL, {**file_row(), "size": 4000, "info_code": CODE})
    store.add(make_article(url=URL))
    store.finish()
    assert recorded(engine)[file_row()["path"]].size == 4000


def test_a_failed_batch_still_records_its_files(db_url, engine):
    store = open_store(db_url)
    # A stock without a market passes validation but breaks the NOT NULL constraint.
    bad = make_article(
        "NW202204272361734681",
        url="file:///archive/bad.md",
        stocks=[Stock(None, "600160", "600160.SH", "x", "stock", False, 1)],  # type: ignore[arg-type]
    )
    store.track_file(URL, {**file_row(), "info_code": CODE})
    store.track_file(bad.url, {**file_row("/archive/bad.md"), "info_code": bad.info_code})
    store.add(make_article(url=URL))
    store.add(bad)
    store.finish()

    rows = recorded(engine)
    assert set(rows) == {file_row()["path"], "/archive/bad.md"}
    with Session(engine) as session:
        assert session.scalars(select(Article.info_code)).all() == [CODE]
        reasons = session.scalars(select(Reject.reason)).all()
    assert reasons == ["refused by the database"]
    # The bad file's code is not stored, so the next run reads it again.
    assert rows["/archive/bad.md"].info_code == "NW202204272361734681"
