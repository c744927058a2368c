"""``scrapy cron`` / ``make crawl``: the lock, and an exit status cron can act on.

The exit-status table is ``crawler.commands.cron.judge``; the crawls check that each
failure reaches it: an unreachable database, a site that only errs, too many errors.

With FINEWS_REDIS_URL the lock is on Redis, and ``-s FINEWS_WORKERS=N`` makes the run a
job of N workers judged as a whole (``judge_job``): two workers over a mirror store every
article once, and a worker killed mid-crawl fails the job, naming it; the next run then
ends with the rows of an undisturbed crawl. Redis tests skip if Redis is not reachable.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from scrapy.utils.project import get_project_settings
from sqlalchemy import Engine, select, text

from crawler.commands import cron
from crawler.commands.cron import (
    DATABASE,
    FAILED,
    LOCKED,
    NO_PAGES,
    OK,
    Command,
    Outcome,
    RedisCronLock,
    Worker,
    WorkerResult,
    database_problem,
    judge,
    judge_job,
    owner_path,
    redis_lock_key,
    wait_for,
    worker_command,
)
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from pipelines import ledger as run_ledger
from schema.models import CrawlRun
from tests.conftest import BEIJING, REDIS_URL, add_foreign_table, pg_database
from tests.crawling import (
    QUIET,
    ROOT,
    cron_command,
    environment,
    expected_from,
    post_paths,
    run_cron,
    scalars,
)

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


# -- the ledger: crawl_runs.job, rows of dead workers ----------------------------------------

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=BEIJING)


def run_row(engine: Engine, run_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(run_ledger.RUNS).where(run_ledger.RUNS.c.id == run_id)).one()
    return dict(row._mapping)


def test_a_run_records_its_job(engine: Engine):
    worker = run_ledger.open_run(
        engine, spider="finews", mode="crawl", arguments={}, now=T0, job="nightly"
    )
    alone = run_ledger.open_run(engine, spider="finews", mode="crawl", arguments={}, now=T0)
    assert run_row(engine, worker)["job"] == "nightly"
    assert run_row(engine, alone)["job"] is None


def test_a_dead_workers_row_is_closed_and_keeps_its_progress(engine: Engine):
    dead = run_ledger.open_run(engine, spider="finews", mode="crawl", arguments={}, now=T0, job="j")
    with engine.begin() as conn:
        run_ledger.record_counts(conn, dead, {"seen": 40, "stored": 38, "errors": 1})
    done = run_ledger.open_run(engine, spider="finews", mode="crawl", arguments={}, now=T0, job="j")
    counts = {"seen": 50, "stored": 50}
    run_ledger.close_run(engine, done, status="finished", reason="finished", counts=counts, now=T0)
    later = T0 + timedelta(minutes=5)

    assert run_ledger.close_abandoned(
        engine, dead, reason="worker died (killed by SIGKILL)", now=later
    )
    assert not run_ledger.close_abandoned(engine, done, reason="worker died", now=later)
    run_ledger.record_exit_status(engine, dead, -9)

    row = run_row(engine, dead)
    assert (row["status"], row["close_reason"], row["finished_at"], row["exit_status"]) == (
        "failed",
        "worker died (killed by SIGKILL)",
        later,
        -9,
    )
    assert (row["seen"], row["stored"], row["errors"]) == (40, 38, 1)
    untouched = run_row(engine, done)
    assert (untouched["status"], untouched["close_reason"]) == ("finished", "finished")


def documented_job_query() -> str:
    """The query summing each run of each job, as schema/README.md shows it (README.md's
    cron section shows the same)."""
    lines = (ROOT / "schema" / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("    WITH marked AS (")
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    query = "\n".join(block)
    assert f"```sql\n{query}\n```" in (ROOT / "README.md").read_text(encoding="utf-8")
    return query


def test_the_documented_query_sums_each_run_of_each_job(engine: Engine):
    def run(job, start, *, status="finished", reason="finished", end=None, **counts):
        run_id = run_ledger.open_run(
            engine, spider="finews", mode="crawl", arguments={}, now=T0 + start, job=job
        )
        if status != "running":
            run_ledger.close_run(engine, run_id, status=status, reason=reason, counts=counts,
                                 now=T0 + (end or start + timedelta(minutes=10)))  # fmt: skip
        else:
            with engine.begin() as conn:
                run_ledger.record_counts(conn, run_id, counts)

    minutes, seconds = timedelta(minutes=1), timedelta(seconds=1)
    run("nightly", 0 * seconds, seen=100, stored=90, rejected=2, errors=1)
    run("nightly", 5 * seconds, end=9 * minutes, seen=50, stored=50, skipped=4)
    run(None, 20 * seconds, seen=8, stored=8)  # a crawl that was no job's worker
    run("other", 60 * minutes, status="running", seen=7, stored=7)
    run("nightly", 360 * minutes, seen=30, stored=30)
    died = "worker died (killed by SIGKILL); closed by scrapy cron"
    run("nightly", 360 * minutes + 3 * seconds, status="failed", reason=died, seen=6, stored=5)

    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(text(documented_job_query()))]
    columns = ("job", "workers", "finished", "running", "trouble", "seen", "stored", "updated",
               "skipped", "rejected", "errors")  # fmt: skip
    assert [tuple(row[c] for c in columns) for row in rows] == [
        ("nightly", 2, 1, 0, f"failed: {died}", 36, 35, 0, 0, 0, 0),
        ("other", 1, 0, 1, None, 7, 7, 0, 0, 0, 0),
        ("nightly", 2, 2, 0, None, 150, 140, 0, 4, 2, 1),
    ]


# -- judging a job of several workers ---------------------------------------------------------

FINE = {"status": "finished", "close_reason": "finished"}
TOTALS = {"seen": 300, "stored": 290, "updated": 0, "unchanged": 0, "duplicates": 0,
          "rejected": 10, "skipped": 0, "errors": 0}  # fmt: skip
FINISHED_OWN = Outcome(OK, "finished: …")


def worker(returncode: int = 0, row: dict | None = FINE, stopped: str | None = None):
    return WorkerResult("worker 2 (pid 4242)", returncode, row, stopped)


@pytest.mark.parametrize(
    ("own", "reason", "stats", "workers", "totals", "code", "says"),
    [
        (FINISHED_OWN, "finished", FINISHED, [worker()], TOTALS, OK,
         "finished: 2 workers, 300 articles seen, 290 stored, 0 updated, 0 posts skipped, "
         "10 rejected, 0 errors"),
        (FINISHED_OWN, "finished", FINISHED, [worker(-9, {**FINE, "status": "failed"})], TOTALS,
         FAILED, "worker 2 (pid 4242) was killed by SIGKILL: 2 workers, 300 articles seen"),
        (FINISHED_OWN, "finished", FINISHED, [worker(1)], TOTALS, FAILED,
         "worker 2 (pid 4242) exited with status 1"),
        (FINISHED_OWN, "finished", FINISHED, [worker(row=None)], TOTALS, FAILED,
         "worker 2 (pid 4242) left no crawl_runs row"),
        (FINISHED_OWN, "finished", FINISHED, [worker(stopped="was still running 900 s after")],
         TOTALS, FAILED, "worker 2 (pid 4242) was still running 900 s after"),
        (FINISHED_OWN, "finished", FINISHED,
         [worker(row={"status": "stopped", "close_reason": "closespider_timeout"})], TOTALS,
         FAILED, "worker 2 (pid 4242) ended stopped (closespider_timeout)"),
        (FINISHED_OWN, "finished", FINISHED,
         [worker(row={"status": "failed", "close_reason": "finished"})], TOTALS, DATABASE,
         "worker 2 (pid 4242) could not write to the database"),
        (Outcome(DATABASE, "could not write to the database (0 errors)"), "finished", FINISHED,
         [worker()], TOTALS, DATABASE, "this worker: could not write to the database"),
        (Outcome(FAILED, "the crawl stopped early (shutdown) after …"), "shutdown", FINISHED,
         [worker()], TOTALS, FAILED, "this worker stopped early (shutdown)"),
        (Outcome(FAILED, "the crawl did not start: ImportError: x"), None, {}, [worker()],
         TOTALS, FAILED, "this worker: the crawl did not start: ImportError: x"),
        # Each worker within FINEWS_MAX_ERRORS=10, the job not.
        (FINISHED_OWN, "finished", {**FINISHED, "log_count/ERROR": 6}, [worker()],
         {**TOTALS, "errors": 12}, FAILED, "12 errors, more than FINEWS_MAX_ERRORS=10"),
        # This worker got no page (the others took them all): the job did.
        (Outcome(NO_PAGES, "the site gave no page (0 requests failed or refused)"), "finished",
         {}, [worker()], TOTALS, OK, "finished: 2 workers"),
        (Outcome(NO_PAGES, "…"), "finished", {"downloader/request_count": 3}, [worker()],
         dict.fromkeys(TOTALS, 0), NO_PAGES,
         "the site gave no page to any of the 2 workers (3 requests of this one failed"),
    ],
)  # fmt: skip
def test_job_exit_status_table(own, reason, stats, workers, totals, code, says):
    outcome = judge_job(own, reason, stats, workers, totals, max_errors=10)
    assert outcome.code == code, outcome.message
    assert says in outcome.message


def test_every_failing_worker_is_named():
    workers = [
        WorkerResult("worker 2 (pid 11)", -15, FINE),
        WorkerResult("worker 3 (pid 12)", 0, FINE),
        WorkerResult("worker 4 (pid 13)", 2, None),
    ]
    outcome = judge_job(FINISHED_OWN, "finished", FINISHED, workers, TOTALS, max_errors=10)
    assert outcome.code == FAILED
    assert outcome.message.startswith(
        "worker 2 (pid 11) was killed by SIGTERM; worker 4 (pid 13) exited with status 2: "
        "4 workers,"
    )


def sleeper(number: int, *, ignore_sigterm: bool = False) -> Worker:
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(120)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return Worker(number, process)


def test_workers_still_running_at_the_time_out_are_stopped(monkeypatch):
    monkeypatch.setattr(cron, "STOP_GRACE", 1.0)
    done = Worker(2, subprocess.Popen([sys.executable, "-c", "pass"]))
    polite, stubborn = sleeper(3), sleeper(4, ignore_sigterm=True)
    started = time.monotonic()
    try:
        wait_for([done, polite, stubborn], 1.0)
    finally:
        for worker in (polite, stubborn):
            assert worker.process.stdout is not None
            worker.process.stdout.close()
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
    assert time.monotonic() - started < 10
    assert (done.process.returncode, done.stopped) == (0, None)
    assert polite.process.returncode == -signal.SIGTERM
    assert stubborn.process.returncode == -signal.SIGKILL
    assert polite.stopped == (
        "was still running 1 s after this worker's crawl ended: stopped (SIGTERM)"
    )
    assert stubborn.stopped == (
        "was still running 1 s after this worker's crawl ended: killed (SIGKILL, SIGTERM was "
        "not enough)"
    )
    result = WorkerResult(stubborn.name, stubborn.process.returncode, FINE, stubborn.stopped)
    assert result.problem() == (FAILED, f"worker 4 (pid {stubborn.process.pid}) {stubborn.stopped}")


def parsed(*argv: str) -> argparse.Namespace:
    """The options ``scrapy cron ARGV`` runs with, parsed as scrapy.cmdline does."""
    command = Command()
    command.settings = get_project_settings().copy()
    parser = argparse.ArgumentParser()
    command.add_options(parser)
    opts = parser.parse_args(list(argv))
    command.process_options([], opts)
    return opts


def test_the_other_workers_get_this_commands_arguments_and_settings():
    opts = parsed(
        "-a", "base_url=http://127.0.0.1:8000/", "-a", "categories=emnews,cls",
        "-s", "FINEWS_WORKERS=3", "-s", "FINEWS_REDIS_URL=redis://r:6379/1",
        "--logfile", "data/crawl.log", "-L", "INFO",
    )  # fmt: skip
    command = worker_command(opts, "nightly")
    assert command[:5] == [sys.executable, "-m", "scrapy", "crawl", "finews"]
    pairs = list(zip(command[5::2], command[6::2], strict=True))
    assert pairs == [
        ("-a", "base_url=http://127.0.0.1:8000/"),
        ("-a", "categories=emnews,cls"),
        ("-s", "FINEWS_WORKERS=3"),
        ("-s", "FINEWS_REDIS_URL=redis://r:6379/1"),
        ("-s", "FINEWS_JOB=nightly"),
        ("--logfile", "data/crawl.log"),
        ("--loglevel", "INFO"),
    ]


# -- Redis: the lock, and jobs of several workers ----------------------------------------------


@pytest.fixture
def job(redis_client: Any) -> Iterator[str]:
    """A job name of its own, so runs of different tests never share keys; they go after."""
    name = f"test-cron-{uuid.uuid4().hex[:12]}"
    yield name
    keys = redis_client.keys(f"finews:{name}:*")
    if keys:
        redis_client.delete(*keys)


def job_keys(redis_client: Any, job: str) -> list[str]:
    return sorted(key.decode() for key in redis_client.keys(f"finews:{job}:*"))


def test_the_redis_lock_names_its_owner_and_is_renewed(redis_client, job):
    first = RedisCronLock(REDIS_URL, job, timeout=1.5)
    second = RedisCronLock(REDIS_URL, job, timeout=1.5)
    assert first.acquire() is None
    try:
        time.sleep(3)  # twice the time-out: held only because it is renewed
        refused = second.acquire()
        assert refused is not None and refused.code == LOCKED
        assert f"holds the lock finews:{job}:lock on {REDIS_URL} (pid {os.getpid()} on " in (
            refused.message
        )
    finally:
        first.release()
    assert job_keys(redis_client, job) == []
    assert second.acquire() is None, "free once released"
    redis_client.delete(redis_lock_key(job))  # as if it had expired and been taken
    second.release()  # a warning, not an exception


def test_redis_lock_hides_the_password_when_redis_is_unreachable(job):
    lock = RedisCronLock("redis://:s3cret@127.0.0.1:1/0", job)
    refused = lock.acquire()
    assert refused is not None and refused.code == DATABASE
    assert refused.message.startswith("cannot reach Redis at redis://:***@127.0.0.1:1/0")
    assert "s3cret" not in refused.message


def scaleout(job: str, workers: int = 1) -> tuple[str, ...]:
    return ("-s", f"FINEWS_REDIS_URL={REDIS_URL}", "-s", f"FINEWS_JOB={job}",
            "-s", f"FINEWS_WORKERS={workers}")  # fmt: skip


@pytest.mark.slow
def test_a_second_run_of_a_job_is_refused_by_the_redis_lock(
    tmp_path: Path, sqlite_url: str, site, redis_client, job
):
    owner = "pid 4242 on otherhost since 2026-12-02 06:00:00"
    held = redis_client.lock(redis_lock_key(job), timeout=120, thread_local=False)
    assert held.acquire(blocking=False, token=owner)
    try:
        with MirrorServer(site.root) as server:
            crawl = run_cron(sqlite_url, server.url, tmp_path / "lock", *scaleout(job))
            assert server.paths(None) == []
        assert redis_client.get(redis_lock_key(job)).decode() == owner, "still the holder's"
    finally:
        held.release()
    assert crawl.returncode == LOCKED, crawl.stderr[-3000:]
    assert crawl.verdict.startswith(
        f"finews cron: another finews crawl holds the lock finews:{job}:lock on {REDIS_URL} "
        f"({owner}); not starting"
    )
    assert ledger_rows(sqlite_url) == []


@pytest.mark.slow
def test_the_redis_lock_is_released_when_the_run_fails(tmp_path: Path, redis_client, job):
    crawl = run_cron(
        "postgresql://postgres@127.0.0.1:1/finews", "http://127.0.0.1:9/", tmp_path / "lock",
        *scaleout(job),
    )  # fmt: skip
    assert crawl.returncode == DATABASE, crawl.stderr[-3000:]
    assert job_keys(redis_client, job) == []


@pytest.mark.slow
def test_workers_without_redis_are_a_usage_error(tmp_path: Path, sqlite_url: str, monkeypatch):
    monkeypatch.delenv("FINEWS_REDIS_URL", raising=False)
    crawl = run_cron(sqlite_url, "http://127.0.0.1:9/", tmp_path / "lock",
                     "-s", "FINEWS_WORKERS=2")  # fmt: skip
    assert crawl.returncode == 2
    assert "FINEWS_WORKERS=2 needs FINEWS_REDIS_URL" in crawl.stderr
    assert not (tmp_path / "lock").exists(), "refused before the lock"


def is_worker(process: psutil.Process) -> bool:
    try:
        return "crawl" in process.cmdline()
    except psutil.Error:  # gone meanwhile
        return False


def fetching_from(process: psutil.Process, server: MirrorServer) -> bool:
    """True if ``process`` has a connection open to the mirror."""
    port = server.server_address[1]
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.raddr and c.raddr[1] == port and c.status == "ESTABLISHED" for c in connections)


def stored_codes(db_url: str) -> list[str]:
    return sorted(code for (code,) in scalars(db_url, text("SELECT info_code FROM articles")))


def ledger_rows(db_url: str) -> list[tuple]:
    return [tuple(r) for r in scalars(db_url, select(CrawlRun.id))]


def job_runs(db_url: str, job: str) -> list[Any]:
    return scalars(db_url, select(CrawlRun).where(CrawlRun.job == job).order_by(CrawlRun.id))


# What two crawls of one mirror must agree on: everything but times and run ids.
COMPARED = {
    "articles": "info_code, title, published_at, category, outlet, source, digest, paragraphs, "
    "body_html, images, source_url, url, content_hash, revision",
    "article_categories": "info_code, category, url",
    "categories": "slug, outlet",
    "stock_mentions": "info_code, market, code, symbol, name, kind, is_primary, mentions",
    "rejects": "url, info_code, reason, detail, excerpt",
}


def data_rows(db_url: str) -> dict[str, list[str]]:
    return {
        table: sorted(
            repr(tuple(row)) for row in scalars(db_url, text(f"SELECT {cols} FROM {table}"))
        )
        for table, cols in COMPARED.items()
    }


@pytest.fixture
def big_site(tmp_path: Path) -> MirrorSite:
    """A few hundred posts, a few of them broken (rejects), no article under two categories
    (which sighting is stored first would depend on which worker got there first)."""
    site = MirrorSite(tmp_path / "site", synthetic_files(300, seed=31, broken=0.02))
    site.build()
    return site


JOB_SETTINGS = ("-s", "FINEWS_IDLE_CLOSE=2")  # the tests need not wait 10 s at the end


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_store_every_article_once(
    tmp_path: Path, postgres_url: str, big_site: MirrorSite, redis_client, job
):
    expected = expected_from(big_site)
    with MirrorServer(big_site.root) as server:
        server.delay = 0.03  # long enough for the second worker to take part
        crawl = run_cron(postgres_url, server.url, tmp_path / "lock", *scaleout(job, 2),
                         *JOB_SETTINGS)  # fmt: skip
        fetched = Counter(post_paths(server.paths(None)))
    assert crawl.returncode == OK, crawl.stderr[-5000:]
    assert set(fetched) == {post.path for post in big_site.manifest.posts}
    assert set(fetched.values()) == {1}, "each post fetched by one worker only"

    assert stored_codes(postgres_url) == sorted(expected.articles)
    runs = job_runs(postgres_url, job)
    assert len(runs) == 2, "one row per worker"
    assert [(r.status, r.exit_status) for r in runs] == [("finished", OK)] * 2
    assert len({r.pid for r in runs}) == 2
    assert all(r.stored > 0 for r in runs), "both workers stored articles"
    assert sum(r.stored for r in runs) == len(expected.articles)
    assert sum(r.rejected for r in runs) == len(expected.rejected_paths) > 0
    assert crawl.verdict.startswith(
        f"finews cron: finished: 2 workers, {sum(r.seen for r in runs)} articles seen, "
        f"{len(expected.articles)} stored, 0 updated, 0 posts skipped, "
        f"{len(expected.rejected_paths)} rejected"
    )
    assert job_keys(redis_client, job) == [], "the lock released, the job's keys deleted"


@pytest.mark.slow
@pytest.mark.postgres
def test_a_killed_worker_fails_the_job_and_the_next_run_completes_it(
    tmp_path: Path, postgres_url: str, big_site: MirrorSite, redis_client, job, pg_admin,
    pg_template,
):  # fmt: skip
    lock = tmp_path / "lock"
    with MirrorServer(big_site.root) as server:
        server.delay = 0.05
        cron = subprocess.Popen(
            cron_command(postgres_url, server.url, lock, *scaleout(job, 2), *JOB_SETTINGS),
            cwd=ROOT, env=environment(), text=True, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            victim = None
            deadline = time.monotonic() + 60
            while victim is None and time.monotonic() < deadline and cron.poll() is None:
                time.sleep(0.05)
                children = [p for p in psutil.Process(cron.pid).children() if is_worker(p)]
                running = {r.pid for r in job_runs(postgres_url, job) if r.status == "running"}
                posts = len(post_paths(server.paths(None)))
                # Mid-crawl, with requests of its own in flight: what it took is lost.
                if (children and children[0].pid in running and posts >= 40
                        and fetching_from(children[0], server)):  # fmt: skip
                    victim = children[0]
            assert victim is not None, "the other worker never got going"
            assert posts < len(big_site.manifest.posts) - 40, "killed part-way"
            victim.send_signal(signal.SIGKILL)
            _, err = cron.communicate(timeout=300)
        finally:
            if cron.poll() is None:
                cron.kill()
                cron.wait()
        verdict = [line for line in err.splitlines() if line.startswith("finews cron:")][-1]
        assert cron.returncode == FAILED, err[-5000:]
        assert verdict.startswith(
            f"finews cron: worker 2 (pid {victim.pid}) was killed by SIGKILL: 2 workers"
        ), verdict
        killed = [r for r in job_runs(postgres_url, job) if r.pid == victim.pid]
        assert [(r.status, r.exit_status) for r in killed] == [("failed", -signal.SIGKILL)]
        assert killed[0].close_reason.startswith("worker died (killed by SIGKILL)")
        # Reaped at once, the dead worker does not count as live when the last one leaves.
        assert job_keys(redis_client, job) == [], "the job's keys outlived the run"
        expected = expected_from(big_site)
        assert len(stored_codes(postgres_url)) < len(expected.articles), "the kill lost posts"

        again = run_cron(postgres_url, server.url, lock, *scaleout(job, 2), *JOB_SETTINGS)
        assert again.returncode == OK, again.stderr[-5000:]
        restarted = job_runs(postgres_url, job)[-2:]
        assert [r.status for r in restarted] == ["finished"] * 2
        assert sum(r.stored for r in restarted) > 0, "the next run stored what the kill lost"
        assert stored_codes(postgres_url) == sorted(expected.articles)

        with pg_database(pg_admin, template=pg_template) as undisturbed:
            alone = run_cron(undisturbed, server.url, tmp_path / "lock2")
            assert alone.returncode == OK, alone.stderr[-5000:]
            assert data_rows(postgres_url) == data_rows(undisturbed)


def test_every_job_name_cron_accepts_fits_the_job_column():
    assert CrawlRun.__table__.c.job.type.length == cron.JOB_LENGTH
