"""Scale-out of the ``finews`` crawl over processes and machines, with scrapy-redis.

``scrapy crawl finews -s FINEWS_REDIS_URL=redis://host:6379/0 -s FINEWS_JOB=name`` makes
the process a *worker* of the crawl ``name``: every worker started with the same job shares
one request queue and one duplicate filter in Redis, so each page is downloaded by exactly
one worker, and every worker stores what it reads into FINEWS_DATABASE_URL through the
normal pipelines. Without FINEWS_REDIS_URL this module changes nothing, and neither Redis
nor scrapy-redis is imported.

Two parts:

``RedisScaleOut``, a Scrapy add-on (``ADDONS``). When FINEWS_REDIS_URL is set and the
spider is ``finews`` (the ``archive`` backfill reads local files: it is left alone), it
first checks that Redis answers (one ERROR line and exit status 1 if not, before anything
is fetched), then sets

- scrapy-redis's scheduler (``RedisScheduler``, a subclass taking one Redis round trip
  per request each way) and duplicate filter, with the job's keys
  ``finews:<job>:requests`` (a sorted set: category pages before posts) and
  ``finews:<job>:dupefilter`` (request fingerprints), ``SCHEDULER_PERSIST`` so that no
  worker empties them when it stops (``ScaleOutJob`` below does, once no worker is left);
- politeness divided by FINEWS_WORKERS (the number of workers the job is started with),
  so that the site sees at most the configured totals: CONCURRENT_REQUESTS and
  CONCURRENT_REQUESTS_PER_DOMAIN integer-divided (at least 1 each),
  AUTOTHROTTLE_TARGET_CONCURRENCY divided, DOWNLOAD_DELAY multiplied;
- the extension ``ScaleOutJob``.

Settings are written at the priority they already have (at least the add-on's), so a value
given with ``-s`` is divided too rather than overriding the division.

``ScaleOutJob``, an extension, runs the job's life cycle in one worker:

- *Registry*: ``finews:<job>:workers`` is a hash, member ``<host>:<pid>``, value the time
  (Redis's clock) of the worker's last heartbeat, written every second. A member is *live*
  if it is on this host and its process exists, or on another host and its heartbeat is
  younger than 30 s. (So the host name must tell machines apart, and workers on one host
  must see each other's processes: containers sharing a host name but not a process
  namespace would take each other for dead.) At ``spider_opened`` a Lua script drops the
  dead members and, if no live worker is left, deletes the queue and duplicate filter an
  earlier run left behind (a worker killed with SIGKILL never cleans up), then registers
  this worker and numbers it (``finews:<job>:arrivals``), atomically: two workers starting
  at once never both clean up, nor does a late one wipe a running job. At
  ``spider_closed`` the worker unregisters; the last one deletes the job's keys, otherwise
  they get a one-hour TTL. Each heartbeat renews that TTL too, so the keys of a job whose
  workers all died expire an hour after the last heartbeat. Only these four keys are ever
  touched (never a pattern): other keys under ``finews:<job>:`` are left alone.

  A job is therefore never resumed: what a killed run had queued is dropped, and the next
  run starts from the home page again. The database makes that cheap: posts stored
  already are not downloaded again (the incremental skip), so the next run fetches what
  the killed one had not stored.
- *Idle close*: scrapy-redis would close a worker as soon as its own engine is idle, while
  other workers may still be reading pages that add requests to the shared queue. Here the
  ``spider_idle`` handler keeps the worker open (``DontCloseSpider``) until the shared
  queue has stayed empty for FINEWS_IDLE_CLOSE seconds while this worker was idle. Scrapy's
  engine looks at an idle spider again only every 5 s; so that an idle worker takes new
  requests at once, a looping call (every 0.25 s, from the first idle signal on) that finds
  this worker idle and the shared queue not empty pops one request and injects it again
  (``engine.crawl``, ``dont_filter``: its fingerprint is in the filter already), which
  wakes the engine to fetch from the queue. The same call closes the spider (reason
  ``finished``) once the queue has been empty for FINEWS_IDLE_CLOSE seconds.

Stats: ``finews/redis/worker`` (this worker's number in the job, by arrival),
``finews/redis/reinjected`` (wake-ups), ``finews/redis/idle_close`` (1 when the worker
closed itself), ``finews/redis/stale_keys_removed`` (keys of an earlier run deleted).

An unreachable Redis (or a FINEWS_JOB that would not make key names) ends the process in
the add-on, with one ERROR line saying what to do and exit status 1: the crawl has not
started then, and any exception would come out of Scrapy's start-up as a traceback.

Requests go through Redis pickled (scrapy-redis's default serializer): their callbacks must
be methods of the spider and their ``meta`` picklable (``crawler.pages.site.PostLink`` is a
frozen dataclass).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
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
WAKE_INTERVAL = 0.25  # seconds between two looks at the shared queue while idle
CONNECT_TIMEOUT = 5.0  # seconds to wait for Redis before giving up
SOCKET_TIMEOUT = 30.0
# Key names are built with %-formatting by scrapy-redis: no "%" in a job name, nor spaces.
JOB_NAME = re.compile(r"[\w.:\-]+\Z")


# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobKeys:
    """The Redis keys of one job, all under ``finews:<job>:``."""

    job: str

    @property
    def prefix(self) -> str:
        return f"finews:{self.job}:"

    @property
    def requests(self) -> str:
        return self.prefix + "requests"

    @property
    def dupefilter(self) -> str:
        return self.prefix + "dupefilter"

    @property
    def workers(self) -> str:
        return self.prefix + "workers"

    @property
    def arrivals(self) -> str:
        """A counter: the number of each worker that joined since the job's keys were made."""
        return self.prefix + "arrivals"

    @property
    def all(self) -> tuple[str, str, str, str]:
        return (self.workers, self.requests, self.dupefilter, self.arrivals)


def redact(url: str) -> str:
    """The Redis URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def divided(total: int, workers: int) -> int:
    """One worker's share of a concurrency limit: ``total // workers``, at least 1."""
    return max(1, total // max(1, workers))


def _force(settings: BaseSettings, name: str, value: Any) -> None:
    """Set ``name`` at the priority it has already (at least the add-on's), so a value given
    on the command line or in the project settings is replaced, not left as it was."""
    priority = max(settings.getpriority(name) or 0, SETTINGS_PRIORITIES["addon"])
    settings.set(name, value, priority=priority)


def connect(url: str) -> Redis:
    """A client for ``url``; raises ``redis.RedisError`` (or ``ValueError``) if unusable."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
    )
    client.ping()
    return client


def unreachable(url: str, exc: BaseException) -> str:
    """The one line a worker logs when Redis cannot be used: what failed, what to do."""
    problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"Scale-out: cannot use Redis at {redact(url)} ({problem}). Start Redis there, fix "
        f"FINEWS_REDIS_URL, or unset it to crawl in this one process."
    )


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
            self._fail(unreachable(url, exc))
        apply_scaleout(settings, url, job, settings.getint("FINEWS_WORKERS", 1))

    @staticmethod
    def _fail(message: str) -> None:
        # Raised from inside the crawl's start-up, any exception would come out as a
        # traceback (asyncio's "Task exception was never retrieved"); SystemExit ends the
        # process with the one line, before anything is fetched or stored.
        logger.error(message)
        raise SystemExit(1)


def apply_scaleout(settings: BaseSettings, url: str, job: str, workers: int) -> None:
    """What the add-on sets for a worker of ``job`` (one of ``workers``) on Redis ``url``."""
    keys = JobKeys(job)
    workers = max(1, workers)
    _force(settings, "SCHEDULER", SCHEDULER)
    _force(settings, "DUPEFILTER_CLASS", DUPEFILTER)
    _force(settings, "SCHEDULER_QUEUE_CLASS", QUEUE)
    _force(settings, "SCHEDULER_PERSIST", True)
    _force(settings, "REDIS_URL", url)
    _force(settings, "SCHEDULER_QUEUE_KEY", keys.requests)
    _force(settings, "SCHEDULER_DUPEFILTER_KEY", keys.dupefilter)
    for name in ("CONCURRENT_REQUESTS", "CONCURRENT_REQUESTS_PER_DOMAIN"):
        _force(settings, name, divided(settings.getint(name), workers))
    target = settings.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY", 1.0)
    _force(settings, "AUTOTHROTTLE_TARGET_CONCURRENCY", target / workers)
    _force(settings, "DOWNLOAD_DELAY", settings.getfloat("DOWNLOAD_DELAY") * workers)
    settings["EXTENSIONS"][EXTENSION] = 0


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
        """scrapy-redis's scheduler on its priority queue (a sorted set, scores ``-priority``
        as scrapy-redis writes them), with one Redis round trip per request each way: the
        duplicate check and the push in one script, the pop a ZPOPMIN (scrapy-redis takes
        two and a transaction). It counts and logs the way current Scrapy wants (scrapy-redis
        passes ``spider=`` to the stats and calls ``Spider.log``, both deprecated)."""

        def open(self, spider: Any) -> None:
            self.spider = spider
            self.queue = load_object(self.queue_cls)(
                server=self.server,
                spider=spider,
                key=self.queue_key % {"spider": spider.name},
                serializer=self.serializer,
            )
            if not self.df:
                self.df = load_object(self.dupefilter_cls).from_spider(spider)
            if self.flush_on_start:
                self.flush()
            self.codec = self.serializer or picklecompat
            self.enqueue_script = self.server.register_script(_ENQUEUE_LUA)

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
            popped = self.server.zpopmin(self.queue.key)
            if not popped:
                return None
            request = request_from_dict(self.codec.loads(popped[0][0]), spider=self.spider)
            if self.stats:
                self.stats.inc_value("scheduler/dequeued/redis")
            return request

    RedisScheduler.__module__ = __name__
    RedisScheduler.__qualname__ = "RedisScheduler"
    return RedisScheduler


def __getattr__(name: str) -> Any:
    # ``SCHEDULER = "crawler.scaleout.RedisScheduler"`` is a subclass of scrapy-redis's
    # scheduler, built on first use: importing this module (ADDONS does, always) must not
    # import scrapy-redis or Redis.
    if name == "RedisScheduler":
        scheduler = _make_scheduler()
        globals()[name] = scheduler
        return scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the registry of workers ------------------------------------------------------------

# KEYS: workers hash, queue, filter, arrivals counter. ARGV: action (join, beat, leave),
# this worker's member, this host's member prefix, seconds after which another host's
# worker is dead, TTL of the keys, then members of this host whose process is gone.
# Returns for join {this worker's number, queue and filter of an earlier run deleted (0-2)};
# for leave {live workers left, keys deleted}; for beat {members, 0}. Times are Redis's own
# clock, so the hosts' clocks need not agree.
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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    return True


class Registry:
    """The live workers of one job (see the module docstring), and its keys' clean-up."""

    def __init__(
        self,
        server: Redis,
        keys: JobKeys,
        host: str | None = None,
        pid: int | None = None,
        stale_after: float = STALE_AFTER,
        ttl: int = KEY_TTL,
    ) -> None:
        self.server = server
        self.keys = keys
        self.host = host or socket.gethostname()
        self.member = f"{self.host}:{pid or os.getpid()}"
        self.stale_after = stale_after
        self.ttl = ttl
        self._script = server.register_script(_REGISTRY_LUA)

    def join(self) -> tuple[int, int]:
        """Register; returns (this worker's number in order of arrival, the keys of an earlier
        run, queue and filter, deleted: 0 to 2)."""
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
        args = [action, self.member, self.host + ":", self.stale_after, self.ttl, *dead]
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
        settings = crawler.settings
        self.url = str(settings.get("FINEWS_REDIS_URL"))
        self.idle_close = max(0.0, settings.getfloat("FINEWS_IDLE_CLOSE", 10.0))
        self.planned = max(1, settings.getint("FINEWS_WORKERS", 1))
        self.clock: Callable[[], float] = time.monotonic
        self.number = 0
        self.joined = False
        self.closing = False
        self.empty_since: float | None = None  # since when idle with the queue empty
        # Looping calls, made once the crawl runs (they need its event loop).
        self._heartbeat: Any = None
        self._watch: Any = None
        self._beat_failed = False
        self._watch_failed = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ScaleOutJob:
        url = crawler.settings.get("FINEWS_REDIS_URL")
        if not url or getattr(crawler.spidercls, "name", None) != SPIDER:
            raise NotConfigured
        job = str(crawler.settings.get("FINEWS_JOB") or SPIDER)
        server = connect(url)
        extension = cls(crawler, server, Registry(server, JobKeys(job)))
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    # -- signals ------------------------------------------------------------------------

    def spider_opened(self) -> None:
        self.number, deleted = self.registry.join()
        self.joined = True
        stats = self.crawler.stats
        stats.set_value("finews/redis/worker", self.number)
        if deleted:
            stats.set_value("finews/redis/stale_keys_removed", deleted)
            logger.info(
                "Scale-out: no live worker in job %r: the queue and duplicate filter an "
                "earlier run left were removed", self.keys.job,
            )  # fmt: skip
        logger.info(
            "Scale-out: worker %d of job %r (%d planned), Redis at %s",
            self.number, self.keys.job, self.planned, redact(self.url),
        )  # fmt: skip
        if self._heartbeat is None:
            self._heartbeat = create_looping_call(self.heartbeat)
        self._heartbeat.start(HEARTBEAT_INTERVAL, now=False)

    def spider_idle(self) -> None:
        """Keep the worker open until the shared queue has been empty long enough."""
        if self._watch is None:
            self._watch = create_looping_call(self.watch)
        if not self._watch.running and not self.closing:
            self._watch.start(WAKE_INTERVAL, now=False)
        if self.closing:
            return
        if self.queue_size():
            self.empty_since = None
            raise DontCloseSpider
        if self._idle_long_enough():
            self._closed_idle()
            return  # the engine closes the spider ("finished")
        raise DontCloseSpider

    def spider_closed(self, reason: str) -> None:
        self.closing = True
        for call in (self._watch, self._heartbeat):
            if call is not None and call.running:
                call.stop()
        if not self.joined:
            return
        try:
            left, _ = self.registry.leave()
        except Exception as exc:
            logger.warning(
                "Scale-out: could not unregister from job %r (%s); its keys expire in %d s",
                self.keys.job, exc, KEY_TTL,
            )  # fmt: skip
        else:
            if left:
                logger.info(
                    "Scale-out: worker %d left job %r (%s); %d still running, the job's "
                    "keys kept for them (expiring %d s after the last heartbeat)",
                    self.number, self.keys.job, reason, left, KEY_TTL,
                )  # fmt: skip
            else:
                logger.info(
                    "Scale-out: worker %d was the last of job %r (%s); its Redis keys deleted",
                    self.number, self.keys.job, reason,
                )  # fmt: skip
        finally:
            self.server.close()

    # -- looping calls ------------------------------------------------------------------

    def heartbeat(self) -> None:
        try:
            self.registry.beat()
        except Exception as exc:  # Redis gone for a moment: the next beat tries again
            if not self._beat_failed:
                logger.warning("Scale-out: heartbeat to Redis failed: %s", exc)
            self._beat_failed = True
        else:
            self._beat_failed = False
        self._watch_failed = False

    def watch(self) -> None:
        """While this worker is idle: wake it when the shared queue has requests, close it
        when the queue has stayed empty FINEWS_IDLE_CLOSE seconds."""
        try:
            self._watch_once()
        except Exception as exc:  # Redis gone for a moment: the next call tries again
            if not self._watch_failed:
                logger.warning("Scale-out: looking at the shared queue failed: %s", exc)
            self._watch_failed = True
        else:
            self._watch_failed = False

    def _watch_once(self) -> None:
        if self.closing:
            return
        engine = self.crawler.engine
        if engine is None or engine.spider is None or engine.scheduler is None:
            return
        if not self.locally_idle():
            self.empty_since = None
            return
        if self.queue_size():
            self.empty_since = None
            self.wake()
        elif self._idle_long_enough():
            self._closed_idle()
            deferred_from_coro(engine.close_spider_async(reason="finished")).addErrback(
                lambda failure: logger.error("Scale-out: closing failed: %s", failure.value)
            )

    def wake(self) -> None:
        """Take one request from the shared queue and schedule it again: the engine, woken,
        then fetches from the queue as much as it may."""
        engine = self.crawler.engine
        request = engine.scheduler.next_request()
        if request is None:  # another worker was quicker
            return
        engine.crawl(request.replace(dont_filter=True))
        self.crawler.stats.inc_value("finews/redis/reinjected")

    # -- helpers ------------------------------------------------------------------------

    def queue_size(self) -> int:
        return int(self.server.zcard(self.keys.requests))

    def locally_idle(self) -> bool:
        """Nothing downloading or being scraped in this worker (its queue is Redis's)."""
        engine = self.crawler.engine
        scraper_slot = engine.scraper.slot
        return not engine.downloader.active and (scraper_slot is None or scraper_slot.is_idle())

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
