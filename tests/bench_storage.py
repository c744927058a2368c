"""Storage throughput: articles (with their stock rows and links) per second, batched upserts.

For SQLite (a temporary file) and PostgreSQL (a database created and dropped here), three
passes of the same synthetic articles through ``pipelines.store.Store``: new articles,
the same again (already stored: links only) and all of them revised (update + stock rows
replaced). ``python -m tests.bench_storage`` or ``make bench``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from crawler.items import Article, Stock
from pipelines.store import Store
from schema.db import redact
from schema.migrate import upgrade
from schema.types import BEIJING

ARTICLES = int(os.environ.get("FINEWS_BENCH_ARTICLES", "5000"))
REPEATS = int(os.environ.get("FINEWS_BENCH_REPEATS", "3"))
BATCH_SIZE = 500
PG_ADMIN_URL = os.environ.get(
    "FINEWS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
_WORDS = "光大银行美团新市民小微生意支持计划金融服务数字化平台证券日报记者注意到制冷剂产品"


def synthetic(count: int, seed: int = 7) -> list[Article]:
    """Articles shaped like real ones: ~3 KB of text in 8 paragraphs, 3 stocks, 2 images."""
    rng = random.Random(seed)
    start = datetime(2022, 4, 27, 9, 0, tzinfo=BEIJING)
    articles = []
    for n in range(count):
        code = f"NW2022042723{n:08d}"
        paragraphs = [
            "".join(rng.choice(_WORDS) for _ in range(rng.randint(60, 140))) + "。"
            for _ in range(8)
        ]
        stocks = [
            Stock("1", f"60{rng.randint(0, 9999):04d}", "", "名称", "stock", i == 0, i + 1)
            for i in range(3)
        ]
        stocks = [replace(s, symbol=f"{s.code}.SH") for s in stocks]
        articles.append(
            Article(
                info_code=code,
                title="".join(rng.choice(_WORDS) for _ in range(28)),
                published_at=start + timedelta(seconds=37 * n),
                category="zhengquanribaowang",
                outlet="证券日报网",
                source="证券日报网",
                digest=None,
                paragraphs=paragraphs,
                images=[f"https://dfscdn.dfcfw.com/download/D{n}_{i}.jpg" for i in range(2)],
                body_html="".join(f"<p>{p}</p>" for p in paragraphs),
                source_url=f"http://finews.zning.xyz/html_News/NewsShare.html?infoCode={code}",
                url=f"https://finews.withounder.com/zhengquanribaowang/2022/04/27/{code}.html",
                stocks=stocks,
            )
        )
    return articles


def one_pass(url: str, articles: list[Article]) -> float:
    """Articles per second through Store.add … finish, the database already migrated."""
    store = Store(url, batch_size=BATCH_SIZE, flush_seconds=3600)
    store.open("bench-storage", mode="bench")
    started = time.perf_counter()
    for article in articles:
        store.add(article)
    store.flush()
    elapsed = time.perf_counter() - started
    store.finish()
    return len(articles) / elapsed


def measure(url: str) -> dict[str, float]:
    """Median articles/s of each pass over REPEATS fresh databases made by ``url_factory``."""
    articles = synthetic(ARTICLES)
    revised = [replace(a, paragraphs=[*a.paragraphs, "更正。"]) for a in articles]
    return {
        "new": one_pass(url, articles),
        "stored": one_pass(url, articles),
        "revised": one_pass(url, revised),
    }


def sqlite_rates() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        return measure(url)


def postgres_rates() -> dict[str, float]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"finews_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        return measure(url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def median_rates(backend) -> dict[str, float]:
    runs = [backend() for _ in range(REPEATS)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    print(
        f"storage: {ARTICLES} articles (8 paragraphs, 3 stock rows, 1 link each), "
        f"batches of {BATCH_SIZE}, median of {REPEATS} runs, articles/s"
    )
    print(f"   {'backend':<12}{'new':>10}{'stored':>10}{'revised':>10}")
    for name, backend in (("sqlite", sqlite_rates), ("postgresql", postgres_rates)):
        try:
            rates = median_rates(backend)
        except Exception as exc:  # one backend down must not hide the other's figures
            print(f"   {name:<12}failed: {type(exc).__name__}: {exc}".splitlines()[0])
            if name == "postgresql":
                print(f"   (PostgreSQL at {redact(PG_ADMIN_URL)})")
            continue
        print(
            f"   {name:<12}{rates['new']:>10.0f}{rates['stored']:>10.0f}{rates['revised']:>10.0f}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
