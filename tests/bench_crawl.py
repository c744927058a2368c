"""Crawl throughput: a bare Scrapy spider, the full ``finews`` crawl, and the full crawl as
two scrapy-redis workers, side by side.

One synthetic mirror (FINEWS_BENCH_POSTS posts, default 5,000, in 50 categories) is served
by a fast static server, then crawled in alternating runs (FINEWS_BENCH_REPEATS rounds):

- **bare**: one process, a spider that requests the same URLs (robots.txt, home, every
  category page and every post page) and does nothing with the responses;
- **full**: one process, ``scrapy crawl finews`` with extraction, validation, dedupe and
  storage into a fresh SQLite file;
- **workers**: the same crawl as two ``scrapy crawl finews`` workers of one scrapy-redis
  job (``crawler.scaleout``), sharing a Redis queue and dupefilter, storing into one
  fresh SQLite file.

All run with the project's settings and the same overrides: AutoThrottle off and 32
concurrent requests in all (divided between the workers, as the scale-out does for
politeness). The point is the ceiling, not politeness. A run's rate is the pages it
received over the time from the first process's spider opening to the last response any
of its processes received (so a worker's idle wait before it closes is not counted).
Targets on the 2-core reference machine, medians of the rounds: full >= 0.5 x bare (both
one process), workers >= 1.6 x full. CPU milliseconds per page are printed for every
process involved: the crawl processes, the static server and Redis.

``FINEWS_BENCH_PROFILE=1`` ends with one full crawl under cProfile and prints where its
time per page goes: Scrapy and Twisted, parsing, the item loader, pipelines, storage.

The static server is nginx when it is installed, or can be (``apt-get install nginx`` as
root, unless FINEWS_BENCH_INSTALL_NGINX=0); otherwise the Python mirror server in its own
process, with a warning: it steals CPU from the crawl and lowers every rate. Redis is a
``redis-server`` the benchmark starts on a free port (FINEWS_BENCH_REDIS_URL to use another).

``python -m tests.bench crawl`` or ``make bench-crawl``.
"""

from __future__ import annotations

import json
import os
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crawler.pages.site import category_url
from fixtures.server import MirrorSite, synthetic_files

POSTS = int(os.environ.get("FINEWS_BENCH_POSTS", "5000"))
REPEATS = int(os.environ.get("FINEWS_BENCH_REPEATS", "3"))
WORKERS = 2
CATEGORIES = 49  # outlet categories; with emnews, 50 category pages
FULL_TARGET = 0.5  # full / bare, one process each
WORKERS_TARGET = 1.6  # two workers / one full process
ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = {
    "AUTOTHROTTLE_ENABLED": "False",
    "CONCURRENT_REQUESTS": "32",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "32",
    "TELNETCONSOLE_ENABLED": "False",
    "LOG_LEVEL": "INFO",
}
_STAT = re.compile(r"'([\w/.\-]+)': ([\d.]+)[,}]")

# The bare spider: the same requests, nothing done with the responses.
BARE_SPIDER = """
from pathlib import Path
from scrapy import Request, Spider


class BareSpider(Spider):
    name = "bare"
    custom_settings = {"ITEM_PIPELINES": {}}

    def __init__(self, urls, **kwargs):
        super().__init__(**kwargs)
        self.urls = Path(urls).read_text().split()

    async def start(self):
        for url in self.urls:
            yield Request(url, self.parse)

    def parse(self, response):
        pass
"""


class CpuTime:
    """Extension: the process's CPU time from spider open to close, and the wall-clock
    moments of the spider's opening and of the last response, as stats."""

    def __init__(self, crawler) -> None:
        from scrapy import signals

        self.crawler = crawler
        self.started = 0.0
        crawler.signals.connect(self.opened, signal=signals.spider_opened)
        crawler.signals.connect(self.received, signal=signals.response_received)
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler) -> CpuTime:
        return cls(crawler)

    def opened(self) -> None:
        self.started = time.process_time()
        self.crawler.stats.set_value("bench/opened", time.time())

    def received(self) -> None:
        self.crawler.stats.set_value("bench/last_response", time.time())

    def closed(self) -> None:
        elapsed = time.process_time() - self.started
        self.crawler.stats.set_value("bench/cpu_ms", round(elapsed * 1000))


@dataclass(frozen=True)
class Run:
    rate: float  # pages per second, over all the run's processes
    cpu: float  # CPU milliseconds per page, crawl processes
    server_cpu: float  # CPU milliseconds per page, the static server
    redis_cpu: float  # CPU milliseconds per page, Redis (workers only)


def main() -> None:
    load = os.getloadavg()[0]
    if load > 0.8:
        print(f"   note: load average {load:.1f} before the runs: the machine is not idle")
    with tempfile.TemporaryDirectory(prefix="finews-bench-crawl-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx workers run as another user
        started = time.perf_counter()
        site = MirrorSite(work / "site", synthetic_files(POSTS, seed=5, categories=CATEGORIES))
        manifest = site.build()
        slugs = sorted({p.category for p in manifest.posts})
        print(
            f"   mirror: {len(manifest.posts)} posts in {len(slugs)} categories, "
            f"built in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        with (
            static_server(site.root, work) as (base_url, server_name, server_pids),
            redis(work) as (redis_url, redis_cpu),
        ):
            print(f"   static server: {server_name} at {base_url}; Redis at {redis_url}")
            root = base_url.rstrip("/")
            urls = [root + "/", *(category_url(root, s) for s in slugs)]
            urls += [root + p.path for p in manifest.posts]
            (work / "urls.txt").write_text("\n".join(urls) + "\n")
            (work / "bare.py").write_text(BARE_SPIDER)
            kinds = ["bare", "full", "workers"]
            runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
            context = Context(work, base_url, len(urls), server_pids, redis_url, redis_cpu)
            for n in range(REPEATS):
                for kind in kinds:
                    runs[kind].append(context.crawl(kind, n))
                line = "   ".join(f"{k} {runs[k][-1].rate:5.0f}" for k in kinds)
                full, bare, workers = runs["full"][-1], runs["bare"][-1], runs["workers"][-1]
                print(
                    f"   round {n + 1}: {line} pages/s   full/bare {full.rate / bare.rate:.2f}"
                    f"   workers/full {workers.rate / full.rate:.2f}",
                    flush=True,
                )
            if os.environ.get("FINEWS_BENCH_PROFILE") == "1":
                profile(context)
        report(runs, server_name)


def report(runs: dict[str, list[Run]], server_name: str) -> None:
    labels = {
        "bare": "bare Scrapy spider, 1 process",
        "full": "full crawl, 1 process",
        "workers": f"full crawl, {WORKERS} redis workers",
    }
    for kind, label in labels.items():
        if kind not in runs:
            continue
        rate = statistics.median(r.rate for r in runs[kind])
        cpu = statistics.median(r.cpu for r in runs[kind])
        server = statistics.median(r.server_cpu for r in runs[kind])
        extra = f", Redis {statistics.median(r.redis_cpu for r in runs[kind]):.2f}"
        print(
            f"   {label:38}: {rate:6.0f} pages/s; CPU ms/page: crawl {cpu:.2f}, "
            f"server {server:.2f}{extra if kind == 'workers' else ''}"
        )

    def ratio(a: str, b: str) -> float:
        return statistics.median(x.rate / y.rate for x, y in zip(runs[a], runs[b], strict=True))

    full, workers = ratio("full", "bare"), ratio("workers", "full")
    print(f"   full / bare            : {full:5.2f}   (median of {REPEATS} rounds; target >= "
          f"{FULL_TARGET}: {'ok' if full >= FULL_TARGET else 'BELOW TARGET'})")  # fmt: skip
    print(f"   {WORKERS} workers / full      : {workers:5.2f}   (target >= {WORKERS_TARGET}: "
          f"{'ok' if workers >= WORKERS_TARGET else 'BELOW TARGET'})")  # fmt: skip
    print(f"   served by              : {server_name}")


@dataclass
class Context:
    work: Path
    base_url: str
    pages: int
    server_pids: list[int]
    redis_url: str
    redis_cpu: object  # () -> float, Redis's CPU seconds so far

    def command(self, kind: str, n: int, database: Path | None = None) -> list[str]:
        settings = [arg for key, value in OVERRIDES.items() for arg in ("-s", f"{key}={value}")]
        extensions = {"tests.bench_crawl.CpuTime": 0}
        if kind == "bare":
            command = [
                "runspider",
                str(self.work / "bare.py"),
                "-a",
                f"urls={self.work / 'urls.txt'}",
            ]
        else:
            database = database or self.work / f"{kind}-{n}.db"
            command = ["crawl", "finews", "-a", f"base_url={self.base_url}",
                       "-s", f"FINEWS_DATABASE_URL=sqlite:///{database}"]  # fmt: skip
        settings += ["-s", f"EXTENSIONS={json.dumps(extensions)}"]
        return [sys.executable, "-m", "scrapy", *command, *settings]

    def crawl(self, kind: str, n: int) -> Run:
        """One run's rate and CPU cost, from Scrapy's own stats; checks it fetched them all."""
        server_before = cpu_seconds(self.server_pids)
        redis_before = self.redis_cpu()
        if kind == "workers":
            job = f"bench-{uuid.uuid4().hex[:8]}"
            scale = ["-s", f"FINEWS_REDIS_URL={self.redis_url}", "-s", f"FINEWS_JOB={job}",
                     "-s", f"FINEWS_WORKERS={WORKERS}", "-s", "FINEWS_IDLE_CLOSE=2"]  # fmt: skip
            database = self.work / f"workers-{n}.db"
            # The schema first, so that the workers do not race to create it.
            migrate = [sys.executable, "-m", "schema.migrate"]
            subprocess.run(migrate, cwd=ROOT, env=self.env(database), check=True,
                           capture_output=True)  # fmt: skip
            processes = [
                self.start(self.command(kind, n, database) + scale) for _ in range(WORKERS)
            ]
        else:
            processes = [self.start(self.command(kind, n))]
        stats = [self.finish(kind, process) for process in processes]
        total = Counter[str]()
        for one in stats:
            total.update(one)
        fetched = total["downloader/response_status_count/200"]
        if fetched < self.pages:
            raise SystemExit(f"the {kind} crawl fetched {fetched:.0f} of {self.pages} pages")
        span = max(s["bench/last_response"] for s in stats) - min(s["bench/opened"] for s in stats)
        responses = total["response_received_count"]
        server = (cpu_seconds(self.server_pids) - server_before) * 1000 / responses
        redis_ms = (self.redis_cpu() - redis_before) * 1000 / responses
        return Run(responses / span, total["bench/cpu_ms"] / responses, server, redis_ms)

    def env(self, database: Path | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if database is not None:
            env["FINEWS_DATABASE_URL"] = f"sqlite:///{database}"
        return env

    def start(self, command: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(command, cwd=ROOT, env=self.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    def finish(self, kind: str, process: subprocess.Popen[str]) -> dict[str, float]:
        _, stderr = process.communicate(timeout=1800)
        dump = stderr.rpartition("Dumping Scrapy stats:")[2]
        stats = {key: float(value) for key, value in _STAT.findall(dump)}
        if process.returncode != 0 or "bench/last_response" not in stats:
            raise SystemExit(f"the {kind} crawl failed:\n{stderr[-3000:]}")
        return stats


# -- where the time goes ---------------------------------------------------------------------

# Parts of a crawl's time, as the cumulative time of their entry points (file, function).
PARTS = {
    "items (item loader)": [("itemloaders/__init__.py", "add_value"),
                            ("itemloaders/__init__.py", "load_item")],
    "parsing (pages, less the loader)": [("crawler/pages/site.py", "read_post_page"),
                                         ("crawler/pages/site.py", "parse_listing")],
    "pipelines (validate, dedupe, store)": [("scrapy/pipelines/__init__.py",
                                            "process_item_async")],
    "storage (batches written)": [("pipelines/store.py", "flush")],
}  # fmt: skip


def profile(context: Context) -> None:
    """One full crawl under cProfile: where its time per page goes, start-up left out."""
    out = context.work / "full.prof"
    command = context.command("full", 99)
    command[1:3] = ["-m", "cProfile", "-o", str(out), "-m", "scrapy"]
    context.finish("profiled", context.start(command))
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]

    def cumulative(entries: list[tuple[str, str]]) -> float:
        return sum(
            row[3] for (filename, _, name), row in stats.items()
            if any(filename.endswith(f) and name == n for f, n in entries)
        )  # fmt: skip

    total = cumulative([("twisted/internet/asyncioreactor.py", "run")])
    part = {name: cumulative(entries) for name, entries in PARTS.items()}
    part["parsing (pages, less the loader)"] -= part["items (item loader)"]
    part["pipelines (validate, dedupe, store)"] -= part["storage (batches written)"]
    part["Scrapy and Twisted (the rest)"] = total - sum(part.values())
    print(f"   profile of one full crawl ({context.pages} pages; cProfile slows everything "
          "about twofold, the shares hold):")  # fmt: skip
    for name, seconds in part.items():
        print(f"     {name:38} {seconds * 1000 / context.pages:5.2f} ms/page  "
              f"{seconds / total:5.1%}")  # fmt: skip


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes (and their children, for nginx's workers)."""
    total = 0.0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextmanager
def redis(work: Path) -> Iterator[tuple[str, object]]:
    """(URL, CPU-seconds function) of a Redis for the workers: a redis-server of our own on
    a free port, or FINEWS_BENCH_REDIS_URL."""
    import redis as redis_client

    url = os.environ.get("FINEWS_BENCH_REDIS_URL")
    process = None
    if url is None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed: apt-get install redis-server, or "
                             "set FINEWS_BENCH_REDIS_URL")  # fmt: skip
        port = free_port()
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(work)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(port, process)
        url = f"redis://127.0.0.1:{port}/0"
    client = redis_client.Redis.from_url(url)

    def used_cpu() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    try:
        yield url, used_cpu
    finally:
        client.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


# -- static servers ------------------------------------------------------------------------------


@contextmanager
def static_server(root: Path, work: Path) -> Iterator[tuple[str, str, list[int]]]:
    """(base URL, server description, its pids) of a static server for ``root``."""
    nginx = find_nginx()
    port = free_port()
    if nginx:
        conf = nginx_conf(root, work, port)
        process = subprocess.Popen([nginx, "-p", str(work), "-c", str(conf)],
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        name = f"nginx ({nginx})"
    else:
        print(
            "   WARNING: nginx is not installed; serving with the Python mirror server, which "
            "takes CPU from the crawl: every rate is lower and the ratios less telling.",
            flush=True,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "fixtures.server", str(root), "--port", str(port)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        name = "the Python mirror server (fixtures.server), nginx unavailable"
    try:
        wait_for_port(port, process)
        pids = [process.pid]
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
        yield f"http://127.0.0.1:{port}/", name, pids
    finally:
        process.terminate()
        process.wait(timeout=10)


def find_nginx() -> str | None:
    """nginx's path; installs Debian's package when allowed and possible."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found or os.environ.get("FINEWS_BENCH_INSTALL_NGINX", "1") == "0":
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("   installing nginx (apt-get install nginx-light or nginx) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600, **quiet)
    for package in ("nginx-light", "nginx"):
        installed = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
            check=False, timeout=600, **quiet,
        )  # fmt: skip
        if installed.returncode == 0:
            break
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", 1) else None)


def nginx_conf(root: Path, work: Path, port: int) -> Path:
    """A foreground nginx serving ``root`` like the static site (types, 404 page)."""
    conf = work / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "nginx-error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    types {{ text/html html; application/xml xml; text/plain txt; }}
    default_type application/octet-stream;
    charset utf-8;
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {work / "tmp"};
    proxy_temp_path {work / "tmp"};
    fastcgi_temp_path {work / "tmp"};
    uwsgi_temp_path {work / "tmp"};
    scgi_temp_path {work / "tmp"};
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.html;
        error_page 404 /404.html;
    }}
}}
""",
        encoding="utf-8",
    )
    (work / "tmp").mkdir(exist_ok=True)
    return conf


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read() if process.stderr else ""
            raise SystemExit(f"the static server exited: {error}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"the static server did not listen on port {port}")


if __name__ == "__main__":
    main()
