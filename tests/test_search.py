"""Full-text search (``schema.search``) on SQLite and PostgreSQL, over the stored real corpus.

Expected hits were found with grep in ``fixtures/corpus/posts`` and read in the files:

- 茅台 (2 characters): the titles of ``NW202112082206935918`` (12:47:49, "白酒突然爆发！茅台飙900亿
  …") and ``NW202112082206928461`` (12:41:23, "“股王”茅台重回2000元关口！…", in all 8
  versions), both emnews on 2021-12-08, neither with stock markup.
- 新市民: ``NW202204272361734680`` only (证券日报网, 2022-04-27 15:22:47), title and body;
  its two K-line blocks chart 03690 (116) and 601818 (1), one mention each.
- HFO-1234yf: the body of ``NW202205262391921712`` (2022-05-26 00:19:55 +08:00, just after
  midnight Beijing: 2022-05-25 in UTC), stored from its emnews copy (东财滚动) merged with
  its 上海证券报 copy; the broken file ``-202205262391921712.md`` has no date and is refused.
  Its securities, counted in the emnews file: NIO K-line + 2 spans (3, primary), 300343 and
  600160 three spans each, 600636 and BK0493 two, BK0839 one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date, datetime

import pytest
from sqlalchemy import Engine, text

from schema.db import make_engine
from schema.migrate import upgrade
from schema.search import (
    Hit,
    SearchIndexMissing,
    is_index_table,
    main,
    rebuild,
    search,
    snippet,
)
from schema.types import BEIJING
from tests.conftest import make_article, pg_database
from tests.test_storage_corpus import CORPUS, corpus_files, store_files

MAOTAI = ["NW202112082206935918", "NW202112082206928461"]  # newest first
XINSHIMIN = "NW202204272361734680"
HFO = "NW202205262391921712"
HFO_STOCKS = ["NIO.N", "300343.SZ", "600160.SH", "600636.SH", "BK0493", "BK0839"]


# SQLite: the corpus (64 articles) waits to be indexed, as fewer than 500 new articles do;
# "indexed" puts it in the index first. PostgreSQL indexes every write at once.
CORPUS_STATES = [
    pytest.param(("sqlite", "waiting"), id="sqlite-waiting"),
    pytest.param(("sqlite", "indexed"), id="sqlite-indexed"),
    pytest.param(("postgresql", "indexed"), id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module", params=CORPUS_STATES)
def corpus_engine(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Engine]:
    """The real corpus, stored once per backend for the module's read-only tests."""
    backend, state = request.param
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("corpus") / "finews.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield from stored_corpus(f"sqlite:///{path}", indexed=state == "indexed")
    else:
        admin, template = (request.getfixturevalue(f) for f in ("pg_admin", "pg_template"))
        with pg_database(admin, template=template) as url:
            yield from stored_corpus(url)


def stored_corpus(url: str, *, indexed: bool = True) -> Iterator[Engine]:
    store_files(None, url, corpus_files())
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        assert waiting(engine) == 64, "fewer than 500: all wait"
        if indexed:
            index_what_waits(engine)
    yield engine
    engine.dispose()


def waiting(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM articles_fts_pending")).scalar_one()


def index_what_waits(engine: Engine) -> None:
    """SQLite: what the flush trigger does at 500 articles waiting."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO articles_fts (rowid, title, body_text) "
            "SELECT article_rowid, title, body_text FROM articles_fts_source "
            "WHERE article_rowid IN (SELECT article_rowid FROM articles_fts_pending)"
        ))  # fmt: skip
        conn.execute(text("DELETE FROM articles_fts_pending"))


def fts_in_step(engine: Engine) -> None:
    """SQLite: index what waits, then FTS5's own check that the index holds exactly the
    articles' text (it fails on a row indexed with other text, missing or left over)."""
    if engine.dialect.name == "sqlite":
        index_what_waits(engine)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO articles_fts (articles_fts, rank) VALUES ('integrity-check', 1)"
            ))  # fmt: skip


def codes(hits: list[Hit]) -> list[str]:
    return [hit.info_code for hit in hits]


# -- the corpus -----------------------------------------------------------------------------


def test_a_two_character_word_is_found(corpus_engine):
    hits = search(corpus_engine, "茅台")

    assert codes(hits) == MAOTAI
    newest = hits[0]
    assert newest.published_at == datetime(2021, 12, 8, 12, 47, 49, tzinfo=BEIJING)
    assert newest.published_at.utcoffset() == BEIJING.utcoffset(None)
    assert (newest.outlet, newest.stocks) == ("东财滚动", [])
    assert newest.title == "白酒突然爆发！茅台飙900亿 军工火了 巨头首秀破发！"
    assert newest.snippet == newest.title, "a hit in a short title: the whole title, uncut"


def test_a_three_character_word_is_found(corpus_engine):
    [hit] = search(corpus_engine, "新市民")

    assert hit.info_code == XINSHIMIN
    assert hit.outlet == "证券日报网"
    assert hit.published_at == datetime(2022, 4, 27, 15, 22, 47, tzinfo=BEIJING)
    assert hit.stocks == ["03690.HK", "601818.SH"], "both primary, one mention: by symbol"
    assert hit.snippet.startswith("光大银行联合美团发力“新市民”")


@pytest.mark.parametrize("query", ["HFO-1234yf", "hfo-1234YF", " HFO-1234yf\n"])
def test_a_word_with_a_hyphen_is_found_in_any_case(corpus_engine, query):
    [hit] = search(corpus_engine, query)

    assert hit.info_code == HFO
    assert hit.outlet == "东财滚动", "the emnews copy's text"
    assert hit.stocks == HFO_STOCKS, "primary first, then by mentions, then by symbol"
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert "新能源汽车提供HFO-1234yf(四氟丙烯)制冷剂" in hit.snippet, "the first hit, in the body"
    assert len(hit.snippet) <= 2 * 30 + len("HFO-1234yf") + 2


def test_a_two_character_ascii_query_ignores_case(corpus_engine):
    # "ET7" (蔚来旗下ET7) is the corpus's only "t7", in either case: in the HFO article.
    assert codes(search(corpus_engine, "T7")) == codes(search(corpus_engine, "t7")) == [HFO]


@pytest.mark.parametrize(
    ("query", "filters", "expected"),
    [
        ("茅台", {"since": date(2021, 12, 8), "until": date(2021, 12, 8)}, MAOTAI),
        ("茅台", {"until": date(2021, 12, 7)}, []),
        ("茅台", {"since": date(2021, 12, 9)}, []),
        ("茅台", {"outlet": "东财滚动"}, MAOTAI),
        ("茅台", {"outlet": "证券日报网"}, []),
        ("茅台", {"limit": 1}, MAOTAI[:1]),
        ("茅台", {"stock": "600519.SH"}, []),  # named in the text, never marked up
        ("HFO-1234yf", {"stock": "600160.SH"}, [HFO]),
        ("HFO-1234yf", {"stock": "NIO.N"}, [HFO]),
        ("HFO-1234yf", {"stock": "601818.SH"}, []),
        ("新市民", {"stock": "601818.SH", "since": date(2022, 4, 27)}, [XINSHIMIN]),
        # Published 2022-05-26 00:19:55 +08:00: that Beijing day, not the UTC day before.
        ("HFO-1234yf", {"since": date(2022, 5, 26), "until": date(2022, 5, 26)}, [HFO]),
        ("HFO-1234yf", {"until": date(2022, 5, 25)}, []),
        ("制冷", {"since": date(2022, 5, 26), "stock": "300343.SZ"}, [HFO]),
    ],
)
def test_filters(corpus_engine, query, filters, expected):
    assert codes(search(corpus_engine, query, **filters)) == expected


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_a_blank_query_is_refused(corpus_engine, query):
    with pytest.raises(ValueError, match="empty search query"):
        search(corpus_engine, query)


@pytest.mark.parametrize(
    "query",
    ['"', '"茅台', "茅台 OR 新市民", "NEAR(茅台)", "*", "新市民*", "-1234yf", "title:茅台", "%",
     "_", "!", "50%", "a_b", "\\"],
)  # fmt: skip
def test_query_syntax_is_taken_literally(corpus_engine, query):
    body = " ".join(p.read_text(encoding="utf-8") for p in CORPUS.glob("*.md"))
    hits = search(corpus_engine, query, limit=100)
    if query.lower() not in body.lower():
        assert hits == []
    for hit in hits:  # whatever matches contains the query as written
        assert query.lower() in hit.snippet.lower()


def test_rebuild_indexes_every_article_and_gives_the_same_results(corpus_engine):
    # Last of the corpus tests: on SQLite it indexes what waited.
    queries = ("茅台", "新市民", "HFO-1234yf", "制冷剂", "北向资金", "A股")
    before = {query: search(corpus_engine, query, limit=100) for query in queries}
    with corpus_engine.connect() as conn:
        articles = conn.execute(text("SELECT count(*) FROM articles")).scalar_one()

    assert rebuild(corpus_engine) == articles == 64
    assert {query: search(corpus_engine, query, limit=100) for query in queries} == before
    assert all(before.values())


# -- in step with writes ------------------------------------------------------------------------


def found(engine: Engine, *queries: str) -> dict[str, list[str]]:
    return {query: codes(search(engine, query)) for query in queries}


def found_before_and_after_indexing(engine: Engine, *queries: str) -> dict[str, list[str]]:
    """The hits while the text waits (SQLite), then the same once it is indexed."""
    hits = found(engine, *queries)
    fts_in_step(engine)
    assert found(engine, *queries) == hits, "the same hits from the index"
    return hits


def test_new_revised_and_deleted_articles_are_searched_at_once(db_url, engine, pipeline_run):
    code, other = "NW202204272361734680", "NW202204272361734689"
    queries = ("美团", "小微生意", "降准", "央行宣布降准", "加息", "美联储加息")
    revised = make_article(title="央行宣布降准", paragraphs=["央行宣布降准0.25个百分点。"])
    pipeline_run(db_url, [make_article(), make_article(other, title="美联储加息")])
    assert found(engine, *queries) == {
        "美团": [other, code], "小微生意": [other, code], "降准": [], "央行宣布降准": [],
        "加息": [other], "美联储加息": [other],
    }  # fmt: skip

    # Revised and deleted while their text waits to be indexed (SQLite).
    assert pipeline_run(db_url, [revised]).stats["finews/updated"] == 1
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM articles WHERE info_code = :c"), {"c": other})
    assert found_before_and_after_indexing(engine, *queries) == {
        "美团": [], "小微生意": [], "降准": [code], "央行宣布降准": [code],
        "加息": [], "美联储加息": [],
    }  # fmt: skip

    # Revised once indexed: the old text leaves the index, the new one waits.
    again = make_article(title="美联储加息", paragraphs=["美联储宣布加息。"])
    assert pipeline_run(db_url, [again]).stats["finews/updated"] == 1
    assert found_before_and_after_indexing(engine, *queries) == {
        "美团": [], "小微生意": [], "降准": [], "央行宣布降准": [],
        "加息": [code], "美联储加息": [code],
    }  # fmt: skip

    # Deleted once indexed.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM articles WHERE info_code = :c"), {"c": code})
    assert found_before_and_after_indexing(engine, *queries) == {q: [] for q in queries}


def test_a_merge_of_two_copies_is_searched_at_once(db_url, engine, pipeline_run):
    outlet_copy, emnews_copy = (CORPUS / name for name in (
        "2022-05-26-NW202205262391921712.md", "2022-05-26-202205262391921712.md"))  # fmt: skip
    store_files(None, db_url, [outlet_copy])
    [hit] = search(engine, "HFO-1234yf")
    assert (hit.outlet, hit.stocks) == ("上海证券报", ["NIO.N"])

    store_files(None, db_url, [emnews_copy])
    [hit] = search(engine, "HFO-1234yf")
    assert (hit.outlet, hit.stocks) == ("东财滚动", HFO_STOCKS)
    assert found_before_and_after_indexing(engine, "HFO-1234yf") == {"HFO-1234yf": [HFO]}

    # Copies with different text: the emnews copy's text replaces the outlet copy's, here
    # once the outlet copy's text is in the index.
    code = "NW202301010000000001"
    pipeline_run(db_url, [make_article(code, paragraphs=["旧的说法在此。"])])
    assert found_before_and_after_indexing(engine, "旧的说法", "新的说法") == {
        "旧的说法": [code], "新的说法": []}  # fmt: skip
    pipeline_run(db_url, [make_article(code, category="emnews", outlet="东财滚动",
                                       paragraphs=["新的说法在此。"])])  # fmt: skip
    assert found_before_and_after_indexing(engine, "旧的说法", "新的说法", "说法") == {
        "旧的说法": [], "新的说法": [code], "说法": [code]}  # fmt: skip


def test_text_goes_into_the_sqlite_index_500_articles_at_a_time(db_url, engine, pipeline_run):
    articles = [
        make_article(f"NW2023010100000{n:05d}", paragraphs=[f"第{n}号公告：回购股份。"])
        for n in range(520)
    ]
    articles[0].paragraphs.append("鳄鱼")  # the last by info_code: beyond the newest 250
    pipeline_run(db_url, articles, FINEWS_STORE_BATCH_SIZE=100)

    hits = search(engine, "回购", limit=1000)
    assert len(hits) == 520
    assert codes(search(engine, "回购", limit=1)) == ["NW202301010000000519"]
    assert codes(search(engine, "第519号")) == ["NW202301010000000519"]
    assert codes(search(engine, "鳄鱼", limit=1)) == ["NW202301010000000000"]
    if engine.dialect.name == "sqlite":
        assert waiting(engine) == 20, "the first 500 went into the index"
        with engine.connect() as conn:
            indexed = conn.execute(text(
                "SELECT count(*) FROM articles_fts WHERE articles_fts MATCH '\"回购股\"'"
            )).scalar_one()  # fmt: skip
        assert indexed == 500
        fts_in_step(engine)


def test_like_wildcards_in_the_query_are_literal(db_url, engine, pipeline_run):
    pipeline_run(db_url, [
        make_article("NW202301010000000001", paragraphs=["涨幅50%以上"]),
        make_article("NW202301010000000002", paragraphs=["涨幅500倍"]),
        make_article("NW202301010000000003", paragraphs=["代码a_b"]),
        make_article("NW202301010000000004", paragraphs=["代码axb"]),
    ])  # fmt: skip
    assert found(engine, "50%", "0%", "%", "a_b", "_b") == {
        "50%": ["NW202301010000000001"], "0%": ["NW202301010000000001"],
        "%": ["NW202301010000000001"], "a_b": ["NW202301010000000003"],
        "_b": ["NW202301010000000003"],
    }  # fmt: skip


def test_rebuild_repairs_a_damaged_sqlite_index(sqlite_url, pipeline_run):
    pipeline_run(sqlite_url, [make_article()])
    engine = make_engine(sqlite_url)
    try:
        index_what_waits(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO articles_fts (articles_fts) VALUES ('delete-all')"))
        # 1 character: a scan of articles, which the index does not serve
        assert found(engine, "新市民", "美团", "团") == {
            "新市民": [],
            "美团": [],
            "团": [XINSHIMIN],
        }

        assert rebuild(engine) == 1
        assert found(engine, "新市民", "美团") == {"新市民": [XINSHIMIN], "美团": [XINSHIMIN]}
        fts_in_step(engine)
    finally:
        engine.dispose()


def test_the_rebuild_command(sqlite_url, pipeline_run, capsys):
    pipeline_run(sqlite_url, [make_article()])

    assert main(["rebuild", "--url", sqlite_url]) == 0
    assert capsys.readouterr().out == f"{sqlite_url}: search index rebuilt, 1 articles.\n"


def test_vacuum_keeps_the_sqlite_index_in_step(sqlite_url, pipeline_run):
    # articles has no INTEGER PRIMARY KEY, and SQLite's documentation allows VACUUM to
    # renumber such rowids; the index refers to rows by rowid.
    pipeline_run(sqlite_url, [make_article(f"NW20230101000000000{n}", paragraphs=[f"第{n}篇说法"])
                              for n in range(1, 4)])  # fmt: skip
    engine = make_engine(sqlite_url)
    try:
        index_what_waits(engine)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM articles WHERE info_code = 'NW202301010000000001'"))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM"))
        fts_in_step(engine)
        assert found(engine, "第3篇说法", "第1篇", "篇说") == {
            "第3篇说法": ["NW202301010000000003"], "第1篇": [],
            "篇说": ["NW202301010000000003", "NW202301010000000002"],
        }  # fmt: skip
    finally:
        engine.dispose()


def test_a_database_without_the_index_is_told_to_migrate(empty_db_url, capsys):
    upgrade(empty_db_url, "0005")
    engine = make_engine(empty_db_url)
    try:
        with pytest.raises(SearchIndexMissing, match=r"run `make migrate`"):
            rebuild(engine)
        assert main(["rebuild", "--url", empty_db_url]) == 1
        assert "has no full-text search index" in capsys.readouterr().err
        if engine.dialect.name == "sqlite":
            with pytest.raises(SearchIndexMissing, match=r"articles_fts"):
                search(engine, "新市民")
        else:  # PostgreSQL scans without its indexes
            assert search(engine, "新市民") == []
    finally:
        engine.dispose()


def test_the_fts_tables_are_named_for_autogenerate_to_skip():
    assert all(map(is_index_table, ["articles_fts", "articles_fts_data", "articles_fts_idx",
                                     "articles_fts_config", "articles_fts_terms",
                                     "articles_fts_pending"]))  # fmt: skip
    assert not any(map(is_index_table, ["articles", "article_categories", "articles_ftsx"]))


# -- snippets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("needle", "title", "body", "expected"),
    [
        ("茅台", "茅台大涨", "正文", "茅台大涨"),
        ("正文", "标题", "正文", "正文"),
        ("x", None, "a" * 40 + "x" + "b" * 40, "…" + "a" * 30 + "x" + "b" * 30 + "…"),
        ("x", "", "a" * 10 + "x" + "b" * 40, "a" * 10 + "x" + "b" * 30 + "…"),
        ("hfo", "", "第一段\n用 HFO\n制冷", "第一段 用 HFO 制冷"),
        ("缺", "标题", "正文" * 40, ("正文" * 40)[:61] + "…"),  # no hit (case folding): the start
    ],
)
def test_snippet(needle, title, body, expected):
    assert snippet(needle, title, body) == expected
