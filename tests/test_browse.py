"""``finews browse``: Datasette on the demo database, fetched over HTTP as JSON.

The demo database is ``scrapy demo --synthetic 0``: the real corpus crawled from its local
mirror (62 articles, all still waiting in ``articles_fts_pending``, fewer than 500), so
search must go through ``schema.search``: a MATCH on the index finds none of them. Expected
hits are those of ``tests/test_search.py`` (found with grep in ``fixtures/corpus/posts`` and
read in the files): 茅台 is in the titles of NW202112082206935918 and NW202112082206928461
only; 新市民 in NW202204272361734680 only, whose K-line blocks chart 03690.HK and 601818.SH.
Every other expectation is read from the database file itself.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from analysis.browse import run
from analysis.datasette import plugin
from analysis.datasette.metadata import DESCRIPTIONS, SEARCH_FUNCTION, SEARCH_SQL
from analysis.worked import worked_queries
from schema.migrate import upgrade
from schema.search import VIEWS, is_index_table
from tests.crawling import ROOT, environment

MAOTAI = ["NW202112082206935918", "NW202112082206928461"]  # newest first
XINSHIMIN = "NW202204272361734680"
START_TIMEOUT = 20.0  # seconds for Datasette to answer
FINEWS = [sys.executable, "-m", "analysis.cli"]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("demo")
    path = where / "finews.db"
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "demo", "--synthetic", "0", "--site", str(where / "site"),
         "-s", f"FINEWS_DATABASE_URL=sqlite:///{path}"],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return path


@dataclass
class Browse:
    """A running ``finews browse``."""

    process: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:<port>/finews
    stdout: Path
    stderr: Path

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}" + (f"?{urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def text(self, path: str, **params: str) -> str:
        url = f"{self.base}{path}" + (f"?{urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode("utf-8")

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_browse(database: Path, logs: Path) -> Browse:
    """``finews browse --port <free>`` on ``database``, once it answers."""
    port = free_port()
    stdout, stderr = logs / "stdout", logs / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*FINEWS, "browse", "--url", f"sqlite:///{database}", "--port", str(port)],
            cwd=ROOT, env=environment(), stdout=out, stderr=err,
        )  # fmt: skip
    browse = Browse(process, f"http://127.0.0.1:{port}/{database.stem}", stdout, stderr)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"finews browse exited {process.returncode}:\n{browse.output()}")
        try:
            browse.get(".json")
            return browse
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    stop(process)
    pytest.fail(f"finews browse did not answer in {START_TIMEOUT:.0f} s:\n{browse.output()}")


def stop(process: subprocess.Popen[bytes]) -> int:
    """Ctrl-C, as a person stops it; a kill if that did not work."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.fixture(scope="module")
def browse(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browse]:
    running = start_browse(demo_db, tmp_path_factory.mktemp("browse"))
    yield running
    stop(running.process)


def database_rows(path: Path, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


def test_article_stocks_view(browse: Browse, demo_db: Path):
    rows = browse.get("/article_stocks.json", _shape="array", _size="max")
    stored = database_rows(demo_db, "SELECT * FROM article_stocks")
    assert len(stored) > 50
    key = lambda row: (row["info_code"], row["symbol"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(stored, key=key)
    times = [row["published_at"] for row in rows]
    assert times == sorted(times, reverse=True), "newest first (the metadata's sort)"

    rows = browse.get("/article_stocks.json", _shape="array", symbol="601818.SH")
    assert rows == database_rows(
        demo_db,
        "SELECT * FROM article_stocks WHERE symbol = ? ORDER BY published_at DESC",
        ("601818.SH",),
    )
    mention = next(row for row in rows if row["info_code"] == XINSHIMIN)
    assert (mention["secid"], mention["is_primary"], mention["mentions"]) == ("1.601818", 1, 1)


def test_search_query(browse: Browse, demo_db: Path):
    match = "SELECT rowid FROM articles_fts WHERE articles_fts MATCH '\"茅台\"'"
    assert database_rows(demo_db, match) == [], "what Datasette's own search would find"
    rows = browse.get("/search.json", _shape="array", q="茅台")
    assert [row["info_code"] for row in rows] == MAOTAI
    articles = database_rows(demo_db, "SELECT info_code, published_at, outlet, title FROM articles")
    stored = {row["info_code"]: row for row in articles}
    for row in rows:
        article = stored[row["info_code"]]
        assert (row["time"], row["outlet"], row["title"]) == (
            article["published_at"],
            article["outlet"],
            article["title"],
        )
        assert "茅台" in row["snippet"] and "茅台" in row["title"]
        assert row["stocks"] == ""  # neither has stock markup
    assert list(rows[0]) == ["info_code", "time", "outlet", "title", "stocks", "snippet"]

    rows = browse.get(
        "/search.json", _shape="array", q="新市民", stock="601818.SH", since="2022-04-27"
    )
    assert [(row["info_code"], row["stocks"]) for row in rows] == [
        (XINSHIMIN, "03690.HK 601818.SH")
    ]
    assert browse.get("/search.json", _shape="array", q="新市民", until="2022-04-26") == []
    assert browse.get("/search.json", _shape="array", q="") == [], "a blank form finds nothing"

    page = browse.text("/search", q="茅台")
    assert f'href="/finews/articles/{MAOTAI[0]}"' in page, "infoCodes link to their articles"


def test_search_box_of_articles_goes_through_the_search(browse: Browse):
    found = browse.get("/articles.json", _shape="array", _search="茅台", _col="title")
    assert [row["info_code"] for row in found] == MAOTAI
    page = browse.text("/articles", _search="茅台")
    assert 'name="_search" value="茅台"' in page
    found = browse.get("/article_stocks.json", _shape="array", _search="新市民")
    assert sorted(row["symbol"] for row in found) == ["03690.HK", "601818.SH"]


def test_worked_queries(browse: Browse, demo_db: Path):
    """The guide's worked queries, with the guide's values, give the guide's columns and
    the rows their SQL gives on the database itself."""
    queries = worked_queries()
    assert len(queries) >= 6
    for query in queries:
        answer = browse.get(f"/{query.name}.json", **query.params)
        assert answer["columns"] == list(query.columns), query.name
        direct = database_rows(demo_db, query.sql["sqlite"], query.params)
        assert answer["rows"] == [list(row.values()) for row in direct], query.name
    newest = browse.get("/newest-from-an-outlet.json", _shape="array", outlet="东财滚动", n="3")
    assert len(newest) == 3


def test_what_is_shown(browse: Browse, demo_db: Path):
    database = browse.get(".json")
    hidden = {table["name"] for table in database["tables"] if table["hidden"]}
    tables = database_rows(demo_db, "SELECT name FROM sqlite_master WHERE type = 'table'")
    index = {row["name"] for row in tables if is_index_table(row["name"])}
    assert len(index) == 6  # articles_fts, its 3 shadow tables, _terms, _pending
    assert hidden == index | {"alembic_version"}
    assert {view["name"] for view in database["views"]} == set(VIEWS), "no articles_fts_source"
    queries = [query["name"] for query in database["queries"]]
    assert queries == ["search", *(query.name for query in worked_queries())]
    described = browse.text("/articles")
    assert DESCRIPTIONS["articles"][1]["body_text"] in described


def test_ctrl_c_stops_it(demo_db: Path, tmp_path: Path):
    running = start_browse(demo_db, tmp_path)
    assert stop(running.process) == 0
    assert "finews browse: stopped." in running.output()
    assert "Traceback" not in running.output()


def finews_browse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FINEWS, "browse", *args],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_postgresql_is_not_browsed():
    result = finews_browse("--url", "postgresql://postgres:secret@127.0.0.1:5432/finews")
    assert result.returncode == 1
    assert "Datasette reads SQLite files only" in result.stderr
    assert "psql 'postgresql://postgres@127.0.0.1:5432/finews' -c" in result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_database(tmp_path: Path):
    result = finews_browse("--url", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.returncode == 1
    assert "there is no database at" in result.stderr and "make demo" in result.stderr
    assert not (tmp_path / "none.db").exists(), "never created"


def test_outdated_database(tmp_path: Path):
    path = tmp_path / "old.db"
    upgrade(f"sqlite:///{path}", "0005")
    result = finews_browse("--url", f"sqlite:///{path}")
    assert result.returncode == 1
    assert "not at the newest revision" in result.stderr and "make migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_datasette(monkeypatch, demo_db: Path, capsys):
    monkeypatch.setitem(sys.modules, "datasette", None)  # import datasette: ImportError
    args = argparse.Namespace(url=f"sqlite:///{demo_db}", host="127.0.0.1", port=0, open=False)
    assert run(args) == 1
    assert "Datasette is not installed: `make browse` installs it" in capsys.readouterr().err


def test_search_sql_searches_once(monkeypatch, demo_db: Path):
    calls, searches = [], []

    def function(*args: Any) -> str:
        calls.append(args)
        return plugin.finews_search(str(demo_db), *args)

    def counted(*args: Any, **kwargs: Any) -> Any:
        searches.append(args[1])
        return search(*args, **kwargs)

    search = plugin.search
    monkeypatch.setattr(plugin, "search", counted)
    monkeypatch.setattr(plugin, "_answers", OrderedDict())
    with sqlite3.connect(f"file:{demo_db}?mode=ro", uri=True) as conn:
        conn.create_function(SEARCH_FUNCTION, -1, function)
        params = {"q": "茅台", "since": "", "until": "", "stock": "", "outlet": ""}
        rows = conn.execute(SEARCH_SQL, params).fetchall()
        assert [row[0] for row in rows] == MAOTAI
        assert len(calls) == 1, "one call per query, not one per article joined"
        assert conn.execute(SEARCH_SQL, params).fetchall() == rows
        assert searches == ["茅台"], "the same search again at once: the answer is reused"
        monkeypatch.setattr(plugin, "REUSE_SECONDS", 0.0)
        assert conn.execute(SEARCH_SQL, params).fetchall() == rows
        assert searches == ["茅台", "茅台"]


def test_every_column_is_described(sqlite_template: Path):
    """Every table and view of a migrated database, but the search index's, and each of
    their columns, has a description; nothing else has one."""
    with sqlite3.connect(sqlite_template) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            )
            if not is_index_table(name)
        ]
        schema = {
            name: [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')] for name in names
        }
    described = {name: list(columns) for name, (_, columns) in DESCRIPTIONS.items()}
    assert {n: sorted(c) for n, c in described.items()} == {n: sorted(c) for n, c in schema.items()}
