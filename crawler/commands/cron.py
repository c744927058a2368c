"""``scrapy cron [-a name=value …]``: one scheduled run of the ``finews`` spider.

For cron and systemd timers (README, "Scheduled crawl"). It

1. takes the lock, so two runs of a job never overlap (a second run exits 75 at once,
   naming the run that holds it): the file FINEWS_LOCK_FILE, or with FINEWS_REDIS_URL the
   Redis key ``finews:<FINEWS_JOB>:lock`` (no two machines run the job), taken without
   waiting, expiring FINEWS_LOCK_TIMEOUT seconds (600) after it was last renewed (every
   third of that while the run lasts);
2. checks that the database answers (FINEWS_DB_CONNECT_TIMEOUT) and is at the newest
   schema, before anything is fetched;
3. with FINEWS_WORKERS=N ≥ 2 (and FINEWS_REDIS_URL), starts N−1 further workers of the
   job, each ``python -m scrapy crawl finews`` with the same ``-a`` arguments, ``-s``
   settings and FINEWS_JOB (``crawler.scaleout``);
4. runs ``finews`` in this process (incremental by default), as one worker of the job;
5. waits for the other workers (FINEWS_WORKER_WAIT seconds, 900, once its own crawl has
   ended; then SIGTERM, then SIGKILL), closes as ``failed`` a ``crawl_runs`` row a dead
   worker left ``running``, and records each worker's exit status in its row;
6. judges the run, or the job as a whole (every worker's exit and row, counts and errors
   summed over the job's rows), prints one line, records the exit status in its own
   ``crawl_runs`` row and exits with it:

    0   finished: pages fetched, errors within FINEWS_MAX_ERRORS (over the whole job)
    1   failed: more errors than that, stopped early (interrupted, a CLOSESPIDER_* limit)
        or did not start; or a worker that exited non-zero, was killed or stopped, or
        left no row
    2   wrong arguments (Scrapy's usage error)
    3   the database (or Redis): unreachable, not at the newest schema, or writes failed
    4   the site gave no page at all (every request failed or was refused)
    75  another run holds the lock

A run that cannot reach the database has no ``crawl_runs`` row; the printed line and the
exit status are then the only record.
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
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from crawler.pages.site import site_root
from pipelines import ledger
from schema.db import database_url, make_engine, redact
from schema.migrate import SchemaOutdated, is_blank, require_current
from schema.types import BEIJING

logger = logging.getLogger(__name__)

OK, FAILED, USAGE, DATABASE, NO_PAGES, LOCKED = 0, 1, 2, 3, 4, 75
SPIDER = "finews"
DEFAULT_LOCK_TIMEOUT = 600.0  # seconds; the Redis lock is renewed every third of it
DEFAULT_WORKER_WAIT = 900.0  # seconds the other workers get once this one's crawl ended
JOB_LENGTH = 100  # crawl_runs.job holds this many characters
STOP_GRACE = 30.0  # seconds between SIGTERM and SIGKILL for a worker still running then


@dataclass(frozen=True)
class Outcome:
    """How a run went: the process exit status and one line for a person."""

    code: int
    message: str


def judge(
    reason: str | None, stats: Mapping[str, Any], *, storage_failed: bool, max_errors: int
) -> Outcome:
    """The exit status of a finished crawl, from its close reason and stats."""
    count = {key: int(stats.get(key, 0) or 0) for key in _COUNTED}
    errors = count["log_count/ERROR"] + count["finews/errors"]
    if storage_failed:
        return Outcome(DATABASE, f"could not write to the database ({errors} errors)")
    if reason != "finished":
        return Outcome(FAILED, f"the crawl stopped early ({reason}) after {_progress(count)}")
    if count["finews/pages"] == 0:
        failed = count["downloader/request_count"] - count["downloader/response_status_count/200"]
        return Outcome(NO_PAGES, f"the site gave no page ({failed} requests failed or refused)")
    if errors > max_errors:
        return Outcome(
            FAILED, f"{errors} errors, more than FINEWS_MAX_ERRORS={max_errors}: {_progress(count)}"
        )
    return Outcome(OK, f"finished: {_progress(count)}, {errors} errors")


_COUNTED = (
    "log_count/ERROR",
    "finews/errors",
    "finews/pages",
    "finews/stored",
    "finews/updated",
    "finews/skipped",
    "finews/rejected",
    "downloader/request_count",
    "downloader/response_status_count/200",
)


def _progress(count: Mapping[str, int]) -> str:
    return (
        f"{count['finews/pages']} pages, {count['finews/stored']} articles stored, "
        f"{count['finews/updated']} updated, {count['finews/skipped']} posts skipped, "
        f"{count['finews/rejected']} rejected"
    )


# -- a job of several workers ---------------------------------------------------------------

# Summed over the job's crawl_runs rows, one per worker.
TOTALED = ("seen", "stored", "updated", "unchanged", "duplicates", "rejected", "skipped", "errors")


@dataclass(frozen=True)
class WorkerResult:
    """How a further worker (a ``scrapy crawl finews`` subprocess) ended."""

    name: str  # "worker 2 (pid 4242)"
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
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def totals_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {key: sum(int(row[key] or 0) for row in rows) for key in TOTALED}


def _job_progress(workers: int, totals: Mapping[str, int]) -> str:
    return (
        f"{workers} workers, {totals['seen']} articles seen, {totals['stored']} stored, "
        f"{totals['updated']} updated, {totals['skipped']} posts skipped, "
        f"{totals['rejected']} rejected"
    )


def judge_job(
    own: Outcome,
    reason: str | None,
    stats: Mapping[str, Any],
    workers: Sequence[WorkerResult],
    totals: Mapping[str, int],
    *,
    max_errors: int,
) -> Outcome:
    """The exit status of a job: this process's crawl (``own``, judged alone, with its close
    ``reason`` and ``stats``; ``reason`` None if it never closed), the other workers, and
    ``totals``, the counts summed over the job's ``crawl_runs`` rows (this one's included).
    """
    progress = _job_progress(1 + len(workers), totals)
    errors = totals["errors"]
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
    pages = int(stats.get("finews/pages", 0) or 0) + totals["seen"] + totals["skipped"]
    if pages == 0:
        requests = int(stats.get("downloader/request_count", 0) or 0)
        failed = requests - int(stats.get("downloader/response_status_count/200", 0) or 0)
        return Outcome(
            NO_PAGES,
            f"the site gave no page to any of the {1 + len(workers)} workers "
            f"({failed} requests of this one failed or were refused)",
        )
    if errors > max_errors:
        return Outcome(
            FAILED, f"{errors} errors, more than FINEWS_MAX_ERRORS={max_errors}: {progress}"
        )
    return Outcome(OK, f"finished: {progress}, {errors} errors")


# -- the database ---------------------------------------------------------------------------


def database_problem(url: str | None, timeout: float, *, auto_migrate: bool) -> str | None:
    """Why the run cannot use the database, or None when it answers and is usable."""
    parsed = database_url(url)
    where = redact(parsed)
    if parsed.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": max(2, round(timeout))}
    else:
        connect_args = {"timeout": timeout}
    try:
        engine = make_engine(parsed, connect_args=connect_args)
    except OSError as exc:
        return f"cannot use the database at {where}: {exc}"
    try:
        with engine.connect():
            pass
        if not auto_migrate and not is_blank(engine):
            require_current(engine)
    except SchemaOutdated as exc:
        return str(exc)
    except SQLAlchemyError as exc:
        original = getattr(exc, "orig", None) or exc
        first = (str(original).strip().splitlines() or [type(original).__name__])[0]
        return f"cannot reach the database at {where}: {first}"
    finally:
        engine.dispose()
    return None


def job_rows(
    engine: Engine, *, job: str, host: str, pids: Sequence[int], since: datetime
) -> list[dict[str, Any]]:
    """The ``crawl_runs`` rows the workers of one cron run opened: the job's, on this host,
    by these processes, since the run began."""
    runs = ledger.RUNS
    query = (
        select(runs)
        .where(
            runs.c.spider == SPIDER,
            runs.c.job == job,
            runs.c.host == host,
            runs.c.pid.in_(list(pids)),
            runs.c.started_at >= since,
        )
        .order_by(runs.c.id)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


# -- one crawl in this process ----------------------------------------------------------------


@dataclass
class RunWatch:
    """Judges one crawler's run at spider_closed and records the status in its ledger row.

    Connected before the pipelines exist, so it runs before the store's own close handler:
    it writes what the store holds, judges the run, then closes the ledger row with the status.
    """

    crawler: Crawler
    outcome: Outcome | None = None
    startup_error: BaseException | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    run_id: int | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
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
        self.outcome = judge(
            reason,
            self.stats,
            storage_failed=bool(store is not None and store.storage_failed),
            max_errors=self.crawler.settings.getint("FINEWS_MAX_ERRORS", 10),
        )
        if store is not None:
            self.run_id = store.run_id
            store.finish(reason, exit_status=self.outcome.code)

    def started(self, result: Any) -> None:
        """Done-callback of the crawl task: keep the error of a crawl that could not start."""
        exception = getattr(result, "exception", None)
        if callable(exception) and not result.cancelled():
            self.startup_error = exception()

    def final(self) -> Outcome:
        """The outcome, also for a crawl that never reached spider_closed."""
        if self.outcome is not None:
            return self.outcome
        error = self.startup_error
        if isinstance(error, SchemaOutdated | SQLAlchemyError):
            return Outcome(DATABASE, f"the database is not usable: {_first_line(error)}")
        detail = _first_line(error) if error else "see the log above"
        return Outcome(FAILED, f"the crawl did not start: {detail}")


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0]}" if lines else type(original).__name__


def crawl(process: Any, spider_args: dict[str, Any]) -> RunWatch:
    """Run the ``finews`` spider once in ``process`` (a Scrapy CrawlerProcess) and judge it."""
    crawler = process.create_crawler(SPIDER)
    watch = RunWatch(crawler)
    task = process.crawl(crawler, **spider_args)
    if hasattr(task, "add_done_callback"):
        task.add_done_callback(watch.started)
    process.start()
    return watch


# -- the other workers ------------------------------------------------------------------------


def worker_command(opts: argparse.Namespace, job: str) -> list[str]:
    """``python -m scrapy crawl finews`` with the -a arguments, -s settings and log options
    this command was given, and FINEWS_JOB."""
    command = [sys.executable, "-m", "scrapy", "crawl", SPIDER]
    for name, value in opts.spargs.items():
        command += ["-a", f"{name}={value}"]
    for setting in opts.set:
        command += ["-s", setting]
    command += ["-s", f"FINEWS_JOB={job}"]
    if opts.logfile:
        command += ["--logfile", opts.logfile]
    if opts.loglevel:
        command += ["--loglevel", opts.loglevel]
    if opts.nolog:
        command.append("--nolog")
    return command


@dataclass
class Worker:
    """A further worker of the job, started by this cron run."""

    number: int  # 2 … N: this process is worker 1
    process: subprocess.Popen[bytes]
    stopped: str | None = None  # why cron stopped it, if it did

    @property
    def name(self) -> str:
        return f"worker {self.number} (pid {self.process.pid})"


def start_workers(command: list[str], count: int) -> list[Worker]:
    workers: list[Worker] = []
    try:
        for number in range(2, count + 2):
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
            workers.append(Worker(number, process))
            logger.info("Started %s: %s", workers[-1].name, " ".join(command[1:5]))
    except OSError:
        stop_workers(workers, "was stopped: the others could not start")
        raise
    return workers


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


def died(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return f"exit status {returncode}"


# -- locks ------------------------------------------------------------------------------------


def lock_owner_note(lock_path: Path) -> str:
    """What the owner file beside the lock says about the run holding it, if anything."""
    try:
        return " (" + owner_path(lock_path).read_text(encoding="utf-8").strip() + ")"
    except OSError:
        return ""


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
            return Outcome(
                LOCKED,
                f"another finews crawl holds the lock {self.path}"
                f"{lock_owner_note(self.path)}; not starting a second one",
            )
        owner_path(self.path).write_text(owner_text() + "\n", encoding="utf-8")
        return None

    def release(self) -> None:
        owner_path(self.path).unlink(missing_ok=True)
        self.lock.release()


def redis_lock_key(job: str) -> str:
    return f"finews:{job}:lock"


class RedisCronLock:
    """``finews:{job}:lock`` on Redis: one run of a job at a time, whatever the machine.

    Its value names the owner, so a refused run can say who holds it. It expires
    ``timeout`` seconds after it was last renewed (a daemon thread renews it every third of
    that), so a run killed outright holds the job for at most ``timeout`` seconds.
    """

    def __init__(self, url: str, job: str, timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        import redis  # only runs with a Redis URL need it

        from crawler.scaleout import redact as redact_redis

        self.where = redact_redis(url)
        self.key = redis_lock_key(job)
        self.timeout = timeout
        self.client = redis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=30)
        self.lock = self.client.lock(self.key, timeout=timeout, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="finews-lock", daemon=True)

    def acquire(self) -> Outcome | None:
        """None once held; else the outcome of a run that must not start."""
        from redis.exceptions import RedisError

        try:
            if not self.lock.acquire(token=owner_text()):
                owner = self.client.get(self.key)
                note = f" ({owner.decode('utf-8', 'replace')})" if owner else ""
                return Outcome(LOCKED, f"another finews crawl holds the lock {self.key} on "
                               f"{self.where}{note}; not starting a second one")  # fmt: skip
        except RedisError as exc:
            self.client.close()
            return Outcome(DATABASE, f"cannot reach Redis at {self.where}: {exc}")
        self._renewer.start()
        return None

    def _renew(self) -> None:
        from redis.exceptions import LockError, RedisError

        while not self._stop.wait(self.timeout / 3):
            try:
                self.lock.reacquire()
            except LockError:
                logger.error("Lost the lock %s: another run of the job may start", self.key)
                return
            except RedisError as exc:
                logger.warning("Could not renew the lock %s (%s); trying again", self.key, exc)

    def release(self) -> None:
        from redis.exceptions import LockError, RedisError

        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        try:
            self.lock.release()
        except (LockError, RedisError) as exc:
            logger.warning("Could not release the lock %s (%s): it expires by itself", self.key,
                           exc)  # fmt: skip
        finally:
            self.client.close()


# -- the command ------------------------------------------------------------------------------


def beijing_now() -> datetime:
    return datetime.now(BEIJING)


class Command(BaseRunSpiderCommand):
    requires_project = True

    def syntax(self) -> str:
        return (
            "[-a base_url=URL] [-a categories=a,b] [-a refresh=1] "
            "[-s FINEWS_WORKERS=N -s FINEWS_REDIS_URL=URL]"
        )

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
            site_root(opts.spargs.get("base_url", "https://finews.withounder.com/"))
        except ValueError as exc:
            raise UsageError(f"-a base_url: {exc}", print_help=False) from None
        settings = self.settings
        assert settings is not None
        redis_url, job, workers = job_options(settings.copy_to_dict(), opts)
        lock: FileCronLock | RedisCronLock
        if redis_url:
            timeout = settings.getfloat("FINEWS_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)
            try:
                lock = RedisCronLock(redis_url, job, timeout)
            except ValueError as exc:
                raise UsageError(f"FINEWS_REDIS_URL: {exc}", print_help=False) from None
        else:
            lock = FileCronLock(Path(settings.get("FINEWS_LOCK_FILE") or "data/crawl.lock"))
        refused = lock.acquire()
        if refused is not None:
            self._exit(refused)
            return
        try:
            self._exit(self._crawl(opts, job, workers))
        finally:
            lock.release()

    def _crawl(self, opts: argparse.Namespace, job: str, workers: int) -> Outcome:
        settings = self.settings
        assert settings is not None and self.crawler_process is not None
        problem = database_problem(
            settings.get("FINEWS_DATABASE_URL"),
            settings.getfloat("FINEWS_DB_CONNECT_TIMEOUT", 10),
            auto_migrate=settings.getbool("FINEWS_AUTO_MIGRATE"),
        )
        if problem:
            return Outcome(DATABASE, problem)
        if workers == 1:
            return crawl(self.crawler_process, opts.spargs).final()
        began = beijing_now()
        try:
            others = start_workers(worker_command(opts, job), workers - 1)
        except OSError as exc:
            return Outcome(FAILED, f"could not start the other workers: {exc}")
        try:
            watch = crawl(self.crawler_process, opts.spargs)
            wait_for(others, settings.getfloat("FINEWS_WORKER_WAIT", DEFAULT_WORKER_WAIT))
        finally:  # only after an exception: wait_for leaves no worker running
            stop_workers(others, "was still running when this worker's crawl failed")
        engine = make_engine(database_url(settings.get("FINEWS_DATABASE_URL")))
        try:
            pids = [os.getpid(), *(worker.process.pid for worker in others)]
            rows = job_rows(engine, job=job, host=socket.gethostname(), pids=pids, since=began)
            results = settle(engine, others, rows)
            outcome = judge_job(
                watch.final(), watch.reason, watch.stats, results, totals_of(rows),
                max_errors=settings.getint("FINEWS_MAX_ERRORS", 10),
            )  # fmt: skip
            if watch.run_id is not None:
                ledger.record_exit_status(engine, watch.run_id, outcome.code)
            return outcome
        except SQLAlchemyError as exc:
            problem = f"could not read or close the job's crawl_runs rows: {_first_line(exc)}"
            return Outcome(DATABASE, problem)
        finally:
            engine.dispose()

    def _exit(self, outcome: Outcome) -> None:
        print(f"finews cron: {outcome.message} (exit {outcome.code})", file=sys.stderr, flush=True)
        self.exitcode = outcome.code


def job_options(
    settings: Mapping[str, Any], opts: argparse.Namespace
) -> tuple[str | None, str, int]:
    """(Redis URL, job, workers) from the settings; a UsageError for what cannot work."""
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
    elif redis_url:
        from crawler.scaleout import JOB_NAME  # Redis keys are named after the job

        if not JOB_NAME.match(job) or len(job) > JOB_LENGTH:
            problem = f"FINEWS_JOB={job!r}: at most {JOB_LENGTH} letters, digits and _.:-"
    if problem:
        raise UsageError(problem, print_help=False)
    return redis_url, job, workers


def settle(
    engine: Engine, others: Sequence[Worker], rows: Sequence[Mapping[str, Any]]
) -> list[WorkerResult]:
    """Each other worker's result; a row a dead worker left running is closed, and each
    worker's exit status is recorded in its row."""
    by_pid = {row["pid"]: row for row in rows}
    results = []
    for worker in others:
        returncode = worker.process.returncode
        row = by_pid.get(worker.process.pid)
        if row is not None:
            if row["status"] == "running":
                reason = f"worker died ({died(returncode)}); closed by scrapy cron"
                ledger.close_abandoned(engine, row["id"], reason=reason, now=beijing_now())
                logger.error("%s died: run %d closed as failed", worker.name, row["id"])
                row = {**row, "status": "failed", "close_reason": reason}
            ledger.record_exit_status(engine, row["id"], returncode)
        results.append(WorkerResult(worker.name, returncode, row, worker.stopped))
    return results
