"""Storage for one crawl: batched upserts, rejects and the run ledger.

``Store`` is the one object per crawler (``Store.for_crawler(crawler)``, also reachable as
``crawler.finews_store``). Articles (each copy of one: ``pipelines.upsert`` merges them) are
queued (``add``) and written in the crawl process, in order, one transaction a batch
(``pipelines.upsert.write_batch``) of FINEWS_STORE_BATCH_SIZE, after
FINEWS_STORE_FLUSH_SECONDS, and at close.

In a running crawl the batches are written on the store's own thread (one, so writes keep
their order): a 500-article batch holds the database for 0.1-0.2 s, most of it in the
database driver, which lets the reactor go on fetching and parsing meanwhile. What the
thread does to the store's state (stats, rejects of refused rows, stopping the crawl) is
handed back and done on the reactor's thread. Items wait (``add`` returns an awaitable)
while two batches are still being written, so that a slow database slows the crawl instead
of filling memory. Outside a running reactor (tools, tests, ``scrapy cron``'s last flush)
every write is made at once, in the caller's thread.

Where a write fails, the store tells the database's two kinds of failure apart:

- **The database is away** (a connection refused or lost, SQLite's "database is locked":
  ``is_outage``): the same batch is written again with back-off for up to
  FINEWS_DB_RETRY_SECONDS (60). The crawl waits meanwhile: items wait for the writes
  queued before them, so nothing piles up. If the database answers, the run goes
  on as if nothing happened. If not, the store gives up (``unavailable``): the run stops with
  the reason ``database_unavailable`` and fails (``scrapy cron`` exits 3), and what it could not
  write is left for the next run, which fetches it again: an outage never becomes a reject.
- **The database refuses a row** (a constraint it violates): the batch is written again item
  by item, so one bad row costs one reject, with the reason ``REFUSED`` and the database's
  message. ``reject`` records what
could not be stored; ``stored_codes``, ``read_copies`` and ``rejected_paths`` say what
earlier runs left (the incremental skip, the backfill); ``track_file`` records a post file
in the same transaction as the article or reject it becomes (``pipelines.sources``), so a
killed backfill never records a file whose effect it lost.

The database must be at the newest schema: otherwise ``open`` raises ``SchemaOutdated``
saying to run ``make migrate``, unless FINEWS_AUTO_MIGRATE is true.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.reactor import is_reactor_installed
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from crawler.items import DOWNLOAD_FAILED, Article
from pipelines import ledger, sources
from pipelines.upsert import ARTICLES, LINKS, Outcome, write_batch
from schema.db import database_url, make_engine, redact
from schema.models import Reject
from schema.types import BEIJING

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

REJECTS = Reject.__table__
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_SECONDS = 5.0
DEFAULT_RETRY_SECONDS = 60.0  # how long a write waits for a database that went away
WRITES_AHEAD = 2  # batches queued on the store's thread before items wait for them
FIRST_RETRY_DELAY = 0.25  # seconds before the second try; doubled each time, up to
MAX_RETRY_DELAY = 5.0
EXCERPT_CHARS = 300
REFUSED = "refused by the database"  # a reject: the row violates a constraint
LEGACY_DATABASE_ERROR = "database error"  # older versions' reject, outage or refusal
UNAVAILABLE = "database_unavailable"  # the close reason when the database stayed away


# SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN (primary codes)
SQLITE_TRANSIENT = frozenset({5, 6, 10, 13, 14})


class DatabaseUnavailable(Exception):
    """The database did not answer for FINEWS_DB_RETRY_SECONDS."""


def is_outage(exc: BaseException) -> bool:
    """The failure is the connection's, not the data's: the same write may succeed later.

    PostgreSQL's operational errors are the connection's (refused, lost, the server shutting
    down); SQLite's also cover a missing table, so for it only busy, locked, I/O, full and
    cannot-open count."""
    if getattr(exc, "connection_invalidated", False):
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return code is None or code & 0xFF in SQLITE_TRANSIENT


def now() -> datetime:
    return datetime.now(BEIJING)


def excerpt_of(article: Article) -> str | None:
    """A few hundred characters a person can recognise the article by."""
    for text in (article.title, article.digest, *article.paragraphs[:1], article.body_html):
        if text and text.strip():
            return text.strip()[:EXCERPT_CHARS]
    return None


def describe_error(exc: BaseException) -> str:
    """The database's own message, first line, without the SQL and its parameters."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines() or [""]
    return f"{type(original).__name__}: {lines[0]}"


class Counts(Counter):
    """Stats for a store used outside Scrapy, with the StatsCollector methods it needs."""

    def inc_value(self, key: str, count: int = 1, start: int = 0) -> None:
        self[key] = self.get(key, start) + count

    def get_value(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)


class Store:
    """Writes one run's articles, rejects and ledger row to FINEWS_DATABASE_URL."""

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        auto_migrate: bool = False,
        stats: Any = None,
        job: str | None = None,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
    ) -> None:
        self.url = database_url(url)
        self.batch_size = max(1, batch_size)
        self.flush_seconds = flush_seconds
        self.retry_seconds = max(0.0, retry_seconds)
        self.auto_migrate = auto_migrate
        self.stats = stats if stats is not None else Counts()
        self.job = job
        self.engine: Engine | None = None
        self.run_id: int | None = None
        self.storage_failed = False
        self.unavailable = False  # gave up waiting for the database: nothing more is written
        self.on_unavailable: Any = None  # called once when the store gives up (stops the crawl)
        self._unwritten = 0  # articles left for the next run
        self._unwritten_rejects = 0
        self._pending: dict[tuple[str, str | None], Article] = {}  # by infoCode, category
        self._rejects: list[dict[str, Any]] = []
        self._categories: dict[str, str | None] = {}  # slug -> outlet, committed
        self._last_flush = time.monotonic()
        self._timer: Any = None
        self._finished = False
        # Post files (pipelines.sources): a row waits in _files until its item is queued,
        # then rides with it: with the articles batch, or with the rejects.
        self._files: dict[str, dict[str, Any]] = {}
        self._file_rows: list[dict[str, Any]] = []
        self._reject_file_rows: list[dict[str, Any]] = []
        self._source_files: dict[str, sources.FileRecord] | None = None
        # In a running crawl: the store's writer thread, its writes not yet done (oldest
        # first), and what they did to be done on the reactor's thread (module docstring).
        self._writer: ThreadPoolExecutor | None = None
        self._writer_thread: threading.Thread | None = None
        self._writes: deque[Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._effects: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._effects_lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------

    @classmethod
    def for_crawler(cls, crawler: Crawler) -> Store:
        """The crawler's store, created on first call and closed with the spider."""
        store = getattr(crawler, "finews_store", None)
        if store is None:
            get = crawler.settings
            store = cls(
                get.get("FINEWS_DATABASE_URL"),
                batch_size=get.getint("FINEWS_STORE_BATCH_SIZE", DEFAULT_BATCH_SIZE),
                flush_seconds=get.getfloat("FINEWS_STORE_FLUSH_SECONDS", DEFAULT_FLUSH_SECONDS),
                auto_migrate=get.getbool("FINEWS_AUTO_MIGRATE", False),
                stats=crawler.stats,
                # A worker of a scaled-out crawl (crawler.scaleout) names its job.
                job=get.get("FINEWS_JOB") if get.get("FINEWS_REDIS_URL") else None,
                retry_seconds=get.getfloat("FINEWS_DB_RETRY_SECONDS", DEFAULT_RETRY_SECONDS),
            )
            store.on_unavailable = lambda: _stop_crawl(crawler, UNAVAILABLE)
            crawler.signals.connect(store._spider_closed, signal=signals.spider_closed)
            crawler.signals.connect(store._engine_stopped, signal=signals.engine_stopped)
            crawler.finews_store = store  # type: ignore[attr-defined]
        return store

    def open(self, spider: str, *, mode: str = "crawl", arguments: dict | None = None) -> int:
        """Check the schema and open the run's ledger row; returns its id. Idempotent."""
        if self.run_id is not None:
            return self.run_id
        from schema.migrate import require_current, upgrade  # Alembic: ~0.1 s

        engine = self._engine()
        try:
            # A blank database (a new SQLite file) gets the schema; one that holds tables
            # is only migrated when asked, so nobody's data changes shape by surprise.
            # Checked under the schema lock: of two first runs, the second waits for the
            # first to create the schema, then finds it current.
            upgrade(self.url, blank_only=not self.auto_migrate)
            require_current(engine)
            self.run_id = ledger.open_run(
                engine, spider=spider, mode=mode, arguments=arguments or {}, now=now(),
                job=self.job,
            )  # fmt: skip
            gone = ledger.close_dead_runs(engine, now=now())
        except Exception:
            engine.dispose()
            raise
        logger.info("Storing to %s as run %d", redact(self.url), self.run_id)
        if gone:
            shown = ", ".join(map(str, gone))
            logger.warning("Marked interrupted: runs %s, left running by processes now gone", shown)
        self._start_timer()
        return self.run_id

    def open_for_spider(self, spider: Any) -> int:
        """``open`` with the spider's name, ``mode`` ("crawl") and ``arguments`` ({})."""
        return self.open(
            spider.name,
            mode=getattr(spider, "mode", None) or "crawl",
            arguments=getattr(spider, "arguments", None) or {},
        )

    def finish(self, reason: str | None = "finished", *, exit_status: int | None = None) -> str:
        """Flush, close the ledger row and release the database; returns the run status."""
        if self._finished:
            return "closed"
        self._finished = True
        self._stop_timer()
        try:
            self._stop_writer()
            self.flush()
        except Exception:
            logger.exception("Could not write the last batch")
            self.storage_failed = True
        status = ledger.status_for(reason, storage_failed=self.storage_failed)
        if self.unavailable:
            logger.error(
                "%d articles and %d rejects could not be written; the next run fetches their "
                "pages again", self._unwritten, self._unwritten_rejects,
            )  # fmt: skip
        if self.run_id is not None and self.engine is not None:
            try:
                # After an outage one try: the store has waited already.
                counts = ledger.counts_from(self.stats)

                def close() -> None:
                    ledger.close_run(
                        self._engine(), self.run_id, status=status, reason=reason, now=now(),
                        counts=counts, exit_status=exit_status,
                    )  # fmt: skip

                self._retrying(close, "the run's end", patience=0 if self.unavailable else None)
            except (DatabaseUnavailable, SQLAlchemyError) as exc:
                logger.error(
                    "Could not close run %s (%s): the next run marks it interrupted",
                    self.run_id, describe_error(exc.__cause__ or exc),
                )  # fmt: skip
        if self.engine is not None:
            self.engine.dispose()
        if self.run_id is not None:
            logger.info("Run %d %s (%s)", self.run_id, status, reason)
        return status

    def _spider_closed(self, spider: Any, reason: str) -> None:
        self.finish(reason)

    def _engine_stopped(self) -> None:  # spider_closed never came: the crawl died on the way
        if not self._finished and self.run_id is not None:
            self.finish("engine_stopped")

    # -- what earlier runs left ------------------------------------------------------------

    def stored_codes(self) -> set[str]:
        with self._engine().connect() as conn:
            return set(conn.execute(select(ARTICLES.c.info_code)).scalars())

    def read_copies(self) -> set[tuple[str, str]]:
        """(infoCode, category) of every copy whose content is recorded."""
        query = select(LINKS.c.info_code, LINKS.c.category)
        with self._engine().connect() as conn:
            rows = conn.execute(query.where(LINKS.c.content_hash.is_not(None)))
            return {(code, slug) for code, slug in rows}

    def rejected_paths(self) -> set[str]:
        """URL paths of pages an earlier run rejected for what they hold.

        By path, so a mirror on another port is the same site. A failed download (reason
        ``DOWNLOAD_FAILED``) does not count: the next run tries it again. Nor does
        ``LEGACY_DATABASE_ERROR``, which older versions wrote for outages and refusals alike.
        """
        query = select(REJECTS.c.url).distinct()
        tried_again = (DOWNLOAD_FAILED, LEGACY_DATABASE_ERROR)
        query = query.where(REJECTS.c.url.is_not(None), REJECTS.c.reason.not_in(tried_again))
        with self._engine().connect() as conn:
            return {urlsplit(u).path for u in conn.execute(query).scalars()}

    # -- what spiders, middlewares and pipelines call ---------------------------------------

    def reject(
        self,
        url: str | None,
        reason: str,
        *,
        detail: str | None = None,
        excerpt: str | bytes | None = None,
        info_code: str | None = None,
    ) -> None:
        """Record that something could not be stored; written with the next batch."""
        if isinstance(excerpt, bytes):
            excerpt = excerpt.decode("utf-8", errors="replace")
        self._rejects.append(
            {
                "url": url,
                "info_code": info_code,
                "reason": reason,
                "detail": detail,
                "excerpt": excerpt[:EXCERPT_CHARS] if excerpt else None,
                "created_at": now(),
            }
        )
        self._take_file(url, sources.REJECTED, self._reject_file_rows)
        self.stats.inc_value("finews/rejected")
        logger.warning("Rejected %s: %s", url or info_code, reason)
        self._flush_if_due()

    def reject_item(self, article: Article, reason: str, detail: str | None = None) -> None:
        self.reject(
            article.url or None,
            reason,
            detail=detail,
            excerpt=excerpt_of(article),
            info_code=article.info_code,
        )

    def add(self, article: Article) -> Awaitable[None] | None:
        """Queue a valid article (``info_code`` set) for the next batch; an awaitable when
        the caller should wait for the batches being written (``backlog``)."""
        assert article.info_code, "validate before storing"
        key = (article.info_code, article.category)
        if key in self._pending:
            # The same copy twice in a batch: write the first, then compare with it.
            self._flush_soon()
        self._pending[key] = article
        self._take_file(article.url, sources.ARTICLE, self._file_rows)
        self._flush_if_due()
        return self.backlog()

    def flush(self) -> None:
        """Write everything queued, and wait for it: articles and their files in one
        transaction (or one per item if the database refuses the batch); then the rejects,
        those of refused rows too."""
        while self._pending or self._file_rows or self._rejects or self._reject_file_rows:
            write = self._flush_soon()
            if write is not None:
                try:
                    write.result()
                finally:
                    self._apply_effects()

    def _flush_soon(self) -> Future[None] | None:
        """Start writing everything queued: on the writer thread (its future returned) in a
        running crawl, else here and now."""
        articles, files = list(self._pending.values()), self._file_rows
        rejects, reject_files = self._rejects, self._reject_file_rows
        if not (articles or files or rejects or reject_files):
            return None
        self._pending, self._file_rows = {}, []
        self._rejects, self._reject_file_rows = [], []
        if articles or files:
            self._last_flush = time.monotonic()
            self.stats.inc_value("finews/batches")
        counts = ledger.counts_from(self.stats)  # read here: the reactor's thread changes them
        if self._writer is None:
            self._write_all(articles, files, rejects, reject_files, counts)
            return None
        write = self._writer.submit(self._write_all, articles, files, rejects, reject_files, counts)
        self._writes.append(write)
        write.add_done_callback(self._written)
        return write

    def _write_all(
        self, articles: list[Article], files: list[dict[str, Any]],
        rejects: list[dict[str, Any]], reject_files: list[dict[str, Any]], counts: dict,
    ) -> None:  # fmt: skip
        if articles or files:
            self._write_batch(articles, files, counts)
        self._write_rejects(rejects, reject_files)

    def _written(self, write: Future[None]) -> None:
        """On the writer thread, a write done: the reactor's thread takes over what it did."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._write_done, write)

    def _write_done(self, write: Future[None]) -> None:
        if write in self._writes:
            self._writes.remove(write)
        self._apply_effects()
        error = write.exception()
        if error is not None:  # a bug, not the database: the write's articles are lost
            self.storage_failed = True
            self.stats.inc_value("finews/errors")
            logger.error("Could not write a batch", exc_info=error)

    def _on_reactor(self, function: Callable[..., Any], *args: Any) -> None:
        """``function(*args)`` on the reactor's thread: now if this is it, else handed back."""
        if threading.current_thread() is not self._writer_thread:
            function(*args)
            return
        with self._effects_lock:
            self._effects.append((function, args))

    def _apply_effects(self) -> None:
        with self._effects_lock:
            effects, self._effects = self._effects, []
        for function, args in effects:
            function(*args)

    def _inc(self, key: str, count: int = 1) -> None:
        self._on_reactor(self.stats.inc_value, key, count)

    # -- writing ------------------------------------------------------------------------------

    def _write_batch(
        self, articles: list[Article], files: list[dict[str, Any]], counts: dict
    ) -> None:
        if self.unavailable:
            self._unwritten += len(articles)
            return
        try:
            self._count(self._retrying(lambda: self._write(articles, files, counts), "a batch"))
            return
        except DatabaseUnavailable:
            self._unwritten += len(articles)
            return
        except SQLAlchemyError as exc:
            self._inc("finews/batch_failures")
            logger.warning(
                "The database refused a batch of %d articles (%s); writing them one by one",
                len(articles),
                describe_error(exc),
            )
        for n, article in enumerate(articles):
            try:
                outcome = self._retrying(
                    lambda a=article: self._write([a], None, counts), "an article"
                )
                self._count(outcome)
            except DatabaseUnavailable:
                self._unwritten += len(articles) - n
                return  # their files stay unrecorded: the next run reads them again
            except SQLAlchemyError as exc:
                self._on_reactor(self.reject_item, article, REFUSED, describe_error(exc))
        # Recorded after the retries, with the rejects some of them became.
        self._on_reactor(lambda: self._reject_file_rows.extend(files))

    def _retrying(self, write: Any, what: str, *, patience: float | None = None) -> Any:
        """``write()``, tried again with back-off while the database is away, for up to
        ``patience`` seconds (FINEWS_DB_RETRY_SECONDS); then ``DatabaseUnavailable``, once the
        store has given up (``unavailable``) and asked the crawl to stop."""
        patience = self.retry_seconds if patience is None else patience
        started, delay, tries = time.monotonic(), FIRST_RETRY_DELAY, 0
        while True:
            try:
                result = write()
            except SQLAlchemyError as exc:
                if not is_outage(exc):
                    raise
                waited = time.monotonic() - started
                if waited >= patience:
                    self._give_up(what, waited, exc)
                    raise DatabaseUnavailable(describe_error(exc)) from exc
                if tries == 0:
                    self._inc("finews/db_outages")
                    logger.warning(
                        "The database is unavailable (%s); writing %s again for up to %.0f s",
                        describe_error(exc), what, patience,
                    )  # fmt: skip
                tries += 1
                if self.engine is not None:
                    self.engine.dispose()  # its pooled connections died with the server
                time.sleep(min(delay, patience - waited))
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            if tries:
                waited = time.monotonic() - started
                logger.warning("The database answers again after %.1f s; the run goes on", waited)
            return result

    def _give_up(self, what: str, waited: float, exc: BaseException) -> None:
        if self.unavailable:
            return
        self.unavailable = self.storage_failed = True
        self._inc("finews/errors")
        logger.error(
            "The database stayed unavailable for %.0f s (%s) while writing %s: the run stops. "
            "What it could not write is not recorded as rejected: once the database is back, "
            "run the same command again to fetch it.",
            waited, describe_error(exc), what,
        )  # fmt: skip
        if self.on_unavailable is not None:
            self._on_reactor(self.on_unavailable)

    def _write(
        self, articles: list[Article], files: list[dict[str, Any]] | None, counts: dict
    ) -> Outcome:
        with self._engine().begin() as conn:
            outcome = write_batch(
                conn,
                articles,
                run_id=self.run_id,
                now=now(),
                known_categories=self._categories,
            )
            sources.write(conn, files or [], run_id=self.run_id, now=now())
            if self.run_id is not None:  # progress, so a killed run still says how far it got
                ledger.record_counts(conn, self.run_id, counts)
        # Only once committed: a rolled-back category must be written again.
        for slug, outlet in outcome.categories.items():
            self._categories[slug] = outlet or self._categories.get(slug)
        return outcome

    def _count(self, outcome: Outcome) -> None:
        for key, codes in (
            ("finews/stored", outcome.stored),
            ("finews/updated", outcome.updated),
            ("finews/unchanged", outcome.unchanged),
        ):
            if codes:
                self._inc(key, len(codes))

    def _write_rejects(self, rows: list[dict[str, Any]], files: list[dict[str, Any]]) -> None:
        if not (rows or files):
            return
        if self.unavailable:  # the pages are fetched again by the next run, and judged again
            self._unwritten_rejects += len(rows)
            return
        for row in rows:
            row["run_id"] = self.run_id

        def write() -> None:
            with self._engine().begin() as conn:
                if rows:
                    conn.execute(insert(REJECTS), rows)
                sources.write(conn, files, run_id=self.run_id, now=now())

        try:
            self._retrying(write, "rejects")
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            # Nothing is left to hold them: the log is the last place a person can look.
            self.storage_failed = True
            self._inc("finews/errors")
            cause = describe_error(exc.__cause__ or exc)
            logger.error("Could not write %d rejects: %s", len(rows), cause)
            for row in rows:
                logger.error("Lost reject: %s %s: %s", row["url"], row["reason"], row["detail"])

    # -- the backfill's file ledger ------------------------------------------------------

    def source_files(self) -> dict[str, sources.FileRecord]:
        """Every post file an earlier run recorded, by path; read once per run."""
        if self._source_files is None:
            with self._engine().connect() as conn:
                self._source_files = sources.load(conn)
        return self._source_files

    def track_file(self, url: str, row: dict[str, Any]) -> None:
        """Record a post file (path, size, mtime_ns, sha256, info_code) together with what
        its item from ``url`` becomes: the article queued or the reject recorded next."""
        self._files[url] = row

    def release_file(self, url: str) -> None:
        """The item from ``url`` ended without a write (or the file's bytes are unchanged):
        record its file with the next batch."""
        self._take_file(url, sources.ARTICLE, self._file_rows)

    def _take_file(self, url: str | None, status: str, into: list[dict[str, Any]]) -> None:
        if self._files and url is not None:
            row = self._files.pop(url, None)
            if row is not None:
                into.append({**row, "status": row.get("status") or status})

    # -- batching by time -------------------------------------------------------------------

    def _flush_if_due(self) -> None:
        """Start writing the queue when it is a batch or old enough."""
        if self.run_id is None:
            return  # not open yet: nothing may be written before the schema is checked
        queued = len(self._pending)
        if queued >= self.batch_size or (time.monotonic() - self._last_flush >= self.flush_seconds):
            self._flush_soon()

    def backlog(self) -> Awaitable[None] | None:
        """While WRITES_AHEAD batches are still being written, an awaitable for the oldest
        (the caller waits: the database is behind); else None."""
        if len(self._writes) >= WRITES_AHEAD and self._loop is not None:
            return asyncio.wrap_future(self._writes[0], loop=self._loop)
        return None

    def close_writes(self) -> Awaitable[None] | None:
        """Write everything queued: now, or (in a running crawl) an awaitable of the end."""
        if self._writer is None:
            self.flush()
            return None
        return self.drain()

    async def drain(self) -> None:
        """Write everything queued and wait until every write is done (a crawl's close)."""
        self._flush_soon()
        for write in list(self._writes):  # in the order they are written
            with contextlib.suppress(Exception):  # logged by _write_done
                await asyncio.wrap_future(write, loop=self._loop)
        self._apply_effects()

    def _start_timer(self) -> None:
        # Only inside a running crawl: importing the reactor elsewhere would install one.
        if not is_reactor_installed():
            return
        from twisted.internet import reactor

        if not reactor.running:  # type: ignore[attr-defined]
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # a reactor that is not asyncio's: write in place
            self._loop = None
        if self._loop is not None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="finews-store")
            self._writer_thread = self._writer.submit(threading.current_thread).result()
        if self.flush_seconds > 0:
            self._timer = create_looping_call(self._flush_if_due)
            self._timer.start(self.flush_seconds, now=False)

    def _stop_writer(self) -> None:
        """Wait for the writes under way and stop the writer thread; writes happen here again."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
            self._writes.clear()
        self._apply_effects()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None

    def _engine(self) -> Engine:
        if self.engine is None:
            self.engine = make_engine(self.url)
        return self.engine


def _stop_crawl(crawler: Crawler, reason: str) -> None:
    """Ask the engine to close the spider with ``reason`` (the store cannot go on)."""
    from scrapy.utils.defer import deferred_from_coro

    engine = crawler.engine
    if engine is None or not engine.running:
        return
    deferred_from_coro(engine.close_spider_async(reason=reason)).addErrback(
        lambda failure: logger.error("Could not stop the crawl: %s", failure.value)
    )


class StorePipeline:
    """Queues each valid article (each copy of one) for the store's next batch."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.store = Store.for_crawler(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        return cls(crawler)

    def open_spider(self) -> None:
        self.store.open_for_spider(self.crawler.spider)

    def process_item(self, item: Article) -> Article | Awaitable[Article]:
        wait = self.store.add(item)
        return item if wait is None else self._after(wait, item)

    @staticmethod
    async def _after(wait: Awaitable[None], item: Article) -> Article:
        with contextlib.suppress(Exception):  # a failed write is logged and counted once
            await wait  # the database is behind: this item waits for the oldest batch
        return item

    def close_spider(self) -> Awaitable[None] | None:
        return self.store.close_writes()  # the crawl ends when its articles are written
