"""Read and parse post files in worker processes: results in order, bounded work in flight.

Parsing is the backfill's CPU cost (``parse_post`` is ~0.6 ms a post, PERF.md), so it runs
in a small process pool while the crawl process validates and stores. Tasks go out in
chunks (one round trip per chunk, not per file) and at most ``workers * ahead`` chunks are
in flight, so memory stays bounded whatever the size of the tree. Results come back in
task order: a backfill is deterministic, and a restarted one converges to the same rows.

Workers are ``python -m crawler.postworker`` processes that talk to the crawl process over
their stdin/stdout pipes, read by the crawl's own event loop: no executor threads compete
with the crawl thread for the GIL (with ``ProcessPoolExecutor`` its manager thread starved
and the workers idled). Workers read the files themselves (never through a symlink), hash
the bytes and parse them. They ignore Ctrl-C (the crawl process decides) and run at a
lower priority than the crawl process, which everything waits on. When the crawl process
dies, even by SIGKILL, their stdin ends and they exit. Small jobs are read in the crawl
process itself: starting workers costs more than it saves.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any

from crawler.childproc import child_env
from crawler.items import Article
from crawler.pages import ExtractionError
from crawler.pages.post import parse_post, split_front_matter
from crawler.postfiles import NOT_A_POST, UNCHANGED, Filters

EXCERPT_BYTES = 1200  # the store keeps 300 characters; 1,200 bytes hold them in UTF-8
CHUNK_SIZE = 32  # files per round trip: ~25 ms of parsing
AHEAD = 16  # chunks in flight per worker (~0.5 s of work): no bubbles, ~5 MB of results
INLINE_BELOW = 256  # fewer files than this are read in the crawl process
WORKER_NICENESS = 10
_FRAME = struct.Struct(">I")  # length prefix of each pickled message on a pipe
_PIPE_LIMIT = 1 << 24  # a chunk's results are ~150 KB; the stream buffer must hold them


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


def read_chunk(tasks: list[ReadTask], filters: Filters) -> list[ReadResult]:
    return [read_post_file(task, filters) for task in tasks]


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


class WorkerExited(RuntimeError):
    """A parser worker ended before answering (killed, out of memory, crashed)."""


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
        self._procs: list[asyncio.subprocess.Process] = []

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
        procs = [await self._spawn() for _ in range(self.workers)]
        # Chunk k goes to worker k % n and answers come back in the same order.
        in_flight: deque[tuple[list[ReadTask], asyncio.subprocess.Process]] = deque()
        sent = 0

        async def send_next() -> None:
            nonlocal sent
            chunk = next(chunks, None)
            if chunk is not None:
                proc = procs[sent % len(procs)]
                sent += 1
                await _send(proc, chunk)
                in_flight.append((chunk, proc))

        for _ in range(len(procs) * self.ahead):
            await send_next()
        while in_flight:
            chunk, proc = in_flight.popleft()
            results = await _receive(proc)
            await send_next()
            for pair in zip(chunk, results, strict=True):
                yield pair
        for proc in procs:
            proc.stdin.close()  # type: ignore[union-attr]  # EOF: the worker exits
            await proc.wait()
        self._procs.clear()

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "crawler.postworker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=child_env(),
            limit=_PIPE_LIMIT,
        )
        self._procs.append(proc)
        await _send(proc, self.filters)
        return proc

    def close(self) -> None:
        """Stop the workers now; chunks they hold are dropped (a restart reads those files)."""
        for proc in self._procs:
            if proc.returncode is None:
                proc.kill()
        self._procs.clear()


async def _send(proc: asyncio.subprocess.Process, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    assert proc.stdin is not None
    proc.stdin.write(_FRAME.pack(len(data)) + data)
    await proc.stdin.drain()


async def _receive(proc: asyncio.subprocess.Process) -> list[ReadResult]:
    assert proc.stdout is not None
    try:
        (size,) = _FRAME.unpack(await proc.stdout.readexactly(_FRAME.size))
        return pickle.loads(await proc.stdout.readexactly(size))
    except asyncio.IncompleteReadError:
        status = await proc.wait()
        raise WorkerExited(f"parser worker {proc.pid} exited with status {status}") from None


def _chunked(tasks: Iterator[ReadTask], size: int) -> Iterator[list[ReadTask]]:
    while chunk := list(islice(tasks, size)):
        yield chunk


def _chain(first: list[list[ReadTask]], rest: Iterator[list[ReadTask]]) -> Iterator[list[ReadTask]]:
    yield from first
    yield from rest


def _read_message(stream: IO[bytes]) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(head)
    return pickle.loads(stream.read(size))


def serve(incoming: IO[bytes], outgoing: IO[bytes]) -> None:
    """A worker's life: the filters, then chunks of tasks until the crawl process hangs up."""
    try:
        filters = _read_message(incoming)
        while True:
            results = read_chunk(_read_message(incoming), filters)
            data = pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
            outgoing.write(_FRAME.pack(len(data)) + data)
            outgoing.flush()
    except (EOFError, BrokenPipeError):
        return


def main() -> None:
    # Ctrl-C reaches the whole process group; the crawl process decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The crawl process (validate + store) is the line everything waits on: with as many
    # workers as cores it must not queue behind them for CPU.
    os.nice(WORKER_NICENESS)
    outgoing = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print() must not corrupt the results stream
    serve(sys.stdin.buffer, outgoing)
