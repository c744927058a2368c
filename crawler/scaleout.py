"""Scale-out of the ``finews`` crawl over processes and machines, with scrapy-redis.

With ``-s FINEWS_REDIS_URL=redis://host:6379/0 -s FINEWS_JOB=name``, a ``finews`` crawl is a
*worker* of the job ``name``: its workers share one request queue and one duplicate filter in
Redis, so each page is downloaded once, and each stores through the normal pipelines. Without
FINEWS_REDIS_URL nothing changes, and neither Redis nor scrapy-redis is imported.

``RedisScaleOut`` (an add-on, ``finews`` spider only) checks that Redis answers (else one ERROR
line and exit status 1, before anything is fetched), puts the queue (``RedisScheduler``, one
round trip per request each way) and filter on ``finews:<job>:requests`` (a sorted set:
category pages first) and ``finews:<job>:dupefilter``, kept until the job's last worker
leaves, and divides politeness by FINEWS_WORKERS so that the site sees at most the configured
totals (a value given with ``-s`` included).

``ScaleOutJob``, an extension, runs the job's life cycle in each worker:

- *Registry*: the hash ``finews:<job>:workers`` maps ``<host>:<pid>`` to the last heartbeat
  (Redis's clock, every second). A worker is live if on this host its process exists, or
  elsewhere its heartbeat is under 30 s old. Joining, a Lua script atomically drops dead
  members, deletes the queue and filter a killed run left if no live worker remains, and
  numbers the worker. The last worker to leave deletes the job's keys, else they get a
  one-hour TTL (renewed by heartbeats). A job is never resumed: the next run starts from
  the home page, and the incremental skip fetches only what was not stored.
- *Idle close*: a worker stays open until the shared queue has been empty FINEWS_IDLE_CLOSE
  seconds while it was idle: others may still add requests. Scrapy looks at an idle spider
  only every 5 s, so a looping call (0.25 s) wakes the engine when the queue has requests
  (one is popped and rescheduled with ``dont_filter``) and closes the spider once the queue
  has stayed empty long enough.

Requests travel pickled: callbacks are spider methods and ``meta`` holds picklable values.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from scrapy import signals
from scrapy.exceptions import DontCloseSpider, NotConfigured
from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.defer import deferred_from_coro

if TYPE_CHECKING:
    from redis import Redis
    from scrapy.crawler import Crawler
    from scrapy.http import Request
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

SPIDER = "finews"  # the only spider that scales out; others ignore FINEWS_REDIS_URL
EXTENSION = "crawler.scaleout.ScaleOutJob"
SCHEDULER = "crawler.scaleout.RedisScheduler"
DUPEFILTER = "scrapy_redis.dupefilter.RFPDupeFilter"
QUEUE = "scrapy_redis.queue.PriorityQueue"  # a sorted set: RedisScheduler relies on it
HEARTBEAT_INTERVAL = 1.0  # seconds between two heartbeats of a worker
STALE_AFTER = 30.0  # a worker on another host without a heartbeat this long is dead
KEY_TTL = 3600  # seconds the job's keys outlive the last heartbeat or a worker's exit
# Requests a worker takes from the shared queue at a time: one round trip for several pages.
POP_BATCH = 8
WAKE_INTERVAL = 0.25  # seconds between two looks at the shared queue while idle
CONNECT_TIMEOUT = 5.0  # seconds to wait for Redis before giving up
SOCKET_TIMEOUT = 30.0
# Key names are built with %-formatting by scrapy-redis: no "%" in a job name, nor spaces.
JOB_NAME = re.compile(r"[\w.:\-]+\Z")


class JobKeys:
    """The Redis keys of one job, all under ``finews:<job>:``."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.prefix = f"finews:{job}:"
        self.all = tuple(self.prefix + k for k in ("workers", "requests", "dupefilter", "arrivals"))
        self.workers, self.requests, self.dupefilter, self.arrivals = self.all


def redact(url: str) -> str:
    """The Redis URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> Redis:
    """A client for ``url``; raises ``redis.RedisError`` (or ``ValueError``) if unusable."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
    )
    client.ping()
    return client


class RedisScaleOut:
    """The add-on: a ``finews`` crawl with FINEWS_REDIS_URL becomes a worker of its job."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisScaleOut:
        return cls(crawler)

    def update_settings(self, settings: BaseSettings) -> None:
        url = settings.get("FINEWS_REDIS_URL")
        if not url or getattr(self.crawler.spidercls, "name", None) != SPIDER:
            return
        job = str(settings.get("FINEWS_JOB") or SPIDER)
        if not JOB_NAME.match(job):
            self._fail(f"Scale-out: FINEWS_JOB {job!r} must be letters, digits and _.:- only.")
        try:
            connect(url).close()
        except Exception as exc:  # redis.RedisError, or ValueError for a malformed URL
            problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._fail(
                f"Scale-out: cannot use Redis at {redact(url)} ({problem}). Start Redis there, "
                "fix FINEWS_REDIS_URL, or unset it to crawl in this one process."
            )
        keys, workers = JobKeys(job), max(1, settings.getint("FINEWS_WORKERS", 1))
        values = {
            "SCHEDULER": SCHEDULER, "DUPEFILTER_CLASS": DUPEFILTER,
            "SCHEDULER_QUEUE_CLASS": QUEUE, "SCHEDULER_PERSIST": True, "REDIS_URL": url,
            "SCHEDULER_QUEUE_KEY": keys.requests, "SCHEDULER_DUPEFILTER_KEY": keys.dupefilter,
            "DOWNLOAD_DELAY": settings.getfloat("DOWNLOAD_DELAY") * workers,
        }  # fmt: skip
        target = settings.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY", 1.0)
        values["AUTOTHROTTLE_TARGET_CONCURRENCY"] = target / workers
        for name in ("CONCURRENT_REQUESTS", "CONCURRENT_REQUESTS_PER_DOMAIN"):
            values[name] = max(1, settings.getint(name) // workers)
        for name, value in values.items():
            # At the priority it has (at least the add-on's): a -s value is replaced too.
            priority = max(settings.getpriority(name) or 0, SETTINGS_PRIORITIES["addon"])
            settings.set(name, value, priority=priority)
        settings["EXTENSIONS"][EXTENSION] = 0

    @staticmethod
    def _fail(message: str) -> None:
        # Any exception raised in the crawl's start-up comes out as an asyncio traceback;
        # SystemExit ends the process with the one line, before anything is fetched.
        logger.error(message)
        raise SystemExit(1)


# Enqueue in one round trip: KEYS dupefilter, queue; ARGV fingerprint ("" for a request
# that is not filtered), score, the encoded request. Returns 0 for a duplicate.
_ENQUEUE_LUA = """
if ARGV[1] ~= '' and redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


def _make_scheduler() -> type:
    from scrapy.utils.misc import load_object
    from scrapy.utils.request import request_from_dict
    from scrapy_redis import picklecompat
    from scrapy_redis.scheduler import Scheduler

    class RedisScheduler(Scheduler):
        """scrapy-redis's scheduler on its priority queue (scores ``-priority``), with one
        round trip to push a request (check and push in one script) and one to take up to
        POP_BATCH (ZPOPMIN); what is taken and not yet fetched goes back at close. It
        counts and logs without scrapy-redis's calls that current Scrapy deprecates."""

        def open(self, spider: Any) -> None:
            self.spider = spider
            key = self.queue_key % {"spider": spider.name}
            self.queue = load_object(self.queue_cls)(
                server=self.server, spider=spider, key=key, serializer=self.serializer
            )
            if not self.df:
                self.df = load_object(self.dupefilter_cls).from_spider(spider)
            if self.flush_on_start:
                self.flush()
            self.codec = self.serializer or picklecompat
            self.enqueue_script = self.server.register_script(_ENQUEUE_LUA)
            self.taken: deque[tuple[bytes, float]] = deque()

        def close(self, reason: str) -> None:
            if self.taken:  # back to the job, for the other workers
                self.server.zadd(self.queue.key, dict(self.taken))
                self.taken.clear()
            super().close(reason)

        def has_pending_requests(self) -> bool:
            return bool(self.taken) or super().has_pending_requests()

        def enqueue_request(self, request: Request) -> bool:
            fingerprint = "" if request.dont_filter else self.df.request_fingerprint(request)
            data = self.codec.dumps(request.to_dict(spider=self.spider))
            keys = [self.df.key, self.queue.key]
            if not self.enqueue_script(keys=keys, args=[fingerprint, -request.priority, data]):
                self.df.log(request, self.spider)
                return False
            if self.stats:
                self.stats.inc_value("scheduler/enqueued/redis")
            return True

        def next_request(self) -> Request | None:
            if not self.taken:
                self.taken.extend(self.server.zpopmin(self.queue.key, POP_BATCH))
                if not self.taken:
                    return None
            data, _ = self.taken.popleft()
            request = request_from_dict(self.codec.loads(data), spider=self.spider)
            if self.stats:
                self.stats.inc_value("scheduler/dequeued/redis")
            return request

    RedisScheduler.__module__ = __name__
    RedisScheduler.__qualname__ = "RedisScheduler"
    return RedisScheduler


def __getattr__(name: str) -> Any:
    # RedisScheduler is built on first use: importing this module (ADDONS does, always)
    # must not import scrapy-redis or Redis.
    if name == "RedisScheduler":
        scheduler = globals()[name] = _make_scheduler()
        return scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the registry of workers ------------------------------------------------------------

# KEYS: workers hash, queue, filter, arrivals counter. ARGV: action (join, beat, leave), this
# worker's member, this host's member prefix, seconds after which another host's worker is
# dead, TTL of the keys, then members of this host whose process is gone. Returns {number,
# earlier run's keys deleted (0-2)} for join, {live workers left, keys deleted} for leave,
# {members, 0} for beat. Times are Redis's own clock: the hosts' clocks need not agree.
_REGISTRY_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local action, me, here = ARGV[1], ARGV[2], ARGV[3]
local stale, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
if action == 'beat' then
  redis.call('HSET', KEYS[1], me, string.format('%.3f', now))
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
  return {redis.call('HLEN', KEYS[1]), 0}
end
for i = 6, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HDEL', KEYS[1], me)
local beats = redis.call('HGETALL', KEYS[1])
for i = 1, #beats, 2 do
  local member = beats[i]
  local age = now - (tonumber(beats[i + 1]) or 0)
  if string.sub(member, 1, #here) ~= here and age > stale then
    redis.call('HDEL', KEYS[1], member)
  end
end
local live = redis.call('HLEN', KEYS[1])
local deleted = 0
if action == 'join' then
  if live == 0 then
    deleted = redis.call('DEL', KEYS[2], KEYS[3])
    redis.call('DEL', KEYS[4])
  end
  redis.call('HSET', KEYS[1], me, string.format('%.3f', now))
  local number = redis.call('INCR', KEYS[4])
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
  return {number, deleted}
end
if live == 0 then
  deleted = redis.call('DEL', unpack(KEYS))
else
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
return {live, deleted}
"""


def pid_exists(pid: int) -> bool:
    """True if the process exists and is not a zombie (``scrapy cron`` reaps its workers late)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: the signal said it exists


class Registry:
    """The live workers of one job (see the module docstring), and its keys' clean-up."""

    def __init__(
        self, server: Redis, keys: JobKeys, host: str | None = None, pid: int | None = None,
        ttl: int = KEY_TTL,
    ) -> None:  # fmt: skip
        self.server = server
        self.keys = keys
        self.host = host or socket.gethostname()
        self.member = f"{self.host}:{pid or os.getpid()}"
        self.ttl = ttl
        self._script = server.register_script(_REGISTRY_LUA)

    def join(self) -> tuple[int, int]:
        """Register; returns (this worker's number, earlier run's queue and filter deleted)."""
        return self._run("join")

    def beat(self) -> int:
        """Renew this worker's heartbeat and the keys' TTL; returns the members."""
        return self._run("beat")[0]

    def leave(self) -> tuple[int, int]:
        """Unregister; returns (live workers left, keys deleted: all of them if none)."""
        return self._run("leave")

    def dead_here(self) -> list[str]:
        """Members on this host whose process no longer exists."""
        prefix = self.host + ":"
        dead = []
        for raw in self.server.hkeys(self.keys.workers):
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            pid = member[len(prefix) :]
            if member.startswith(prefix) and pid.isdigit() and not pid_exists(int(pid)):
                dead.append(member)
        return dead

    def _run(self, action: str) -> tuple[int, int]:
        dead = [] if action == "beat" else self.dead_here()
        args = [action, self.member, self.host + ":", STALE_AFTER, self.ttl, *dead]
        live, deleted = self._script(keys=list(self.keys.all), args=args)
        return int(live), int(deleted)


# -- the extension ------------------------------------------------------------------------


class ScaleOutJob:
    """One worker's part in its job: registry, heartbeat, wake-ups and idle close."""

    def __init__(self, crawler: Crawler, server: Redis, registry: Registry) -> None:
        self.crawler = crawler
        self.server = server
        self.registry = registry
        self.keys = registry.keys
        self.idle_close = max(0.0, crawler.settings.getfloat("FINEWS_IDLE_CLOSE", 10.0))
        self.clock: Callable[[], float] = time.monotonic
        self.number = 0
        self.joined = False
        self.closing = False
        self.empty_since: float | None = None  # since when idle with the queue empty
        self._heartbeat: Any = None  # looping calls, made once the crawl's loop runs
        self._watch: Any = None
        self._failing: set[str] = set()  # what failed last time: warned once

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ScaleOutJob:
        url = crawler.settings.get("FINEWS_REDIS_URL")
        if not url or getattr(crawler.spidercls, "name", None) != SPIDER:
            raise NotConfigured
        server = connect(url)
        job = str(crawler.settings.get("FINEWS_JOB") or SPIDER)
        extension = cls(crawler, server, Registry(server, JobKeys(job)))
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_opened(self) -> None:
        self.number, deleted = self.registry.join()
        self.joined = True
        self.crawler.stats.set_value("finews/redis/worker", self.number)
        if deleted:
            self.crawler.stats.set_value("finews/redis/stale_keys_removed", deleted)
        settings = self.crawler.settings
        logger.info(
            "Scale-out: worker %d of job %r (%d planned), Redis at %s%s",
            self.number, self.keys.job, max(1, settings.getint("FINEWS_WORKERS", 1)),
            redact(str(settings.get("FINEWS_REDIS_URL"))),
            "; the queue an earlier run left was removed" if deleted else "",
        )  # fmt: skip
        self._heartbeat = self._heartbeat or create_looping_call(self._guarded, "heartbeat")
        self._heartbeat.start(HEARTBEAT_INTERVAL, now=False)

    def spider_idle(self) -> None:
        """Keep the worker open until the shared queue has been empty long enough."""
        self._watch = self._watch or create_looping_call(self._guarded, "watch")
        if self.closing:
            return
        if not self._watch.running:
            self._watch.start(WAKE_INTERVAL, now=False)
        if self.queue_size():
            self.empty_since = None
            raise DontCloseSpider
        if not self._idle_long_enough():
            raise DontCloseSpider
        self._closed_idle()  # the engine closes the spider ("finished")

    def spider_closed(self, reason: str) -> None:
        self.closing = True
        for call in (self._watch, self._heartbeat):
            if call is not None and call.running:
                call.stop()
        if not self.joined:
            return
        try:
            left, _ = self.registry.leave()
            logger.info(
                "Scale-out: worker %d left job %r (%s); %s", self.number, self.keys.job, reason,
                f"{left} still running, the keys kept for them" if left else "keys deleted",
            )  # fmt: skip
        except Exception as exc:
            logger.warning(
                "Scale-out: could not unregister from job %r (%s); its keys expire in %d s",
                self.keys.job, exc, KEY_TTL,
            )  # fmt: skip
        finally:
            self.server.close()

    def _guarded(self, name: str) -> None:
        """Run ``name``; a Redis failure is warned about once, the next call tries again."""
        try:
            getattr(self, name)()
        except Exception as exc:
            if name not in self._failing:
                logger.warning("Scale-out: %s failed: %s", name, exc)
            self._failing.add(name)
        else:
            self._failing.discard(name)

    def heartbeat(self) -> None:
        self.registry.beat()

    def watch(self) -> None:
        """While idle: wake on queued requests, close once the queue stayed empty long enough."""
        engine = self.crawler.engine
        if self.closing or engine is None or engine.spider is None or engine.scheduler is None:
            return
        slot = engine.scraper.slot
        if engine.downloader.active or (slot is not None and not slot.is_idle()):  # busy
            self.empty_since = None
        elif getattr(engine.scheduler, "taken", None) or self.queue_size():
            self.empty_since = None
            # Schedule one request again: the woken engine fetches from the queue what it may.
            request = engine.scheduler.next_request()
            if request is not None:  # else another worker was quicker
                engine.crawl(request.replace(dont_filter=True))
                self.crawler.stats.inc_value("finews/redis/reinjected")
        elif self._idle_long_enough():
            self._closed_idle()
            deferred_from_coro(engine.close_spider_async(reason="finished")).addErrback(
                lambda failure: logger.error("Scale-out: closing failed: %s", failure.value)
            )

    def queue_size(self) -> int:
        return int(self.server.zcard(self.keys.requests))

    def _idle_long_enough(self) -> bool:
        now = self.clock()
        if self.empty_since is None:
            self.empty_since = now
        return now - self.empty_since >= self.idle_close

    def _closed_idle(self) -> None:
        self.closing = True
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        self.crawler.stats.set_value("finews/redis/idle_close", 1)
        logger.info(
            "Scale-out: the queue of job %r stayed empty %.1f s: worker %d stops",
            self.keys.job, self.idle_close, self.number,
        )  # fmt: skip
