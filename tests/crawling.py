"""Helpers for end-to-end crawl tests: run ``scrapy cron`` in a subprocess, read what it did.

A crawl needs its own process (Twisted's reactor runs once per process). The mirror server
runs in the test process; its request log says exactly which pages were downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from crawler.items import Article
from crawler.pages.post import parse_post
from fixtures.server import MirrorSite, PostFile, synthetic_files
from pipelines.validate import problems
from schema.db import make_engine

ROOT = Path(__file__).resolve().parent.parent
_STAT = re.compile(r"'([\w/.\-]+)': (\d+)[,}]")
# Every setting a test crawl changes: no telnet, the log at INFO for the stats, and
# AutoThrottle starting at full speed (its 0.5 s start is for the live site, not 127.0.0.1).
QUIET = (
    "-s", "TELNETCONSOLE_ENABLED=False", "-s", "LOG_LEVEL=INFO",
    "-s", "AUTOTHROTTLE_START_DELAY=0",
)  # fmt: skip


@dataclass
class Crawl:
    """One finished ``scrapy cron`` process."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def stats(self) -> dict[str, int]:
        """The integer stats Scrapy dumped at the end."""
        dump = self.stderr.rpartition("Dumping Scrapy stats:")[2]
        return {key: int(value) for key, value in _STAT.findall(dump)}

    @property
    def verdict(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("finews cron:")]
        return lines[-1] if lines else ""


def cron_command(db_url: str, base_url: str, lock: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "scrapy", "cron",
        "-a", f"base_url={base_url}",
        "-s", f"FINEWS_DATABASE_URL={db_url}",
        "-s", f"FINEWS_LOCK_FILE={lock}",
        *QUIET, *args,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FINEWS_DATABASE_URL", None)
    env.pop("FINEWS_LOCK_FILE", None)
    return env


def run_cron(db_url: str, base_url: str, lock: Path, *args: str, timeout: float = 300) -> Crawl:
    started = time.monotonic()
    result = subprocess.run(
        cron_command(db_url, base_url, lock, *args),
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Crawl(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def later_posts(site: MirrorSite, n: int, seed: int) -> list[PostFile]:
    """``n`` new synthetic posts dated after everything on the site (new infoCodes)."""
    newest = max(post.published_at for post in site.manifest.posts)
    return synthetic_files(n, seed, start=newest + timedelta(days=1))


def post_paths(paths: list[str]) -> list[str]:
    """The post pages among requested paths (not robots, home, category or 404 pages)."""
    return [p for p in paths if re.search(r"/\d{4}/\d{2}/\d{2}/[^/]+\.html$", p)]


@dataclass
class Expected:
    """What a crawl of the mirror must store, from the post files it was rendered from."""

    # infoCode -> {category: article parsed from the post file published under it}
    articles: dict[str, dict[str | None, Article]]
    rejected_paths: set[str]


def expected_from(site: MirrorSite) -> Expected:
    articles: dict[str, dict[str | None, Article]] = {}
    rejected: set[str] = set()
    for post in site.manifest.posts:
        item = parse_post(site.source(post.source), "file:///mirror/" + post.source)
        if problems(item):
            rejected.add(post.path)
            continue
        assert item.info_code
        articles.setdefault(item.info_code, {})[item.category] = item
    return Expected(articles, rejected)


def table_rows(db_url: str, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables, in a stable order: a snapshot to compare."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(
                    (tuple(row) for row in conn.execute(text(f"SELECT * FROM {name}"))), key=repr
                )
                for name in tables
            }
    finally:
        engine.dispose()


def scalars(db_url: str, query: Any) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query).all())
    finally:
        engine.dispose()
