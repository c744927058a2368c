"""First use of a blank database by several processes at once: the schema lock.

Each racer is a process that has done its imports and then waits for a database URL on stdin;
every racer of a round gets the same URL at the same moment, so they hit the blank database
within milliseconds of each other (the imports alone differ by more than a migration takes).
Without ``schema.migrate.schema_lock`` these rounds fail: ``table categories already exists``
on SQLite, a duplicate ``pg_type`` key or relation on PostgreSQL, or a store that finds a
half-created schema.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import select
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from alembic import command
from scrapy import Spider
from scrapy.utils.test import get_crawler
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from crawler.commands.cron import DATABASE, OK, Outcome, RunWatch, database_problem, judge_job
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from pipelines.store import Store
from schema.db import make_engine
from schema.migrate import alembic_config, head_revisions, schema_lock
from schema.search import is_index_table
from tests.conftest import BACKENDS, pg_database
from tests.crawling import ROOT, cron_command, environment
from tests.test_storage_migrations import TABLES as SCHEMA_TABLES

TABLES = {"alembic_version", *SCHEMA_TABLES}
RACE_TIMEOUT = 120  # seconds for one round; a round takes well under one

RACER = """
import contextlib
import os
import runpy
import sys
import traceback

role = sys.argv[1]
if role == "store":
    from pipelines.store import Store
else:  # what `python -m schema.migrate` imports, all but the module itself
    import alembic.command, alembic.config, alembic.script, schema.db, schema.models
print("ready", flush=True)
for line in sys.stdin:  # one database URL a round
    url = line.strip()
    try:
        if role == "store":
            store = Store(url)
            run = store.open("first-use")
            result = f"ok run {run} {store.finish()}"
        else:  # `make migrate`: python -m schema.migrate with FINEWS_DATABASE_URL
            os.environ["FINEWS_DATABASE_URL"] = url
            sys.argv = ["schema.migrate"]
            try:  # its one line of output to the log: stdout answers the test
                with contextlib.redirect_stdout(sys.stderr):
                    runpy.run_module("schema.migrate", run_name="__main__", alter_sys=True)
                result = "exit None"
            except SystemExit as end:
                result = f"exit {end.code}"
    except Exception as exc:
        traceback.print_exc()
        result = f"error {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    print(result, flush=True)
"""


class Racers:
    """Processes in the roles given ("store": Store(url).open, "migrate": the CLI), each
    running its role on every URL it is given, all at once."""

    def __init__(self, roles: list[str], directory: Path) -> None:
        script = directory / "racer.py"
        script.write_text(RACER, encoding="utf-8")
        env = environment()
        self.logs = [directory / f"racer-{n}-{role}.log" for n, role in enumerate(roles)]
        self.processes = []
        for role, log in zip(roles, self.logs, strict=True):
            with log.open("w") as stderr:
                self.processes.append(subprocess.Popen(
                    [sys.executable, str(script), role], cwd=ROOT, env=env, text=True,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                ))  # fmt: skip
        assert self._answers() == ["ready"] * len(roles), self.log_tails()

    def race(self, url: str) -> list[str]:
        """Every racer's result on ``url``, started together."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(url + "\n")
            process.stdin.flush()
        return self._answers()

    def _answers(self) -> list[str]:
        deadline, answers = time.monotonic() + RACE_TIMEOUT, []
        for process in self.processes:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
            answers.append(process.stdout.readline().strip() if ready else "no answer")
        return answers

    def log_tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


@pytest.fixture
def racers(tmp_path: Path) -> Iterator[Callable[[list[str]], Racers]]:
    started: list[Racers] = []

    def start(roles: list[str]) -> Racers:
        started.append(Racers(roles, tmp_path))
        return started[-1]

    yield start
    for group in started:
        group.close()


@pytest.fixture(params=BACKENDS)
def blank_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """``blank_database()``: the URL of a new database without any table, on each backend."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            numbers = itertools.count()

            def new() -> str:  # the directory too does not exist yet
                return f"sqlite:///{tmp_path / f'db{next(numbers)}' / 'finews.db'}"
        else:
            admin = request.getfixturevalue("pg_admin")

            def new() -> str:
                return stack.enter_context(pg_database(admin))

        yield new


def schema_state(url: str) -> tuple[set[str], list[str], int]:
    """The tables, alembic_version's rows and the number of crawl_runs rows."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            versions = list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
            runs = conn.execute(text("SELECT count(*) FROM crawl_runs")).scalar_one()
        tables = {t for t in inspect(engine).get_table_names() if not is_index_table(t)}
        return tables, versions, runs
    finally:
        engine.dispose()


def test_make_migrate_twice_at_once_on_a_blank_database(blank_database, racers):
    group = racers(["migrate", "migrate"])
    for _ in range(5):
        url = blank_database()
        results = group.race(url)
        assert results == ["exit 0", "exit 0"], f"{results}\n{group.log_tails()}"
        assert schema_state(url) == (TABLES, sorted(head_revisions()), 0)


def test_two_stores_and_make_migrate_at_once_on_a_blank_database(blank_database, racers):
    group = racers(["store", "store", "migrate"])
    for _ in range(10):
        url = blank_database()
        first, second, migrate = group.race(url)
        assert [first[:6], second[:6], migrate] == ["ok run", "ok run", "exit 0"], (
            f"{first}; {second}; {migrate}\n{group.log_tails()}"
        )
        assert first.endswith(" finished") and second.endswith(" finished")
        assert first != second, "two runs, two ledger rows"
        assert schema_state(url) == (TABLES, sorted(head_revisions()), 2)


@contextmanager
def migration_under_way(url: str) -> Iterator[None]:
    """Inside: another process is migrating ``url`` to head, and is at 0003 for a moment."""
    halfway = threading.Event()

    def migrate() -> None:
        config = alembic_config(url)
        with schema_lock(url):
            command.upgrade(config, "0003")
            halfway.set()
            time.sleep(0.5)
            command.upgrade(config, "head")

    thread = threading.Thread(target=migrate)
    thread.start()
    try:
        assert halfway.wait(60), "the migration did not start"
        yield
    finally:
        thread.join()


def test_a_run_starting_during_a_migration_waits_for_it(blank_database):
    url = blank_database()
    with migration_under_way(url):  # scrapy cron's check: not "is at ['0003']"
        assert database_problem(url, 5, auto_migrate=False) is None
    url = blank_database()
    with migration_under_way(url):
        store = Store(url)
        store.open("first-use")
        assert store.finish() == "finished"


# -- scrapy cron --------------------------------------------------------------------------------


def crawler_failed_to_open_its_store() -> RunWatch:
    """A RunWatch as Scrapy leaves it when the store's open_spider raised: spider_closed
    ("shutdown") came first, then the crawl task ended with the store's error."""
    watch = RunWatch(get_crawler(Spider))
    watch._closed(None, "shutdown")
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_future()
        original = sqlite3.OperationalError("table categories already exists")
        try:  # raised, so that it has a traceback
            raise OperationalError("CREATE TABLE categories (…)", {}, original)
        except OperationalError as error:
            task.set_exception(error)
        watch.started(task)
    finally:
        loop.close()
    return watch


def test_a_crawl_that_could_not_open_its_store_says_why(caplog):
    with caplog.at_level(logging.ERROR, logger="crawler.commands.cron"):
        watch = crawler_failed_to_open_its_store()

    problem = "the database is not usable: OperationalError: table categories already exists"
    assert watch.final() == Outcome(DATABASE, problem)
    assert "The crawl could not start: OperationalError: table categories already exists" in (
        caplog.text
    )
    assert "Traceback" in caplog.text
    # As one worker of a job: named as this worker's problem, not as a "shutdown".
    totals = dict.fromkeys(("seen", "stored", "updated", "skipped", "rejected", "errors"), 0)
    job = judge_job(watch.final(), watch.reason, watch.stats, [], totals, max_errors=10)
    assert job.code == DATABASE and job.message.startswith(f"this worker: {problem}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_cron_runs_and_make_migrate_at_once_on_a_blank_database(
    backend, request, tmp_path: Path
):
    site = MirrorSite(tmp_path / "site", synthetic_files(6, seed=5))
    site.build()
    env = environment()
    with ExitStack() as stack:
        server = stack.enter_context(MirrorServer(site.root))
        for round_ in range(2):
            if backend == "sqlite":
                url = f"sqlite:///{tmp_path / f'db{round_}' / 'finews.db'}"
            else:
                url = stack.enter_context(pg_database(request.getfixturevalue("pg_admin")))
            logs = [tmp_path / f"round{round_}-{name}.log" for name in ("a", "b", "migrate")]
            runs = []
            for n, log in enumerate(logs):
                if n < 2:
                    argv = cron_command(url, server.url, tmp_path / f"crawl-{round_}-{n}.lock")
                else:  # make migrate, once a crawl has its extensions (~1 s before its store)
                    argv = [sys.executable, "-m", "schema.migrate", "--url", url]
                    deadline = time.monotonic() + 60
                    while "Enabled extensions" not in logs[0].read_text() + logs[1].read_text():
                        assert time.monotonic() < deadline, "the crawls did not start"
                        time.sleep(0.01)
                with log.open("w") as output:
                    runs.append(subprocess.Popen(argv, cwd=ROOT, env=env,
                                                 stdout=output, stderr=output))  # fmt: skip
            codes = [run.wait(timeout=300) for run in runs]
            text_ = [log.read_text() for log in logs]
            assert codes == [OK, OK, 0], "\n".join(t[-3000:] for t in text_)
            for log in text_[:2]:
                assert "finews cron: finished" in log
                assert "AssertionError" not in log
            assert schema_state(url) == (TABLES, sorted(head_revisions()), 2)
