"""``scrapy cron [-a name=value …]``: one scheduled run of the ``finews`` spider, for cron and
systemd timers (README, "Scheduled crawl"). It

1. takes the lock without waiting, so two runs of a job never overlap: FINEWS_LOCK_FILE, or with
   FINEWS_REDIS_URL the key ``finews:<FINEWS_JOB>:lock`` on Redis (one run on any machine),
   which expires FINEWS_LOCK_TIMEOUT s (600) after its last renewal (every third of that);
2. checks that the database answers (FINEWS_DB_CONNECT_TIMEOUT) and is at the newest schema;
3. with FINEWS_WORKERS=N ≥ 2 (and FINEWS_REDIS_URL), starts N−1 further workers of the job:
   ``python -m scrapy crawl finews`` with the same ``-a``, ``-s`` and FINEWS_JOB;
4. runs ``finews`` in this process (incremental by default), as one worker of the job;
5. gives the others FINEWS_WORKER_WAIT s (900) once its crawl ended, then SIGTERM, SIGKILL;
   closes as ``failed`` the rows dead workers left ``running``; records each worker's exit;
6. judges the run, or the job as a whole (every worker's exit and row, counts and errors summed),
   prints one line, records the exit status in its own ``crawl_runs`` row and exits with it:

    0   finished: pages fetched, errors within FINEWS_MAX_ERRORS (over the whole job)
    1   more errors, stopped early (interrupted, CLOSESPIDER_*) or did not start; or a worker
        exited non-zero, was killed or stopped, or left no row
    2   wrong arguments (Scrapy's usage error)
    3   the database (or Redis): unreachable (the line is then the only record), not at the
        newest schema, or writes failed
    4   the site gave no page at all (every request failed or was refused)
    75  another run holds the lock
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from scrapy import signals
from scrapy.commands import BaseRunSpiderCommand
from scrapy.crawler import Crawler
from scrapy.exceptions import UsageError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from crawler import scaleout
from crawler.pages.site import LIVE_SITE, site_root
from pipelines import ledger
from schema.db import database_url, make_engine, redact
from schema.migrate import SchemaOutdated, is_blank, require_current, schema_lock
from schema.types import BEIJING

logger = logging.getLogger(__name__)

OK, FAILED, USAGE, DATABASE, NO_PAGES, LOCKED = 0, 1, 2, 3, 4, 75
SPIDER = "finews"
DEFAULT_LOCK_TIMEOUT = 600.0  # seconds; the Redis lock is renewed every third of it
DEFAULT_WORKER_WAIT = 900.0  # seconds the other workers get once this one's crawl ended
JOB_LENGTH = 100  # crawl_runs.job holds this many characters
STOP_GRACE = 30.0  # seconds between SIGTERM and SIGKILL for a worker still running then
# Summed over the job's crawl_runs rows, one per worker.
TOTALED = (*ledger.COUNTED, "errors")
PROGRESS = ("pages", "stored", "updated", "skipped", "rejected")  # finews/… stats a run reports


@dataclass(frozen=True)
class Outcome:
    code: int  # the process exit status
    message: str  # how the run went, in one line for a person

    @staticmethod
    def by_errors(errors: int, max_errors: int, progress: str) -> Outcome:
        """The outcome of a crawl that ran to its end."""
        if errors <= max_errors:
            return Outcome(OK, f"finished: {progress}, {errors} errors")
        too_many = f"{errors} errors, more than FINEWS_MAX_ERRORS={max_errors}"
        return Outcome(FAILED, f"{too_many}: {progress}")


def _count(stats: Mapping[str, Any], key: str) -> int:
    return int(stats.get(key, 0) or 0)


def _refused(stats: Mapping[str, Any]) -> int:
    ok = _count(stats, "downloader/response_status_count/200")
    return _count(stats, "downloader/request_count") - ok


def judge(reason: str | None, stats: Mapping[str, Any], *, storage_failed: bool,
          max_errors: int) -> Outcome:  # fmt: skip
    """The exit status of a finished crawl, from its close reason and stats."""
    c = {key: _count(stats, f"finews/{key}") for key in PROGRESS}
    errors = sum(_count(stats, key) for key in ledger.ERROR_KEYS)
    progress = (f"{c['pages']} pages, {c['stored']} articles stored, {c['updated']} updated, "
                f"{c['skipped']} posts skipped, {c['rejected']} rejected")  # fmt: skip
    if storage_failed:
        return Outcome(DATABASE, f"could not write to the database ({errors} errors)")
    if reason != "finished":
        return Outcome(FAILED, f"the crawl stopped early ({reason}) after {progress}")
    if c["pages"] == 0:
        refused = _refused(stats)
        return Outcome(NO_PAGES, f"the site gave no page ({refused} requests failed or refused)")
    return Outcome.by_errors(errors, max_errors, progress)


@dataclass(frozen=True)
class WorkerResult:
    name: str  # of a further worker (a ``scrapy crawl finews`` subprocess): "worker 2 (pid 42)"
    returncode: int  # negative: killed by that signal
    row: Mapping[str, Any] | None  # its crawl_runs row, None if it left none
    stopped: str | None = None  # why cron stopped it, if it did

    def problem(self) -> tuple[int, str] | None:
        """(exit status, what went wrong) if this worker fails the job, else None."""
        if self.stopped:
            return FAILED, f"{self.name} {self.stopped}"
        if self.returncode < 0:
            return FAILED, f"{self.name} was killed by {signal_name(-self.returncode)}"
        if self.returncode > 0:
            return FAILED, f"{self.name} exited with status {self.returncode}"
        if self.row is None:
            return FAILED, f"{self.name} left no crawl_runs row"
        status, reason = self.row["status"], self.row["close_reason"]
        if status == "finished":
            return None
        if status == "failed" and reason == "finished":  # ledger.status_for: storage failed
            return DATABASE, f"{self.name} could not write to the database"
        return FAILED, f"{self.name} ended {status} ({reason})"


def signal_name(number: int) -> str:
    return {sig.value: sig.name for sig in signal.Signals}.get(number, f"signal {number}")


def judge_job(own: Outcome, reason: str | None, stats: Mapping[str, Any],
              workers: Sequence[WorkerResult], totals: Mapping[str, int], *,
              max_errors: int) -> Outcome:  # fmt: skip
    """The exit status of a job: this process's crawl (``own``, judged alone; ``reason`` None if
    it never closed), the other workers, and ``totals`` summed over all the job's rows."""
    n = 1 + len(workers)
    progress = (f"{n} workers, {totals['seen']} articles seen, {totals['stored']} stored, "
                f"{totals['updated']} updated, {totals['skipped']} posts skipped, "
                f"{totals['rejected']} rejected")  # fmt: skip
    problems = []
    if own.code == DATABASE or reason is None:  # could not write, or did not start
        problems.append((own.code, f"this worker: {own.message}"))
    elif reason != "finished":
        problems.append((FAILED, f"this worker stopped early ({reason})"))
    problems += [problem for worker in workers if (problem := worker.problem())]
    if problems:
        code = DATABASE if any(code == DATABASE for code, _ in problems) else FAILED
        return Outcome(code, "; ".join(text for _, text in problems) + f": {progress}")
    # The others' rows do not count pages; posts read or skipped mean they had some.
    if _count(stats, "finews/pages") + totals["seen"] + totals["skipped"] == 0:
        refused = f"{_refused(stats)} requests of this one failed or were refused"
        return Outcome(NO_PAGES, f"the site gave no page to any of the {n} workers ({refused})")
    return Outcome.by_errors(totals["errors"], max_errors, progress)


def database_problem(url: str | None, timeout: float, *, auto_migrate: bool) -> str | None:
    """Why the run cannot use the database, or None when it answers and is usable."""
    parsed = database_url(url)
    postgres = parsed.get_backend_name() == "postgresql"
    connect_args = {"connect_timeout": max(2, round(timeout))} if postgres else {"timeout": timeout}
    try:
        engine = make_engine(parsed, connect_args=connect_args)
    except OSError as exc:
        return f"cannot use the database at {redact(parsed)}: {exc}"
    try:
        engine.connect().close()
        with schema_lock(parsed):  # a migration under way (a first run, make migrate): wait
            if not auto_migrate and not is_blank(engine):
                require_current(engine)
    except SchemaOutdated as exc:
        return str(exc)
    except OSError as exc:  # the SQLite schema lock's file
        return f"cannot use the database at {redact(parsed)}: {exc}"
    except SQLAlchemyError as exc:
        original = getattr(exc, "orig", None) or exc
        first = (str(original).strip().splitlines() or [type(original).__name__])[0]
        return f"cannot reach the database at {redact(parsed)}: {first}"
    finally:
        engine.dispose()
    return None


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0]}" if lines else type(original).__name__


@dataclass
class RunWatch:
    """Judges a crawler's run at spider_closed, then has the store record the exit status."""

    crawler: Crawler
    outcome: Outcome | None = None
    startup_error: BaseException | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    run_id: int | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        # Connected before the pipelines exist: runs before the store's own close handler.
        self.crawler.signals.connect(self._closed, signal=signals.spider_closed)

    def _closed(self, spider: Any, reason: str) -> None:
        self.reason = reason
        store = getattr(self.crawler, "finews_store", None)
        if store is not None:
            try:
                store.flush()  # every batch written and counted before the run is judged
            except Exception:
                logger.exception("Could not write the last batch")
                store.storage_failed = True
        self.stats = dict(self.crawler.stats.get_stats())
        failed = bool(store is not None and store.storage_failed)
        max_errors = self.crawler.settings.getint("FINEWS_MAX_ERRORS", 10)
        self.outcome = judge(reason, self.stats, storage_failed=failed, max_errors=max_errors)
        if store is not None:
            self.run_id = store.run_id
            store.finish(reason, exit_status=self.outcome.code)

    def started(self, result: Any) -> None:
        """Done-callback of the crawl task: keep and log the error of a crawl that could not
        start (a component's open_spider raised: the store could not open the database).

        Scrapy then closes the spider ("shutdown", with an AssertionError from CoreStats, which
        never saw it open); the error itself is logged here, as reading it keeps asyncio quiet.
        """
        exception = getattr(result, "exception", None)
        if callable(exception) and not result.cancelled():
            self.startup_error = error = exception()
            if error is not None:
                logger.error("The crawl could not start: %s", _first_line(error), exc_info=error)
                self.reason = None  # that spider_closed was no run

    def final(self) -> Outcome:
        """The outcome; for a crawl that could not start, why (even if spider_closed came)."""
        if self.outcome is not None and self.startup_error is None:
            return self.outcome
        error = self.startup_error
        if isinstance(error, SchemaOutdated | SQLAlchemyError):
            return Outcome(DATABASE, f"the database is not usable: {_first_line(error)}")
        detail = _first_line(error) if error else "see the log above"
        return Outcome(FAILED, f"the crawl did not start: {detail}")


def crawl(process: Any, spider_args: dict[str, Any]) -> RunWatch:
    """Run the ``finews`` spider once in ``process`` (a Scrapy CrawlerProcess) and judge it."""
    watch = RunWatch(process.create_crawler(SPIDER))
    task = process.crawl(watch.crawler, **spider_args)
    if hasattr(task, "add_done_callback"):
        task.add_done_callback(watch.started)
    process.start()
    return watch


def worker_command(opts: argparse.Namespace, job: str) -> list[str]:
    """``python -m scrapy crawl finews`` with this command's -a, -s and log options, and the job."""
    command = [sys.executable, "-m", "scrapy", "crawl", SPIDER]
    command += [arg for name, value in opts.spargs.items() for arg in ("-a", f"{name}={value}")]
    command += [arg for setting in [*opts.set, f"FINEWS_JOB={job}"] for arg in ("-s", setting)]
    command += ["--logfile", opts.logfile] if opts.logfile else []
    command += ["--loglevel", opts.loglevel] if opts.loglevel else []
    return command + (["--nolog"] if opts.nolog else [])


@dataclass
class Worker:
    number: int  # of a further worker of the job, 2 … N: this process is worker 1
    process: subprocess.Popen[bytes]
    stopped: str | None = None  # why cron stopped it, if it did

    @property
    def name(self) -> str:
        return f"worker {self.number} (pid {self.process.pid})"


def wait_for(workers: Sequence[Worker], seconds: float) -> None:
    """Wait for every worker; stop those still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    late = []
    for worker in workers:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            late.append(worker)
    stop_workers(late, f"was still running {seconds:.0f} s after this worker's crawl ended")


def stop_workers(workers: Sequence[Worker], why: str) -> None:
    """SIGTERM (Scrapy closes the spider, and its row), then SIGKILL after STOP_GRACE."""
    running = [worker for worker in workers if worker.process.poll() is None]
    for worker in running:
        logger.error("%s %s: stopping it (SIGTERM)", worker.name, why)
        worker.stopped = f"{why}: stopped (SIGTERM)"
        worker.process.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for worker in running:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.error("%s did not stop within %.0f s: killing it", worker.name, STOP_GRACE)
            worker.stopped = f"{why}: killed (SIGKILL, SIGTERM was not enough)"
            worker.process.kill()
            worker.process.wait()


def settle(url: str | None, watch: RunWatch, others: Sequence[Worker], job: str, since: datetime,
           max_errors: int) -> Outcome:  # fmt: skip
    """The job's outcome, from the rows its workers opened (on this host, by these processes, since
    ``since``): a dead worker's row is closed, each row gets its worker's exit status."""
    engine, runs = make_engine(database_url(url)), ledger.RUNS
    pids = [os.getpid(), *(worker.process.pid for worker in others)]
    query = select(runs).where(
        runs.c.spider == SPIDER, runs.c.job == job, runs.c.host == socket.gethostname(),
        runs.c.pid.in_(pids), runs.c.started_at >= since,
    ).order_by(runs.c.id)  # fmt: skip
    try:
        with engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        by_pid = {row["pid"]: row for row in rows}
        results: list[WorkerResult] = []
        for worker in others:
            code, row = worker.process.returncode, by_pid.get(worker.process.pid)
            if row is not None:
                if row["status"] == "running":
                    died = f"killed by {signal_name(-code)}" if code < 0 else f"exit status {code}"
                    reason = f"worker died ({died}); closed by scrapy cron"
                    now = datetime.now(BEIJING)
                    ledger.close_abandoned(engine, row["id"], reason=reason, now=now)
                    logger.error("%s died: run %d closed as failed", worker.name, row["id"])
                    row = {**row, "status": "failed", "close_reason": reason}
                ledger.record_exit_status(engine, row["id"], code)
            results.append(WorkerResult(worker.name, code, row, worker.stopped))
        totals = {key: sum(int(row[key] or 0) for row in rows) for key in TOTALED}
        outcome = judge_job(watch.final(), watch.reason, watch.stats, results, totals,
                            max_errors=max_errors)  # fmt: skip
        if watch.run_id is not None:
            ledger.record_exit_status(engine, watch.run_id, outcome.code)
        return outcome
    except SQLAlchemyError as exc:
        problem = f"could not read or close the job's crawl_runs rows: {_first_line(exc)}"
        return Outcome(DATABASE, problem)
    finally:
        engine.dispose()


def owner_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner")


def owner_text() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%F %T}"


class FileCronLock:
    """FINEWS_LOCK_FILE, with an owner file beside it saying who holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = FileLock(str(path))

    def acquire(self) -> Outcome | None:
        """None once held; else the outcome of a run that must not start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            try:
                note = " (" + owner_path(self.path).read_text(encoding="utf-8").strip() + ")"
            except OSError:  # the holder has not written it yet
                note = ""
            return Outcome(LOCKED, f"another finews crawl holds the lock {self.path}{note}; "
                           "not starting a second one")  # fmt: skip
        owner_path(self.path).write_text(owner_text() + "\n", encoding="utf-8")
        return None

    def release(self) -> None:
        owner_path(self.path).unlink(missing_ok=True)
        self.lock.release()


def redis_lock_key(job: str) -> str:
    return f"finews:{job}:lock"


class RedisCronLock:
    """``finews:{job}:lock`` on Redis, naming its owner: one run of a job on any machine. Renewed
    every ``timeout``/3 s, it expires ``timeout`` s after a run that was killed outright."""

    def __init__(self, url: str, job: str, timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        import redis  # only runs with a Redis URL need it

        self.errors = redis.exceptions  # for the other methods
        self.where, self.key, self.timeout = scaleout.redact(url), redis_lock_key(job), timeout
        self.client = redis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=30)
        self.lock = self.client.lock(self.key, timeout=timeout, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="finews-lock", daemon=True)

    def acquire(self) -> Outcome | None:
        """None once held; else the outcome of a run that must not start."""
        try:
            if not self.lock.acquire(token=owner_text()):
                owner = self.client.get(self.key)
                note = f" ({owner.decode('utf-8', 'replace')})" if owner else ""
                return Outcome(LOCKED, f"another finews crawl holds the lock {self.key} on "
                               f"{self.where}{note}; not starting a second one")  # fmt: skip
        except self.errors.RedisError as exc:
            self.client.close()
            return Outcome(DATABASE, f"cannot reach Redis at {self.where}: {exc}")
        self._renewer.start()
        return None

    def _renew(self) -> None:
        while not self._stop.wait(self.timeout / 3):
            try:
                self.lock.reacquire()
            except self.errors.LockError:
                logger.error("Lost the lock %s: another run of the job may start", self.key)
                return
            except self.errors.RedisError as exc:
                logger.warning("Could not renew the lock %s (%s); trying again", self.key, exc)

    def release(self) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        try:
            self.lock.release()
        except (self.errors.LockError, self.errors.RedisError) as exc:
            logger.warning("Could not release the lock %s (%s): it expires by itself", self.key,
                           exc)  # fmt: skip
        finally:
            self.client.close()


class Command(BaseRunSpiderCommand):
    requires_project = True

    def syntax(self) -> str:
        return ("[-a base_url=URL] [-a categories=a,b] [-a refresh=1] "
                "[-s FINEWS_WORKERS=N -s FINEWS_REDIS_URL=URL]")  # fmt: skip

    def short_desc(self) -> str:
        return "Run the finews crawl once, locked, with an exit status for cron"

    def long_desc(self) -> str:
        return (__doc__ or "").strip()

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args:
            raise UsageError("scrapy cron takes no positional arguments; use -a NAME=VALUE")
        try:
            site_root(opts.spargs.get("base_url", LIVE_SITE))
        except ValueError as exc:
            raise UsageError(f"-a base_url: {exc}", print_help=False) from None
        settings = self.settings
        assert settings is not None
        redis_url = settings.get("FINEWS_REDIS_URL") or None
        job = str(settings.get("FINEWS_JOB") or "finews")
        try:
            workers = int(settings.get("FINEWS_WORKERS") or 1)
        except ValueError:
            workers = 0
        problem = None
        if workers < 1:
            problem = f"FINEWS_WORKERS={settings.get('FINEWS_WORKERS')!r}: a number, at least 1"
        elif workers > 1 and not redis_url:
            problem = f"FINEWS_WORKERS={workers} needs FINEWS_REDIS_URL: the workers share a queue"
        elif workers > 1 and (opts.output or opts.overwrite_output):
            problem = "-o/-O with FINEWS_WORKERS > 1: every worker would write the file"
        elif redis_url and (not scaleout.JOB_NAME.match(job) or len(job) > JOB_LENGTH):
            problem = f"FINEWS_JOB={job!r}: at most {JOB_LENGTH} letters, digits and _.:-"
        if problem:
            raise UsageError(problem, print_help=False)
        lock: FileCronLock | RedisCronLock
        if redis_url:
            timeout = settings.getfloat("FINEWS_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)
            try:
                lock = RedisCronLock(redis_url, job, timeout)
            except ValueError as exc:
                raise UsageError(f"FINEWS_REDIS_URL: {exc}", print_help=False) from None
        else:
            lock = FileCronLock(Path(settings.get("FINEWS_LOCK_FILE") or "data/crawl.lock"))
        if (refused := lock.acquire()) is not None:
            self._exit(refused)
            return
        try:
            self._exit(self._crawl(opts, job, workers))
        finally:
            lock.release()

    def _crawl(self, opts: argparse.Namespace, job: str, workers: int) -> Outcome:
        settings = self.settings
        assert settings is not None and self.crawler_process is not None
        url, migrate = settings.get("FINEWS_DATABASE_URL"), settings.getbool("FINEWS_AUTO_MIGRATE")
        timeout = settings.getfloat("FINEWS_DB_CONNECT_TIMEOUT", 10)
        if problem := database_problem(url, timeout, auto_migrate=migrate):
            return Outcome(DATABASE, problem)
        if workers == 1:
            return crawl(self.crawler_process, opts.spargs).final()
        began, command = datetime.now(BEIJING), worker_command(opts, job)
        others: list[Worker] = []
        try:
            for number in range(2, workers + 1):
                others.append(Worker(number, subprocess.Popen(command, stdin=subprocess.DEVNULL)))
                logger.info("Started %s: %s", others[-1].name, " ".join(command[1:5]))
        except OSError as exc:
            stop_workers(others, "was stopped: the others could not start")
            return Outcome(FAILED, f"could not start the other workers: {exc}")
        try:
            watch = crawl(self.crawler_process, opts.spargs)
            wait_for(others, settings.getfloat("FINEWS_WORKER_WAIT", DEFAULT_WORKER_WAIT))
        finally:  # only after an exception: wait_for leaves no worker running
            stop_workers(others, "was still running when this worker's crawl failed")
        return settle(url, watch, others, job, began, settings.getint("FINEWS_MAX_ERRORS", 10))

    def _exit(self, outcome: Outcome) -> None:
        print(f"finews cron: {outcome.message} (exit {outcome.code})", file=sys.stderr, flush=True)
        self.exitcode = outcome.code
