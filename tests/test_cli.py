"""The ``finews`` command (``analysis.cli``): search and report on the stored real corpus, on
SQLite and PostgreSQL; its one-line errors; and a search, from another process, of what a
crawl of a local mirror has just stored.

Expected articles are those of ``tests/test_search.py`` (found with grep in
``fixtures/corpus/posts`` and read in the files): 茅台 in two emnews titles of 2021-12-08,
新市民 in ``NW202204272361734680`` (证券日报网), HFO-1234yf in the body of
``NW202205262391921712``, published 2022-05-26 00:19:55 +08:00 (2022-05-25 in UTC: a filter on
UTC days would put it on the wrong side of ``--until 2022-05-25``). Report counts are those
of ``tests/test_views.py``: 60 articles on 2021-12-08, one each on 2022-01-07, 2022-04-27,
2022-05-26 and 2022-05-31; the corpus run refuses the two 2021-12-01 posts (no infoCode)
and the undated copy of …391921712.

Most tests call ``main(argv)`` in this process; two run the command as a user does.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import analysis
from analysis.cli import cell_width, main
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from schema.db import make_engine
from schema.migrate import upgrade
from tests.conftest import BACKENDS, pg_database
from tests.crawling import ROOT, environment, expected_from, run_cron
from tests.test_search import HFO, HFO_STOCKS, MAOTAI, XINSHIMIN
from tests.test_storage_corpus import corpus_files, store_files

FINEWS = Path(sys.executable).with_name("finews")  # the entry point pip installed


def stored_corpus_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """The real corpus stored once (SQLite: it waits in articles_fts_pending, as fewer than
    500 new articles do); yields the database's URL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("corpus") / "finews.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        store_files(None, f"sqlite:///{path}", corpus_files())
        yield f"sqlite:///{path}"
    else:
        admin, template = (request.getfixturevalue(f) for f in ("pg_admin", "pg_template"))
        with pg_database(admin, template=template) as url:
            store_files(None, url, corpus_files())
            yield url


@pytest.fixture(scope="module", params=BACKENDS)
def corpus_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """The real corpus, stored once per backend for the module's read-only tests."""
    yield from stored_corpus_url(request, tmp_path_factory)


def finews(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``finews argv`` in this process: (exit status, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse: usage errors and --help
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def search_json(capsys, url: str, query: str, *options: str) -> list[dict[str, Any]]:
    code, out, err = finews(capsys, "search", query, "--url", url, "--format", "json", *options)
    assert (code, err) == (0, "")
    return json.loads(out)


def codes(hits: list[dict[str, Any]]) -> list[str]:
    return [hit["info_code"] for hit in hits]


# -- search -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [("茅台", MAOTAI), ("新市民", [XINSHIMIN]), ("HFO-1234yf", [HFO]), ("hfo-1234YF", [HFO])],
)
def test_search_finds_the_articles_that_hold_the_word(corpus_url, capsys, query, expected):
    hits = search_json(capsys, corpus_url, query)

    assert codes(hits) == expected
    assert all(query.lower() in hit["snippet"].lower() for hit in hits)


def test_search_gives_time_at_beijing_outlet_title_and_stocks(corpus_url, capsys):
    [hit] = search_json(capsys, corpus_url, "HFO-1234yf")

    assert hit["published_at"] == "2022-05-26T00:19:55+08:00"
    assert hit["outlet"] == "东财滚动"
    assert hit["title"] == "国内首次！蔚来汽车启用这款“绿色”制冷液 哪些A股公司早有布局？"
    assert hit["stocks"] == HFO_STOCKS
    assert hit["snippet"].startswith("…") and "HFO-1234yf(四氟丙烯)制冷剂" in hit["snippet"]


@pytest.mark.parametrize(
    ("query", "options", "expected"),
    [
        ("HFO-1234yf", ["--stock", "600160.SH"], [HFO]),
        ("HFO-1234yf", ["--stock", "601818.SH"], []),
        ("新市民", ["--stock", "601818.SH"], [XINSHIMIN]),
        ("HFO-1234yf", ["--since", "2022-05-26"], [HFO]),  # 00:19:55 Beijing: the 26th
        ("HFO-1234yf", ["--until", "2022-05-25"], []),  # though the 25th in UTC
        ("HFO-1234yf", ["--since", "2022-05-26", "--until", "2022-05-26"], [HFO]),
        ("茅台", ["--since", "2021-12-09"], []),
        ("茅台", ["--until", "2021-12-08"], MAOTAI),
        ("茅台", ["--limit", "1"], MAOTAI[:1]),
        ("新市民", ["--outlet", "证券日报网"], [XINSHIMIN]),
        ("新市民", ["--outlet", "东财滚动"], []),
    ],
)
def test_search_filters(corpus_url, capsys, query, options, expected):
    assert codes(search_json(capsys, corpus_url, query, *options)) == expected


def test_search_as_csv(corpus_url, capsys):
    code, out, _ = finews(capsys, "search", "茅台", "--url", corpus_url, "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert [row["info_code"] for row in rows] == MAOTAI
    assert [row["published_at"] for row in rows] == [
        "2021-12-08T12:47:49+08:00",
        "2021-12-08T12:41:23+08:00",
    ]
    assert {row["outlet"] for row in rows} == {"东财滚动"}
    assert [json.loads(row["stocks"]) for row in rows] == [[], []]  # no stock markup


def test_search_table_keeps_cjk_columns_aligned(corpus_url, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the snippet's length follows the terminal's width
    code, out, _ = finews(capsys, "search", "HFO-1234yf", "--url", corpus_url)

    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "1 article containing “HFO-1234yf”, newest first"
    header = next(line for line in lines if line.startswith("published (+08:00)"))
    row = next(line for line in lines if line.startswith("2022-05-26 00:19:55"))
    # The stocks column starts at the same terminal cell after a title of wide characters.
    assert cell_width(row[: row.index("NIO.N")]) == cell_width(header[: header.index("stocks")])
    assert cell_width(row[: row.index("东财滚动")]) == cell_width(header[: header.index("outlet")])
    snippet = next(line for line in lines if line.startswith(HFO))
    assert "HFO-1234yf" in snippet


def test_search_without_hits_says_so(corpus_url, capsys):
    code, out, _ = finews(capsys, "search", "央行降准", "--url", corpus_url, "--stock", "600160.SH")
    assert code == 0
    assert out == "No article contains “央行降准” about 600160.SH.\n"


# -- report -----------------------------------------------------------------------------------


def test_report_of_a_week_as_json(corpus_url, capsys):
    code, out, err = finews(
        capsys, "report", "--url", corpus_url, "--until", "2022-05-31", "--format", "json"
    )

    report = json.loads(out)
    assert (code, err) == (0, "")
    assert (report["since"], report["until"], report["articles"]) == ("2022-05-25", "2022-05-31", 2)
    assert report["newest_article_day"] == "2022-05-31"  # 2022-05-31-202205312398034850.md
    assert [(d["day"], d["articles"], d["outlets"]) for d in report["days"]] == [
        ("2022-05-31", 1, {"东财滚动": 1}),
        ("2022-05-30", 0, {}),
        ("2022-05-29", 0, {}),
        ("2022-05-28", 0, {}),
        ("2022-05-27", 0, {}),
        ("2022-05-26", 1, {"东财滚动": 1}),  # 00:19:55 Beijing time
        ("2022-05-25", 0, {}),
    ]
    stocks = {s["symbol"]: (s["name"], s["mentions"], s["articles"]) for s in report["top_stocks"]}
    assert stocks["600160.SH"] == ("巨化股份", 3, 1)
    assert stocks["NIO.N"] == ("蔚来", 3, 1)
    assert "BK0493" not in stocks, "boards are not stocks"
    assert report["rejects"] == 0, "the corpus's rejects were recorded today, not in May 2022"
    [run] = report["runs"]
    assert (run["status"], run["seen"], run["stored"], run["rejected"]) == (
        "finished",
        len(corpus_files()),
        64,
        3,
    )
    assert run["started_at"].endswith("+08:00")


def test_report_as_text(corpus_url, capsys):
    code, out, _ = finews(capsys, "report", "--url", corpus_url, "--until", "2022-05-31")
    _, whole, _ = finews(capsys, "report", "--url", corpus_url, "--until", "2022-05-31", "--days",
                         "200")  # fmt: skip
    _, today, _ = finews(capsys, "report", "--url", corpus_url, "--days", "2")

    assert code == 0
    assert "2022-05-25 to 2022-05-31 (7 days, Beijing time)" in out
    assert "Articles per day and outlet: 2 in all" in out
    assert re.search(r"^  2022-05-26 +1  东财滚动 1$", out, re.M)
    assert re.search(r"^  2022-05-27 +0$", out, re.M)
    assert re.search(r"^ +\d+\. 600160\.SH +3 mentions in +1 article  巨化股份$", out, re.M)
    assert "Rejects recorded in those days: 0" in out
    assert re.search(r"^ +1  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  finished .* storage-test", out, re.M)
    assert "Articles per day and outlet: 64 in all" in whole
    assert re.search(r"^  2021-12-08 +60  东财滚动 60$", whole, re.M)
    assert re.search(r"^  2022-04-27 +1  证券日报网 1$", whole, re.M)
    assert "Rejects recorded in those days: 3" in today
    assert "(the newest article is of 2022-05-31: --until 2022-05-31)" in today
    assert "the newest article is" not in out, "said only when the days hold no article"
    assert re.search(r"^ +2  missing info_code  e\.g\. file:///.*/2021-12-01-init", today, re.M)
    assert re.search(r"^ +1  missing published_at  e\.g\. .*-202205262391921712\.md$", today, re.M)


# -- errors -----------------------------------------------------------------------------------


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_no_database_is_an_error_and_is_not_created(tmp_path, capsys):
    missing = tmp_path / "data" / "finews.db"
    code, out, err = finews(capsys, "search", "茅台", "--url", f"sqlite:///{missing}")

    assert (code, out) == (1, "")
    assert one_line(err).startswith(f"finews search: no database at sqlite:///{missing}: ")
    assert not missing.exists() and not missing.parent.exists()


def test_the_database_url_comes_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FINEWS_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    code, _, err = finews(capsys, "report")
    assert code == 1
    assert f"no database at sqlite:///{tmp_path / 'env.db'}" in one_line(err)


def test_a_database_without_the_schema_says_to_migrate(tmp_path, capsys):
    blank = tmp_path / "blank.db"
    sqlite3.connect(blank).close()  # an empty file, as a mistyped path once created
    old = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(old, "0005")

    for url, state in ((f"sqlite:///{blank}", "has no finews schema"), (old, "not at the newest")):
        code, _, err = finews(
            capsys, "export", "--format", "csv", "--url", url, str(tmp_path / "o")
        )
        assert code == 1
        assert state in one_line(err)
        assert "run `make migrate`" in err
    assert not (tmp_path / "o" / "articles.csv").exists()


def test_a_missing_search_index_says_what_to_run(sqlite_url, capsys):
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE articles_fts"))
    engine.dispose()

    code, _, err = finews(capsys, "search", "茅台", "--url", sqlite_url)

    assert code == 1
    assert one_line(err).startswith("finews search: The database has no full-text search index")
    assert "`make migrate`" in err


def test_an_unreachable_postgresql(capsys):
    code, _, err = finews(capsys, "report", "--url", "postgresql://postgres:pw@127.0.0.1:1/x")
    assert code == 1
    assert one_line(err).startswith(
        "finews report: cannot use the database at postgresql+psycopg://postgres:***@127.0.0.1:1/x"
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["search", "x", "--since", "2022-13-01"], "argument --since: not a date: '2022-13-01'"),
        (["export", "--format", "csv", "--until", "26/05/2022", "out"], "not a date"),
        (["report", "--until", "yesterday"], "argument --until: not a date: 'yesterday'"),
        (["search", "x", "--since", "2022-05-27", "--until", "2022-05-26"], "is after --until"),
        (["search", "x", "--limit", "0"], "argument --limit: not a whole number of at least 1"),
        (["report", "--days", "-1"], "argument --days"),
        (["export", "out"], "the following arguments are required: --format"),
    ],
)
def test_bad_arguments_are_one_line(capsys, argv, says):
    code, out, err = finews(capsys, *argv)
    assert (code, out) == (2, "")
    assert says in one_line(err)


def test_export_into_a_file(sqlite_url, tmp_path, capsys):
    (tmp_path / "out").write_text("not a directory")
    code, _, err = finews(capsys, "export", "--format", "csv", "--url", sqlite_url,
                          str(tmp_path / "out"))  # fmt: skip
    assert code == 1
    assert one_line(err) == (
        f"finews export: {tmp_path / 'out'} is a file, not a directory to write the export into\n"
    )


def test_an_empty_query(sqlite_url, capsys):
    code, _, err = finews(capsys, "search", "  ", "--url", sqlite_url)
    assert code == 1
    assert one_line(err).startswith("finews search: empty search query")


# -- browse -----------------------------------------------------------------------------------


def test_browse_is_delegated_to_analysis_browse(capsys, monkeypatch):
    seen: list[Any] = []
    browse = types.ModuleType("analysis.browse")
    browse.add_arguments = lambda parser: parser.add_argument("--port", type=int)  # type: ignore[attr-defined]
    browse.run = lambda args: seen.append(args.port) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "analysis.browse", browse)
    monkeypatch.setattr(analysis, "browse", browse, raising=False)

    assert finews(capsys, "browse", "--port", "8123")[0] == 0
    assert seen == [8123]


def test_browse_unavailable(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "analysis.browse", None)  # as if it were not there
    monkeypatch.delattr(analysis, "browse", raising=False)

    code, _, err = finews(capsys, "browse", "--port", "8123")
    _, usage, _ = finews(capsys, "--help")

    assert code == 1
    assert one_line(err) == (
        "finews browse: unavailable (analysis.browse is not part of this installation)\n"
    )
    assert "browse" in usage, "listed still"
    assert finews(capsys, "search", "--help")[0] == 0, "the other commands work without it"


# -- as a user runs it ------------------------------------------------------------------------


def test_an_error_from_python_m(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "analysis.cli", "report", "--url", f"sqlite:///{tmp_path}/no.db"],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("finews report: no database at ")


@pytest.mark.slow
def test_search_finds_what_a_crawl_just_stored(tmp_path: Path, sqlite_url: str):
    site = MirrorSite(tmp_path / "site", synthetic_files(12, seed=5))
    site.build()
    with MirrorServer(site.root) as server:
        crawl = run_cron(sqlite_url, server.url, tmp_path / "crawl.lock")
    assert crawl.returncode == 0, crawl.stderr[-3000:]
    stored = [next(iter(copies.values())) for copies in expected_from(site).articles.values()]
    newest = max(stored, key=lambda article: article.published_at)
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        waiting = conn.execute(text("SELECT count(*) FROM articles_fts_pending")).scalar_one()
    engine.dispose()
    assert waiting == len(stored), "not in the FTS5 index yet: fewer than 500 wait"

    result = subprocess.run(
        [str(FINEWS), "search", newest.title or "", "--format", "json"],
        cwd=ROOT, env={**environment(), "FINEWS_DATABASE_URL": sqlite_url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert newest.info_code in codes(hits)
    [hit] = [hit for hit in hits if hit["info_code"] == newest.info_code]
    assert hit["title"] == newest.title
    assert hit["published_at"] == newest.published_at.isoformat()
