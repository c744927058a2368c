"""``scrapy crawl archive -a path=DIR``: backfill every post file under DIR.

Arguments (``-a name=value``):

- ``path``: the directory: a checkout of the site's repository (``old_post/``, ``_posts/``)
  or any directory of post files. Walked recursively; symlinks are never followed.
- ``since`` / ``until``: ``YYYY-MM-DD``, inclusive. A file is placed by the date its name
  starts with (files outside are not even read), else by the post's parsed time.
- ``categories``: ``slug1,slug2`` to store only posts of those categories.
- ``refresh``: ``1`` reads every file again. By default a file is passed over when its
  size and mtime are as recorded in ``source_files`` and its article is still stored (or
  it was rejected); a file with new mtime but the same bytes is not parsed either.
- ``workers``: parser processes (default: one per core, at most 4; ``0`` parses here).

One post is one file name: where several files hold it (the same name in ``_posts/`` and
``old_post/``, or saved versions ``<name>.<commit7>.md``), only the newest is read and the
others count as duplicates (``crawler.postfiles.superseded``). The rest are read in path
order and each goes to the store as its own sighting, so the storage rules
(``pipelines.upsert``) decide between an emnews post and an outlet's copy of the same
article exactly as they would across runs. That is why the site crawl's in-run dedupe is
switched off here: with it, a killed and restarted backfill could end differently from an
uninterrupted one.

Counts: every file the walk finds is counted once in ``finews/seen`` (the validate
pipeline counts those that become items, this spider the others), and at the end
``seen = stored + updated + unchanged + duplicates + rejected + skipped``, as in
``crawl_runs``: duplicates are superseded copies, skipped are files passed over
(``finews/skipped/<reason>``: unchanged, outside_window, other_category, not_a_post).

What a file is and whether to read it is decided in ``crawler.postfiles``;
reading and parsing happen in ``crawler.postpool`` (``parse_post``); storing in the
pipelines. This module wires them together and counts.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from scrapy import Spider
from scrapy.settings import BaseSettings

from crawler.items import Article
from crawler.postfiles import (
    UNCHANGED,
    FileRecord,
    Filters,
    Tree,
    is_unchanged,
    still_held,
    superseded,
    walk,
)
from crawler.postpool import PostPool, ReadResult, ReadTask
from crawler.processors import info_code_from_name, parse_flag

logger = logging.getLogger(__name__)

DEDUPE = "pipelines.dedupe.DedupePipeline"
MAX_DEFAULT_WORKERS = 4  # beyond this the crawl process (validate + store) is the limit


class ArchiveSpider(Spider):
    name = "archive"
    custom_settings = {
        # Files seen/total, outcomes, rate and ETA every few seconds; a summary at the end.
        "EXTENSIONS": {
            "crawler.extensions.gctuning.GcTuning": 0,
            "crawler.extensions.progress.Progress": 500,
        },
        # Scrapy's "Crawled 0 pages" line says nothing here; the progress line says it all.
        "LOGSTATS_INTERVAL": 0,
        # No per-item "Scraped from" DEBUG records: ~10% of a backfill's crawl-process time.
        "LOG_FORMATTER": "crawler.logformatter.QuietLogFormatter",
        # Batches are written in this process: the parser workers already keep the other
        # cores busy, and a writer process would add ~55 MB to the 300 MB a backfill may use.
        "FINEWS_STORE_WRITER": False,
    }

    def __init__(
        self,
        path: str | None = None,
        since: str | None = None,
        until: str | None = None,
        categories: str | None = None,
        refresh: str | bool = False,
        workers: str | int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not path:
            raise ValueError("name the directory to backfill: scrapy crawl archive -a path=DIR")
        self.root = Path(path).expanduser().resolve()  # DIR itself may be a symlink
        if not self.root.is_dir():
            raise ValueError(f"path {path!r} is not a directory")
        self.filters = Filters.parse(since, until, categories)
        self.refresh = parse_flag(refresh)
        self.workers = default_workers() if workers in (None, "") else int(workers)
        self.mode = "backfill-refresh" if self.refresh else "backfill"
        self.arguments = {
            "path": str(self.root),
            "since": self.filters.since,
            "until": self.filters.until,
            "categories": sorted(self.filters.categories or []) or "all",
            "refresh": self.refresh,
            "workers": self.workers,
        }
        self.records: dict[str, FileRecord] = {}

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

    @property
    def store(self) -> Any:
        return self.crawler.finews_store  # set up by the pipelines (pipelines.store.Store)

    async def start(self) -> AsyncIterator[Article]:
        pool = PostPool(self.filters, workers=self.workers)
        try:
            async for task, result in pool.read(self.plan()):
                item = self.take(task, result)
                if item is not None:
                    yield item
        finally:
            pool.close()

    def plan(self) -> Iterator[ReadTask]:
        """The files to read, in path order; those passed over are counted here."""
        tree = walk(self.root)
        self.crawler.stats.set_value("finews/files_total", len(tree.files) + len(tree.unreadable))
        self.report(tree)
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

    def report(self, tree: Tree) -> None:
        """Walk findings that are not post files: unreadable entries become rejects."""
        logger.info("Found %d post files under %s", len(tree.files), self.root)
        for entry in tree.unreadable:
            self.crawler.stats.inc_value("finews/seen")
            self.store.reject(Path(entry.path).as_uri(), entry.reason, detail=entry.path)
        if tree.symlinks:
            self.crawler.stats.set_value("finews/symlinks_not_followed", len(tree.symlinks))
            shown = ", ".join(tree.symlinks[:5]) + (" ..." if len(tree.symlinks) > 5 else "")
            logger.info("Not following %d symlinks: %s", len(tree.symlinks), shown)


def default_workers() -> int:
    return max(1, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))
