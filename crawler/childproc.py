"""Helper processes that talk pickled frames over stdin and stdout.

The page workers (``crawler.pagepool``), the backfill's parsers (``crawler.postpool``) and
the store's writer (``pipelines.writer``) are new interpreters, never forks or
multiprocessing "spawn" children: nothing of the crawl's state is copied, a user's script
without a ``__main__`` guard is not run again, and Scrapy need not be loaded there.

- ``WorkerPool``: jobs answered by worker processes, without blocking the event loop; the
  page workers and the backfill's parsers are two uses of it;
- ``child_env()``: the environment that finds the project even in a plain checkout;
- ``start(boot, *args)``: ``python -c boot args`` with pipes on stdin and stdout;
- ``child_streams()``: in the child, ignore Ctrl-C (the crawl process decides when to
  stop), keep stdout for frames only (whatever prints goes to stderr) and run at a lower
  priority than the crawl process (``NICENESS``);
- ``frame``/``unframe``/``read_frame``: the framing ``multiprocessing.Connection`` uses.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

# Prefix for a child's ``-c`` code: itemadapter imports Scrapy when it can (for scrapy.Item);
# helpers handle dataclasses only and need ~35 MB instead of ~65 MB without it.
NO_SCRAPY = "import sys; sys.modules.setdefault('scrapy', None); "
# Helpers run this much nicer than the crawl process. It is the line everything waits on:
# where a helper and it want the same core, it goes first (with equal priorities it waited
# ~4% of a crawl for a core while helpers ran).
NICENESS = 10


def child_env() -> dict[str, str]:
    """os.environ with the project on PYTHONPATH, so a child imports it installed or not."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def start(boot: str, *args: str) -> subprocess.Popen[bytes]:
    """``python -c boot args``, its stdin and stdout unbuffered pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", boot, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
        bufsize=0,
    )


def child_streams(niceness: int = NICENESS) -> tuple[BinaryIO, BinaryIO]:
    """In a child: (frames in, frames out); Ctrl-C ignored, prints sent to stderr, and
    ``niceness`` lower priority (helpers; a shard of a split crawl keeps the crawl's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    return sys.stdin.buffer, out


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


def read_frame(source: Any) -> bytes:
    """One frame's payload from a blocking binary stream (buffered or raw); EOFError at its
    end."""

    def exactly(size: int) -> bytes:
        chunks = []
        while size:
            chunk = source.read(size)
            if not chunk:
                raise EOFError("the stream ended")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    (size,) = struct.unpack("!i", exactly(4))
    if size == -1:
        (size,) = struct.unpack("!Q", exactly(8))
    return exactly(size)


def write_all(sink: Any, data: bytes) -> None:
    """All of ``data`` to a blocking stream, raw (partial writes) or buffered."""
    view = memoryview(data)
    while view:
        view = view[sink.write(view) :]


# -- worker pools ----------------------------------------------------------------------------

Handler = Callable[[Any], Any]
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_READ_SIZE = 1 << 20


def handler_for(target: str, init: Any) -> Handler:
    """``module:function`` called with ``init``: the function that answers one job."""
    module, _, name = target.partition(":")
    make: Callable[[Any], Handler] = getattr(importlib.import_module(module), name)
    return make(init)


def serve(target: str) -> None:
    """A pool worker's life (``python -c``, see ``WorkerPool``): the first frame on stdin is
    the ``init`` for ``handler_for(target, init)``; each later one a batch of jobs, answered
    on stdout by a list with each job's answer, or the exception it raised. Ends with stdin.
    """
    source, answers = child_streams()
    try:
        handle = handler_for(target, pickle.loads(read_frame(source)))
        while True:
            jobs = pickle.loads(read_frame(source))
            write_all(answers, frame(_dump_answers([_answer(handle, job) for job in jobs])))
    except (EOFError, OSError):
        return


def _answer(handle: Handler, job: Any) -> Any:
    try:
        return handle(job)
    except Exception as exc:  # a bug in the handler costs its job, not the worker
        return exc


def _dump_answers(answers: list[Any]) -> bytes:
    try:
        return pickle.dumps(answers, protocol=_PROTOCOL)
    except Exception:  # an exception that does not pickle still says what it was
        safe = [_plain_error(a) if isinstance(a, BaseException) else a for a in answers]
        return pickle.dumps(safe, protocol=_PROTOCOL)


def _plain_error(exc: BaseException) -> RuntimeError:
    return RuntimeError(f"{type(exc).__name__}: {exc}")


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    name: str
    sent: deque[list[_Waiting]] = field(default_factory=deque)  # batches, in pipe order
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


_Waiting = tuple[Any, "asyncio.Future[Any]"]  # a job and where its answer goes


class WorkerPool:
    """``submit(job)`` gives a future of ``handler_for(target, init)(job)``, as computed by
    one of ``size`` worker processes (``size`` 0: in this process, at once).

    No threads, and the event loop never blocks on a worker: each worker's pipes are
    non-blocking on this side, written when the loop says they are writable and read when
    they are readable. Jobs submitted while the loop runs one step go out together, in
    messages of at most ``batch`` jobs, to the worker with the fewest; a worker holds at
    most ``in_flight`` messages, so it always has the next one at hand and the rest wait
    here. A job whose handler raised gets that exception. A worker that dies hands what it
    held to the others, or to this process once none is left: the caller sees no gap.
    Workers ignore Ctrl-C and exit when their stdin closes: at ``close``, or when this
    process dies, even by SIGKILL.
    """

    def __init__(
        self,
        target: str,
        init: Any,
        size: int,
        *,
        name: str,
        batch: int,
        in_flight: int,
    ) -> None:
        self.target = target
        self.init = init
        self.size = max(0, size)
        self.name = name
        self.batch = max(1, batch)
        self.in_flight = max(1, in_flight)
        self.inline = 0  # jobs answered in this process after the workers failed
        self._workers: list[_Worker] = []
        self._waiting: deque[_Waiting] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._launched = False
        self._send_due = False
        self._handle: Handler | None = None

    @property
    def workers(self) -> int:
        """Worker processes alive."""
        return len(self._workers)

    def launch(self) -> None:
        """Start the worker processes (they boot while the caller gets ready)."""
        if self.size == 0 or self._launched:
            return
        self._launched = True
        boot = f"{NO_SCRAPY}import crawler.childproc as c; c.serve({self.target!r})"
        init = frame(pickle.dumps(self.init, protocol=_PROTOCOL))
        for n in range(self.size):
            try:
                process = start(boot)
                assert process.stdin is not None
                write_all(process.stdin, init)  # small: the pipe takes it at once
            except OSError as exc:
                logger.warning("Could not start a %s worker (%s): working here", self.name, exc)
                break
            worker = _Worker(process, f"{self.name}-{n}")
            os.set_blocking(worker.fd, False)
            os.set_blocking(worker.answers, False)
            self._workers.append(worker)

    def start(self) -> None:
        """Connect the workers to the running event loop, launching them if need be."""
        if self.size == 0 or self._loop is not None:
            return
        self.launch()
        self._loop = asyncio.get_running_loop()
        for worker in self._workers:
            self._loop.add_reader(worker.answers, self._readable, worker)

    def submit(self, job: Any) -> asyncio.Future[Any]:
        """The future answer to ``job``."""
        if self._loop is None:
            self.start()
        loop = self._loop or asyncio.get_running_loop()
        future = loop.create_future()
        if not self._workers:
            self._answer_here(job, future)
            return future
        self._waiting.append((job, future))
        if not self._send_due:
            self._send_due = True
            loop.call_soon(self._send)
        return future

    def close(self, *, drop: bool = False) -> None:
        """Stop the workers. Jobs not answered yet are answered here, or with ``drop``
        cancelled and the workers killed at once."""
        if drop:
            for worker in self._workers:
                worker.process.kill()
                for batch in worker.sent:
                    self._waiting.extend(batch)
                worker.sent.clear()
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
        for worker in list(self._workers):
            self._retire(worker, "closing")

    # -- the pipes ----------------------------------------------------------------------------

    def _send(self) -> None:
        self._send_due = False
        while self._waiting and self._workers:
            worker = min(self._workers, key=lambda w: len(w.sent))
            if len(worker.sent) >= self.in_flight:
                return
            count = min(self.batch, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(count)]
            worker.sent.append(batch)
            jobs = [job for job, _ in batch]
            worker.outgoing += frame(pickle.dumps(jobs, protocol=_PROTOCOL))
            self._write(worker)
        if self._waiting and not self._workers:
            while self._waiting:
                self._answer_here(*self._waiting.popleft())

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
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
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
            logger.warning("%s worker %s stopped (%s): its jobs go elsewhere",
                           self.name, worker.name, why)  # fmt: skip
        # What it held goes first, in order, to whoever answers next.
        held = [waiting for batch in worker.sent for waiting in batch]
        self._waiting.extendleft(reversed(held))
        worker.sent.clear()
        self._send()

    def _answer_here(self, job: Any, future: asyncio.Future[Any]) -> None:
        if future.done():
            return
        if self._handle is None:
            self._handle = handler_for(self.target, self.init)
        if self._launched:
            self.inline += 1
        try:
            future.set_result(self._handle(job))
        except Exception as exc:
            future.set_exception(exc)
