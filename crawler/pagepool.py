"""Read post pages in worker processes while the crawl process downloads.

Scrapy's own work on a page (about 2 ms here) keeps the crawl process's core busy, and
``parse_page`` adds about 1 ms more: in the crawl process it would cost a third of the
crawl's speed (shared/PERF.md). With FINEWS_PAGE_WORKERS >= 1, pages are read
(``crawler.pages.site.read_post_page``) in that many worker processes on the other cores;
the crawl process only pickles the bytes out and the answers in, ~0.1 ms a page.
FINEWS_PAGE_WORKERS = 0, or a one-core machine, reads pages in the crawl process. In a
crawl, the downloader middleware ``crawler.middlewares.ReadPostPages`` calls ``read``.

No threads, and the crawl process never blocks on a worker: each worker has a pipe whose
crawl-side end is non-blocking, written when the event loop says it is writable and read
when it is readable. Pages go in batches: whatever queued while the crawl process was busy
goes out as one message (at most ``BATCH`` pages), so a busy crawl pays one round trip for
many pages and an idle one waits for none. A worker holds at most ``IN_FLIGHT`` batches,
so it always has the next one at hand.

Workers start with the "spawn" method (nothing of the crawl's state is copied), ignore
Ctrl-C and exit when their pipe closes: at close, or when the crawl process dies. If a
worker dies, what it held and every later page is read by the others, or in the crawl
process when none is left, and the crawl goes on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import struct
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

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


def work(conn: Connection, root: str) -> None:
    """A worker's life: read batches of jobs, answer each batch with a list of PostPages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the crawl process decides when to stop
    while True:
        try:
            jobs: list[Job] = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        conn.send_bytes(pickle.dumps([_answer(job, root) for job in jobs], protocol=_PROTOCOL))


def _answer(job: Job, root: str) -> Any:
    body, url, content_type = job
    try:
        return read_post_page(body, url, root, content_type)
    except Exception as exc:  # a parser bug: report it with the page, keep serving
        return exc


def frame(payload: bytes) -> bytes:
    """``payload`` framed as ``multiprocessing.Connection.send_bytes`` frames it."""
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload


def unframe(buffer: bytearray) -> list[bytes]:
    """Take every complete frame off the front of ``buffer``."""
    messages = []
    while len(buffer) >= 4:
        (size,) = struct.unpack_from("!i", buffer)
        start = 4
        if size == -1:
            if len(buffer) < 12:
                break
            (size,) = struct.unpack_from("!Q", buffer, 4)
            start = 12
        if len(buffer) < start + size:
            break
        messages.append(bytes(buffer[start : start + size]))
        del buffer[: start + size]
    return messages


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    sent: deque[list[Waiting]] = field(default_factory=deque)  # batches, in pipe order
    outgoing: bytearray = field(default_factory=bytearray)
    incoming: bytearray = field(default_factory=bytearray)
    writing: bool = False

    @property
    def fd(self) -> int:
        return self.conn.fileno()


class PagePool:
    """``await pool.read(body, url, content_type)`` gives the page's ``PostPage``."""

    def __init__(self, root: str, workers: int) -> None:
        self.root = root
        self.size = max(0, workers)
        self._workers: list[_Worker] = []
        self._waiting: deque[Waiting] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inline = 0  # pages read in the crawl process after the workers failed

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
            os.set_blocking(worker.fd, False)
            self._workers.append(worker)
            self._loop.add_reader(worker.fd, self._readable, worker)

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
                data = os.read(worker.fd, _READ_SIZE)
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
            self._loop.remove_reader(worker.fd)
            if worker.writing:
                self._loop.remove_writer(worker.fd)
        worker.conn.close()
        worker.process.join(timeout=2)
        if worker.process.is_alive():
            worker.process.kill()
        if why != "closing":
            logger.warning(
                "Page worker %s stopped (%s): its pages go elsewhere", worker.process.name, why
            )
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
