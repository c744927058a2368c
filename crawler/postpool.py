"""Read and parse post files in worker processes: results in order, bounded work in flight.

Parsing is the backfill's CPU cost (``parse_post`` is ~0.6 ms a post, PERF.md), so it runs
in a small process pool while the crawl process validates and stores. Tasks go out in
chunks (one round trip per chunk, not per file) and at most ``workers * ahead`` chunks are
in flight, so memory stays bounded whatever the size of the tree. Results come back in
task order: a backfill is deterministic, and a restarted one converges to the same rows.

The workers are a ``crawler.childproc.WorkerPool``: processes that talk to the crawl
process over their stdin/stdout pipes, read by the crawl's own event loop, so no executor
thread competes with the crawl thread for the GIL (with ``ProcessPoolExecutor`` its
manager thread starved and the workers idled). Workers read the files themselves (never
through a symlink), hash the bytes and parse them. They run at a lower priority than the
crawl process (``crawler.childproc.NICENESS``), which everything waits on. A worker that
dies costs speed, not files: the others, or the crawl process, read what it held. Small
jobs are read in the crawl process itself: starting workers costs more than it saves.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from crawler.childproc import WorkerPool
from crawler.items import Article
from crawler.pages import ExtractionError
from crawler.pages.post import parse_post, split_front_matter
from crawler.postfiles import NOT_A_POST, UNCHANGED, Filters

EXCERPT_BYTES = 1200  # the store keeps 300 characters; 1,200 bytes hold them in UTF-8
CHUNK_SIZE = 32  # files per round trip: ~25 ms of parsing
AHEAD = 16  # chunks in flight per worker (~0.5 s of work): no bubbles, ~5 MB of results
INLINE_BELOW = 256  # fewer files than this are read in the crawl process


@dataclass(frozen=True, slots=True)
class ReadTask:
    """One file to read; ``known_sha256`` is the hash of bytes already ingested."""

    path: str
    url: str
    named_as_post: bool
    known_sha256: str | None = None
    size: int = 0  # as the walk saw it, for the file ledger
    mtime_ns: int = 0


@dataclass(slots=True)
class ReadResult:
    """What a file held: an article, why it cannot be read, or why it was passed over."""

    sha256: str | None = None  # None when the file could not be read at all
    article: Article | None = None
    error: str | None = None  # a reject's reason
    excerpt: bytes | None = None
    skipped: str | None = None  # a crawler.postfiles skip reason
    crashed: bool = False  # the parser raised something other than ExtractionError


def read_post_file(task: ReadTask, filters: Filters) -> ReadResult:
    """Read, hash and parse one file; never raises."""
    try:
        data = read_nofollow(task.path)
    except OSError as exc:
        return ReadResult(error=f"cannot read file: {exc.strerror or exc}")
    digest = hashlib.sha256(data).hexdigest()
    if digest == task.known_sha256:
        return ReadResult(digest, skipped=UNCHANGED)
    if not task.named_as_post and not has_post_front_matter(data):
        return ReadResult(digest, skipped=NOT_A_POST)
    try:
        article = parse_post(data, task.url)
    except ExtractionError as exc:
        return ReadResult(digest, error=exc.reason, excerpt=data[:EXCERPT_BYTES])
    except Exception as exc:  # a parser bug must cost one file, not the backfill
        reason = f"parser error: {type(exc).__name__}: {exc}"
        return ReadResult(digest, error=reason, excerpt=data[:EXCERPT_BYTES], crashed=True)
    published = article.published_at.date() if article.published_at else None
    skip = filters.skip_by_content(os.path.basename(task.path), published, article.category)
    if skip is not None:
        return ReadResult(digest, skipped=skip)
    return ReadResult(digest, article=article)


def read_nofollow(path: str) -> bytes:
    """The file's bytes; a symlink put in its place since the walk is refused (ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def has_post_front_matter(data: bytes) -> bool:
    """True for a Markdown file whose front matter says ``layout: post``."""
    try:
        front, _ = split_front_matter(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ExtractionError):
        return False
    return str(front.get("layout") or "").strip() == "post"


def reader(filters: Filters) -> Callable[[ReadTask], ReadResult]:
    """What a parser worker does with each file (see ``crawler.childproc.serve``)."""
    return functools.partial(read_post_file, filters=filters)


class PostPool:
    """``read(tasks)`` yields ``(task, result)`` in task order; ``close()`` stops workers."""

    def __init__(
        self,
        filters: Filters,
        workers: int = 2,
        chunk_size: int = CHUNK_SIZE,
        ahead: int = AHEAD,
        inline_below: int = INLINE_BELOW,
    ) -> None:
        self.filters = filters
        self.workers = max(0, workers)
        self.chunk_size = max(1, chunk_size)
        self.ahead = max(1, ahead)
        self.inline_below = inline_below
        self._pool: WorkerPool | None = None

    async def read(self, tasks: Iterable[ReadTask]) -> AsyncIterator[tuple[ReadTask, ReadResult]]:
        chunks = _chunked(iter(tasks), self.chunk_size)
        # Look ahead: a job smaller than inline_below is not worth starting workers for.
        first = list(islice(chunks, max(1, -(-self.inline_below // self.chunk_size))))
        small = sum(map(len, first)) < self.inline_below
        if self.workers == 0 or small:
            for chunk in _chain(first, chunks):
                for task in chunk:
                    yield task, read_post_file(task, self.filters)
            return
        try:
            async for pair in self._read_in_workers(_chain(first, chunks)):
                yield pair
        finally:
            self.close()

    async def _read_in_workers(
        self, chunks: Iterator[list[ReadTask]]
    ) -> AsyncIterator[tuple[ReadTask, ReadResult]]:
        self._pool = pool = self._new_pool()
        pool.start()
        # At most workers * ahead chunks in flight; answers are taken in task order.
        pending: deque[tuple[ReadTask, asyncio.Future[ReadResult]]] = deque()
        room = self.workers * self.ahead * self.chunk_size
        while True:
            while len(pending) + self.chunk_size <= room:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                pending.extend((task, pool.submit(task)) for task in chunk)
            if not pending:
                break
            task, future = pending.popleft()
            yield task, await future

    def _new_pool(self) -> WorkerPool:
        return WorkerPool(
            "crawler.postpool:reader", self.filters, self.workers, name="parser",
            batch=self.chunk_size, in_flight=self.ahead,
        )  # fmt: skip

    def close(self) -> None:
        """Stop the workers now; files they hold are dropped (a restart reads them)."""
        if self._pool is not None:
            self._pool.close(drop=True)
            self._pool = None


def _chunked(tasks: Iterator[ReadTask], size: int) -> Iterator[list[ReadTask]]:
    while chunk := list(islice(tasks, size)):
        yield chunk


def _chain(first: list[list[ReadTask]], rest: Iterator[list[ReadTask]]) -> Iterator[list[ReadTask]]:
    yield from first
    yield from rest
