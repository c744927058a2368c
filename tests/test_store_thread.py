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
