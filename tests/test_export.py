"""``finews export`` (``analysis.export``) of the stored real corpus, on SQLite and PostgreSQL,
read back as an analyst would: pandas and DuckDB for Parquet, pandas for CSV.

What must hold: every article and every stock mention, no more; ``published_at`` aware and
at the instants stored; lists as lists, booleans as booleans; the mentions joining the
articles on ``info_code``; filters choosing the same articles for both files; row groups
bounded in rows and bytes; and an interrupted export leaving no file that looks complete.
Expected facts (the HFO-1234yf article's securities, the Beijing day of 00:19:55) are those
of ``tests/test_views.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from analysis import export as export_module
from analysis.cli import main
from analysis.export import ARTICLE_SCHEMA, MENTION_SCHEMA, ParquetSink, export
from schema.db import make_engine
from schema.models import Article, StockMention
from schema.types import BEIJING
from tests.conftest import BACKENDS
from tests.test_cli import stored_corpus_url
from tests.test_search import HFO, XINSHIMIN

HFO_SECURITIES = [  # (symbol, secid, kind, is_primary, mentions), as the export orders them
    ("NIO.N", "106.NIO", "stock", True, 3),
    ("300343.SZ", "0.300343", "stock", False, 3),
    ("600160.SH", "1.600160", "stock", False, 3),
    ("600636.SH", "1.600636", "stock", False, 2),
    ("BK0493", "90.BK0493", "board", False, 2),
    ("BK0839", "90.BK0839", "board", False, 1),
]


@pytest.fixture(scope="module", params=BACKENDS)
def corpus_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """The real corpus, stored once per backend for the module's read-only tests."""
    yield from stored_corpus_url(request, tmp_path_factory)


def stored(url: str) -> tuple[dict[str, datetime], set[tuple[str, str, str]]]:
    """What the database holds: published_at by infoCode, and (infoCode, market, code)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            times = dict(conn.execute(select(Article.info_code, Article.published_at)).all())
            mentions = conn.execute(
                select(StockMention.info_code, StockMention.market, StockMention.code)
            ).all()
    finally:
        engine.dispose()
    return times, {tuple(row) for row in mentions}


def run_export(url: str, out: Path, *options: str) -> None:
    assert main(["export", "--url", url, *options, str(out)]) == 0


def test_parquet_reads_back_in_pandas_and_duckdb(corpus_url, tmp_path, capsys):
    out = tmp_path / "export"
    run_export(corpus_url, out, "--format", "parquet")
    times, mentions = stored(corpus_url)
    articles_file, mentions_file = out / "articles.parquet", out / "stock_mentions.parquet"

    summary = capsys.readouterr().out
    assert summary.startswith(
        f"finews export: {len(times)} articles and {len(mentions)} stock mentions written as "
        "parquet in "
    )
    assert f"  {articles_file} (" in summary and f"  {mentions_file} (" in summary
    assert sorted(p.name for p in out.iterdir()) == ["articles.parquet", "stock_mentions.parquet"]

    articles = pd.read_parquet(articles_file)
    assert len(articles) == len(times) == 64
    assert isinstance(articles["published_at"].dtype, pd.DatetimeTZDtype)
    assert str(articles["published_at"].dt.tz) == "Asia/Shanghai"
    exported = dict(zip(articles["info_code"], articles["published_at"], strict=True))
    assert {code: t.to_pydatetime() for code, t in exported.items()} == times  # same instants
    assert exported[HFO] == pd.Timestamp(datetime(2022, 5, 26, 0, 19, 55, tzinfo=BEIJING))
    assert articles["published_at"].is_monotonic_increasing, "oldest first"
    hfo = articles.set_index("info_code").loc[HFO]
    assert hfo["paragraphs"][0] == "国内首款使用超低GWP(全球变暖潜值)制冷剂的新能源汽车来了！"
    assert "HFO-1234yf" in hfo["body_text"] and hfo["outlet"] == "东财滚动"

    by_pandas = pd.read_parquet(mentions_file)
    assert len(by_pandas) == len(mentions)
    assert by_pandas["is_primary"].dtype == bool
    assert {(r.info_code, r.market, r.code) for r in by_pandas.itertuples()} == mentions

    with duckdb.connect() as db:
        a, m = f"read_parquet('{articles_file}')", f"read_parquet('{mentions_file}')"
        assert db.execute(f"SELECT count(*) FROM {a}").fetchone() == (len(times),)
        joined = db.execute(f"SELECT count(*) FROM {m} JOIN {a} USING (info_code)").fetchone()
        assert joined == (len(mentions),), "every mention joins its article"
        found = db.execute(
            f"SELECT symbol, secid, kind, is_primary, mentions FROM {m} WHERE info_code = ?",
            [HFO],
        ).fetchall()
        assert found == HFO_SECURITIES
        [(day,)] = db.execute(
            f"SELECT CAST(timezone('Asia/Shanghai', published_at) AS date) FROM {a} "
            "WHERE info_code = ?",
            [HFO],
        ).fetchall()
        assert str(day) == "2022-05-26"


def test_parquet_schema_is_explicit_and_covers_every_column(corpus_url, tmp_path):
    out = tmp_path / "export"
    run_export(corpus_url, out, "--format", "parquet")

    articles = pq.read_schema(out / "articles.parquet")
    mentions = pq.read_schema(out / "stock_mentions.parquet")
    assert articles.equals(ARTICLE_SCHEMA) and mentions.equals(MENTION_SCHEMA)
    assert articles.field("published_at").type == pa.timestamp("us", tz="Asia/Shanghai")
    assert articles.field("paragraphs").type == pa.list_(pa.string())
    assert articles.field("images").type == pa.list_(pa.string())
    assert articles.field("revision").type == pa.int32()
    assert mentions.field("is_primary").type == pa.bool_()
    assert mentions.field("mentions").type == pa.int32()
    assert set(articles.names) == set(Article.__table__.columns.keys())
    assert set(mentions.names) == {*StockMention.__table__.columns.keys(), "secid"}


def test_csv_has_a_bom_and_reads_back(corpus_url, tmp_path):
    out = tmp_path / "export"
    run_export(corpus_url, out, "--format", "csv")
    times, mentions = stored(corpus_url)

    for name in ("articles.csv", "stock_mentions.csv"):
        assert (out / name).read_bytes().startswith(b"\xef\xbb\xbf"), name
    articles = pd.read_csv(out / "articles.csv", dtype=str, keep_default_na=False)
    assert list(articles.columns) == ARTICLE_SCHEMA.names  # the BOM is not in the first name
    assert len(articles) == len(times)
    assert {
        code: datetime.fromisoformat(value)
        for code, value in zip(articles["info_code"], articles["published_at"], strict=True)
    } == times
    assert all(value.endswith("+08:00") for value in articles["published_at"])
    hfo = articles.set_index("info_code").loc[HFO]
    assert hfo["published_at"] == "2022-05-26T00:19:55+08:00"
    assert json.loads(hfo["paragraphs"])[2] == "图片来源：霍尼韦尔官网"
    assert isinstance(json.loads(hfo["images"]), list)

    by_pandas = pd.read_csv(out / "stock_mentions.csv", dtype={"market": str, "code": str})
    assert {(r.info_code, r.market, r.code) for r in by_pandas.itertuples()} == mentions
    assert by_pandas["is_primary"].dtype == bool  # true/false
    rows = by_pandas[by_pandas["info_code"] == HFO]
    found = [tuple(r) for r in rows[["symbol", "secid", "kind", "is_primary", "mentions"]].values]
    assert found == HFO_SECURITIES


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--stock", "600160.SH"], {HFO}),
        (["--since", "2022-05-26"], {HFO, "NW202205312398034850"}),  # 00:19:55 Beijing: the 26th
        (["--since", "2022-04-27", "--until", "2022-05-25"], {XINSHIMIN}),
        (["--outlet", "证券日报网"], {XINSHIMIN}),
        (["--since", "2022-06-01"], set()),
    ],
)
@pytest.mark.parametrize("format", ["parquet", "csv"])
def test_filters_choose_the_articles_of_both_files(corpus_url, tmp_path, options, expected, format):
    out = tmp_path / "export"
    run_export(corpus_url, out, "--format", format, *options)
    _, mentions = stored(corpus_url)

    if format == "parquet":
        articles = pd.read_parquet(out / "articles.parquet")
        exported = pd.read_parquet(out / "stock_mentions.parquet")
    else:
        articles = pd.read_csv(out / "articles.csv")
        exported = pd.read_csv(out / "stock_mentions.csv", dtype={"market": str, "code": str})

    assert set(articles["info_code"]) == expected
    # All the mentions of those articles, also those of other symbols than --stock's.
    assert {(r.info_code, r.market, r.code) for r in exported.itertuples()} == {
        m for m in mentions if m[0] in expected
    }


def test_row_groups_are_bounded_in_rows_and_bytes(corpus_url, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "FETCH", 4)
    monkeypatch.setattr(export_module, "ROW_GROUP_ROWS", 10)
    engine = make_engine(corpus_url)
    try:
        by_rows = export(engine, tmp_path / "rows", "parquet")
        monkeypatch.setattr(export_module, "ROW_GROUP_BYTES", 1)  # a group per fetched batch
        export(engine, tmp_path / "bytes", "parquet")
    finally:
        engine.dispose()

    groups = pq.ParquetFile(tmp_path / "rows" / "articles.parquet").metadata
    sizes = [groups.row_group(k).num_rows for k in range(groups.num_row_groups)]
    assert sizes == [12] * 5 + [4]  # three batches of 4 reach 10, then what is left
    groups = pq.ParquetFile(tmp_path / "bytes" / "articles.parquet").metadata
    assert [groups.row_group(k).num_rows for k in range(groups.num_row_groups)] == [4] * 16
    assert by_rows.articles == 64
    codes = list(pd.read_parquet(tmp_path / "rows" / "articles.parquet")["info_code"])
    mentioned = list(pd.read_parquet(tmp_path / "rows" / "stock_mentions.parquet")["info_code"])
    assert sorted(set(mentioned), key=codes.index) == list(dict.fromkeys(mentioned)), (
        "mentions come in the articles' order"
    )


def test_an_interrupted_export_leaves_the_last_complete_one(corpus_url, tmp_path, monkeypatch):
    out = tmp_path / "export"
    run_export(corpus_url, out, "--format", "parquet", "--stock", "600160.SH")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(export_module, "FETCH", 8)
    calls = []

    def interrupted(self: ParquetSink, rows) -> None:
        calls.append(len(rows))
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ParquetSink, "add", interrupted)
    engine = make_engine(corpus_url)
    try:
        with pytest.raises(KeyboardInterrupt):
            export(engine, out, "parquet")
    finally:
        engine.dispose()

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "no .partial file left"
