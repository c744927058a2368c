"""Read post pages in worker processes while the crawl process downloads.

Scrapy's own work on a page (about 2 ms here) keeps the crawl process's core busy, and
``parse_page`` adds about 1 ms more: in the crawl process it would cost a third of the
crawl's speed (shared/PERF.md). With FINEWS_PAGE_WORKERS >= 1, pages are read
(``crawler.pages.site.read_post_page``) in that many worker processes on the other cores;
the crawl process only sends the bytes and unpickles the answer, ~50 µs a page.
FINEWS_PAGE_WORKERS = 0, or a one-core machine, reads pages in the crawl process.

No threads: each worker has a pipe, and the event loop reads answers when the pipe is
readable. A worker holds at most ``IN_FLIGHT`` pages (the one it reads and the next), so a
send never waits long on a full pipe; further pages queue here. Workers start with the
"spawn" method (nothing of the crawl's state is copied), ignore Ctrl-C and exit when their
pipe closes: at close, or when the crawl process dies. If a worker dies, its pages and all
later ones are read in the crawl process, and the crawl goes on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from crawler.pages.site import PostPage, read_post_page

logger = logging.getLogger(__name__)

IN_FLIGHT = 2

Job = tuple[bytes, str, str | None]  # body, URL, Content-Type


def default_workers() -> int:
    """One worker when a second core exists: Scrapy keeps the first one busy."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


def work(conn: Connection, root: str) -> None:
    """A worker's life: read jobs from the pipe, answer each with a pickled PostPage."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the crawl process decides when to stop
    while True:
        try:
            body, url, content_type = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            answer: Any = read_post_page(body, url, root, content_type)
        except Exception as exc:  # a parser bug: report it, keep serving
            answer = exc
        conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    sent: deque[tuple[Job, asyncio.Future]] = field(default_factory=deque)  # in pipe order


class PagePool:
    """``await pool.read(body, url, content_type)`` gives the page's ``PostPage``."""

    def __init__(self, root: str, workers: int) -> None:
        self.root = root
        self.size = max(0, workers)
        self._workers: list[_Worker] = []
        self._waiting: deque[tuple[Job, asyncio.Future]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inline = 0  # pages read in the crawl process after a worker failed

    def start(self) -> None:
        """Start the workers (they boot while the first listing pages download)."""
        if self.size == 0 or self._workers:
            return
        self._loop = asyncio.get_event_loop()
        context = multiprocessing.get_context("spawn")
        for n in range(self.size):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=work, args=(theirs, self.root), name=f"finews-page-{n}", daemon=True
            )
            process.start()
            theirs.close()
            worker = _Worker(process, ours)
            self._workers.append(worker)
            self._loop.add_reader(ours.fileno(), self._answered, worker)

    async def read(self, body: bytes, url: str, content_type: str | None) -> PostPage:
        if not self._workers:
            return read_post_page(body, url, self.root, content_type)
        assert self._loop is not None
        future = self._loop.create_future()
        self._waiting.append(((body, url, content_type), future))
        self._send()
        answer = await future
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        """Stop the workers; pages still waiting are read here."""
        for worker in list(self._workers):
            self._retire(worker, "closing")

    # -- the pipes ----------------------------------------------------------------------------

    def _send(self) -> None:
        while self._waiting:
            worker = min(self._workers, key=lambda w: len(w.sent), default=None)
            if worker is None:
                self._read_waiting_inline()
                return
            if len(worker.sent) >= IN_FLIGHT:
                return
            job, future = self._waiting.popleft()
            try:
                worker.conn.send_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                self._waiting.appendleft((job, future))
                self._retire(worker, "its pipe broke")
                continue
            worker.sent.append((job, future))

    def _answered(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                answer = pickle.loads(worker.conn.recv_bytes())
                _, future = worker.sent.popleft()
                if not future.done():
                    future.set_result(answer)
        except (EOFError, OSError):
            self._retire(worker, "it exited")
        self._send()

    def _retire(self, worker: _Worker, why: str) -> None:
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        if self._loop is not None:
            self._loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        worker.process.join(timeout=2)
        if worker.process.is_alive():
            worker.process.kill()
        if why != "closing":
            logger.warning("Page worker %s stopped (%s): reading pages here", worker.process.name,
                           why)  # fmt: skip
        # What it held goes first, in order, to whoever reads next.
        self._waiting.extendleft(reversed(worker.sent))
        worker.sent.clear()
        if not self._workers:
            self._read_waiting_inline()
        else:
            self._send()

    def _read_waiting_inline(self) -> None:
        while self._waiting:
            (body, url, content_type), future = self._waiting.popleft()
            if future.done():
                continue
            self.inline += 1
            try:
                future.set_result(read_post_page(body, url, self.root, content_type))
            except Exception as exc:
                future.set_exception(exc)
