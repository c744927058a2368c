"""Crawl throughput: a bare Scrapy spider against the full ``finews`` pipeline, side by side.

One synthetic mirror (FINEWS_BENCH_POSTS posts, default 5,000, in 50 categories) is served
by a fast static server, then crawled in alternating runs (FINEWS_BENCH_REPEATS rounds):

- **bare**: a spider that requests the same URLs (robots.txt, home, every category page
  and every post page) and does nothing with the responses;
- **full**: ``scrapy crawl finews`` with extraction, validation, dedupe and storage into a
  fresh SQLite file, split over FINEWS_BENCH_PROCESSES crawl processes (default: one per
  core, at most 4; ``crawler.shards``): Scrapy keeps one core busy per process, and a
  crawl of a fast site is bound by that;
- **full, one process** (diagnostic): the same crawl with FINEWS_CRAWL_PROCESSES=1, the
  default, where page reading and writes go to helper processes instead.

All run with the project's settings and the same overrides (AutoThrottle off, 32
concurrent requests in all, shared between a split crawl's processes: the point is the
ceiling, not politeness). The figure is pages per second over the spider's lifetime
(Scrapy's ``elapsed_time_seconds``, the first process's: it opens first and closes last);
the median of the rounds' ratios is the pipeline's cost (target: full >= 0.85 x bare).
CPU milliseconds per page of the crawl processes are printed too (page workers and the
writer process are not counted there).

The static server is nginx when it is installed, or can be (``apt-get install nginx`` as
root, unless FINEWS_BENCH_INSTALL_NGINX=0); otherwise the Python mirror server in its own
process, with a warning: it steals CPU from the crawl (shared/PERF.md) and lowers both.

``python -m tests.bench crawl`` or ``make bench``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crawler import settings as project_settings
from crawler.pages.site import category_url
from fixtures.server import MirrorSite, synthetic_files

POSTS = int(os.environ.get("FINEWS_BENCH_POSTS", "5000"))
PROCESSES = int(os.environ.get("FINEWS_BENCH_PROCESSES", "0")) or min(4, os.cpu_count() or 1)
REPEATS = int(os.environ.get("FINEWS_BENCH_REPEATS", "3"))
CATEGORIES = 49  # outlet categories; with emnews, 50 category pages as in PERF.md
TARGET = 0.85
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
    """Extension: the crawl process's CPU time from spider open to close, as a stat."""

    def __init__(self, crawler) -> None:
        from scrapy import signals

        self.crawler = crawler
        self.started = 0.0
        crawler.signals.connect(self.opened, signal=signals.spider_opened)
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler) -> CpuTime:
        return cls(crawler)

    def opened(self) -> None:
        self.started = time.process_time()

    def closed(self) -> None:
        elapsed = time.process_time() - self.started
        # Added: a split crawl's other processes have added theirs (crawler.shards).
        self.crawler.stats.inc_value("bench/cpu_ms", round(elapsed * 1000))


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
        with static_server(site.root, work) as (base_url, server_name):
            print(f"   static server: {server_name} at {base_url}", flush=True)
            root = base_url.rstrip("/")
            urls = [root + "/", *(category_url(root, s) for s in slugs)]
            urls += [root + p.path for p in manifest.posts]
            (work / "urls.txt").write_text("\n".join(urls) + "\n")
            (work / "bare.py").write_text(BARE_SPIDER)
            bare: list[Run] = []
            full: list[Run] = []
            single: list[Run] = []
            for n in range(REPEATS):
                bare.append(crawl(work, "bare", base_url, len(urls)))
                single.append(crawl(work, "single", base_url, len(urls), n))
                full.append(crawl(work, "full", base_url, len(urls), n))
                print(
                    f"   round {n + 1}: bare {bare[-1].rate:5.0f} pages/s ({bare[-1].cpu:.2f} ms "
                    f"CPU/page)   one process {single[-1].rate:5.0f} ({single[-1].cpu:.2f})"
                    f"   full {full[-1].rate:5.0f} ({full[-1].cpu:.2f})"
                    f"   ratio {full[-1].rate / bare[-1].rate:.2f}",
                    flush=True,
                )
        ratio = statistics.median(f.rate / b.rate for f, b in zip(full, bare, strict=True))
        single_ratio = statistics.median(u.rate / b.rate for u, b in zip(single, bare, strict=True))
        verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
        for name, runs in (
            ("bare Scrapy spider    ", bare),
            ("full, one process     ", single),
            ("full pipeline (SQLite)", full),
        ):
            rate = statistics.median(r.rate for r in runs)
            cpu = statistics.median(r.cpu for r in runs)
            print(f"   {name} : {rate:6.0f} pages/s, {cpu:.2f} ms CPU/page in crawl processes")
        print(f"   one process / bare     : {single_ratio:6.2f}   (FINEWS_CRAWL_PROCESSES=1, the "
              "default: page reading and writes in helper processes)")  # fmt: skip
        print(f"   ratio full / bare      : {ratio:6.2f}   (median of {REPEATS} rounds, "
              f"{PROCESSES} crawl processes; target >= {TARGET}: {verdict})")  # fmt: skip
        print(f"   served by              : {server_name}")


@dataclass(frozen=True)
class Run:
    rate: float  # pages per second
    cpu: float  # CPU milliseconds per page, crawl processes only (all of a split crawl)


def crawl(work: Path, kind: str, base_url: str, pages: int, n: int = 0) -> Run:
    """One crawl's rate and CPU cost, from Scrapy's own stats; checks it fetched them all."""
    settings = [arg for key, value in OVERRIDES.items() for arg in ("-s", f"{key}={value}")]
    # The project's extensions (both crawls get them) plus the CPU clock.
    extensions = {**project_settings.EXTENSIONS, "tests.bench_crawl.CpuTime": 0}
    settings += ["-s", f"EXTENSIONS={json.dumps(extensions)}"]
    if kind == "bare":
        command = ["runspider", str(work / "bare.py"), "-a", f"urls={work / 'urls.txt'}"]
    else:
        database = work / f"{kind}-{n}.db"
        processes = PROCESSES if kind == "full" else 1
        command = ["crawl", "finews", "-a", f"base_url={base_url}",
                   "-s", f"FINEWS_DATABASE_URL=sqlite:///{database}",
                   "-s", f"FINEWS_CRAWL_PROCESSES={processes}"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", *command, *settings],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    dump = result.stderr.rpartition("Dumping Scrapy stats:")[2]
    stats = {key: float(value) for key, value in _STAT.findall(dump)}
    fetched = stats.get("downloader/response_status_count/200", 0)
    if result.returncode != 0 or fetched < pages:
        raise SystemExit(
            f"the {kind} crawl fetched {fetched:.0f} of {pages} pages:\n{result.stderr[-3000:]}"
        )
    responses = stats["response_received_count"]
    return Run(responses / stats["elapsed_time_seconds"], stats["bench/cpu_ms"] / responses)


# -- static servers ------------------------------------------------------------------------------


@contextmanager
def static_server(root: Path, work: Path) -> Iterator[tuple[str, str]]:
    """(base URL, server description) of a static server for ``root``, stopped on exit."""
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
            "takes CPU from the crawl: both rates are lower and the ratio less telling.",
            flush=True,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "fixtures.server", str(root), "--port", str(port)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        name = "the Python mirror server (fixtures.server), nginx unavailable"
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/", name
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
