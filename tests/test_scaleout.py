"""Scale-out over processes with scrapy-redis (``crawler.scaleout``), on the real Redis.

Unit tests: the add-on's settings; the registry of workers and the clean-up of a job's
keys (the Lua script); idle close and wake-ups, driven with a fake engine and clock.
End to end (``scrapy crawl finews`` subprocesses on one 1,000-post mirror, PostgreSQL):

- A: three workers store every article once and download each post page once between
  them, then all exit 0 on their own and leave no key behind; a second job over the
  unchanged mirror downloads no post page;
- B: one of two workers is killed (SIGKILL) mid-crawl; the other finishes, and a second run
  of the job ends with exactly the rows of the undisturbed crawl of A;
- an idle worker takes a request another worker queues at once, and stops
  FINEWS_IDLE_CLOSE seconds after the queue ran dry;
- an unreachable Redis stops the crawl with one line, no traceback.

Redis is expected at FINEWS_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); without it
these tests are skipped. Each test has its own job name, so its own keys, deleted after it.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from scrapy import Request, Spider
from scrapy.exceptions import DontCloseSpider
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler
from sqlalchemy import text
from twisted.internet import defer

from crawler import scaleout
from crawler.pages.site import category_url, home_url, site_root
from crawler.processors import info_code_from_name
from crawler.scaleout import JobKeys, RedisScaleOut, Registry, ScaleOutJob
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from schema.db import make_engine
from tests.conftest import REDIS_URL, pg_database
from tests.crawling import QUIET, ROOT, Crawl, environment, post_paths

POSTS = 1000
TIMEOUT = 120  # seconds a worker may take before the test gives up on it
KILL_AFTER = 250  # post pages the worker to kill downloads first (about half of its share)


def drop_job(client: Any, job: str) -> None:
    keys = client.keys(JobKeys(job).prefix + "*")
    if keys:
        client.delete(*keys)


def job_keys(client: Any, job: str) -> dict[str, int]:
    """The job's keys that exist, with their TTL (-1: none)."""
    return {key.decode(): client.ttl(key) for key in client.keys(JobKeys(job).prefix + "*")}


@pytest.fixture
def job(redis_client: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    drop_job(redis_client, name)


class FinewsLike(Spider):
    name = "finews"


class ArchiveLike(Spider):
    name = "archive"


PROJECT = {
    "CONCURRENT_REQUESTS": 16,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 8,
    "AUTOTHROTTLE_TARGET_CONCURRENCY": 4.0,
    "DOWNLOAD_DELAY": 0.5,
    "FINEWS_JOB": "finews",
    "FINEWS_WORKERS": 1,
    "FINEWS_IDLE_CLOSE": 10.0,
}


def project_settings(**values: Any) -> Settings:
    """Settings as the project gives them, then ``values`` as from ``-s``."""
    settings = Settings()
    settings.setdict(PROJECT, priority="project")
    settings.setdict(values, priority="cmdline")
    return settings


# -- the add-on ------------------------------------------------------------------------------


def test_settings_enable_the_addon() -> None:
    from crawler import settings

    assert settings.ADDONS == {"crawler.scaleout.RedisScaleOut": 0}


def test_addon_makes_a_worker_of_the_job(redis_client: Any, job: str) -> None:
    """Through Scrapy's own add-on loading: shared scheduler and filter under the job's keys,
    politeness divided by three workers, the extension on."""
    crawler = get_crawler(
        FinewsLike,
        {
            **PROJECT,
            "ADDONS": {"crawler.scaleout.RedisScaleOut": 0},
            "FINEWS_REDIS_URL": REDIS_URL,
            "FINEWS_JOB": job,
            "FINEWS_WORKERS": 3,
        },
    )
    s = crawler.settings
    assert s["SCHEDULER"] == "crawler.scaleout.RedisScheduler"
    assert s["DUPEFILTER_CLASS"] == "scrapy_redis.dupefilter.RFPDupeFilter"
    assert s.getbool("SCHEDULER_PERSIST") is True
    assert s["REDIS_URL"] == REDIS_URL
    assert s["SCHEDULER_QUEUE_KEY"] == f"finews:{job}:requests"
    assert s["SCHEDULER_DUPEFILTER_KEY"] == f"finews:{job}:dupefilter"
    assert s.getint("CONCURRENT_REQUESTS") == 5  # 16 // 3
    assert s.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 2  # 8 // 3
    assert s.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY") == pytest.approx(4 / 3)
    assert s.getfloat("DOWNLOAD_DELAY") == pytest.approx(1.5)
    assert isinstance(crawler.get_extension(ScaleOutJob), ScaleOutJob)
    # The scheduler is scrapy-redis's and passes Scrapy's check of the interface.
    from scrapy.core.scheduler import BaseScheduler
    from scrapy.utils.misc import load_object
    from scrapy_redis.scheduler import Scheduler

    scheduler = load_object(s["SCHEDULER"])
    assert issubclass(scheduler, Scheduler) and issubclass(scheduler, BaseScheduler)


def test_the_scheduler_takes_requests_in_batches_and_gives_back_what_it_did_not_fetch(
    redis_client: Any, job: str
) -> None:
    from scrapy import Request
    from scrapy.utils.misc import load_object

    settings = {**PROJECT, "ADDONS": {"crawler.scaleout.RedisScaleOut": 0},
                "FINEWS_REDIS_URL": REDIS_URL, "FINEWS_JOB": job}  # fmt: skip
    crawler = get_crawler(FinewsLike, settings)
    spider = FinewsLike.from_crawler(crawler)
    scheduler = load_object(crawler.settings["SCHEDULER"]).from_crawler(crawler)
    scheduler.open(spider)
    urls = [f"http://127.0.0.1:1/post/{n}.html" for n in range(scaleout.POP_BATCH + 3)]
    for n, url in enumerate(urls):
        assert scheduler.enqueue_request(Request(url, priority=-n))
    assert not scheduler.enqueue_request(Request(urls[0]))  # the shared filter
    first = scheduler.next_request()
    assert first is not None and first.url == urls[0]  # highest priority first
    keys = JobKeys(job)
    assert redis_client.zcard(keys.requests) == 3  # one round trip took a batch
    assert scheduler.has_pending_requests()
    scheduler.close("shutdown")
    assert redis_client.zcard(keys.requests) == len(urls) - 1  # the rest is the job's again


@pytest.mark.parametrize(
    ("workers", "per_domain", "expected_total", "expected_per_domain"),
    [(1, 8, 16, 8), (3, 9, 5, 3), (4, 8, 4, 2), (100, 8, 1, 1), (0, 8, 16, 8)],
)
def test_addon_divides_concurrency_at_least_one(
    redis_client: Any, job: str, workers: int, per_domain: int, expected_total: int,
    expected_per_domain: int,
) -> None:  # fmt: skip
    """The share of each worker, of a value from the command line too (priority cmdline)."""
    settings = project_settings(
        FINEWS_REDIS_URL=REDIS_URL, FINEWS_JOB=job, FINEWS_WORKERS=workers,
        CONCURRENT_REQUESTS_PER_DOMAIN=per_domain,
    )  # fmt: skip
    RedisScaleOut(get_crawler(FinewsLike)).update_settings(settings)
    assert settings.getint("CONCURRENT_REQUESTS") == expected_total
    assert settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == expected_per_domain


def test_addon_without_redis_url_changes_nothing() -> None:
    settings = project_settings()
    before = settings.copy_to_dict()
    RedisScaleOut(get_crawler(FinewsLike)).update_settings(settings)
    assert settings.copy_to_dict() == before


def test_addon_leaves_other_spiders_alone(redis_client: Any, job: str) -> None:
    settings = project_settings(FINEWS_REDIS_URL=REDIS_URL, FINEWS_JOB=job, FINEWS_WORKERS=3)
    before = settings.copy_to_dict()
    RedisScaleOut(get_crawler(ArchiveLike)).update_settings(settings)
    assert settings.copy_to_dict() == before


def test_without_redis_url_neither_redis_nor_scrapy_redis_is_imported() -> None:
    """A crawl without FINEWS_REDIS_URL loads the add-on, which must not need Redis."""
    code = (
        "import sys\n"
        "from scrapy.settings import Settings\n"
        "from scrapy.utils.test import get_crawler\n"
        "from scrapy import Spider\n"
        "class S(Spider):\n    name = 'finews'\n"
        "crawler = get_crawler(S, {'ADDONS': {'crawler.scaleout.RedisScaleOut': 0}})\n"
        "assert crawler.settings['SCHEDULER'] == 'scrapy.core.scheduler.Scheduler'\n"
        "print(sorted(m for m in ('redis', 'scrapy_redis') if m in sys.modules))\n"
    )
    env = {k: v for k, v in environment().items() if not k.startswith("FINEWS_REDIS")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unreachable_redis_is_one_line_and_exit(caplog: pytest.LogCaptureFixture) -> None:
    url = "redis://:secret@127.0.0.1:1/0"
    settings = project_settings(FINEWS_REDIS_URL=url)
    with pytest.raises(SystemExit) as exit_info:
        RedisScaleOut(get_crawler(FinewsLike)).update_settings(settings)
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].startswith("Scale-out: cannot use Redis at redis://:***@127.0.0.1:1/0 (")
    assert "FINEWS_REDIS_URL" in errors[0] and "secret" not in errors[0]


def test_job_name_that_would_break_key_names_is_refused(
    redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = project_settings(FINEWS_REDIS_URL=REDIS_URL, FINEWS_JOB="50%off")
    with pytest.raises(SystemExit):
        RedisScaleOut(get_crawler(FinewsLike)).update_settings(settings)
    assert "FINEWS_JOB '50%off'" in caplog.text


# -- the registry of workers ---------------------------------------------------------------


def redis_now(client: Any) -> float:
    seconds, micro = client.time()
    return seconds + micro / 1e6


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: no process has this pid now
    return process.pid


def leftovers(client: Any, keys: JobKeys) -> None:
    """What a killed run leaves: a queued request and a filtered fingerprint."""
    client.zadd(keys.requests, {b"a pickled request": 0})
    client.sadd(keys.dupefilter, "a fingerprint")


def test_join_drops_dead_worker_of_this_host_and_removes_its_leftovers(
    redis_client: Any, job: str
) -> None:
    keys = JobKeys(job)
    registry = Registry(redis_client, keys, host="host-a")
    # Killed with SIGKILL a moment ago: its heartbeat is fresh, but its process is gone.
    redis_client.hset(keys.workers, f"host-a:{dead_pid()}", redis_now(redis_client))
    leftovers(redis_client, keys)
    number, deleted = registry.join()
    assert (number, deleted) == (1, 2)
    assert not redis_client.exists(keys.requests, keys.dupefilter)
    assert redis_client.hkeys(keys.workers) == [registry.member.encode()]
    assert 0 < redis_client.ttl(keys.workers) <= scaleout.KEY_TTL


def test_join_keeps_a_running_job(redis_client: Any, job: str) -> None:
    """A live worker (this host: its process exists, whatever its heartbeat; another host:
    a recent heartbeat) keeps the queue; another host's silent worker is dead."""
    keys = JobKeys(job)
    now = redis_now(redis_client)
    redis_client.hset(keys.workers, f"host-a:{os.getppid()}", now - 3600)  # alive, no beat
    redis_client.hset(keys.workers, "host-b:10", now - 1)
    redis_client.hset(keys.workers, "host-c:10", now - 120)
    leftovers(redis_client, keys)
    registry = Registry(redis_client, keys, host="host-a")
    assert registry.join() == (1, 0)  # (its number, keys deleted)
    assert redis_client.exists(keys.requests, keys.dupefilter) == 2
    members = {m.decode() for m in redis_client.hkeys(keys.workers)}
    assert "host-c:10" not in members and {f"host-a:{os.getppid()}", "host-b:10"} <= members


def test_join_removes_leftovers_when_only_silent_remote_workers_remain(
    redis_client: Any, job: str
) -> None:
    keys = JobKeys(job)
    redis_client.hset(keys.workers, "host-c:10", redis_now(redis_client) - 31)
    leftovers(redis_client, keys)
    assert Registry(redis_client, keys, host="host-a").join() == (1, 2)
    assert not redis_client.exists(keys.requests, keys.dupefilter)


def test_leave_keeps_keys_for_others_with_a_ttl_and_the_last_deletes_them(
    redis_client: Any, job: str
) -> None:
    keys = JobKeys(job)
    first = Registry(redis_client, keys, host="host-a", pid=os.getpid())
    second = Registry(redis_client, keys, host="host-a", pid=os.getppid())
    assert first.join() == (1, 0)
    assert second.join() == (2, 0)  # the second to arrive
    leftovers(redis_client, keys)
    redis_client.persist(keys.requests)
    assert first.leave() == (1, 0)
    ttls = job_keys(redis_client, job)
    assert set(ttls) == set(keys.all)  # workers, requests, dupefilter, arrivals
    assert all(0 < ttl <= scaleout.KEY_TTL for ttl in ttls.values())
    assert second.leave() == (0, 3)  # queue, filter, arrivals; the hash went with its last member
    assert job_keys(redis_client, job) == {}


def test_heartbeat_renews_beat_and_ttl(redis_client: Any, job: str) -> None:
    keys = JobKeys(job)
    registry = Registry(redis_client, keys, host="host-a", ttl=50)
    registry.join()
    redis_client.hset(keys.workers, registry.member, 0)
    leftovers(redis_client, keys)
    redis_client.persist(keys.dupefilter)
    assert registry.beat() == 1
    beat = float(redis_client.hget(keys.workers, registry.member))
    assert redis_now(redis_client) - beat < 5
    assert all(0 < ttl <= 50 for ttl in job_keys(redis_client, job).values())


# -- idle close and wake-ups, with a fake engine ---------------------------------------------


class FakeLoop:
    def __init__(self) -> None:
        self.running = False

    def start(self, interval: float, now: bool = True) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


class FakeStats(dict):
    def inc_value(self, key: str, count: int = 1, start: int = 0) -> None:
        self[key] = self.get(key, start) + count

    def set_value(self, key: str, value: Any) -> None:
        self[key] = value


class FakeEngine:
    """What ScaleOutJob uses of Scrapy's engine; the scheduler pops the shared queue."""

    def __init__(self, client: Any, keys: JobKeys) -> None:
        self.client, self.keys = client, keys
        self.spider = object()
        self.scheduler = self
        self.downloader = SimpleNamespace(active=set())
        self.scraper = SimpleNamespace(slot=SimpleNamespace(is_idle=lambda: True))
        self.crawled: list[Request] = []
        self.closed: list[str] = []

    def next_request(self) -> Request | None:
        popped = self.client.zpopmin(self.keys.requests)
        return Request(popped[0][0].decode()) if popped else None

    def crawl(self, request: Request) -> None:
        self.crawled.append(request)

    def close_spider_async(self, *, reason: str) -> defer.Deferred[None]:
        self.closed.append(reason)
        return defer.succeed(None)


@dataclass
class Worker:
    extension: ScaleOutJob
    engine: FakeEngine
    stats: FakeStats
    now: list[float]

    def at(self, seconds: float) -> Worker:
        self.now[0] = seconds
        return self


@pytest.fixture
def worker(redis_client: Any, job: str) -> Worker:
    keys = JobKeys(job)
    engine = FakeEngine(redis_client, keys)
    stats = FakeStats()
    settings = Settings({"FINEWS_REDIS_URL": REDIS_URL, "FINEWS_JOB": job, "FINEWS_IDLE_CLOSE": 2})
    crawler = SimpleNamespace(settings=settings, stats=stats, engine=engine, spidercls=FinewsLike)
    extension = ScaleOutJob(crawler, redis_client, Registry(redis_client, keys))  # type: ignore[arg-type]
    extension._watch = FakeLoop()  # type: ignore[assignment]
    extension._heartbeat = FakeLoop()  # type: ignore[assignment]
    now = [0.0]
    extension.clock = lambda: now[0]
    return Worker(extension, engine, stats, now)


def test_idle_worker_waits_for_an_empty_queue_then_closes(worker: Worker) -> None:
    ext, engine = worker.extension, worker.engine
    with pytest.raises(DontCloseSpider):
        worker.at(0.0).extension.spider_idle()
    assert ext._watch.running  # the looping call watches the queue from the first idle on
    worker.at(1.9).extension.watch()
    assert engine.closed == []
    worker.at(2.0).extension.watch()
    assert engine.closed == ["finished"]
    assert worker.stats["finews/redis/idle_close"] == 1
    assert not ext._watch.running
    ext.spider_idle()  # closing: no DontCloseSpider any more


def test_engine_idle_check_closes_once_queue_was_empty_long_enough(worker: Worker) -> None:
    with pytest.raises(DontCloseSpider):
        worker.at(0.0).extension.spider_idle()
    with pytest.raises(DontCloseSpider):
        worker.at(1.0).extension.spider_idle()
    worker.at(2.5).extension.spider_idle()  # returns: Scrapy's engine closes the spider
    assert worker.stats["finews/redis/idle_close"] == 1


def test_requests_of_other_workers_wake_an_idle_worker(
    worker: Worker, redis_client: Any, job: str
) -> None:
    engine = worker.engine
    with pytest.raises(DontCloseSpider):
        worker.at(0.0).extension.spider_idle()
    redis_client.zadd(JobKeys(job).requests, {b"http://site/a.html": 0})
    with pytest.raises(DontCloseSpider):  # a queued request: never closes
        worker.at(5.0).extension.spider_idle()
    worker.at(5.1).extension.watch()
    assert [(r.url, r.dont_filter) for r in engine.crawled] == [("http://site/a.html", True)]
    assert worker.stats["finews/redis/reinjected"] == 1
    # The queue has been empty only since now: the countdown starts again.
    worker.at(5.3).extension.watch()
    worker.at(7.2).extension.watch()
    assert engine.closed == []
    worker.at(7.3).extension.watch()
    assert engine.closed == ["finished"]


def test_a_busy_worker_neither_wakes_nor_counts_idle_time(
    worker: Worker, redis_client: Any, job: str
) -> None:
    engine = worker.engine
    with pytest.raises(DontCloseSpider):
        worker.at(0.0).extension.spider_idle()
    engine.downloader.active.add("a request")
    redis_client.zadd(JobKeys(job).requests, {b"http://site/a.html": 0})
    for t in (1.0, 3.0, 10.0):
        worker.at(t).extension.watch()
    assert engine.crawled == [] and engine.closed == []
    redis_client.delete(JobKeys(job).requests)
    engine.downloader.active.clear()
    worker.at(11.0).extension.watch()
    worker.at(12.9).extension.watch()
    assert engine.closed == []
    worker.at(13.0).extension.watch()
    assert engine.closed == ["finished"]


def test_spider_closed_unregisters(worker: Worker, redis_client: Any, job: str) -> None:
    ext = worker.extension
    ext.spider_opened()
    assert worker.stats["finews/redis/worker"] == 1
    assert redis_client.hlen(JobKeys(job).workers) == 1
    ext.spider_closed("finished")
    assert job_keys(redis_client, job) == {}


# -- end to end ------------------------------------------------------------------------------


@dataclass
class Mirror:
    site: MirrorSite
    server: MirrorServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def info_codes(self) -> set[str]:
        return {info_code_from_name(post.path) or "" for post in self.site.manifest.posts}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    site = MirrorSite(tmp_path_factory.mktemp("scaleout") / "site", synthetic_files(POSTS, 23))
    site.build()
    with MirrorServer(site.root) as server:
        yield Mirror(site, server)


def worker_command(mirror: Mirror, db_url: str, job: str, workers: int, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "scrapy", "crawl", "finews",
        "-a", f"base_url={mirror.url}",
        "-s", f"FINEWS_DATABASE_URL={db_url}",
        "-s", f"FINEWS_REDIS_URL={REDIS_URL}",
        "-s", f"FINEWS_JOB={job}",
        "-s", f"FINEWS_WORKERS={workers}",
        "-s", "FINEWS_IDLE_CLOSE=2",
        *QUIET, *args,
    ]  # fmt: skip


class Workers:
    """Worker processes of one job, their logs in files (a pipe could fill and block)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[tuple[subprocess.Popen[bytes], Path, float]] = []
        self.env = {
            k: v for k, v in environment().items() if k not in ("FINEWS_REDIS_URL", "FINEWS_JOB")
        }

    def start(self, command: list[str]) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{uuid.uuid4().hex[:8]}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=out
            )
        self.processes.append((process, log, time.monotonic()))
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        path = next(log for p, log, _ in self.processes if p is process)
        return path.read_text(errors="replace")

    def finish(self, timeout: float = TIMEOUT) -> list[Crawl]:
        crawls = []
        deadline = time.monotonic() + timeout
        for process, log, started in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"a worker did not stop on its own within {timeout} s:\n" + tail(log))
            seconds = time.monotonic() - started
            crawls.append(Crawl(process.returncode, "", log.read_text(errors="replace"), seconds))
        self.processes.clear()
        return crawls

    def kill(self) -> None:
        for process, _, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_job(
    mirror: Mirror, db_url: str, job: str, workers: int, logs: Path, *args: str
) -> list[Crawl]:
    group = Workers(logs)
    try:
        for _ in range(workers):
            group.start(worker_command(mirror, db_url, job, workers, *args))
        return group.finish()
    finally:
        group.kill()


def ok(crawls: list[Crawl]) -> None:
    for crawl in crawls:
        assert crawl.returncode == 0, crawl.stderr[-3000:]
        assert crawl.stats.get("finews/redis/idle_close") == 1  # stopped on its own
        assert "Traceback" not in crawl.stderr, crawl.stderr[-3000:]


# Every column a crawl decides, none of the ones that say when or in which run.
SNAPSHOT = {
    "articles": "info_code, title, published_at, category, outlet, source, digest, "
    "paragraphs, body_text, body_html, images, source_url, url, content_hash, revision",
    "article_categories": "info_code, category, url",
    "stock_mentions": "info_code, market, code, symbol, name, kind, is_primary, mentions",
    "categories": "slug, outlet",
}


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                table: sorted(
                    (tuple(row) for row in conn.execute(text(f"SELECT {cols} FROM {table}"))),
                    key=repr,
                )
                for table, cols in SNAPSHOT.items()
            }
    finally:
        engine.dispose()


def article_codes(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT info_code FROM articles")).scalars())
    finally:
        engine.dispose()


@dataclass
class Undisturbed:
    db_url: str
    crawls: list[Crawl]
    post_paths: list[str]
    job: str


@pytest.fixture(scope="module")
def undisturbed(
    mirror: Mirror, pg_admin: Any, pg_template: str, redis_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Undisturbed]:  # fmt: skip
    """Acceptance A's crawl: three workers of one job, into a database of their own."""
    job = f"test-{uuid.uuid4().hex[:12]}"
    with ExitStack() as stack:
        db_url = stack.enter_context(pg_database(pg_admin, template=pg_template))
        stack.callback(drop_job, redis_client, job)
        mirror.server.clear()
        crawls = run_job(mirror, db_url, job, 3, tmp_path_factory.mktemp("logs"))
        yield Undisturbed(db_url, crawls, post_paths(mirror.server.paths()), job)


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_share_one_crawl(
    undisturbed: Undisturbed, mirror: Mirror, redis_client: Any, tmp_path: Path, job: str
) -> None:
    crawls = undisturbed.crawls
    ok(crawls)
    # Three workers, each registered and each doing part of the work.
    assert sorted(c.stats.get("finews/redis/worker") for c in crawls) == [1, 2, 3]
    downloads = [c.stats.get("finews/pages/post", 0) for c in crawls]
    assert all(downloads), downloads
    # Each post page downloaded once, by one worker; every article stored once.
    assert len(mirror.site.manifest.posts) == POSTS
    assert sum(downloads) == POSTS
    counts = Counter(undisturbed.post_paths)
    assert len(counts) == POSTS and max(counts.values()) == 1
    codes = article_codes(undisturbed.db_url)
    assert len(codes) == len(set(codes)) and set(codes) == mirror.info_codes
    # The last worker out deleted the job's keys.
    assert job_keys(redis_client, undisturbed.job) == {}

    # A second job over the unchanged mirror: pages listing posts, no post page.
    mirror.server.clear()
    again = run_job(mirror, undisturbed.db_url, job, 1, tmp_path)
    ok(again)
    assert mirror.server.paths(), "the second job fetched nothing at all"
    assert post_paths(mirror.server.paths()) == []
    assert sum(c.stats.get("finews/pages/post", 0) for c in again) == 0
    assert job_keys(redis_client, job) == {}


def crawled_posts(log: str) -> int:
    """Post pages a worker at LOG_LEVEL=DEBUG has downloaded so far ("Crawled (200)")."""
    marker = "Crawled (200) <GET "
    urls = [
        line.split(marker, 1)[1].split(">", 1)[0] for line in log.splitlines() if marker in line
    ]
    return len(post_paths(urls))


@pytest.mark.slow
@pytest.mark.postgres
def test_killed_worker_leaves_nothing_a_second_run_cannot_finish(
    undisturbed: Undisturbed, mirror: Mirror, postgres_url: str, redis_client: Any,
    tmp_path: Path, job: str,
) -> None:  # fmt: skip
    group = Workers(tmp_path)
    try:
        victim = group.start(worker_command(mirror, postgres_url, job, 2, "-s", "LOG_LEVEL=DEBUG"))
        group.start(worker_command(mirror, postgres_url, job, 2))
        deadline = time.monotonic() + TIMEOUT
        while crawled_posts(group.log(victim)) < KILL_AFTER:
            assert victim.poll() is None, "the worker to kill ended first:\n" + group.log(victim)
            assert time.monotonic() < deadline, "the worker to kill downloaded no posts"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        crawls = group.finish()
    finally:
        group.kill()
    assert crawls[0].returncode == -signal.SIGKILL
    survivor = crawls[1]
    ok([survivor])
    assert job_keys(redis_client, job) == {}  # the dead worker did not hold the keys
    missing = mirror.info_codes - set(article_codes(postgres_url))

    # The second run of the job starts clean: it fetches what the first did not store.
    mirror.server.clear()
    rerun = run_job(mirror, postgres_url, job, 1, tmp_path)
    ok(rerun)
    fetched = {info_code_from_name(path) for path in post_paths(mirror.server.paths())}
    assert fetched == missing
    assert snapshot(postgres_url) == snapshot(undisturbed.db_url)
    assert job_keys(redis_client, job) == {}


@pytest.mark.slow
def test_idle_worker_takes_queued_requests_at_once_and_stops_after_idle_close(
    mirror: Mirror, sqlite_url: str, redis_client: Any, tmp_path: Path, job: str
) -> None:
    """A worker whose own start was done by others waits; a request queued by another
    worker is fetched within a fraction of a second (not at the engine's 5-second check);
    FINEWS_IDLE_CLOSE seconds after the queue ran dry, the worker stops."""
    from scrapy_redis.dupefilter import RFPDupeFilter

    keys = JobKeys(job)
    root = site_root(mirror.url)
    # The home page is "seen" already: this worker's start request is filtered out.
    filter_ = RFPDupeFilter(redis_client, keys.dupefilter)
    assert not filter_.request_seen(Request(home_url(root)))
    slug = mirror.site.manifest.posts[0].category
    page = category_url(root, slug)
    queued = Request(page, meta={"finews_page": "category"}, priority=10).to_dict()
    queued.update(callback="parse_category", errback="failed")

    # The other worker: this test's process, alive, so the job's keys are not cleaned up.
    redis_client.hset(
        keys.workers, f"{socket.gethostname()}:{os.getpid()}", redis_now(redis_client)
    )
    mirror.server.clear()
    group = Workers(tmp_path)
    try:
        process = group.start(worker_command(mirror, sqlite_url, job, 1))
        deadline = time.monotonic() + TIMEOUT
        while redis_client.hlen(keys.workers) < 2:  # registered: the spider is open
            assert time.monotonic() < deadline and process.poll() is None, group.log(process)
            time.sleep(0.05)
        time.sleep(0.5)
        assert post_paths(mirror.server.paths()) == [] and process.poll() is None
        redis_client.zadd(keys.requests, {pickle.dumps(queued, protocol=-1): -10})
        pushed = time.monotonic()
        wanted = urlsplit(page).path
        while wanted not in mirror.server.paths():
            assert time.monotonic() - pushed < 10, mirror.server.paths()
            time.sleep(0.02)
        latency = time.monotonic() - pushed
        # Then the category's posts; the worker stops once no page came for a while.
        served, last_served = len(mirror.server.paths()), time.monotonic()
        while process.poll() is None:
            assert time.monotonic() < deadline, group.log(process)
            if len(mirror.server.paths()) != served:
                served, last_served = len(mirror.server.paths()), time.monotonic()
            time.sleep(0.02)
        stopped_after = time.monotonic() - last_served
        crawls = group.finish()
    finally:
        group.kill()
    ok(crawls)
    (crawl,) = crawls
    assert latency < 1.5, latency
    assert crawl.stats.get("finews/redis/reinjected", 0) >= 1
    # The queued category page, its posts (and what their back-links lead to), once each.
    served = Counter(post_paths(mirror.server.paths()))
    assert {p.path for p in mirror.site.manifest.posts if p.category == slug} <= set(served)
    assert max(served.values()) == 1 and crawl.stats.get("finews/pages/post") == len(served)
    assert 1.9 <= stopped_after < 6.0, stopped_after  # FINEWS_IDLE_CLOSE=2, then shutdown
    assert "1 still running, the keys kept for them" in crawl.stderr
    assert redis_client.ttl(keys.dupefilter) > 0


def test_unreachable_redis_stops_the_crawl_with_one_line(sqlite_url: str, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "scrapy", "crawl", "finews",
        "-a", "base_url=http://127.0.0.1:1/",
        "-s", f"FINEWS_DATABASE_URL={sqlite_url}",
        "-s", "FINEWS_REDIS_URL=redis://:secret@127.0.0.1:1/0",
        *QUIET,
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert (
        len(errors) == 1
        and "Scale-out: cannot use Redis at redis://:***@127.0.0.1:1/0" in (errors[0])
    )
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    assert "Spider opened" not in result.stderr
