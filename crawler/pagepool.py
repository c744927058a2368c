"""Read post pages in worker processes while the crawl process downloads.

Scrapy's own work on a page keeps the crawl process's core busy (shared/PERF.md), and
reading a post page costs about half as much again: in the crawl process it would cost a
third of the crawl's speed. With FINEWS_PAGE_WORKERS >= 1, pages are read
(``crawler.pages.site.read_post_page``) in that many worker processes on the other cores;
the crawl process only pickles the bytes out and the answers in, ~0.06 ms a page.
FINEWS_PAGE_WORKERS = 0, or a one-core machine, reads pages in the crawl process. In a
crawl, the downloader middleware ``crawler.middlewares.ReadPostPages`` calls ``read``.

No threads, and the crawl process never blocks on a worker: each worker's stdin and stdout
are pipes whose crawl-side ends are non-blocking, written when the event loop says they
are writable and read when they are readable. Pages go in batches: whatever queued while
the crawl process was busy goes out as one message (at most ``BATCH`` pages), so a busy
crawl pays one round trip for many pages and an idle one waits for none. A worker holds
at most ``IN_FLIGHT`` batches, so it always has the next one at hand.

Workers are new interpreters without Scrapy (``crawler.childproc``), so one boots in
~0.1 s. ``launch`` starts them as soon as the spider exists, so they are ready
before the first post page arrives; ``start`` connects them to the event loop when the
spider opens. They ignore Ctrl-C and exit when their stdin closes: at close, or when the
crawl process dies. If a worker dies, what it held and every later page is read by the
others, or in the crawl process when none is left, and the crawl goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from crawler.childproc import (
    NO_SCRAPY,
    child_streams,
    frame,
    read_frame,
    start,
    unframe,
    write_all,
)
from crawler.pages.site import PostPage, read_post_page

logger = logging.getLogger(__name__)

IN_FLIGHT = 2  # batches per worker: the one it reads and the next
BATCH = 16  # pages per message at most: ~16 ms of parsing
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_READ_SIZE = 1 << 20

Job = tuple[bytes, str, str | None]  # body, URL, Content-Type
Waiting = tuple[Job, asyncio.Future]


def default_workers() -> int:
    """One worker when a second core exists: Scrapy keeps the first one busy."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


_BOOT = NO_SCRAPY + "import crawler.pagepool as p; p.main()"  # a worker, see crawler.childproc


def main() -> None:
    """A worker's life (``python -c _BOOT root``): read batches of jobs on stdin, answer
    each batch with a list of PostPages on stdout, until stdin ends."""
    root = sys.argv[1]
    source, answers = child_streams()
    while True:
        try:
            jobs: list[Job] = pickle.loads(read_frame(source))
        except (EOFError, OSError):
            return
        message = frame(pickle.dumps([_answer(job, root) for job in jobs], protocol=_PROTOCOL))
        try:
            write_all(answers, message)
        except OSError:
            return


def _answer(job: Job, root: str) -> Any:
    body, url, content_type = job
    try:
        return read_post_page(body, url, root, content_type)
    except Exception as exc:  # a parser bug: report it with the page, keep serving
        return exc


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    name: str
    sent: deque[list[Waiting]] = field(default_factory=deque)  # batches, in pipe order
    outgoing: bytearray = field(default_factory=bytearray)
    incoming: bytearray = field(default_factory=bytearray)
    writing: bool = False

    @property
    def fd(self) -> int:  # where its jobs go: its stdin
        assert self.process.stdin is not None
        return self.process.stdin.fileno()

    @property
    def answers(self) -> int:  # where its answers come from: its stdout
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


class PagePool:
    """``await pool.read(body, url, content_type)`` gives the page's ``PostPage``."""

    def __init__(self, root: str, workers: int) -> None:
        self.root = root
        self.size = max(0, workers)
        self._workers: list[_Worker] = []
        self._waiting: deque[Waiting] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._launched = False
        self.inline = 0  # pages read in the crawl process after the workers failed

    def launch(self) -> None:
        """Start the worker processes; they boot while the crawl gets ready."""
        if self.size == 0 or self._launched:
            return
        self._launched = True
        for n in range(self.size):
            try:
                process = start(_BOOT, self.root)
            except OSError as exc:
                logger.warning("Could not start a page worker (%s): reading pages here", exc)
                break
            worker = _Worker(process, f"finews-page-{n}")
            os.set_blocking(worker.fd, False)
            os.set_blocking(worker.answers, False)
            self._workers.append(worker)

    def start(self) -> None:
        """Connect the workers to the running event loop (launching them if need be)."""
        if self.size == 0 or self._loop is not None:
            return
        self.launch()
        self._loop = asyncio.get_event_loop()
        for worker in self._workers:
            self._loop.add_reader(worker.answers, self._readable, worker)

    async def read(self, body: bytes, url: str, content_type: str | None) -> PostPage:
        if self._loop is None:
            self.start()
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
        while self._waiting and self._workers:
            worker = min(self._workers, key=lambda w: len(w.sent))
            if len(worker.sent) >= IN_FLIGHT:
                return
            batch = [self._waiting.popleft() for _ in range(min(BATCH, len(self._waiting)))]
            worker.sent.append(batch)
            worker.outgoing += frame(pickle.dumps([job for job, _ in batch], protocol=_PROTOCOL))
            self._write(worker)
        if self._waiting and not self._workers:
            self._read_waiting_inline()

    def _write(self, worker: _Worker) -> None:
        """Write what the pipe takes now; the event loop calls again when it takes more."""
        try:
            while worker.outgoing:
                written = os.write(worker.fd, worker.outgoing)
                del worker.outgoing[:written]
        except BlockingIOError:
            pass
        except OSError:
            self._retire(worker, "its pipe broke")
            return
        assert self._loop is not None
        if worker.outgoing and not worker.writing:
            self._loop.add_writer(worker.fd, self._write, worker)
            worker.writing = True
        elif not worker.outgoing and worker.writing:
            self._loop.remove_writer(worker.fd)
            worker.writing = False

    def _readable(self, worker: _Worker) -> None:
        try:
            while True:
                data = os.read(worker.answers, _READ_SIZE)
                if not data:
                    self._retire(worker, "it exited")
                    return
                worker.incoming += data
        except BlockingIOError:
            pass
        except OSError:
            self._retire(worker, "its pipe broke")
            return
        for message in unframe(worker.incoming):
            answers = pickle.loads(message)
            for (_, future), answer in zip(worker.sent.popleft(), answers, strict=True):
                if not future.done():
                    future.set_result(answer)
        self._send()

    def _retire(self, worker: _Worker, why: str) -> None:
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        if self._loop is not None:
            self._loop.remove_reader(worker.answers)
            if worker.writing:
                self._loop.remove_writer(worker.fd)
        worker.close_pipes()
        try:
            worker.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(timeout=5)
        if why != "closing":
            logger.warning("Page worker %s stopped (%s): its pages go elsewhere", worker.name, why)
        # What it held goes first, in order, to whoever reads next.
        held = [waiting for batch in worker.sent for waiting in batch]
        self._waiting.extendleft(reversed(held))
        worker.sent.clear()
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
