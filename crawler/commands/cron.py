"""``scrapy cron [-a name=value …]``: one scheduled run of the ``finews`` spider.

For cron and systemd timers (README, "Scheduled crawl"). It

1. takes the lock FINEWS_LOCK_FILE, so two runs never overlap: a second run exits at
   once, naming the lock (status 75, EX_TEMPFAIL: "try again later");
2. checks that the database answers (FINEWS_DB_CONNECT_TIMEOUT) and is at the newest
   schema, before anything is fetched;
3. runs ``finews`` with the given ``-a`` arguments (incremental by default);
4. judges the run, prints one line saying how it went, records the exit status in the
   run's ``crawl_runs`` row (``exit_status``) and exits with it:

    0   finished: pages fetched, errors within FINEWS_MAX_ERRORS
    1   failed: more errors than FINEWS_MAX_ERRORS, stopped early (interrupted, a
        CLOSESPIDER_* limit) or did not start
    2   wrong arguments (Scrapy's usage error)
    3   the database: unreachable, not at the newest schema, or writes failed
    4   the site gave no page at all (every request failed or was refused)
    75  another run holds the lock

A run that cannot reach the database has no ``crawl_runs`` row to record it in; the
printed line and the exit status are then the only record.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from scrapy import signals
from scrapy.commands import BaseRunSpiderCommand
from scrapy.crawler import Crawler
from scrapy.exceptions import UsageError
from sqlalchemy.exc import SQLAlchemyError

from crawler.pages.site import site_root
from schema.db import database_url, make_engine, redact
from schema.migrate import SchemaOutdated, is_blank, require_current

logger = logging.getLogger(__name__)

OK, FAILED, USAGE, DATABASE, NO_PAGES, LOCKED = 0, 1, 2, 3, 4, 75
SPIDER = "finews"


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

    def __post_init__(self) -> None:
        self.crawler.signals.connect(self._closed, signal=signals.spider_closed)

    def _closed(self, spider: Any, reason: str) -> None:
        store = getattr(self.crawler, "finews_store", None)
        if store is not None:
            try:
                store.sync()  # every batch written and counted before the run is judged
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


def lock_owner_note(lock_path: Path) -> str:
    """What the owner file beside the lock says about the run holding it, if anything."""
    try:
        return " (" + owner_path(lock_path).read_text(encoding="utf-8").strip() + ")"
    except OSError:
        return ""


def owner_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner")


class Command(BaseRunSpiderCommand):
    requires_project = True

    def syntax(self) -> str:
        return "[-a base_url=URL] [-a categories=a,b] [-a refresh=1]"

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
        lock_path = Path(settings.get("FINEWS_LOCK_FILE") or "data/crawl.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            self._exit(
                Outcome(
                    LOCKED,
                    f"another finews crawl holds the lock {lock_path}"
                    f"{lock_owner_note(lock_path)}; not starting a second one",
                )
            )
            return
        try:
            owner_path(lock_path).write_text(
                f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%F %T}\n",
                encoding="utf-8",
            )
            self._exit(self._crawl(opts.spargs))
        finally:
            owner_path(lock_path).unlink(missing_ok=True)
            lock.release()

    def _crawl(self, spider_args: dict[str, Any]) -> Outcome:
        settings = self.settings
        assert settings is not None and self.crawler_process is not None
        problem = database_problem(
            settings.get("FINEWS_DATABASE_URL"),
            settings.getfloat("FINEWS_DB_CONNECT_TIMEOUT", 10),
            auto_migrate=settings.getbool("FINEWS_AUTO_MIGRATE"),
        )
        if problem:
            return Outcome(DATABASE, problem)
        return crawl(self.crawler_process, spider_args).final()

    def _exit(self, outcome: Outcome) -> None:
        print(f"finews cron: {outcome.message} (exit {outcome.code})", file=sys.stderr, flush=True)
        self.exitcode = outcome.code
