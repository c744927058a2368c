"""Search times on 100,000 synthetic articles: 2- and 4-character queries, SQLite and PostgreSQL.

Each backend gets a fresh database filled through ``pipelines.store.Store`` (so the SQLite
triggers index every article as a crawl would) with the items of ``fixtures.synth``
(``generate``, in chunks, their truth as items: no extraction). Then ``schema.search.search``
runs each query REPEATS times: the median and the slowest are reported, with the number of
hits (limit 20). The queries: a word in about one article in eight (茅台, 贵州茅台), one in
none (降准, 央行降准: on PostgreSQL a 2-character miss scans every article, the worst
case), the common word within one day, and a 1-character miss (a scan on both). Target:
every query of 2 or more characters under 1 s. Also reported: the fill rate
and the time of ``rebuild``.

``python -m tests.bench_search``; FINEWS_BENCH_SEARCH_ARTICLES sets the number of articles.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from crawler.items import Article, Stock
from crawler.processors import stock_symbol
from fixtures.synth import DEFAULT_START, generate
from pipelines.store import Store
from schema.db import make_engine, redact
from schema.migrate import upgrade
from schema.search import rebuild, search

ARTICLES = int(os.environ.get("FINEWS_BENCH_SEARCH_ARTICLES", "100000"))
REPEATS = 5
CHUNK = 5000  # posts generated at a time, to keep memory flat
CHUNK_DAYS = 40  # chunks this many days apart never share an infoCode
BATCH_SIZE = 1000
TARGET_SECONDS = 1.0
PG_ADMIN_URL = os.environ.get(
    "FINEWS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ONE_DAY = (DEFAULT_START + timedelta(days=CHUNK_DAYS)).date()
QUERIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("2 chars, common", "茅台", {}),
    ("4 chars, common", "贵州茅台", {}),
    ("2 chars, no hit", "降准", {}),
    ("4 chars, no hit", "央行降准", {}),
    ("2 chars, one day", "茅台", {"since": ONE_DAY, "until": ONE_DAY}),
    ("4 chars, one day", "贵州茅台", {"since": ONE_DAY, "until": ONE_DAY}),
    ("1 char, no hit", "鳄", {}),
)


def items(count: int) -> Iterator[Article]:
    """``count`` synthetic articles as a perfect extractor would return them."""
    for k, first in enumerate(range(0, count, CHUNK)):
        start = DEFAULT_START + timedelta(days=CHUNK_DAYS * k)
        for post in generate(min(CHUNK, count - first), seed=k, start=start):
            truth = post.truth
            stocks = [
                Stock(s["market"], s["code"], stock_symbol(s["market"], s["code"]), s["name"],
                      s["kind"], s["primary"], s["mentions"])
                for s in truth["stocks"]
            ]  # fmt: skip
            yield Article(
                info_code=truth["info_code"], title=truth["title"],
                published_at=truth["published_at"], category=truth["category"],
                outlet=truth["outlet"], source=truth["source"], digest=truth["digest"],
                paragraphs=truth["paragraphs"], images=truth["images"], body_html=None,
                source_url=truth["source_url"], url=f"file:///synth/{post.filename}",
                stocks=stocks,
            )  # fmt: skip


def fill(url: str, count: int) -> float:
    """Store ``count`` articles into the migrated database at ``url``; articles/s."""
    store = Store(url, batch_size=BATCH_SIZE, flush_seconds=3600)
    store.open("bench-search", mode="bench")
    started = time.perf_counter()
    for article in items(count):
        store.add(article)
    store.flush()
    elapsed = time.perf_counter() - started
    store.finish()
    return count / elapsed


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def measure(url: str) -> None:
    rate = fill(url, ARTICLES)
    print(f"   filled at {rate:.0f} articles/s", flush=True)
    engine = make_engine(url)
    try:
        for label, query, filters in QUERIES:
            runs = [timed(partial(search, engine, query, **filters)) for _ in range(REPEATS)]
            times = [seconds for seconds, _ in runs]
            hits = len(runs[0][1])
            verdict = "ok" if max(times) < TARGET_SECONDS else f"> {TARGET_SECONDS:.0f} s"
            print(
                f"   {label:<18}{statistics.median(times):>9.3f}{max(times):>9.3f}{hits:>6}"
                f"  {verdict:<8}{query}",
                flush=True,
            )
        seconds, indexed = timed(lambda: rebuild(engine))
        print(f"   rebuild: {indexed} articles in {seconds:.1f} s", flush=True)
    finally:
        engine.dispose()


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"finews_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    print(
        f"search: {ARTICLES} synthetic articles, limit 20, {REPEATS} runs per query, "
        f"seconds (target < {TARGET_SECONDS:.0f} s each); one day = {ONE_DAY}"
    )
    print(f"   {'query':<18}{'median':>9}{'max':>9}{'hits':>6}")
    on_each_backend(measure)


def on_each_backend(measure: Callable[[str], None]) -> None:
    """``measure(url)`` on a fresh SQLite database, then on a fresh PostgreSQL one."""
    for name, database in (("sqlite", sqlite_database), ("postgresql", postgres_database)):
        print(f"   -- {name}", flush=True)
        try:
            with database() as url:
                measure(url)
        except Exception as exc:  # one backend down must not hide the other's figures
            print(f"   failed: {type(exc).__name__}: {exc}".splitlines()[0])
            if name == "postgresql":
                print(f"   (PostgreSQL at {redact(PG_ADMIN_URL)})")


if __name__ == "__main__":
    sys.exit(main())
