"""The store in a running crawl: batches are written on its own thread, in order, and items
wait while two batches are still being written (pipelines.store's module docstring).

The store runs in a subprocess with Scrapy's asyncio reactor, as in ``scrapy crawl``:
the reactor (and the store's choice of thread) is the process's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from schema.db import make_engine
from schema.models import Article, CrawlRun, Reject

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import asyncio, json, sys, threading
from dataclasses import replace

from twisted.internet import asyncioreactor

asyncioreactor.install()
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from sqlalchemy import event

from crawler.items import Stock
from pipelines.store import Store
from tests.conftest import make_article

store = Store(sys.argv[1], batch_size=100, flush_seconds=0)
report = {"threads": {}, "waited": 0}


def seen(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith("INSERT INTO ARTICLES"):
        name = threading.current_thread().name.partition("_")[0]
        report["threads"][name] = report["threads"].get(name, 0) + 1


async def main():
    store.open("test")
    event.listen(store.engine, "before_cursor_execute", seen)
    for i in range(1000):
        article = make_article(f"NW2022{i:014d}")
        if i == 500:  # refused by the database: its batch is written again row by row
            stock = Stock(None, "600160", "600160.SH", "x", "stock", False, 1)  # no market
            article = replace(article, stocks=[stock])
        wait = store.add(article)
        if wait is not None:
            report["waited"] += 1
            await wait
    await store.close_writes()
    store.finish("finished")
    report["stats"] = {k: v for k, v in store.stats.items() if k.startswith("finews/")}


def done(result):
    reactor.stop()
    return result


reactor.callWhenRunning(lambda: Deferred.fromFuture(asyncio.ensure_future(main())).addBoth(done))
reactor.run()
print(json.dumps(report))
"""


def test_batches_are_written_on_the_store_thread_in_order_and_items_wait(tmp_path):
    url = f"sqlite:///{tmp_path / 'thread.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Every batch (and the refused batch's rows one by one) on the store's thread only.
    assert set(report["threads"]) == {"finews-store"}
    # 1,000 items in batches of 100: items waited for the writes at least once.
    assert report["waited"] > 0
    assert report["stats"]["finews/stored"] == 999
    assert report["stats"]["finews/rejected"] == 1
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Article)) == 999
            reasons = conn.execute(select(Reject.reason, Reject.info_code)).all()
            assert reasons == [("refused by the database", "NW202200000000000500")]
            run = conn.execute(select(CrawlRun)).one()
            assert (run.status, run.stored, run.rejected) == ("finished", 999, 1)
    finally:
        engine.dispose()


# A slow database for a backfill: every batch write sleeps; the peak number of items in the
# pipelines (sent by start() and not yet done) is written to SLOW_DB_REPORT at close.
SLOW_DB = """
import json, os, time

from scrapy import signals

import pipelines.store


class SlowDatabase:
    def __init__(self, crawler):
        self.crawler, self.peak = crawler, 0
        write = pipelines.store.write_batch

        def slow(*args, **kwargs):
            slot = crawler.engine.scraper.slot if crawler.engine else None
            self.peak = max(self.peak, slot.itemproc_size if slot else 0)
            time.sleep(0.1)
            return write(*args, **kwargs)

        pipelines.store.write_batch = slow
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def closed(self):
        with open(os.environ["SLOW_DB_REPORT"], "w") as file:
            json.dump({"peak": self.peak}, file)
"""


def test_a_backfill_reads_no_further_ahead_than_a_slow_database_writes(tmp_path):
    from datetime import datetime

    from fixtures.synth import generate, write
    from schema.types import BEIJING

    tree = tmp_path / "site"
    write(generate(1000, seed=3, start=datetime(2023, 5, 1, tzinfo=BEIJING)), tree)
    (tmp_path / "slowdb.py").write_text(SLOW_DB, encoding="utf-8")
    report = tmp_path / "report.json"
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
        "SLOW_DB_REPORT": str(report),
    }
    env.pop("FINEWS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "archive", "-a", f"path={tree}",
         "-a", "workers=0", "-s", f"FINEWS_DATABASE_URL={url}", "-s", "FINEWS_STORE_BATCH_SIZE=20",
         "-s", 'EXTENSIONS={"slowdb.SlowDatabase": 0}', "-s", "TELNETCONSOLE_ENABLED=False"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    # 50 batches of 20 at 100 ms each: parsing runs many times faster than that. Without
    # the wait in start() the items read ahead pile up in the pipelines (hundreds).
    assert json.loads(report.read_text())["peak"] <= 3 * 20
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Article)) == 1000
    finally:
        engine.dispose()
