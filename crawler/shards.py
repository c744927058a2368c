"""A crawl split over processes: FINEWS_CRAWL_PROCESSES = N > 1.

Scrapy runs a crawl on one core. With N processes the crawl process (shard 0) still does
everything that decides what to fetch: robots.txt, the home and category pages, the
incremental skip (stored articles, earlier rejects) and the dedupe of links. Each post
it decides to fetch belongs to one shard, by a hash of its infoCode (of its URL when the
name carries none): its own posts it requests itself; the others go to N - 1 shard
processes. A shard process is a Scrapy crawl of its own, with the same settings, that
requests the posts it is given, reads them and stores them through the same pipelines,
into the same database and under the same ``crawl_runs`` row. An article seen under two
categories hashes to one shard, so the run's dedupe still sees both sightings.

- Categories a shard's posts link back to are sent to the crawl process, which fetches
  the new ones.
- Each process gets 1/N of the concurrency settings: the site sees the load of one crawl.
- A shard is sent at most ``window`` posts beyond those it finished; the rest wait in the
  crawl process, which takes them itself when it runs out of its own (``Shards.take``):
  no process idles while another has a queue.
- The crawl ends when the crawl process has nothing left and every shard reported that
  it finished every post it was given. The shards then close, and each sends its stats;
  the crawl process adds them to its own (``merge_stats``), so the stats dump, the run's
  ledger row and ``scrapy cron``'s verdict cover the whole crawl.
- A shard process that dies is logged as an error. Every post it was given is requested
  again by the crawl process; those it had stored come back unchanged.
- Feed exports (``-o``) and JOBDIR persist one process's state: with either, the crawl
  runs in one process, with a warning.
- The ``crawl`` and ``cron`` commands start the shard processes as they read their
  options (``prelaunch``), by fork: nothing of a crawl exists yet then, and a shard so
  starts with Scrapy and the project imported. Otherwise (no fork, or a reactor already
  installed) a shard is a new interpreter, like the other helpers (``crawler.childproc``).

The wire is ``crawler.childproc``'s: pickled frames on the shard's stdin and stdout.
Crawl process to shard: ``("run", run_id)``, ``("posts", [PostLink, ...])``, ``("end",)``.
Shard to crawl process: ``("categories", [slug, ...])``, ``("done", posts_finished)``,
``("idle", posts_received)`` (all of them finished), ``("stats", {...}, storage_failed)``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import DontCloseSpider
from scrapy.settings import default_settings as base_settings

from crawler import childproc

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from crawler.pages.site import PostLink

logger = logging.getLogger(__name__)

# Split between the processes, so that together they keep the site's load of one crawl.
CONCURRENCY_SETTINGS = (
    "CONCURRENT_REQUESTS",
    "CONCURRENT_REQUESTS_PER_DOMAIN",
    "CONCURRENT_REQUESTS_PER_IP",
    "AUTOTHROTTLE_TARGET_CONCURRENCY",
)
# Stats that are not sums over processes: the crawl process's own value stands (Scrapy
# works out the rates again from the summed counts when the crawl closes).
_NOT_ADDED = ("elapsed_time_seconds", "items_per_minute", "responses_per_minute")
# How long the crawl process waits for shards to close when it stops early.
CLOSE_TIMEOUT = 60.0
_BOOT = "import crawler.shards as s; s.serve()"


def shard_of(link: PostLink, count: int) -> int:
    """The shard (0 .. count - 1) that fetches ``link``: the same in every run."""
    if count <= 1:
        return 0
    key = link.info_code or link.url
    return zlib.crc32(key.encode("utf-8")) % count


def crawl_processes(settings: BaseSettings, *, warn: bool = True) -> int:
    """FINEWS_CRAWL_PROCESSES, or 1 where a split crawl would go wrong (with a warning)."""
    count = max(1, settings.getint("FINEWS_CRAWL_PROCESSES", 1))
    if count > 1:
        for name, reason in (("FEEDS", "feed exports"), ("JOBDIR", "a JOBDIR")):
            if settings.get(name):
                if warn:
                    logger.warning(
                        "FINEWS_CRAWL_PROCESSES=%d ignored: %s would hold one process's part "
                        "only; crawling in one process", count, reason,
                    )  # fmt: skip
                return 1
    return count


# Shard processes started before the crawl is set up (``prelaunch``), for ``Shards.launch``.
_prelaunched: list[Any] = []


def prelaunch(settings: BaseSettings) -> None:
    """Start a split crawl's other processes now, before Scrapy sets the crawl up (the
    ``crawl`` and ``cron`` commands call this as they read their options).

    They are forked: at this point the process holds no reactor, thread, connection or
    open file of the crawl, only imported modules, so a shard starts with Scrapy and the
    project already imported instead of spending its first second importing them while
    the crawl waits. Where fork is unavailable they are new interpreters. ``Shards.launch``
    gives them their work; ones never used exit with this process."""
    if _prelaunched:
        return
    for _ in range(crawl_processes(settings, warn=False) - 1):
        try:
            _prelaunched.append(ForkedShard() if _can_fork() else childproc.start(_BOOT))
        except OSError:
            break
    if _prelaunched:
        atexit.register(_release_prelaunched)


def _can_fork() -> bool:
    """Fork only a process that has no reactor yet (nor its event loop and threads)."""
    return hasattr(os, "fork") and "twisted.internet.reactor" not in sys.modules


class ForkedShard:
    """A forked shard process, with the parts of ``subprocess.Popen`` that ``Shards`` uses:
    ``stdin`` and ``stdout`` (its frames in and out), ``pid``, ``returncode``, ``poll``,
    ``wait`` and ``kill``."""

    def __init__(self) -> None:
        jobs_in, jobs_out = os.pipe()
        answers_in, answers_out = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing buffered is written twice
        pid = os.fork()
        if pid == 0:  # the shard: never returns to the caller
            code = 1
            try:
                os.dup2(jobs_in, 0)
                os.dup2(answers_out, 1)
                os.closerange(3, _fd_limit())  # nothing else of this process's is its
                serve()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        os.close(jobs_in)
        os.close(answers_out)
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = open(jobs_out, "wb", buffering=0)  # noqa: SIM115 - closed by Shards
        self.stdout = open(answers_in, "rb", buffering=0)  # noqa: SIM115 - closed by Shards

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"crawl process {self.pid}", timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _fd_limit() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (OSError, ValueError):
        return 4096


def _release_prelaunched() -> None:
    for process in _prelaunched:
        with contextlib.suppress(OSError):
            process.stdin.close()  # it ends when its stdin does
    _prelaunched.clear()


def split_settings(settings: BaseSettings, count: int) -> None:
    """Give this process its 1/count share of the concurrency settings, and decide the
    helpers (page workers, writer process) by the cores the crawl processes leave."""
    for name in CONCURRENCY_SETTINGS:
        value = settings.getfloat(name, 0)
        if value > 0:
            share = value / count
            if name != "AUTOTHROTTLE_TARGET_CONCURRENCY":
                share = math.ceil(share)
            settings.set(name, share, priority=settings.getpriority(name) or 0)
    spare = (os.cpu_count() or 1) > count
    for name, value in (("FINEWS_PAGE_WORKERS", 1 if spare else 0),
                        ("FINEWS_STORE_WRITER", spare)):  # fmt: skip
        if settings.get(name) is None:
            settings.set(name, value, priority=settings.getpriority(name) or 0)


def explicit_settings(settings: BaseSettings) -> dict[str, Any]:
    """The settings given above Scrapy's defaults (project, spider, command line), as
    plain data: a shard starts from the same defaults."""
    values = settings.copy_to_dict()
    return {name: values[name] for name in values if (settings.getpriority(name) or 0) > 0}


def merge_stats(stats: Any, other: dict[str, Any]) -> None:
    """Add a shard's numeric stats to ``stats`` (a StatsCollector); maxima stay maxima."""
    for key, value in other.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key.startswith("memusage/"):
            stats.max_value(key, value)
        elif not key.startswith(_NOT_ADDED):
            stats.inc_value(key, value)


# -- the crawl process's side -----------------------------------------------------------------


@dataclass(eq=False)
class _Shard:
    index: int
    process: Any  # subprocess.Popen[bytes]
    sent: list[PostLink] = field(default_factory=list)  # every post it was given
    outgoing: bytearray = field(default_factory=bytearray)
    incoming: bytearray = field(default_factory=bytearray)
    finished_posts: int = 0  # as it last reported
    stats: dict[str, Any] | None = None
    ready: bool = False  # its spider is open and listening
    alive: bool = True
    ended: bool = False
    writing: bool = False

    @property
    def busy(self) -> bool:
        return self.alive and self.finished_posts < len(self.sent)

    @property
    def done(self) -> bool:
        return not self.alive or self.stats is not None


class Shards:
    """The crawl process's shard processes (``count`` - 1 of them).

    ``give(link)`` takes a post that is not this process's (False: this process fetches
    it). A shard is sent at most ``window`` posts beyond those it finished; the rest wait
    here, grouped by infoCode, so that this process can take them (``take``) when it runs
    out of its own: while a shard starts up (a second or so: imports) and at the end of
    the crawl, no process idles while another has a queue. Both sightings of an article
    always go to the same process. The spider's idle handler asks ``settle()`` whether
    the crawl may close; ``found`` gets each category a shard reports, ``refetch`` each
    post of a shard that died.
    """

    def __init__(
        self,
        crawler: Crawler,
        count: int,
        spider_path: str,
        arguments: dict[str, str],
        *,
        found: Callable[[str], None],
        refetch: Callable[[PostLink], None],
    ) -> None:
        self.crawler = crawler
        self.count = count
        self.found = found
        self.refetch = refetch
        self.window = 4 * max(1, crawler.settings.getint("CONCURRENT_REQUESTS", 16))
        self._shards: list[_Shard] = []
        # Posts waiting for their shard, by infoCode (or URL); and where each key went.
        self._held: list[dict[str, list[PostLink]]] = []
        self._owner: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_due = False
        self._closing = False
        self._closer: asyncio.Future[None] | None = None
        self._init = {
            "spider": spider_path,
            "arguments": arguments,
            "settings": explicit_settings(crawler.settings),
            "count": count,
        }

    def launch(self) -> bool:
        """Start the shard processes; False if none could start (then crawl alone)."""
        for index in range(1, self.count):
            init = {**self._init, "index": index}
            try:
                payload = childproc.frame(pickle.dumps(init, protocol=pickle.HIGHEST_PROTOCOL))
                process = _prelaunched.pop(0) if _prelaunched else childproc.start(_BOOT)
                assert process.stdin is not None
                childproc.write_all(process.stdin, payload)
            except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
                logger.warning("Could not start crawl process %d of %d (%s): it is crawled "
                               "here", index + 1, self.count, exc)  # fmt: skip
                break
            self._shards.append(_Shard(index, process))
            self._held.append({})
        if len(self._shards) + 1 < self.count:
            self.count = len(self._shards) + 1
        logger.info("Crawling in %d processes: posts are split between them by infoCode",
                    self.count)  # fmt: skip
        return bool(self._shards)

    def open(self, run_id: int | None) -> None:
        """The run is open: tell the shards its id and start listening to them."""
        self._loop = asyncio.get_running_loop()
        for shard in self._shards:
            self._send(shard, ("run", run_id))  # its pipe is still blocking: written whole
            os.set_blocking(shard.process.stdin.fileno(), False)
            os.set_blocking(shard.process.stdout.fileno(), False)
            self._loop.add_reader(shard.process.stdout.fileno(), self._readable, shard)

    def give(self, link: PostLink) -> bool:
        """Queue ``link`` for its shard; False when it is this process's to fetch."""
        key = link.info_code or link.url
        index = self._owner.get(key)
        if index is None:
            index = shard_of(link, self.count)
        if index == 0:
            return False
        shard = self._shards[index - 1]
        if not shard.alive or shard.ended:
            return False
        self._held[index - 1].setdefault(key, []).append(link)
        self._owner.setdefault(key, index)
        self._pump_soon()
        return True

    def take(self, count: int) -> list[PostLink]:
        """Up to about ``count`` posts that wait for a shard, for this process instead."""
        taken: list[PostLink] = []
        for held in sorted(self._held, key=len, reverse=True):
            while held and len(taken) < count:
                key = next(iter(held))
                taken += held.pop(key)
                self._owner[key] = 0
        return taken

    def waiting(self) -> int:
        return sum(len(held) for held in self._held)

    def settle(self) -> bool:
        """True once every shard finished what it was given and closed; ends them first."""
        self._pump()
        if self.waiting() or any(shard.busy for shard in self._shards):
            return False
        for shard in self._shards:
            if shard.alive and not shard.ended:
                shard.ended = True
                self._send(shard, ("end",))
        return all(shard.done for shard in self._shards)

    def spider_idle(self) -> None:
        taken = self.take(self.window)  # this process is idle: take what waits
        for link in taken:
            self.refetch(link)
        if taken or not self.settle():
            raise DontCloseSpider("crawl processes are still crawling")

    def close(self) -> None:
        """Stop every shard and add its stats (waits up to CLOSE_TIMEOUT seconds each)."""
        if self._closing:
            return
        self._closing = True
        for shard in self._shards:
            if shard.alive and not shard.ended:
                shard.ended = True
                self._send(shard, ("end",))
        for shard in self._shards:
            if self._loop is not None and shard.alive:
                self._loop.remove_reader(shard.process.stdout.fileno())
            self._finish(shard)
        if any(s.stats is None for s in self._shards):
            logger.error("Not every crawl process reported: the run's counts miss its part")

    # -- the pipes ----------------------------------------------------------------------------

    def _pump_soon(self) -> None:
        if not self._pump_due and self._loop is not None:
            self._pump_due = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Send each ready shard posts up to its window."""
        self._pump_due = False
        for shard, held in zip(self._shards, self._held, strict=True):
            if not (shard.ready and shard.alive) or shard.ended or not held:
                continue
            room = self.window - (len(shard.sent) - shard.finished_posts)
            batch: list[PostLink] = []
            while held and len(batch) < room:
                batch += held.pop(next(iter(held)))
            if batch:
                shard.sent += batch
                self._send(shard, ("posts", batch))

    def _send(self, shard: _Shard, message: Any) -> None:
        shard.outgoing += childproc.frame(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        self._write(shard)

    def _write(self, shard: _Shard) -> None:
        fd = shard.process.stdin.fileno()
        try:
            while shard.outgoing:
                written = os.write(fd, shard.outgoing)
                del shard.outgoing[:written]
        except BlockingIOError:
            pass
        except OSError:
            shard.outgoing.clear()  # it died: its stdout says so
        want = bool(shard.outgoing)
        if self._loop is not None and want != shard.writing:
            shard.writing = want
            if want:
                self._loop.add_writer(fd, self._write, shard)
            else:
                self._loop.remove_writer(fd)

    def _readable(self, shard: _Shard) -> None:
        ended = False
        try:
            while True:
                data = os.read(shard.process.stdout.fileno(), 1 << 16)
                if not data:
                    ended = True
                    break
                shard.incoming += data
        except BlockingIOError:
            pass
        except OSError:
            ended = True
        for message in childproc.unframe(shard.incoming):
            self._handle(shard, pickle.loads(message))
        if ended:
            assert self._loop is not None
            self._loop.remove_reader(shard.process.stdout.fileno())
            self._gone(shard)
        self._pump()
        self._maybe_close()

    def _handle(self, shard: _Shard, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "categories":
            for slug in message[1]:
                self.found(slug)
        elif kind == "done":
            shard.finished_posts = max(shard.finished_posts, message[1])
        elif kind == "idle":
            shard.ready = True
            shard.finished_posts = max(shard.finished_posts, message[1])
        elif kind == "stats":
            shard.stats = message[1]
            merge_stats(self.crawler.stats, shard.stats)
            store = getattr(self.crawler, "finews_store", None)
            if message[2] and store is not None:
                store.storage_failed = True  # its writes failed: so did the run

    def _gone(self, shard: _Shard) -> None:
        """Its stdout ended: closed after its stats, or died."""
        if not shard.alive:
            return
        shard.alive = False
        if shard.writing and self._loop is not None:
            self._loop.remove_writer(shard.process.stdin.fileno())
            shard.writing = False
        self._reap(shard)
        held = self._held[shard.index - 1]
        waiting = [link for links in held.values() for link in links]
        for key in held:
            self._owner[key] = 0
        held.clear()
        if shard.stats is not None:
            return
        code = shard.process.returncode
        logger.error(
            "Crawl process %d of %d exited (status %s) before it finished: its %d posts are "
            "fetched here; those it stored come back unchanged",
            shard.index + 1, self.count, code, len(shard.sent) + len(waiting),
        )  # fmt: skip
        if not self._closing:
            for link in [*shard.sent, *waiting]:
                self.refetch(link)

    def _finish(self, shard: _Shard) -> None:
        """Wait for a shard that was told to end: read its last frames, then reap it."""
        if shard.alive:
            stdout = shard.process.stdout
            try:
                if shard.outgoing:  # what the pipe did not take yet, "end" included
                    if shard.writing and self._loop is not None:
                        self._loop.remove_writer(shard.process.stdin.fileno())
                        shard.writing = False
                    os.set_blocking(shard.process.stdin.fileno(), True)
                    childproc.write_all(shard.process.stdin, bytes(shard.outgoing))
                    shard.outgoing.clear()
                os.set_blocking(stdout.fileno(), True)
                while shard.stats is None:
                    for message in childproc.unframe(shard.incoming):
                        self._handle(shard, pickle.loads(message))
                    if shard.stats is not None:
                        break
                    data = _read_with_timeout(stdout.fileno(), CLOSE_TIMEOUT)
                    if not data:
                        break
                    shard.incoming += data
            except OSError:
                pass
            shard.alive = False
        self._reap(shard)

    def _reap(self, shard: _Shard) -> None:
        for pipe in (shard.process.stdin, shard.process.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            shard.process.wait(timeout=CLOSE_TIMEOUT)
        except Exception:
            shard.process.kill()
            shard.process.wait(timeout=5)

    def _maybe_close(self) -> None:
        """After a shard's news: if the crawl only waited for the shards, close it now
        (Scrapy would look again only at its next 5 s heartbeat)."""
        engine = self.crawler.engine
        if self._closing or engine is None or engine.spider is None:
            return
        try:
            idle = engine.spider_is_idle()
        except RuntimeError:
            return
        if not idle:
            return
        taken = self.take(self.window)
        for link in taken:
            self.refetch(link)
        if not taken and self.settle():
            self._closer = asyncio.ensure_future(engine.close_spider_async(reason="finished"))


def _read_with_timeout(fd: int, seconds: float) -> bytes:
    readable, _, _ = select.select([fd], [], [], seconds)
    if not readable:
        raise OSError("timed out")
    return os.read(fd, 1 << 16)


# -- a shard process's side -------------------------------------------------------------------


class ShardChannel:
    """In a shard process: posts in from the crawl process, categories and progress out.

    The spider (``finews`` with ``shard=``) calls ``attach`` from ``from_crawler``; posts
    become requests through ``request_for(link)``, the spider's own request for a post.
    """

    def __init__(self, source: Any, out: Any):
        self.stream = source  # raw (unbuffered) stdin: frames are read from its fd alone
        self.source = source.fileno()
        self.out = out
        self._run: tuple[int | None] | None = None
        self.received = 0
        self.finished = 0  # posts whose callback or errback ran
        self.reported = -1
        self.ended = False
        self._flush_due = False
        self._closer: asyncio.Future[None] | None = None
        self._incoming = bytearray()
        self._categories: list[str] = []
        self._crawler: Crawler | None = None
        self._request_for: Callable[[PostLink], Any] | None = None

    def run_id(self) -> int | None:
        """The crawl's run (its ``crawl_runs`` id), waiting until the crawl process opens it."""
        if self._run is None:
            try:
                kind, *rest = pickle.loads(childproc.read_frame(self.stream))
            except (EOFError, OSError):
                kind, rest = "end", []
            if kind != "run":
                self.ended = True
                raise RuntimeError("the crawl process stopped before its run opened")
            self._run = (rest[0],)
        return self._run[0]

    def attach(self, crawler: Crawler, request_for: Callable[[PostLink], Any]) -> None:
        self._crawler = crawler
        self._request_for = request_for
        crawler.signals.connect(self._opened, signal=signals.spider_opened)
        crawler.signals.connect(self._idle, signal=signals.spider_idle)

    def category(self, slug: str) -> None:
        """A category this shard's posts link to: for the crawl process to fetch."""
        self._categories.append(slug)
        self._flush_soon()

    def finished_post(self) -> None:
        """A post's callback (or errback) ran: the crawl process may send another."""
        self.finished += 1
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def send(self, message: Any) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        childproc.write_all(self.out, childproc.frame(payload))

    def _opened(self) -> None:
        os.set_blocking(self.source, False)
        asyncio.get_running_loop().add_reader(self.source, self._readable)

    def _readable(self) -> None:
        assert self._crawler is not None and self._request_for is not None
        engine = self._crawler.engine
        gone = False
        try:
            while True:
                data = os.read(self.source, 1 << 16)
                if not data:
                    gone = True
                    break
                self._incoming += data
        except BlockingIOError:
            pass
        for message in childproc.unframe(self._incoming):
            kind, *rest = pickle.loads(message)
            if kind == "posts":
                self.received += len(rest[0])
                if engine.spider is None:
                    continue  # closing: the crawl process counts them as not finished
                for link in rest[0]:
                    engine.crawl(self._request_for(link))
            elif kind == "end":
                self.ended = True
        if gone:  # the crawl process is gone: stop
            self.ended = True
            asyncio.get_running_loop().remove_reader(self.source)
        if self.ended and engine.spider is not None and engine.spider_is_idle():
            self._closer = asyncio.ensure_future(engine.close_spider_async(reason="finished"))

    def flush(self) -> None:
        """Categories first: the crawl process must know them before it counts the post
        that named them as finished."""
        self._flush_due = False
        if self._categories:
            self.send(("categories", self._categories))
            self._categories = []
        if self.finished != self.reported:
            self.reported = self.finished
            self.send(("done", self.finished))

    def _idle(self) -> None:
        self.flush()
        self.finished = self.reported = self.received  # idle: every post it got is done
        self.send(("idle", self.received))
        if not self.ended:
            raise DontCloseSpider("waiting for the crawl process")


def shard_overrides(
    index: int, count: int, settings: dict[str, Any], spider_module: str
) -> dict[str, Any]:
    """A shard's settings on top of the crawl process's: no second split, no exports, no
    stats dump of its own (its stats go to the crawl process), log lines marked."""
    log_format = settings.get("LOG_FORMAT") or "%(asctime)s [%(name)s] %(levelname)s: %(message)s"
    return {
        "FINEWS_CRAWL_PROCESSES": 1,
        # Its spider is given by class: other spiders' modules need not be imported.
        "SPIDER_MODULES": [spider_module],
        "FEEDS": {},
        "JOBDIR": None,
        "STATS_DUMP": False,
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        # Scrapy imports every extension it lists, enabled or not: the remote control
        # brings aiohttp (~0.13 s of a shard's start, while the crawl waits for it).
        "EXTENSIONS_BASE": {
            name: order
            for name, order in base_settings.EXTENSIONS_BASE.items()
            if not name.endswith(".RemoteControl")
        },
        "CLOSESPIDER_TIMEOUT": 0,
        "CLOSESPIDER_ITEMCOUNT": 0,
        "CLOSESPIDER_PAGECOUNT": 0,
        "CLOSESPIDER_ERRORCOUNT": 0,
        "LOG_FORMAT": f"[crawl process {index + 1}/{count}] {log_format}",
    }


def plain_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if isinstance(v, int | float | str)}


def serve() -> None:
    """A shard process's life: forked by ``prelaunch`` or started as ``python -c`` by
    ``Shards.launch``; its first frame is the crawl's settings and arguments."""
    from scrapy.crawler import CrawlerProcess
    from scrapy.settings import Settings
    from scrapy.utils.misc import load_object

    source = open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115 - raw: no read-ahead
    _, out = childproc.child_streams(niceness=0)
    try:
        init = pickle.loads(childproc.read_frame(source))
    except (EOFError, OSError):
        return
    index, count = init["index"], init["count"]
    settings = Settings()
    settings.setdict(init["settings"], priority="cmdline")
    module = init["spider"].rpartition(".")[0]
    settings.setdict(shard_overrides(index, count, init["settings"], module), priority="cmdline")
    # The crawl gets ready while the crawl process does; only the store waits for the run.
    channel = ShardChannel(source, out)
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(load_object(init["spider"]))
    process.crawl(crawler, **init["arguments"], shard=channel)
    process.start(install_signal_handlers=False)
    channel.flush()
    store = getattr(crawler, "finews_store", None)
    failed = bool(store is not None and store.storage_failed)
    channel.send(("stats", plain_stats(crawler.stats.get_stats()), failed))
