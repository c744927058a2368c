"""``scrapy crawl archive -a path=DIR``: backfill every post file under DIR.

Arguments (``-a name=value``):

- ``path``: a checkout of the site's repository (``old_post/``, ``_posts/``) or any directory
  of post files, walked recursively; symlinks are never followed.
- ``since`` / ``until``: ``YYYY-MM-DD``, inclusive, by the date a file's name starts with
  (files outside are not even read), else by the post's parsed time.
- ``categories``: ``slug1,slug2`` to store only posts of those categories.
- ``refresh``: ``1`` reads every file again. By default a file is passed over when its size
  and mtime are as recorded in ``source_files`` and its article is still stored (or it was
  rejected); a file with a new mtime but the same bytes is not parsed either.
- ``workers``: parser processes (default: one per core, at most 4; ``0`` parses here).

Of several files holding one post (one file name) only the newest is read; the others count
as duplicates (``crawler.postfiles.superseded``). Every file read is its own copy, merged by
the store (``pipelines.upsert``) with the article's other copies (an emnews post and an
outlet's) whatever their order; the site crawl's in-run dedupe is off, so that a killed and
restarted backfill ends as an uninterrupted one.

Counts: every file found is counted once in ``finews/seen`` (by the validate pipeline if it
becomes an item, else here), and ``seen = stored + updated + unchanged + duplicates +
rejected + skipped`` (``finews/skipped/<reason>``), as in ``crawl_runs``.

Parsing is the backfill's CPU cost, so ``ParserPool`` reads and parses files in a
``ProcessPoolExecutor`` while this process validates and stores: in chunks (one future per
chunk spares the executor's management thread), at most ``workers * AHEAD`` chunks in flight
(memory bounded whatever the tree), results in file order (deterministic: a restarted backfill
converges to the same rows); small jobs and ``workers=0`` are read here. Workers start by
``forkserver`` (else ``spawn``), never as a fork of this process (reactor, threads, database
connections), run niced, ignore Ctrl-C (Scrapy stops them) and exit if this process dies.

A worker leaves a chunk's results in a file of a spool directory and hands back only the file's
name. The executor notices a dead worker only between messages on its result pipe: a worker
killed part-way through sending a large result (hundreds of KB, several pipe buffers) would
leave the executor's management thread waiting for the rest of the message forever, and the
backfill hung, even at exit. A name is one atomic write to the pipe; a half-written file is
never named. The spool is removed when the pool closes; one left by a crawl process that died
(kill -9) is removed by the next pool, its name carrying the dead process's pid.

A dead worker (killed, out of memory) breaks the executor and loses the files it held: the
backfill stops with one ERROR line and the close reason ``parser_pool_broken`` once the items
sent are stored. The same command run again passes over the files stored and reads the rest
(reading them here would hide the death behind a slow run). The executor is shut down, queued
chunks cancelled, when ``start()`` ends or is abandoned and when the spider closes.

What a file is and how to read it is ``crawler.postfiles``'s; this module wires it up and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain, islice
from pathlib import Path
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.settings import BaseSettings

from crawler.items import Article
from crawler.postfiles import (
    UNCHANGED,
    FileRecord,
    Filters,
    ReadResult,
    ReadTask,
    is_unchanged,
    read_chunk,
    still_held,
    superseded,
    walk,
)
from crawler.processors import info_code_from_name, parse_flag
from crawler.scaleout import pid_exists

logger = logging.getLogger(__name__)

DEDUPE = "pipelines.dedupe.DedupePipeline"
MAX_DEFAULT_WORKERS = 4  # beyond this the crawl process (validate + store) is the limit
CHUNK_SIZE = 64  # files a future: ~40 ms of parsing
AHEAD = 4  # chunks in flight per worker
INLINE_BELOW = 256  # fewer files than this are read in the crawl process
NICENESS = 10  # workers yield a shared core to the crawl process, which everything waits on
BROKEN = "parser_pool_broken"  # the close reason when a worker died
SPOOL_PREFIX = "finews-parsed-"  # + the crawl process's pid + "-": where workers leave results

Reader = Callable[[Sequence[ReadTask], Filters], list[ReadResult]]


class ArchiveSpider(Spider):
    name = "archive"
    custom_settings = {
        # Files seen/total, outcomes, rate and ETA every few seconds; a summary at the end.
        "EXTENSIONS": {"crawler.extensions.progress.Progress": 500},
        # Scrapy's "Crawled 0 pages" line says nothing here; the progress line says it all.
        "LOGSTATS_INTERVAL": 0,
        # No per-item "Scraped from" DEBUG records: ~10% of a backfill's crawl-process time.
        "LOG_FORMATTER": "crawler.logformatter.QuietLogFormatter",
    }

    def __init__(
        self, path: str | None = None, since: str | None = None, until: str | None = None,
        categories: str | None = None, refresh: str | bool = False,
        workers: str | int | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        if not path:
            raise ValueError("name the directory to backfill: scrapy crawl archive -a path=DIR")
        self.root = Path(path).expanduser().resolve()  # DIR itself may be a symlink
        if not self.root.is_dir():
            raise ValueError(f"path {path!r} is not a directory")
        self.filters = Filters.parse(since, until, categories)
        self.refresh = parse_flag(refresh)
        if workers in (None, ""):
            workers = max(1, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))
        self.workers = int(workers)
        self.mode = "backfill-refresh" if self.refresh else "backfill"
        self.arguments = {
            "path": str(self.root), "since": self.filters.since, "until": self.filters.until,
            "categories": sorted(self.filters.categories or []) or "all",
            "refresh": self.refresh, "workers": self.workers,
        }  # fmt: skip
        self.records: dict[str, FileRecord] = {}
        self.pool = ParserPool(self.filters, workers=self.workers)
        self.stop_reason: str | None = None  # set when the backfill cannot go on

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> ArchiveSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.idle, signal=signals.spider_idle)
        return spider

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        # The site crawl's pipelines, but every file is its own sighting (module docstring).
        pipelines = {**settings.getdict("ITEM_PIPELINES"), DEDUPE: None}
        settings.set("ITEM_PIPELINES", pipelines, priority="spider")
        # Only items come out of start(), no request or response: spider middlewares have
        # nothing to do, yet each item would pass through six of them (~15% of the time).
        off = dict.fromkeys(settings.getdict("SPIDER_MIDDLEWARES_BASE"))
        middlewares = {**settings.getdict("SPIDER_MIDDLEWARES"), **off}
        settings.set("SPIDER_MIDDLEWARES", middlewares, priority="spider")
        # Nothing to redirect either; those two would warn that the Referer one is off.
        off = dict.fromkeys(f"scrapy.downloadermiddlewares.redirect.{name}Middleware"
                            for name in ("Redirect", "MetaRefresh"))  # fmt: skip
        middlewares = {**settings.getdict("DOWNLOADER_MIDDLEWARES"), **off}
        settings.set("DOWNLOADER_MIDDLEWARES", middlewares, priority="spider")

    @property
    def store(self) -> Any:
        return self.crawler.finews_store  # set up by the pipelines (pipelines.store.Store)

    async def start(self) -> AsyncIterator[Article]:
        try:
            async for task, result in self.pool.read(self.plan()):
                item = self.take(task, result)
                if item is None:
                    continue
                # Scrapy sends start() items to the pipelines without waiting for them: when
                # the database is behind, read no further ahead (memory stays bounded).
                if (backlog := self.store.backlog()) is not None:
                    with contextlib.suppress(Exception):  # a failed write: logged by the store
                        await backlog
                yield item
        except BrokenProcessPool as exc:
            logger.error(
                "The parser processes died (%s): the backfill stops here. Run the same "
                "command again to resume: files already stored are passed over.", exc,
            )  # fmt: skip
            self.stop_reason = BROKEN
        finally:
            self.pool.close()

    def idle(self) -> None:
        """Everything sent is stored: close with the reason the backfill stopped, if any.
        (CloseSpider raised in start() with items in the pipelines may hang Scrapy 2.19.)"""
        if self.stop_reason is not None:
            raise CloseSpider(self.stop_reason)

    def closed(self, reason: str) -> None:
        self.pool.close()  # start() abandoned (Ctrl-C) may not have reached its finally

    def plan(self) -> Iterator[ReadTask]:
        """The files to read, in path order; those passed over are counted here."""
        tree = walk(self.root)
        stats = self.crawler.stats
        stats.set_value("finews/files_total", len(tree.files) + len(tree.unreadable))
        logger.info("Found %d post files under %s", len(tree.files), self.root)
        for entry in tree.unreadable:  # unreadable entries become rejects
            stats.inc_value("finews/seen")
            self.store.reject(Path(entry.path).as_uri(), entry.reason, detail=entry.path)
        if tree.symlinks:
            stats.set_value("finews/symlinks_not_followed", len(tree.symlinks))
            shown = ", ".join(tree.symlinks[:5]) + (" ..." if len(tree.symlinks) > 5 else "")
            logger.info("Not following %d symlinks: %s", len(tree.symlinks), shown)
        self.records = {} if self.refresh else self.store.source_files()
        stored = self.store.stored_codes()
        older = superseded(tree.files)
        # The tree and the records live as long as the run: spare them the collector's
        # full passes, which walk every object (~10% of a 100,000-file backfill).
        gc.freeze()
        for file in tree.files:
            if file.path in older:
                self.count("finews/duplicates", "finews/duplicates/superseded")
                continue
            reason = self.filters.skip_by_name(file)
            record = self.records.get(file.path)
            if reason is None and is_unchanged(file, record, stored):
                reason = UNCHANGED
            if reason is not None:
                self.skip(reason)
                continue
            known = record.sha256 if record is not None and still_held(record, stored) else None
            yield ReadTask(file.path, file.url, file.named_as_post, known, file.size, file.mtime_ns)

    def take(self, task: ReadTask, result: ReadResult) -> Article | None:
        """A read file's item to send on; a reject or a skip is recorded and counted here."""
        row = {"path": task.path, "size": task.size, "mtime_ns": task.mtime_ns}
        row["sha256"] = result.sha256
        if result.article is not None:
            self.store.track_file(task.url, {**row, "info_code": result.article.info_code})
            return result.article
        self.crawler.stats.inc_value("finews/seen")
        if result.error is not None:
            code = info_code_from_name(os.path.basename(task.path))
            if result.sha256 is not None:  # unreadable files are tried again next run
                self.store.track_file(task.url, {**row, "info_code": code})
            if result.crashed:
                logger.error("Parser error on %s: %s", task.path, result.error)
            self.store.reject(
                task.url, result.error, detail=task.path, excerpt=result.excerpt, info_code=code
            )
            return None
        if result.skipped == UNCHANGED:  # new mtime, same bytes: remember the new mtime
            known = self.records[task.path]
            self.store.track_file(
                task.url, {**row, "info_code": known.info_code, "status": known.status}
            )
            self.store.release_file(task.url)
        self.skip(result.skipped or "unknown", seen=False)
        return None

    def skip(self, reason: str, *, seen: bool = True) -> None:
        self.count("finews/skipped", f"finews/skipped/{reason}", seen=seen)

    def count(self, *keys: str, seen: bool = True) -> None:
        stats = self.crawler.stats
        for key in ("finews/seen", *keys) if seen else keys:
            stats.inc_value(key)


class ParserPool:
    """``read(tasks)`` yields ``(task, result)`` in task order; ``close()`` stops the workers.
    A dead worker breaks the pool: ``read`` raises ``BrokenProcessPool``."""

    def __init__(
        self, filters: Filters, workers: int = 2, *, chunk_size: int = CHUNK_SIZE,
        ahead: int = AHEAD, inline_below: int = INLINE_BELOW, reader: Reader = read_chunk,
    ) -> None:  # fmt: skip
        self.filters = filters
        self.workers = max(0, workers)
        self.chunk_size = max(1, chunk_size)
        self.ahead = max(1, ahead)
        self.inline_below = inline_below
        self.reader = reader  # a module-level function: workers import it by name
        self.executor: ProcessPoolExecutor | None = None
        self.spool: str | None = None  # where workers leave their results

    async def read(self, tasks: Iterable[ReadTask]) -> AsyncIterator[tuple[ReadTask, ReadResult]]:
        source = iter(tasks)
        chunks = iter(lambda: list(islice(source, self.chunk_size)), [])  # until one is empty
        # Look ahead: a job smaller than inline_below is not worth starting workers for.
        first = list(islice(chunks, -(-max(1, self.inline_below) // self.chunk_size)))
        chunks = chain(first, chunks)
        if self.workers == 0 or sum(map(len, first)) < self.inline_below:
            for chunk in chunks:
                for pair in zip(chunk, self.reader(chunk, self.filters), strict=True):
                    yield pair
            return
        try:
            _remove_dead_spools()
            self.spool = spool = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-")
            self.executor = executor = self._new_executor()
            # At most workers * ahead chunks in flight; answers are taken in task order.
            pending: deque[tuple[list[ReadTask], Future[str]]] = deque()
            room = self.workers * self.ahead
            while True:
                while len(pending) < room and (chunk := next(chunks, None)) is not None:
                    job = executor.submit(_hand_back, self.reader, chunk, self.filters, spool)
                    pending.append((chunk, job))
                if not pending:
                    return
                chunk, future = pending.popleft()
                results = _take_back(await asyncio.wrap_future(future))
                for pair in zip(chunk, results, strict=True):
                    yield pair
        finally:
            self.close()

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver where there is one (its server imports the parser once and forks workers
        # from that), else spawn: never a fork of the crawl process itself.
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])  # not __main__: the scrapy command line
        else:
            context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker)

    def close(self) -> None:
        """Stop the workers; chunks not started are cancelled, a run's restart reads them."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


def _remove_dead_spools() -> None:
    """Remove the spools of crawl processes that are gone: killed before they could."""
    for spool in Path(tempfile.gettempdir()).glob(f"{SPOOL_PREFIX}*-*"):
        pid = spool.name.removeprefix(SPOOL_PREFIX).partition("-")[0]
        if pid.isdigit() and not pid_exists(int(pid)):
            shutil.rmtree(spool, ignore_errors=True)


def _hand_back(reader: Reader, tasks: Sequence[ReadTask], filters: Filters, spool: str) -> str:
    """In a worker: read a chunk and leave its results in a new file of ``spool``, whose name
    goes back through the executor's pipe (see the module's docstring for why)."""
    results = reader(tasks, filters)
    descriptor, path = tempfile.mkstemp(dir=spool, suffix=".pickle")
    with os.fdopen(descriptor, "wb") as file:
        pickle.dump(results, file, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _take_back(path: str) -> list[ReadResult]:
    """In the crawl process: the results a worker left in ``path``; the file is removed."""
    try:
        with open(path, "rb") as file:
            return pickle.load(file)  # written by our own worker, just now
    finally:
        os.unlink(path)


def _start_worker() -> None:
    """A parser worker's set-up: Ctrl-C is the crawl process's to handle, the crawl process
    goes first on a shared core, and the worker exits when the crawl process dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()  # forked from the forkserver: what it imported stays shared, not collected
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent", daemon=True).start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the parent's end of the pipe closes: it died
    os._exit(1)
