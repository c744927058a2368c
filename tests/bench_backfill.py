"""Backfill throughput: ``scrapy crawl archive`` over 100,000 synthetic post files.

The tree is generated in chunks into a temporary directory (``old_post/`` and ``_posts/``,
1% broken files, 1% emnews/outlet twins), outside the timing and outside the measured
processes. The same files are first read and parsed one after another in this process
(``crawler.postfiles.read_post_file``, nothing stored): the single-process extraction
rate. The tree is then backfilled into a fresh SQLite database by one ``scrapy crawl
archive`` command in its own process, and backfilled again (a no-op run). Reported: posts
per second of the whole command (start-up included), its ratio to the extraction rate,
peak memory of its process tree (the crawl process, its parser processes, the forkserver
and multiprocessing's resource tracker): RSS summed, sampled every 50 ms, and PSS summed
(shared pages counted once), every 250 ms; and the no-op run's time.
Targets on the 2-core machine: >= 1,500 posts/s, >= 0.8 x the extraction rate, <= 300 MB,
a no-op run under 10 s.

``python -m tests.bench backfill``; FINEWS_BENCH_BACKFILL_FILES sets the number of files.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psutil
from sqlalchemy import select

from crawler.postfiles import Filters, ReadTask, read_post_file, walk
from fixtures.synth import DEFAULT_START, generate, write
from schema.db import make_engine
from schema.models import CrawlRun

ROOT = Path(__file__).resolve().parent.parent
FILES = int(os.environ.get("FINEWS_BENCH_BACKFILL_FILES", "100000"))
CHUNK = 5000  # posts generated at a time: ~40 MB instead of ~750 MB for the whole tree
CHUNK_DAYS = 40  # a chunk spans ~13 days; apart by more, so infoCodes never collide
BROKEN = 0.01
TWINS = 0.01
TARGET_RATE = 1500
TARGET_RATIO = 0.8  # of the single-process extraction rate
TARGET_MB = 300
TARGET_NOOP_SECONDS = 10


@dataclass
class Backfill:
    seconds: float
    peak_rss_mb: float
    peak_pss_mb: float
    workers: int
    run: CrawlRun
    returncode: int
    crawl_cpu: float  # CPU seconds of the crawl process
    workers_cpu: float  # CPU seconds of its child processes (parser processes), summed


def build_tree(root: Path, files: int) -> int:
    """``files`` synthetic posts under ``root``: older chunks in old_post/, the last in _posts/."""
    written = 0
    for k, first in enumerate(range(0, files, CHUNK)):
        count = min(CHUNK, files - first)
        posts = generate(
            count,
            seed=k,
            start=DEFAULT_START + timedelta(days=CHUNK_DAYS * k),
            broken=BROKEN,
            duplicates=TWINS,
        )
        last = first + count >= files
        written += len(write(posts, root / ("_posts" if last and k else "old_post")))
    return written


def extract_alone(tree: Path) -> tuple[int, float]:
    """Every post file under ``tree`` read and parsed in this process, one after another
    (``read_post_file``, as a parser process does it): files and seconds, walk excluded."""
    tasks = [ReadTask(f.path, f.url, f.named_as_post) for f in walk(tree).files]
    filters = Filters()
    started = time.perf_counter()
    for task in tasks:
        read_post_file(task, filters)
    return len(tasks), time.perf_counter() - started


def _sample(process: psutil.Process, cpu: dict[int, float], pss: bool) -> tuple[int, int]:
    """RSS of the process tree now, and its PSS if ``pss`` (else 0); records each process's
    CPU seconds so far in ``cpu``."""
    rss = proportional = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            if pss:  # slower to read (the kernel walks the process's pages)
                info = proc.memory_full_info()
                rss += info.rss
                proportional += info.pss
            else:
                rss += proc.memory_info().rss
            times = proc.cpu_times()
            cpu[proc.pid] = times.user + times.system
    return rss, proportional


def backfill(tree: Path, db_url: str, log: Path) -> Backfill:
    """One ``scrapy crawl archive`` command; its time, peak tree RSS and PSS, ledger row."""
    env = {**os.environ, "FINEWS_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "scrapy.cmdline",
        "crawl",
        "archive",
        "-a",
        f"path={tree}",
        "-s",
        f"LOG_FILE={log}",
        "-s",
        "TELNETCONSOLE_ENABLED=false",
    ]
    peak = peak_pss = 0
    cpu: dict[int, float] = {}
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env)
    process = psutil.Process(child.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        for n in itertools.count():
            if done.is_set():
                break
            with contextlib.suppress(psutil.Error):
                rss, pss = _sample(process, cpu, pss=n % 5 == 0)
                peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode = child.wait()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            run = conn.execute(select(CrawlRun).order_by(CrawlRun.id.desc()).limit(1)).one()
    finally:
        engine.dispose()
    workers = int(run.arguments.get("workers", 0))
    crawl_cpu = cpu.pop(child.pid, 0.0)
    return Backfill(
        seconds, peak / 2**20, peak_pss / 2**20, workers, run, returncode, crawl_cpu,
        sum(cpu.values()),
    )  # fmt: skip


def describe(run: CrawlRun) -> str:
    return (
        f"seen {run.seen:,} = stored {run.stored:,} + updated {run.updated:,} + "
        f"unchanged {run.unchanged:,} + duplicates {run.duplicates:,} + "
        f"rejected {run.rejected:,} + skipped {run.skipped:,}"
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="finews-bench-backfill-"))
    try:
        tree = work / "site"
        started = time.perf_counter()
        files = build_tree(tree, FILES)
        print(f"   tree: {files:,} post files generated in {time.perf_counter() - started:.1f} s")
        parsed, extract_seconds = extract_alone(tree)
        db_url = f"sqlite:///{work / 'finews.db'}"
        first = backfill(tree, db_url, work / "first.log")
        second = backfill(tree, db_url, work / "second.log")
        for name, result in (("first", first), ("second", second)):
            if result.returncode != 0 or result.run.status != "finished":
                print(f"   {name} run failed: exit {result.returncode}, {result.run.status}")
                print((work / f"{name}.log").read_text(encoding="utf-8")[-3000:])
                return
        rate = files / first.seconds
        extract_rate = parsed / extract_seconds
        print(f"   first run : {first.seconds:6.1f} s  {describe(first.run)}")
        print(
            f"   posts/s   : {rate:8.0f}   (target >= {TARGET_RATE}; "
            f"{first.workers} parser processes, start-up included)"
        )
        print(
            f"   extraction: {extract_rate:8.0f}   posts/s in one process, nothing stored "
            f"({parsed:,} files in {extract_seconds:.1f} s)"
        )
        print(f"   ratio     : {rate / extract_rate:8.2f}   (target >= {TARGET_RATIO})")
        print(f"   peak RSS  : {first.peak_rss_mb:8.0f} MB (target <= {TARGET_MB}; all processes)")
        print(
            f"   peak PSS  : {first.peak_pss_mb:8.0f} MB (all processes; pages shared between "
            "them, as with the forkserver, counted once)"
        )
        print(
            f"   CPU/post  : {1000 * first.crawl_cpu / files:8.2f} ms crawl process + "
            f"{1000 * first.workers_cpu / files:.2f} ms parser processes (2 cores: "
            f"{2 * files / (first.crawl_cpu + first.workers_cpu):.0f} posts/s at best)"
        )
        print(
            f"   no-op run : {second.seconds:6.1f} s  (target < {TARGET_NOOP_SECONDS} s)  "
            f"{describe(second.run)}"
        )
        print(f"   no-op RSS : {second.peak_rss_mb:8.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
