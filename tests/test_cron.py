"""``scrapy cron`` / ``make crawl``: the lock, and an exit status cron can act on.

The exit-status table is ``crawler.commands.cron.judge``; the crawls check that each
failure reaches it: an unreachable database, a site that only errs, too many errors.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from crawler.commands.cron import (
    DATABASE,
    FAILED,
    LOCKED,
    NO_PAGES,
    OK,
    database_problem,
    judge,
    owner_path,
)
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from schema.models import CrawlRun
from tests.conftest import add_foreign_table
from tests.crawling import QUIET, ROOT, environment, post_paths, run_cron, scalars

FINISHED = {
    "finews/pages": 12,
    "finews/stored": 10,
    "downloader/request_count": 13,
    "downloader/response_status_count/200": 13,
}


@pytest.mark.parametrize(
    ("reason", "stats", "storage_failed", "code", "says"),
    [
        ("finished", FINISHED, False, OK, "finished: 12 pages, 10 articles stored"),
        ("finished", {**FINISHED, "log_count/ERROR": 10}, False, OK, "10 errors"),
        ("finished", {**FINISHED, "log_count/ERROR": 8, "finews/errors": 3}, False, FAILED,
         "11 errors, more than FINEWS_MAX_ERRORS=10"),
        ("finished", {"downloader/request_count": 8}, False, NO_PAGES,
         "the site gave no page (8 requests failed or refused)"),
        ("shutdown", FINISHED, False, FAILED, "the crawl stopped early (shutdown)"),
        ("closespider_timeout", FINISHED, False, FAILED, "stopped early (closespider_timeout)"),
        ("finished", FINISHED, True, DATABASE, "could not write to the database"),
        ("shutdown", {}, True, DATABASE, "could not write to the database"),
    ],
)  # fmt: skip
def test_exit_status_table(reason, stats, storage_failed, code, says):
    outcome = judge(reason, stats, storage_failed=storage_failed, max_errors=10)
    assert outcome.code == code
    assert says in outcome.message


def test_database_problem_names_the_database_and_hides_the_password(tmp_path):
    assert database_problem(f"sqlite:///{tmp_path / 'new.db'}", 5, auto_migrate=False) is None
    problem = database_problem(
        "postgresql://postgres:hunter2@127.0.0.1:1/finews", 2, auto_migrate=False
    )
    assert problem is not None
    assert problem.startswith("cannot reach the database at postgresql+psycopg://postgres:***@")
    assert "hunter2" not in problem


# -- whole runs ------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> MirrorSite:
    site = MirrorSite(tmp_path / "site", synthetic_files(30, seed=21))
    site.build()
    return site


def ledger(db_url: str) -> list[tuple]:
    rows = scalars(db_url, select(CrawlRun.status, CrawlRun.close_reason, CrawlRun.exit_status))
    return [tuple(row) for row in rows]


@pytest.mark.slow
def test_two_make_crawl_runs_started_together(tmp_path: Path, sqlite_url: str, site):
    lock = tmp_path / "crawl.lock"
    venv = Path(sys.executable).parent.parent
    with MirrorServer(site.root) as server:
        server.delay = 0.05  # the run holding the lock takes a few seconds
        args = (
            f"-a base_url={server.url} -s FINEWS_LOCK_FILE={lock} "
            f"-s FINEWS_DATABASE_URL={sqlite_url} {' '.join(QUIET)}"
        )
        # -o: never reinstall the venv from a test, whatever pyproject.toml's mtime says.
        command = ["make", "-s", "-o", str(venv / ".installed"), "crawl", f"VENV={venv}",
                   f"ARGS={args}"]  # fmt: skip
        started = time.monotonic()
        runs = [
            subprocess.Popen(command, cwd=ROOT, env=environment(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]  # fmt: skip
        finished: list[tuple[int, float, str]] = []
        while runs:
            for run in list(runs):
                if run.poll() is not None:
                    _, err = run.communicate()
                    finished.append((run.returncode, time.monotonic() - started, err))
                    runs.remove(run)
            time.sleep(0.05)
    (code_a, seconds_a, err_a), (code_b, seconds_b, err_b) = finished
    # make turns any failure into its own status 2; the message is scrapy cron's.
    assert (code_a, code_b) == (2, 0), err_a[-2000:] + err_b[-2000:]
    # Named always; "(pid …)" too once the holder has written its owner file, which the
    # loser can beat by a few milliseconds: that note is checked without the race below.
    assert f"another finews crawl holds the lock {lock}" in err_a
    assert "(exit 75)" in err_a
    assert seconds_a < 10 and seconds_a < seconds_b
    assert "finews cron: finished" in err_b
    assert ledger(sqlite_url) == [("finished", "finished", OK)]  # the second run left no row


@pytest.mark.slow
def test_the_lock_status_without_make(tmp_path: Path, sqlite_url: str, site):
    from filelock import FileLock

    lock = tmp_path / "crawl.lock"
    owner = "pid 4242 on cronhost since 2026-11-28 06:00:00"
    with FileLock(str(lock)), MirrorServer(site.root) as server:
        owner_path(lock).write_text(owner + "\n", encoding="utf-8")  # as a holding run does
        crawl = run_cron(sqlite_url, server.url, lock)
        assert server.paths(None) == []
    assert crawl.returncode == LOCKED
    assert crawl.verdict.startswith(
        f"finews cron: another finews crawl holds the lock {lock} ({owner}); not starting"
    )


@pytest.mark.slow
def test_a_database_that_refuses_connections(tmp_path: Path, site):
    with MirrorServer(site.root) as server:
        crawl = run_cron("postgresql://postgres@127.0.0.1:1/finews", server.url, tmp_path / "l")
        assert server.paths(None) == [], "nothing is fetched without a database"
    assert crawl.returncode == DATABASE
    assert crawl.verdict.startswith(
        "finews cron: cannot reach the database at postgresql+psycopg://postgres@127.0.0.1:1/"
    )
    assert "Traceback" not in crawl.stderr


@pytest.mark.slow
def test_a_database_that_does_not_answer(tmp_path: Path, site):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections and never says a word
    port = silent.getsockname()[1]
    try:
        with MirrorServer(site.root) as server:
            crawl = run_cron(
                f"postgresql://postgres@127.0.0.1:{port}/finews", server.url, tmp_path / "lock",
                "-s", "FINEWS_DB_CONNECT_TIMEOUT=2",
            )  # fmt: skip
    finally:
        silent.close()
    assert crawl.returncode == DATABASE
    assert "cannot reach the database" in crawl.verdict and "timeout" in crawl.verdict
    assert crawl.seconds < 15


@pytest.mark.slow
def test_a_database_of_another_application(tmp_path: Path, empty_sqlite_url: str, site):
    add_foreign_table(empty_sqlite_url)
    with MirrorServer(site.root) as server:
        crawl = run_cron(empty_sqlite_url, server.url, tmp_path / "lock")
    assert crawl.returncode == DATABASE
    assert "run `make migrate`" in crawl.verdict


@pytest.mark.slow
def test_a_site_that_only_errs(tmp_path: Path, sqlite_url: str, site):
    with MirrorServer(site.root) as server:
        server.fail_with = 500
        crawl = run_cron(sqlite_url, server.url, tmp_path / "lock")
    assert crawl.returncode == NO_PAGES, crawl.stderr[-3000:]
    assert crawl.verdict.startswith("finews cron: the site gave no page")
    assert ledger(sqlite_url) == [("finished", "finished", NO_PAGES)]


@pytest.mark.slow
def test_errors_over_the_threshold_fail_the_run(tmp_path: Path, sqlite_url: str, site):
    broken = [p.path for p in site.manifest.posts[:3]]
    with MirrorServer(site.root) as server:
        for path in broken:
            server.script[path] = [500] * 4  # the first try and three retries
        crawl = run_cron(sqlite_url, server.url, tmp_path / "lock", "-s", "FINEWS_MAX_ERRORS=2")
    assert crawl.returncode == FAILED, crawl.stderr[-3000:]
    assert "errors, more than FINEWS_MAX_ERRORS=2" in crawl.verdict
    assert crawl.stats["finews/failed/post"] == 3
    assert crawl.stats["log_count/ERROR"] == 3, "one error per lost page"
    assert ledger(sqlite_url) == [("finished", "finished", FAILED)]


@pytest.mark.slow
def test_overload_answers_slow_the_crawl_and_it_still_succeeds(
    tmp_path: Path, sqlite_url: str, site
):
    post = site.manifest.posts[0].path
    with MirrorServer(site.root) as server:
        server.script["/"] = [429]
        server.script[post] = [503]
        # The mirror asks for Retry-After: 1; the cap keeps the test short.
        crawl = run_cron(sqlite_url, server.url, tmp_path / "lock",
                         "-s", "FINEWS_BACKOFF_MAX_DELAY=0.5")  # fmt: skip
        assert post_paths(server.paths()).count(post) == 1
    assert crawl.returncode == OK, crawl.stderr[-3000:]
    assert crawl.stats["finews/backoff"] == 2
    assert crawl.stats["finews/stored"] == len(site.manifest.posts)


@pytest.mark.slow
def test_pages_robots_txt_forbids_are_not_fetched_and_not_errors(
    tmp_path: Path, sqlite_url: str, site
):
    (site.root / "robots.txt").write_text("User-agent: *\nDisallow: /emnews/\n")
    emnews = [p.path for p in site.manifest.posts if p.category == "emnews"]
    assert emnews
    with MirrorServer(site.root) as server:
        crawl = run_cron(sqlite_url, server.url, tmp_path / "lock")
        fetched = post_paths(server.paths(None))
    assert crawl.returncode == OK, crawl.stderr[-3000:]
    assert not set(emnews) & set(fetched)
    assert crawl.stats["finews/ignored/post"] == len(emnews)
    assert "log_count/ERROR" not in crawl.stats
    assert crawl.stats["finews/stored"] == len(site.manifest.posts) - len(emnews)
