"""The analysts' guide (``docs/analysts.md``): every worked query, as ``analysis.worked`` reads
it, returns the documented rows on SQLite and PostgreSQL over the stored real corpus; the
guide documents every column; the pandas recipe, and the DuckDB one on the Parquet files of
``finews export``, give Beijing times and days; a guide that breaks the worked-query layout is
refused.

How a cell is compared with the guide's text: NULL is an empty cell; a timestamp is
``YYYY-MM-DD HH:MM:SS+08:00`` (SQLite returns that text as stored; a PostgreSQL datetime is
converted to +08:00 and printed so); a date is ``YYYY-MM-DD``; a boolean ``true``/``false``;
anything else ``str()``. Every query has an ORDER BY, so the order of the rows is compared
too. Parameters are passed as the guide's text, as a form or a command line would. On
PostgreSQL the session's time zone is set to America/New_York, so a query that leaned on the
session's zone (a UTC server) would fail here.

The documented rows were checked against the post files in ``fixtures/corpus/posts``:

- Securities: only 7 files hold Eastmoney markup (``grep -l data-code``); the 2021-12-08
  emnews posts (72 files, 60 infoCodes, ``sort -u`` of the names) link nothing.
  ``2022-01-07-202201072239307540.md`` (08:14:19 +0800, emnews; its 券商中国 copy has no
  markup): BK0473 证券 as one ``keytip`` and two ``em_stock_key_common`` links (3), BK0475
  银行 2, BK0474 and eight brokers (000166 申万宏源, …) 1 each, 11 in all, no K-line block.
  ``2022-05-31-202205312398034850.md`` (18:03:41, emnews; source line 财联社): 39 distinct
  ``data-code`` securities plus 创业板指 (399006) as an ``infokey`` link, 40; BK1037 消费电子
  three links and the K-line block (4, charted; the 财联社 copy charts it too), AAPL 苹果 and
  BK1036 半导体 3, BK0473 2. ``2022-05-26-202205262391921712.md`` (00:19:55 +0800; source line
  上海<BK0473 link>证券报, which is no mention): 300343 联创股份 and 600160 巨化股份 3, NIO
  蔚来 two links plus its K-line block (3, charted), 600636 and BK0493 2, BK0839 1: 6.
  ``2022-04-27-NW202204272361734680.md`` (15:22:47, 证券日报网): two K-line blocks only,
  03690 (116) and 601818 (1), no names.
- Days and outlets: as in ``tests/test_views.py`` (60 emnews articles on 2021-12-08; one
  each on 2022-01-07, 2022-05-26, 2022-05-31 from emnews with an outlet copy, 2022-04-27 from
  证券日报网). The two newest 2021-12-08 posts by their ``date:`` lines are
  ``…207168450`` (15:46:00, “入世”20年…) and ``…207152228`` (15:20:11, 8核变4核？！…), neither
  with a source line.
- Rejects: 82 files; ``2021-12-01-init.md`` and ``.5e7a196.md`` (开站大吉) carry no infoCode
  anywhere, ``-202205262391921712.md`` has ``date:  +0800``: 3 rejected, 64 infoCodes stored.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from analysis.worked import GUIDE, GuideError, WorkedQuery, worked_queries
from schema.search import is_index_table
from schema.types import BEIJING
from tests import test_views

QUERIES = worked_queries()
corpus_engine = test_views.corpus_engine  # the real corpus, stored once per backend


def cell(value: Any) -> str:
    """A value as the guide's result tables show it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        assert value.utcoffset() is not None, f"naive timestamp {value}"
        return value.astimezone(BEIJING).isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def run(engine: Engine, query: WorkedQuery) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
        result = conn.execute(text(query.sql[engine.dialect.name]), query.params)
        return tuple(result.keys()), [tuple(map(cell, row)) for row in result]


# -- the worked queries ---------------------------------------------------------------------


@pytest.mark.parametrize("query", QUERIES, ids=[query.name for query in QUERIES])
def test_a_worked_query_returns_the_documented_rows(corpus_engine, query):
    columns, rows = run(corpus_engine, query)

    assert columns == query.columns
    assert rows == query.expected


def test_the_guide_has_six_worked_queries_with_unique_names():
    names = [query.name for query in QUERIES]

    assert len(QUERIES) == 6
    assert len(set(names)) == 6
    for query in QUERIES:
        assert set(query.sql) == {"sqlite", "postgresql"}
        assert query.params, f"{query.name}: the guide gives its parameters"
        assert query.expected, f"{query.name}: the corpus answers it"
        assert all(len(row) == len(query.columns) for row in query.expected)
        assert query.description and query.title
        assert "-- name:" not in query.sql["sqlite"] and "-- param:" not in query.sql["sqlite"]
    portable = [q.name for q in QUERIES if q.sql["sqlite"] == q.sql["postgresql"]]
    assert portable == [n for n in names if n != "top-securities-per-day"]


def test_the_queries_are_read_as_written():
    first = QUERIES[0]

    assert first.name == "articles-about-a-security"
    assert first.title == "Articles about one security between two instants"
    assert first.params == {
        "symbol": "BK0473",
        "since": "2022-01-01 00:00:00+08:00",
        "until": "2022-06-01 00:00:00+08:00",
    }
    assert first.sql["sqlite"].startswith("SELECT published_at, info_code, title")
    assert first.sql["sqlite"].endswith("ORDER BY published_at, info_code;\n")
    assert first.description.startswith("The articles that link a given security or board")


# -- the rest of the guide ------------------------------------------------------------------


def test_the_guide_documents_every_column_of_every_table_and_view(corpus_engine):
    guide = GUIDE.read_text(encoding="utf-8")
    schema = inspect(corpus_engine)
    names = [
        name
        for name in [*schema.get_table_names(), *schema.get_view_names()]
        if name != "alembic_version" and not is_index_table(name)
    ]
    undocumented = [
        f"{name}.{column['name']}"
        for name in names
        for column in schema.get_columns(name)
        if f"`{column['name']}`" not in guide
    ]

    assert len(names) == 10
    assert all(f" {name}" in guide for name in names)
    assert undocumented == []


def test_the_pandas_recipe_gives_beijing_times_on_both_backends(corpus_engine):
    pd = pytest.importorskip("pandas")
    query = text(
        "SELECT info_code, published_at, title, symbol, is_primary, mentions"
        " FROM article_stocks WHERE symbol = :symbol ORDER BY published_at"
    )
    df = pd.read_sql(
        query,
        corpus_engine,
        params={"symbol": "600160.SH"},
        parse_dates={"published_at": {"utc": True}},
    )
    df["published_at"] = df["published_at"].dt.tz_convert("Asia/Shanghai")
    df["is_primary"] = df["is_primary"].astype(bool)

    assert str(df["published_at"].dtype) == "datetime64[us, Asia/Shanghai]"
    assert list(df["info_code"]) == ["NW202205262391921712"]
    assert df["published_at"][0].isoformat() == "2022-05-26T00:19:55+08:00"
    assert df["is_primary"].tolist() == [False]


def test_the_duckdb_recipe_cuts_beijing_days_from_the_parquet_export(corpus_engine, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    from analysis.cli import main

    url = corpus_engine.url.render_as_string(hide_password=False)
    assert main(["export", "--url", url, "--format", "parquet", str(tmp_path)]) == 0
    articles, mentions = tmp_path / "articles.parquet", tmp_path / "stock_mentions.parquet"
    query = f"""
        SELECT CAST(a.published_at AS DATE) AS day, s.symbol, count(*) AS articles
        FROM '{articles}' a JOIN '{mentions}' s USING (info_code)
        GROUP BY ALL
        ORDER BY day DESC, articles DESC, s.symbol
    """
    con = duckdb.connect()
    try:
        con.sql("SET TimeZone = 'UTC'")  # a machine on UTC, before the guide's SET
        utc_days = {symbol: str(day) for day, symbol, _ in con.sql(query).fetchall()}
        con.sql("SET TimeZone = 'Asia/Shanghai'")
        found = con.sql(query).fetchall()
        frame = con.sql(
            f"SELECT published_at FROM '{articles}' WHERE info_code = 'NW202205262391921712'"
        ).df()
    finally:
        con.close()

    days = {symbol: str(day) for day, symbol, _ in found}
    assert len(found) == 59, "11 + 2 + 6 + 40 securities, one article each"
    assert (days["NIO.N"], utc_days["NIO.N"]) == ("2022-05-26", "2022-05-25")
    assert days["BK1037"] == utc_days["BK1037"] == "2022-05-31"
    assert [str(day) for day, symbol, _ in found if symbol == "BK0473"] == [
        "2022-05-31",
        "2022-01-07",
    ], "newest day first"
    assert str(frame["published_at"].dtype) == "datetime64[us, Asia/Shanghai]"
    assert frame["published_at"][0].isoformat() == "2022-05-26T00:19:55+08:00"


# -- the layout the parser requires -----------------------------------------------------------

VALID = """\
# A guide

Text that is not a query, with a block that is not one either:

```sql
SELECT 1;
```

### Query: Two things | in a title

Finds **two** things: `a` and
[b](https://example.invalid/).

A second paragraph.

```sql
-- name: two-things
-- param: code = NW1
-- param: when = 2022-01-01 00:00:00+08:00
-- what the query is for stays in the SQL
SELECT code, note FROM things WHERE code = :code AND at >= :when AND kind::text = 'x:y';
```

Some words between the SQL and its rows.

| code | note |
|---|---|
| NW1 | a \\| b |
| NW2 | |

### Query: Per backend

Both dialects.

```sql postgresql
-- name: per-backend
-- param: n = 3
SELECT CAST(:n AS integer) AS n;
```

```sql sqlite
-- name: per-backend
-- param: n = 3
SELECT CAST(:n AS INTEGER) AS n;
```

| n |
|---|
| 3 |

## Not a query

| a | b |
|---|---|
"""


def write(tmp_path: Path, guide: str) -> Path:
    path = tmp_path / "analysts.md"
    path.write_text(guide, encoding="utf-8")
    return path


def test_a_guide_in_the_layout_is_read(tmp_path):
    first, second = worked_queries(write(tmp_path, VALID))

    assert first == WorkedQuery(
        name="two-things",
        title="Two things | in a title",
        description="Finds two things: a and b.",
        sql=dict.fromkeys(
            ("sqlite", "postgresql"),
            "-- what the query is for stays in the SQL\n"
            "SELECT code, note FROM things WHERE code = :code AND at >= :when"
            " AND kind::text = 'x:y';\n",
        ),
        params={"code": "NW1", "when": "2022-01-01 00:00:00+08:00"},
        expected=[("NW1", "a | b"), ("NW2", "")],
        columns=("code", "note"),
    )
    assert second.sql == {
        "sqlite": "SELECT CAST(:n AS INTEGER) AS n;\n",
        "postgresql": "SELECT CAST(:n AS integer) AS n;\n",
    }
    assert (second.params, second.expected) == ({"n": "3"}, [("3",)])


BROKEN = {
    "no name": ("-- name: two-things\n", "", r"must start with '-- name: <slug>'"),
    "a name that is no slug": ("name: two-things", "name: Two_Things", r"not a slug"),
    "a name used twice": ("name: per-backend", "name: two-things", r"already used"),
    "a parameter not given": ("-- param: code = NW1\n", "", r"no '-- param:' line for :code"),
    "variants that disagree": (
        "-- param: n = 3\nSELECT CAST(:n AS INTEGER) AS n;",
        "-- param: n = 4\nSELECT CAST(:n AS INTEGER) AS n;",
        r"the variants must have the same name and params",
    ),
    "an unused parameter": ("AND at >= :when", "", r"parameter when is never used"),
    "a parameter without a value": (
        "-- param: code = NW1",
        "-- param: code =",
        r"<name> = <value>",
    ),
    "no description": ("Both dialects.\n\n", "", r"no description"),
    "one variant only": ("```sql postgresql", "```text", r"give one ```sql block, or one"),
    "an unknown dialect": ("```sql sqlite", "```sql mysql", r"unknown dialect 'mysql'"),
    "a block left open": ("| n |\n|---|\n| 3 |\n", "```\n", r"not closed"),
    "no result table": ("| n |\n|---|\n| 3 |\n", "", r"no result table"),
    "a row too short": ("| NW2 | |", "| NW2 |", r"1 cells in a table of 2 columns"),
    "no delimiter line": ("| n |\n|---|\n", "| n |\n", r"\|---\| line"),
}


@pytest.mark.parametrize(("old", "new", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_a_guide_that_breaks_the_layout_is_refused(tmp_path, old, new, message):
    assert VALID.count(old) >= 1, "the mutation applies"
    path = write(tmp_path, VALID.replace(old, new))

    with pytest.raises(GuideError, match=message) as refused:
        worked_queries(path)
    assert re.match(rf"{re.escape(str(path))}:\d+: query ", str(refused.value))
