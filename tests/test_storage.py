"""Storage on SQLite and PostgreSQL: times, upserts, dedupe, rejects, the run ledger.

Items are built by hand here; ``test_storage_corpus`` stores the real post files.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from crawler.items import DOWNLOAD_FAILED, Stock
from pipelines.store import LEGACY_DATABASE_ERROR, REFUSED, Store, is_outage
from pipelines.validate import problems
from schema.db import make_engine, redact
from schema.migrate import SchemaOutdated
from schema.models import Article, ArticleCategory, Category, CrawlRun, Reject, StockMention
from schema.types import BEIJING
from tests.conftest import add_foreign_table, make_article

CODE = "NW202204272361734680"
EMNEWS = "NW202205262391921712"


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def article(engine: Engine, code: str = CODE) -> Article:
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(Article, code)
        assert row is not None, f"{code} not stored"
        return row


def runs(engine: Engine) -> list[CrawlRun]:
    with Session(engine) as session:
        return list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))


def rejects(engine: Engine) -> list[Reject]:
    with Session(engine) as session:
        return list(session.scalars(select(Reject).order_by(Reject.id)))


def links(engine: Engine, code: str = CODE) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.scalars(select(ArticleCategory).where(ArticleCategory.info_code == code))
        return {row.category: row.url for row in rows}


def stocks(engine: Engine, code: str = CODE) -> dict[str, StockMention]:
    with Session(engine, expire_on_commit=False) as session:
        rows = session.scalars(select(StockMention).where(StockMention.info_code == code))
        return {row.symbol: row for row in rows}


def emnews_version(**fields):
    """The emnews markup of an article: a digest and inline stock links."""
    defaults = dict(
        category="emnews",
        outlet="东财滚动",
        digest="据霍尼韦尔官网消息，5月24日……（上海证券报）",
        url=f"https://finews.withounder.com/emnews/2022/05/26/{EMNEWS[2:]}.html",
        source_url=f"http://finance.eastmoney.com/news/1354,{EMNEWS[2:]}.html",
        stocks=[
            Stock("106", "NIO", "NIO.N", None, "stock", True, 1),
            Stock("1", "600160", "600160.SH", "巨化股份", "stock", False, 3),
        ],
    )
    return make_article(EMNEWS, **{**defaults, **fields})


def outlet_version(**fields):
    """The same article under its outlet category: no digest, other stock markup."""
    defaults = dict(
        category="shanghaizhengquanbao",
        outlet="上海证券报",
        digest=None,
        url=f"https://finews.withounder.com/shanghaizhengquanbao/2022/05/26/{EMNEWS}.html",
        # One security emnews does not tag, and more mentions of one it does.
        stocks=[
            Stock("106", "NIO", "NIO.N", None, "stock", True, 1),
            Stock("1", "600160", "600160.SH", None, "stock", False, 5),
            Stock("0", "000001", "000001.SZ", "平安银行", "stock", False, 1),
        ],
    )
    return make_article(EMNEWS, **{**defaults, **fields})


# -- time -----------------------------------------------------------------------------------


def test_published_at_round_trips_as_beijing_time(db_url, engine, pipeline_run):
    utc = datetime(2022, 4, 27, 7, 22, 47, 123456, tzinfo=UTC)
    pipeline_run(db_url, [make_article(), make_article("NW202204272361734681", published_at=utc)])

    stored = article(engine).published_at
    assert stored == datetime(2022, 4, 27, 15, 22, 47, tzinfo=BEIJING)
    assert stored.utcoffset() == timedelta(hours=8)
    precise = article(engine, "NW202204272361734681").published_at
    assert precise == utc
    assert precise.isoformat() == "2022-04-27T15:22:47.123456+08:00"
    with engine.connect() as conn:
        raw = conn.execute(
            text("SELECT published_at FROM articles WHERE info_code = :code"), {"code": CODE}
        ).scalar_one()
    if engine.dialect.name == "sqlite":
        assert raw == "2022-04-27 15:22:47+08:00"
    else:
        assert raw == datetime(2022, 4, 27, 15, 22, 47, tzinfo=BEIJING)


def test_published_at_filters_and_sorts_by_instant(db_url, engine, pipeline_run):
    moments = {
        "NW000000000000000001": datetime(2022, 4, 27, 15, 0, tzinfo=BEIJING),
        "NW000000000000000002": datetime(2022, 4, 27, 7, 0, 0, 1, tzinfo=UTC),
        "NW000000000000000003": datetime(2022, 4, 27, 23, 59, tzinfo=BEIJING),
        "NW000000000000000004": datetime(2022, 4, 28, 0, 0, tzinfo=BEIJING),
    }
    pipeline_run(db_url, [make_article(code, published_at=at) for code, at in moments.items()])

    day = datetime(2022, 4, 27, tzinfo=BEIJING)
    with Session(engine) as session:
        codes = session.scalars(
            select(Article.info_code)
            .where(Article.published_at >= day, Article.published_at < day + timedelta(days=1))
            .order_by(Article.published_at)
        ).all()
    assert codes == ["NW000000000000000001", "NW000000000000000002", "NW000000000000000003"]


# -- inserting and re-running -------------------------------------------------------------------


def test_new_article_is_stored_with_stocks_categories_and_run(db_url, engine, pipeline_run):
    run = pipeline_run(db_url, [make_article()])

    row = article(engine)
    item = make_article()
    assert row.title == item.title
    assert row.paragraphs == item.paragraphs
    assert row.body_text == "\n".join(item.paragraphs)
    assert row.images == item.images
    assert (row.category, row.outlet) == ("zhengquanribaowang", "证券日报网")
    assert row.source == "证券日报网"
    assert row.url == item.url
    assert row.source_url == item.source_url
    assert row.content_hash == item.content_hash()
    assert row.revision == 1
    assert row.first_seen_at == row.updated_at
    assert row.first_seen_at.utcoffset() == timedelta(hours=8)
    assert links(engine) == {"zhengquanribaowang": item.url}
    with Session(engine) as session:
        assert session.get(Category, "zhengquanribaowang").outlet == "证券日报网"
    held = stocks(engine)
    assert set(held) == {"03690.HK", "601818.SH"}
    assert (held["601818.SH"].name, held["601818.SH"].mentions) == ("光大银行", 2)
    assert held["601818.SH"].is_primary is True

    [ledger] = runs(engine)
    assert row.run_id == ledger.id == run.store.run_id
    assert (ledger.spider, ledger.mode, ledger.arguments) == (
        "storage-test",
        "test",
        {"note": "pipelines driven by the tests"},
    )
    assert (ledger.status, ledger.close_reason) == ("finished", "finished")
    assert (ledger.seen, ledger.stored, ledger.updated, ledger.unchanged) == (1, 1, 0, 0)
    assert ledger.finished_at is not None and ledger.finished_at >= ledger.started_at


def test_rerun_with_same_content_touches_nothing(db_url, engine, pipeline_run):
    pipeline_run(db_url, [make_article()])
    first = article(engine)
    second_run = pipeline_run(db_url, [make_article()])

    again = article(engine)
    assert (again.revision, again.updated_at, again.run_id) == (1, first.updated_at, first.run_id)
    assert second_run.stats["finews/unchanged"] == 1
    assert "finews/stored" not in second_run.stats
    assert count(engine, Article) == 1
    assert (count(engine, StockMention), count(engine, ArticleCategory)) == (2, 1)
    assert runs(engine)[-1].unchanged == 1


def test_changed_content_is_a_revision(db_url, engine, pipeline_run):
    pipeline_run(db_url, [make_article()])
    first = article(engine)
    revised = make_article(
        paragraphs=["更正后的第一段。", "第二段。"],
        url="https://finews.withounder.com/zhengquanribaowang/2022/04/27/again.html",
        stocks=[Stock("1", "601818", "601818.SH", "光大银行", "stock", True, 5)],
    )
    second_run = pipeline_run(db_url, [revised])

    row = article(engine)
    assert row.revision == 2
    assert row.body_text == "更正后的第一段。\n第二段。"
    assert row.content_hash == revised.content_hash()
    assert row.url == first.url, "the URL first seen is kept"
    assert row.first_seen_at == first.first_seen_at
    assert row.updated_at > first.updated_at
    assert row.run_id == second_run.store.run_id != first.run_id
    held = stocks(engine)
    assert set(held) == {"601818.SH"}, "stock rows are replaced, not merged"
    assert held["601818.SH"].mentions == 5
    assert second_run.stats["finews/updated"] == 1


def test_wrapper_only_difference_is_not_a_revision(db_url, engine, pipeline_run):
    pipeline_run(db_url, [make_article()])
    rewrapped = make_article(outlet="证券日报", url="file:///archive/2022-04-27-NW.md")
    pipeline_run(db_url, [rewrapped])

    row = article(engine)
    assert (row.revision, row.outlet, row.url) == (1, "证券日报网", make_article().url)


def test_same_article_twice_in_one_batch_without_dedupe(db_url, engine):
    store = Store(db_url)
    store.open("backfill", mode="backfill")
    store.add(make_article())
    store.add(make_article(paragraphs=["新的正文。"]))
    assert store.finish() == "finished"

    assert article(engine).revision == 2
    assert article(engine).paragraphs == ["新的正文。"]


# -- one article, several copies ---------------------------------------------------------------

ARTICLE_COLUMNS = ("title", "published_at", "category", "outlet", "source", "digest",
                   "paragraphs", "body_text", "body_html", "images", "source_url", "url",
                   "content_hash", "revision")  # fmt: skip


def merged_state(engine: Engine, code: str = EMNEWS) -> tuple:
    """What an article's copies left: its row (times and runs aside), stock rows, links."""
    row = article(engine, code)
    rows = {
        symbol: (s.market, s.code, s.name, s.kind, s.is_primary, s.mentions)
        for symbol, s in stocks(engine, code).items()
    }
    return tuple(getattr(row, c) for c in ARTICLE_COLUMNS), rows, links(engine, code)


def test_copies_in_one_run_are_merged(db_url, engine, pipeline_run):
    run = pipeline_run(db_url, [outlet_version(), emnews_version()])

    assert count(engine, Article) == 1
    row = article(engine, EMNEWS)
    # The text, digest and URL of the emnews copy, though the outlet's copy came first.
    assert (row.category, row.outlet, row.url) == ("emnews", "东财滚动", emnews_version().url)
    assert (row.content_hash, row.revision) == (emnews_version().content_hash(), 1)
    assert row.digest == emnews_version().digest
    assert links(engine, EMNEWS) == {
        "emnews": emnews_version().url,
        "shanghaizhengquanbao": outlet_version().url,
    }
    merged = stocks(engine, EMNEWS)
    assert set(merged) == {"NIO.N", "600160.SH", "000001.SZ"}, "the union of the copies"
    assert (merged["600160.SH"].name, merged["600160.SH"].mentions) == ("巨化股份", 5)
    assert merged["NIO.N"].is_primary and not merged["000001.SZ"].is_primary
    assert (run.stats["finews/stored"], run.stats.get("finews/duplicates")) == (1, None)
    with Session(engine) as session:
        outlets = dict(session.execute(select(Category.slug, Category.outlet)).all())
        recorded = session.scalars(select(ArticleCategory)).all()
    assert outlets == {"emnews": "东财滚动", "shanghaizhengquanbao": "上海证券报"}
    assert {link.category: link.content_hash for link in recorded} == {
        "emnews": emnews_version().content_hash(),
        "shanghaizhengquanbao": outlet_version().content_hash(),
    }


@pytest.mark.parametrize(
    "runs_of",
    [
        [["emnews", "outlet"]],
        [["outlet", "emnews"]],
        [["emnews"], ["outlet"]],
        [["outlet"], ["emnews"]],
        [["outlet"], ["emnews"], ["outlet", "emnews"]],
    ],
    ids=["one-run", "one-run-outlet-first", "two-runs", "two-runs-outlet-first", "rerun"],
)
def test_the_merge_does_not_depend_on_the_order_of_copies(db_url, engine, pipeline_run, runs_of):
    made = {"emnews": emnews_version, "outlet": outlet_version}
    for names in runs_of:
        pipeline_run(db_url, [made[name]() for name in names], FINEWS_STORE_BATCH_SIZE=1)
    columns, rows, linked = merged_state(engine)
    expected = emnews_version()
    assert columns == (
        expected.title, expected.published_at, "emnews", "东财滚动", expected.source,
        expected.digest, expected.paragraphs, "\n".join(expected.paragraphs),
        expected.body_html, expected.images, expected.source_url, expected.url,
        expected.content_hash(), 1,
    )  # fmt: skip
    assert rows == {
        "NIO.N": ("106", "NIO", None, "stock", True, 1),
        "600160.SH": ("1", "600160", "巨化股份", "stock", False, 5),
        "000001.SZ": ("0", "000001", "平安银行", "stock", False, 1),
    }
    assert set(linked) == {"emnews", "shanghaizhengquanbao"}


def test_a_revised_copy_replaces_only_its_own_contribution(db_url, engine, pipeline_run):
    pipeline_run(db_url, [emnews_version(), outlet_version()])
    revised_outlet = outlet_version(
        paragraphs=["改过的正文。"], stocks=[Stock("106", "NIO", "NIO.N", None, "stock", True, 1)]
    )
    run = pipeline_run(db_url, [revised_outlet])

    assert run.stats["finews/updated"] == 1
    row = article(engine, EMNEWS)
    assert (row.revision, row.category, row.paragraphs) == (
        1,
        "emnews",
        emnews_version().paragraphs,
    )
    merged = stocks(engine, EMNEWS)
    assert set(merged) == {"NIO.N", "600160.SH"}, "000001.SZ was the outlet copy's alone"
    assert merged["600160.SH"].mentions == 3

    pipeline_run(db_url, [emnews_version(paragraphs=["修订。"])])
    row = article(engine, EMNEWS)
    assert (row.revision, row.paragraphs) == (2, ["修订。"]), "the stored copy's own revision"


def test_copies_read_again_unchanged_write_nothing(db_url, engine, pipeline_run):
    pipeline_run(db_url, [emnews_version(), outlet_version()])
    before = article(engine, EMNEWS)
    run = pipeline_run(db_url, [outlet_version(), emnews_version()])

    assert run.stats["finews/unchanged"] == 2
    assert "finews/updated" not in run.stats and "finews/stored" not in run.stats
    assert article(engine, EMNEWS).updated_at == before.updated_at


def test_the_digest_comes_from_whichever_copy_has_one(db_url, engine, pipeline_run):
    pipeline_run(db_url, [emnews_version(digest=None)])
    pipeline_run(db_url, [outlet_version(digest="一段摘要。")])

    row = article(engine, EMNEWS)
    assert (row.category, row.digest) == ("emnews", "一段摘要。")


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["a-first", "b-first"])
def test_between_outlets_the_text_comes_from_the_first_slug(db_url, engine, pipeline_run, order):
    copies = [
        outlet_version(category="a_outlet", outlet="甲", paragraphs=["甲的正文。"]),
        outlet_version(category="b_outlet", outlet="乙", paragraphs=["乙的正文。"]),
    ]
    for i in order:
        pipeline_run(db_url, [copies[i]])

    row = article(engine, EMNEWS)
    assert (row.category, row.outlet, row.paragraphs) == ("a_outlet", "甲", ["甲的正文。"])


def test_copies_written_at_once_by_two_writers_are_merged(db_url, engine):
    """Two workers of one crawl store copies of the same articles at the same moment."""
    codes = [f"NW2022052623919217{n:02d}" for n in range(60)]
    made = {"emnews": emnews_version, "outlet": outlet_version}

    def write(kind: str) -> None:
        store = Store(db_url, batch_size=5)
        store.open(f"writer-{kind}")
        for code in codes:
            store.add(replace(made[kind](), info_code=code))
        store.finish()

    threads = [threading.Thread(target=write, args=(kind,)) for kind in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for code in codes:
        row = article(engine, code)
        assert (row.category, row.digest) == ("emnews", emnews_version().digest), code
        assert set(stocks(engine, code)) == {"NIO.N", "600160.SH", "000001.SZ"}, code


def test_the_same_copy_twice_in_a_run_is_a_duplicate(db_url, engine, pipeline_run):
    again = emnews_version(url=emnews_version().url + "?again")
    run = pipeline_run(db_url, [emnews_version(), again])

    assert run.stats["finews/duplicates"] == 1
    assert runs(engine)[0].duplicates == 1
    assert article(engine, EMNEWS).url == emnews_version().url


def test_category_outlet_is_filled_in_when_first_known(db_url, engine, pipeline_run):
    pipeline_run(db_url, [emnews_version(), outlet_version()])
    pipeline_run(db_url, [make_article(category="shanghaizhengquanbao", outlet="上海证券报")])

    with Session(engine) as session:
        assert session.get(Category, "shanghaizhengquanbao").outlet == "上海证券报"


# -- rejects ----------------------------------------------------------------------------------


def test_invalid_item_is_rejected_counted_and_the_run_still_closes(db_url, engine, pipeline_run):
    invalid = make_article(
        None, published_at=None, title="", paragraphs=[], digest=None, url="file:///posts/x.md"
    )
    run = pipeline_run(db_url, [invalid, make_article()])

    [reject] = rejects(engine)
    assert reject.reason == "missing info_code; missing published_at; missing title or text"
    assert reject.url == "file:///posts/x.md"
    assert reject.run_id == run.store.run_id
    assert reject.excerpt and reject.excerpt.startswith("<p>4月27日")
    for key in ("missing_info_code", "missing_published_at", "missing_title_or_text"):
        assert run.stats[f"drop_item/article/{key}"] == 1
    assert run.stats["finews/rejected"] == 1
    [ledger] = runs(engine)
    assert (ledger.status, ledger.seen, ledger.stored, ledger.rejected) == ("finished", 2, 1, 1)
    assert count(engine, Article) == 1


@pytest.mark.parametrize(
    ("fields", "key", "reason"),
    [
        ({"info_code": None}, "missing_info_code", "missing info_code"),
        ({"published_at": None}, "missing_published_at", "missing published_at"),
        (
            {"title": None, "paragraphs": [], "digest": None},
            "missing_title_or_text",
            "missing title or text",
        ),
        (
            {"published_at": datetime(2022, 4, 27, 15, 22, 47)},
            "naive_published_at",
            "published_at datetime.datetime(2022, 4, 27, 15, 22, 47) has no UTC offset",
        ),
        ({"info_code": "NW 2022"}, "malformed_info_code", "malformed info_code 'NW 2022'"),
        ({"paragraphs": ["a\x00b"]}, "nul_character", "NUL character in paragraphs"),
    ],
)
def test_validation_reasons(fields, key, reason):
    assert problems(make_article(**fields)) == [(key, reason)]


def test_valid_article_has_no_problems():
    assert problems(make_article()) == []
    assert problems(make_article(title=None)) == [], "paragraphs alone are enough"
    assert problems({"info_code": CODE}) == [("not_an_article", "not an Article item but dict")]


def test_a_bad_row_costs_one_reject_not_its_batch(db_url, engine, pipeline_run):
    # A stock without a market passes validation but breaks the NOT NULL constraint.
    broken = make_article(
        "NW000000000000000002", stocks=[Stock(None, "600160", "600160.SH", "x", "stock", False, 1)]
    )
    items = [make_article("NW000000000000000001"), broken, make_article("NW000000000000000003")]
    run = pipeline_run(db_url, items)

    assert count(engine, Article) == 2
    [reject] = rejects(engine)
    assert reject.reason == "refused by the database"
    assert reject.info_code == "NW000000000000000002"
    assert "market" in (reject.detail or ""), "the database's own message says what broke"
    assert run.stats["finews/batch_failures"] == 1
    assert (runs(engine)[0].stored, runs(engine)[0].rejected) == (2, 1)
    assert count(engine, StockMention) == 4, "the failed article left no stock rows behind"


def test_rejects_from_outside_the_pipelines(db_url, engine, pipeline_run):
    run = pipeline_run(db_url)
    store = Store(db_url)
    store.open("archive", mode="backfill", arguments={"path": "/archive"})
    store.reject(
        "/archive/2022-05-26-x.md",
        "unreadable file",
        detail="not UTF-8: undecodable byte 0xff at offset 3",
        excerpt=b"---\n\xff\xfe" + "正文".encode() * 400,
    )
    assert store.finish() == "finished"

    [reject] = rejects(engine)
    assert (reject.url, reason_and_run(reject)) == (
        "/archive/2022-05-26-x.md",
        ("unreadable file", store.run_id),
    )
    assert reject.excerpt.startswith("---\n\ufffd")
    assert len(reject.excerpt) == 300
    assert [r.rejected for r in runs(engine)] == [0, 1]
    assert run.store.run_id != store.run_id


def test_only_rejects_for_what_a_page_says_keep_it_from_the_next_run(db_url):
    store = Store(db_url)
    store.open("finews")
    site = "http://127.0.0.1:8000"
    store.reject(f"{site}/emnews/2022/05/26/1.html", "no infoCode")
    store.reject(f"{site}/emnews/2022/05/26/2.html", DOWNLOAD_FAILED, detail="HTTP 500")
    store.reject(f"{site}/emnews/2022/05/26/3.html", REFUSED, detail="NOT NULL")
    # Older versions wrote this for an outage as for a refusal: not held against the page.
    store.reject(f"{site}/emnews/2022/05/26/4.html", LEGACY_DATABASE_ERROR)
    store.finish()
    reader = Store(db_url)
    try:
        paths = reader.rejected_paths()
    finally:
        reader.engine.dispose()
    assert paths == {
        "/emnews/2022/05/26/1.html",
        "/emnews/2022/05/26/3.html",
    }


def reason_and_run(reject: Reject) -> tuple[str, int | None]:
    return reject.reason, reject.run_id


# -- batching ------------------------------------------------------------------------------------


def test_batches_flush_on_size_and_on_time(db_url, engine):
    store = Store(db_url, batch_size=2, flush_seconds=3600)
    store.open("storage-test")
    store.add(make_article("NW000000000000000001"))
    assert count(engine, Article) == 0
    store.add(make_article("NW000000000000000002"))
    assert count(engine, Article) == 2, "a full batch is written at once"

    store.flush_seconds = 0.05
    store.add(make_article("NW000000000000000003"))
    time.sleep(0.1)
    store.add(make_article("NW000000000000000004"))
    assert count(engine, Article) == 4, "an old batch is written with the next item"
    store.add(make_article("NW000000000000000005"))
    store.finish()
    assert count(engine, Article) == 5, "the rest is written at close"


# -- schema checks and the ledger ------------------------------------------------------------


def test_creates_the_schema_in_a_blank_database(empty_db_url):
    store = Store(empty_db_url)
    store.open("storage-test")
    store.finish()
    engine = make_engine(empty_db_url)
    try:
        assert count(engine, CrawlRun) == 1
    finally:
        engine.dispose()


def test_refuses_a_database_that_holds_other_tables(empty_db_url):
    add_foreign_table(empty_db_url)
    with pytest.raises(SchemaOutdated, match=r"never migrated\): run `make migrate`"):
        Store(empty_db_url).open("storage-test")


def test_refuses_a_database_at_another_revision(db_url, engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(SchemaOutdated, match=r"not at the newest revision.*make migrate"):
        Store(db_url).open("storage-test")


def test_auto_migrate_when_asked(empty_db_url, pipeline_run):
    pipeline_run(empty_db_url, [make_article()], FINEWS_AUTO_MIGRATE=True)

    engine = make_engine(empty_db_url)
    try:
        assert count(engine, Article) == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("finished", "finished"),
        ("shutdown", "interrupted"),
        ("closespider_timeout", "stopped"),
        ("closespider_errorcount", "failed"),
        ("engine_stopped", "failed"),
    ],
)
def test_run_status_follows_the_close_reason(sqlite_url, pipeline_run, reason, status):
    pipeline_run(sqlite_url, [make_article()], reason=reason)

    engine = make_engine(sqlite_url)
    try:
        [ledger] = runs(engine)
    finally:
        engine.dispose()
    assert (ledger.status, ledger.close_reason) == (status, reason)


def test_run_is_failed_when_storage_cannot_write(db_url, engine):
    store = Store(db_url)
    store.open("storage-test")
    store.reject("x", "something")
    with engine.begin() as conn:  # make the rejects table refuse every row
        conn.execute(text("DROP TABLE rejects"))
    assert store.finish("finished") == "failed"

    [ledger] = runs(engine)
    assert (ledger.status, ledger.close_reason, ledger.errors) == ("failed", "finished", 1)


def sqlite_error(url: str, sql: str, *, locked: bool = False) -> SQLAlchemyError:
    """The error SQLite gives for ``sql``, with the file write-locked by another connection."""
    holder, engine = make_engine(url), make_engine(url)
    try:
        with holder.connect() as other, engine.connect() as conn:
            if locked:
                other.exec_driver_sql("BEGIN IMMEDIATE")
            conn.exec_driver_sql("PRAGMA busy_timeout = 0")  # no waiting for the lock
            conn.commit()
            with pytest.raises(SQLAlchemyError) as raised, conn.begin():
                conn.execute(text(sql))
            return raised.value
    finally:
        engine.dispose()
        holder.dispose()


def test_only_a_database_that_is_away_or_busy_counts_as_an_outage(sqlite_url, postgres_url):
    assert is_outage(sqlite_error(sqlite_url, "DELETE FROM rejects", locked=True))
    assert not is_outage(sqlite_error(sqlite_url, "SELECT * FROM no_such_table"))
    assert not is_outage(sqlite_error(sqlite_url, "INSERT INTO categories (slug) VALUES (NULL)"))
    refused = make_engine(postgres_url.rsplit(":", 1)[0] + ":1/postgres")  # nobody listens
    with pytest.raises(SQLAlchemyError) as raised:
        refused.connect()
    assert is_outage(raised.value)
    engine = make_engine(postgres_url)
    try:
        with pytest.raises(SQLAlchemyError) as raised, engine.begin() as conn:
            conn.execute(text("INSERT INTO categories (slug) VALUES (NULL)"))
    finally:
        engine.dispose()
    assert not is_outage(raised.value), "a constraint is the data's problem, not the server's"


def test_passwords_never_reach_the_log(postgres_url, caplog):
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    caplog.set_level(logging.DEBUG)
    store = Store(url)
    store.open("storage-test")
    store.finish()

    assert "s3cret-pw" not in caplog.text
    assert "postgres:***@" in caplog.text
    assert redact(url).count("***") == 1


# -- queries analysts run ------------------------------------------------------------------------


def test_articles_about_a_stock_between_two_dates(db_url, engine, pipeline_run):
    juhua = Stock("1", "600160", "600160.SH", "巨化股份", "stock", False, 1)
    day = datetime(2022, 5, 20, 9, 0, tzinfo=BEIJING)
    items = [
        make_article(f"NW0000000000000000{i:02d}", published_at=day + timedelta(days=i), stocks=s)
        for i, s in enumerate([[juhua], [], [juhua], [juhua]])
    ]
    pipeline_run(db_url, items)

    with Session(engine) as session:
        codes = session.scalars(
            select(Article.info_code)
            .join(StockMention)
            .where(StockMention.symbol == "600160.SH")
            .where(Article.published_at.between(day, day + timedelta(days=2, hours=1)))
            .order_by(Article.published_at)
        ).all()
    assert codes == ["NW000000000000000000", "NW000000000000000002"]


def test_duplicate_stock_forms_are_merged_into_one_row(db_url, engine, pipeline_run):
    twice = [
        Stock("1", "600160", "600160.SH", None, "stock", True, 1),
        Stock("1", "600160", "600160.SH", "巨化股份", "stock", False, 2),
    ]
    pipeline_run(db_url, [replace(make_article(), stocks=twice)])

    row = stocks(engine)["600160.SH"]
    assert (row.name, row.is_primary, row.mentions) == ("巨化股份", True, 3)


def test_the_readme_query_in_raw_sql(db_url, engine, pipeline_run):
    juhua = Stock("1", "600160", "600160.SH", "巨化股份", "stock", False, 1)
    pipeline_run(
        db_url,
        [
            make_article(
                "NW000000000000000001",
                stocks=[juhua],
                published_at=datetime(2022, 5, 1, 0, 0, tzinfo=BEIJING),
            ),
            make_article(
                "NW000000000000000002",
                stocks=[juhua],
                published_at=datetime(2022, 4, 30, 23, 59, 59, tzinfo=BEIJING),
            ),
            make_article(
                "NW000000000000000003", stocks=[], published_at=datetime(2022, 5, 2, tzinfo=BEIJING)
            ),
        ],
    )
    sql = """
        SELECT a.info_code, a.published_at, a.title
        FROM stock_mentions s JOIN articles a USING (info_code)
        WHERE s.symbol = '600160.SH'
          AND a.published_at >= '2022-05-01 00:00:00+08:00'
          AND a.published_at <  '2022-06-01 00:00:00+08:00'
        ORDER BY a.published_at
    """
    with engine.connect() as conn:
        assert conn.execute(text(sql)).scalars().all() == ["NW000000000000000001"]
