"""Storage for one crawl: batched upserts, the run ledger, rejects and the stored-set check.

``Store`` is the one object per crawler (``Store.for_crawler(crawler)``, also reachable as
``crawler.finews_store`` so spiders need not import it). It offers

- ``is_stored(info_code)``: is the article in the database or already queued in this run?
  The stored codes are read once per run, on first use, not one SELECT per call;
  ``is_linked(info_code, category)`` and ``was_rejected(url)`` likewise, so an incremental
  crawl can skip a post without fetching it;
- ``reject(url, reason, ...)``: record something that could not be stored (a download
  error, an unreadable file) in ``rejects``, with a stats counter;
- ``add(article)`` / ``add_link(...)``: queue writes; batches flush on size, on time and
  at close, and a failed batch is retried item by item so one bad row costs one reject.
  Batches are written by a writer (``pipelines.writer``): in a writer process when
  ``writer="process"`` (FINEWS_STORE_WRITER, the crawl's default on a machine with a
  second core), else at once in this process. Either way ``finish`` waits for every
  batch before it closes the run's ledger row;
- ``source_files()`` / ``track_file(url, row)`` / ``release_file(url)``: the backfill's file
  ledger (``pipelines.sources``). A tracked file is recorded in the same transaction as
  the article or reject its item becomes, so a killed run never records a file whose
  effect it lost.

The database must be at the newest schema: otherwise ``open`` raises ``SchemaOutdated``
saying to run ``make migrate``, unless FINEWS_AUTO_MIGRATE is true.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.reactor import is_reactor_installed
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from crawler.items import DOWNLOAD_FAILED, Article
from crawler.processors import parse_flag
from pipelines import ledger, sources
from pipelines.upsert import ARTICLES, LINKS, Link, Outcome
from pipelines.writer import (
    EXCERPT_CHARS,
    Batch,
    LocalWriter,
    ProcessWriter,
    Report,
    describe_error,
    excerpt_of,
    now,
)
from schema.db import database_url, make_engine, redact
from schema.models import Reject

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

REJECTS = Reject.__table__
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_SECONDS = 5.0


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
        writer: str = "local",
    ) -> None:
        self.url = database_url(url)
        self.batch_size = max(1, batch_size)
        self.flush_seconds = flush_seconds
        self.auto_migrate = auto_migrate
        self.stats = stats if stats is not None else Counts()
        if writer not in ("local", "process"):
            raise ValueError(f"writer must be 'local' or 'process', not {writer!r}")
        self.writer_kind = writer
        self._writer: LocalWriter | ProcessWriter | None = None
        self._seq = 0
        self._sent: dict[int, Batch] = {}  # handed to the writer, not reported yet
        self._in_flight: dict[str, Article] = {}  # their articles, by infoCode
        self.engine: Engine | None = None
        self.run_id: int | None = None
        self.owns_run = True  # False in a shard process of a split crawl: see ``attach``
        self.storage_failed = False
        self._pending: dict[str, Article] = {}
        self._links: list[Link] = []
        self._rejects: list[dict[str, Any]] = []
        self._stored_codes: set[str] | None = None
        self._linked: set[tuple[str, str]] | None = None
        self._rejected_paths: set[str] | None = None
        self._last_flush = time.monotonic()
        self._timer: Any = None
        self._finished = False
        # Post files (pipelines.sources): a row waits in _files until its item is queued,
        # then rides with it: with the articles batch, or with the rejects.
        self._files: dict[str, dict[str, Any]] = {}
        self._file_rows: list[dict[str, Any]] = []
        self._reject_file_rows: list[dict[str, Any]] = []
        self._source_files: dict[str, sources.FileRecord] | None = None

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
                writer=writer_setting(get.get("FINEWS_STORE_WRITER")),
            )
            crawler.signals.connect(store._spider_closed, signal=signals.spider_closed)
            crawler.signals.connect(store._engine_stopped, signal=signals.engine_stopped)
            crawler.finews_store = store  # type: ignore[attr-defined]
        return store

    def open(self, spider: str, *, mode: str = "crawl", arguments: dict | None = None) -> int:
        """Check the schema and open the run's ledger row; returns its id. Idempotent."""
        if self.run_id is not None:
            return self.run_id
        from schema.migrate import is_blank, require_current, upgrade  # Alembic: ~0.1 s

        engine = self._engine()
        try:
            # A blank database (a new SQLite file) gets the schema; one that holds tables
            # is only migrated when asked, so nobody's data changes shape by surprise.
            if self.auto_migrate or is_blank(engine):
                upgrade(self.url)
            require_current(engine)
            self.run_id = ledger.open_run(
                engine, spider=spider, mode=mode, arguments=arguments or {}, now=now()
            )
        except Exception:
            engine.dispose()
            raise
        if self._writer is None:
            self._writer = self._start_writer()
        logger.info("Storing to %s as run %d", redact(self.url), self.run_id)
        self._start_timer()
        return self.run_id

    def _start_writer(self) -> LocalWriter | ProcessWriter:
        if self.writer_kind == "process" and self.url.get_backend_name() == "sqlite":
            database = self.url.database or ""
            if not database or database == ":memory:" or "mode=memory" in str(self.url):
                return LocalWriter(self.url)  # another process would see another database
        if self.writer_kind == "process":
            try:
                return ProcessWriter(self.url)
            except OSError as exc:
                logger.warning("No writer process (%s): writing in the crawl process", exc)
        return LocalWriter(self.url)

    def attach(self, run_id: int) -> int:
        """Write under a run another process opened and closes (a shard process of a split
        crawl, ``crawler.shards``): no ledger row of its own, no progress counts in it."""
        if self.run_id is not None:
            return self.run_id
        self._engine()  # the crawl process checked the schema before it opened the run
        self.run_id = run_id
        self.owns_run = False
        if self._writer is None:
            self._writer = self._start_writer()
        self._start_timer()
        return run_id

    def open_for_spider(self, spider: Any) -> int:
        """``open`` with the spider's name, ``mode`` ("crawl") and ``arguments`` ({}); or
        ``attach`` to the run of the crawl it is a shard of (``spider.shard_run``)."""
        shard_run = getattr(spider, "shard_run", None)
        if shard_run is not None:
            return self.attach(shard_run)
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
            self.sync()
        except Exception:
            logger.exception("Could not write the last batch")
            self.storage_failed = True
        if self._writer is not None:
            self._writer.close()
        status = ledger.status_for(reason, storage_failed=self.storage_failed)
        if not self.owns_run:
            if self.engine is not None:
                self.engine.dispose()
            return status
        if self.run_id is not None and self.engine is not None:
            try:
                ledger.close_run(
                    self.engine,
                    self.run_id,
                    status=status,
                    reason=reason,
                    counts=ledger.counts_from(self.stats),
                    now=now(),
                    exit_status=exit_status,
                )
            except SQLAlchemyError as exc:
                logger.error("Could not close run %s: %s", self.run_id, describe_error(exc))
        if self.engine is not None:
            self.engine.dispose()
        if self.run_id is not None:
            logger.info("Run %d %s (%s)", self.run_id, status, reason)
        return status

    def _spider_closed(self, spider: Any, reason: str) -> None:
        self.finish(reason)

    def _engine_stopped(self) -> None:
        # Reached only when spider_closed never came: the crawl died on the way.
        if not self._finished and self.run_id is not None:
            self.finish("engine_stopped")

    # -- what spiders and commands may call ---------------------------------------------

    def is_stored(self, info_code: str) -> bool:
        """True if the article is stored or queued in this run: no need to fetch it again."""
        if info_code in self._pending or info_code in self._in_flight:
            return True
        return info_code in self.stored_codes()

    def stored_codes(self) -> set[str]:
        """Every stored infoCode, read once per run; codes written since are added."""
        if self._stored_codes is None:
            with self._engine().connect() as conn:
                self._stored_codes = set(conn.execute(select(ARTICLES.c.info_code)).scalars())
        return self._stored_codes

    def is_linked(self, info_code: str, category: str) -> bool:
        """True if the article is stored or queued with a link to ``category``."""
        for queued in (self._pending.get(info_code), self._in_flight.get(info_code)):
            if queued is not None and (
                queued.category == category or category in queued.more_categories
            ):
                return True
        if self._linked is None:
            with self._engine().connect() as conn:
                rows = conn.execute(select(LINKS.c.info_code, LINKS.c.category))
                self._linked = {(code, slug) for code, slug in rows}
        return (info_code, category) in self._linked

    def was_rejected(self, url: str) -> bool:
        """True if an earlier run rejected the page at ``url`` for what it holds.

        Pages are compared by path, so a mirror on another port is the same site. A failed
        download (reason ``DOWNLOAD_FAILED``) does not count: the next run tries it again.
        """
        if self._rejected_paths is None:
            query = select(REJECTS.c.url).distinct()
            query = query.where(REJECTS.c.url.is_not(None), REJECTS.c.reason != DOWNLOAD_FAILED)
            with self._engine().connect() as conn:
                self._rejected_paths = {urlsplit(u).path for u in conn.execute(query).scalars()}
        return bool(self._rejected_paths) and urlsplit(url).path in self._rejected_paths

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

    # -- what the pipelines call --------------------------------------------------------

    def add(self, article: Article) -> None:
        """Queue a valid article (``info_code`` set) for the next batch."""
        assert article.info_code, "validate before storing"
        if article.info_code in self._pending:
            # The same article twice in a batch: write the first, then compare with it.
            self.flush()
        self._pending[article.info_code] = article
        self._take_file(article.url, sources.ARTICLE, self._file_rows)
        self._flush_if_due()

    def add_link(self, info_code: str, category: str, url: str) -> None:
        """The article was also seen under ``category``: record that link."""
        self._take_file(url, sources.ARTICLE, self._file_rows)
        pending = self._pending.get(info_code)
        if pending is not None:
            if category != pending.category:
                pending.more_categories.setdefault(category, url)
            return
        self._links.append(Link(info_code, category, url))
        self._flush_if_due()

    def flush(self) -> None:
        """Hand everything queued to the writer: articles and links in one transaction;
        then write the rejects. With a writer process, the batch may still be on its way:
        ``sync`` waits for it."""
        if self._pending or self._links or self._file_rows:
            self._submit()
        self._collect(self._writer.ready() if self._writer else [])
        self._write_rejects()

    def sync(self) -> None:
        """Flush, then wait until the writer has written every batch."""
        self.flush()
        if self._writer is not None:
            self._collect(self._writer.drain())
            self._write_rejects()

    def _submit(self) -> None:
        if self._writer is None:  # not opened: a store used only to read
            self._writer = LocalWriter(self.url)
        self._seq += 1
        batch = Batch(
            self._seq,
            self.run_id,
            list(self._pending.values()),
            self._links,
            self._file_rows,
            ledger.counts_from(self.stats) if self.run_id is not None and self.owns_run else None,
        )
        self._pending, self._links, self._file_rows = {}, [], []
        self._last_flush = time.monotonic()
        self._sent[batch.seq] = batch
        self._in_flight.update((a.info_code, a) for a in batch.articles if a.info_code)
        self.stats.inc_value("finews/batches")
        self._writer.submit(batch)

    def _collect(self, reports: list[Report]) -> None:
        """Count what the writer reports, and queue the rejects it could not store."""
        for report in reports:
            batch = self._sent.pop(report.seq)
            for article in batch.articles:
                if article.info_code and self._in_flight.get(article.info_code) is article:
                    del self._in_flight[article.info_code]
            if report.error is not None:
                self._lost_batch(batch, report.error)
                continue
            if report.failed is not None:
                self.stats.inc_value("finews/batch_failures")
                logger.warning(
                    "A batch of %d articles failed (%s); retried them one by one",
                    len(batch.articles),
                    report.failed,
                )
            for outcome in report.outcomes:
                self._count(outcome)
            if self._linked is not None:
                self._linked.update(_links_written(batch, report))
            for reject in report.rejects:
                self.reject(reject.url, reject.reason, detail=reject.detail,
                            excerpt=reject.excerpt, info_code=reject.info_code)  # fmt: skip
            self._reject_file_rows.extend(report.reject_files)

    def _lost_batch(self, batch: Batch, error: str) -> None:
        """The writer failed on a batch for another reason than the database: a bug."""
        self.storage_failed = True
        self.stats.inc_value("finews/errors")
        logger.error(
            "Could not write a batch of %d articles: the writer failed.\n%s",
            len(batch.articles),
            error.rstrip(),
        )
        detail = error.strip().splitlines()[-1][:500] if error.strip() else None
        for article in batch.articles:
            self.reject_item(article, "storage error", detail)
        for link in batch.links:
            self.reject(link.url, "storage error", detail=detail, info_code=link.info_code)
        self._reject_file_rows.extend(batch.files)

    def _count(self, outcome: Outcome) -> None:
        for key, codes in (
            ("finews/stored", outcome.stored),
            ("finews/updated", outcome.updated),
            ("finews/unchanged", outcome.unchanged),
            ("finews/unchanged/other_category", outcome.other_category),
        ):
            if codes:
                self.stats.inc_value(key, len(codes))
        if self._stored_codes is not None:
            self._stored_codes.update(outcome.stored)
        for link in outcome.orphans:
            self.reject(
                link.url,
                "article not stored",
                detail=f"seen under {link.category}, but its first sighting was not stored",
                info_code=link.info_code,
            )

    def _write_rejects(self) -> None:
        if not (self._rejects or self._reject_file_rows):
            return
        rows, self._rejects = self._rejects, []
        files, self._reject_file_rows = self._reject_file_rows, []
        for row in rows:
            row["run_id"] = self.run_id
        try:
            with self._engine().begin() as conn:
                if rows:
                    conn.execute(insert(REJECTS), rows)
                sources.write(conn, files, run_id=self.run_id, now=now())
        except SQLAlchemyError as exc:
            # Nothing is left to hold them: the log is the last place a person can look.
            self.storage_failed = True
            self.stats.inc_value("finews/errors")
            logger.error("Could not write %d rejects: %s", len(rows), describe_error(exc))
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
        if self.run_id is None:
            return  # not open yet: nothing may be written before the schema is checked
        queued = len(self._pending) + len(self._links)
        if queued >= self.batch_size or (time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def _tick(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()
        elif self._writer is not None:  # the writer's reports, counted while the crawl waits
            self._collect(self._writer.ready())
            self._write_rejects()

    def _start_timer(self) -> None:
        # Only inside a running crawl: importing the reactor elsewhere would install one.
        if self.flush_seconds <= 0 or not is_reactor_installed():
            return
        from twisted.internet import reactor

        if not reactor.running:  # type: ignore[attr-defined]
            return
        self._timer = create_looping_call(self._tick)
        self._timer.start(self.flush_seconds, now=False)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None

    def _engine(self) -> Engine:
        if self.engine is None:
            self.engine = make_engine(self.url)
        return self.engine


def _links_written(batch: Batch, report: Report) -> set[tuple[str, str]]:
    """(infoCode, category) of the links a reported batch wrote."""
    written = {code for o in report.outcomes for code in (*o.stored, *o.updated, *o.unchanged)}
    orphans = {(link.info_code, link.category) for o in report.outcomes for link in o.orphans}
    pairs = {(link.info_code, link.category) for link in batch.links}
    for article in batch.articles:
        if article.info_code in written:
            categories = [article.category, *article.more_categories] if article.category else []
            pairs.update((article.info_code, slug) for slug in categories)
    rejected = {reject.info_code for reject in report.rejects}
    return {pair for pair in pairs - orphans if pair[0] not in rejected}


def writer_setting(value: Any) -> str:
    """FINEWS_STORE_WRITER as a writer kind: true "process", false "local", None auto."""
    if value is None or value == "":
        return "process" if (os.cpu_count() or 1) > 1 else "local"
    return "process" if parse_flag(value) else "local"


class StorePipeline:
    """Queues each valid, first-seen article for the store's next batch."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.store = Store.for_crawler(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        return cls(crawler)

    def open_spider(self) -> None:
        self.store.open_for_spider(self.crawler.spider)

    def process_item(self, item: Article) -> Article:
        self.store.add(item)
        return item

    def close_spider(self) -> None:
        self.store.sync()  # the crawl ends when its articles are written, not before
