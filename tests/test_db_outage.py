"""A PostgreSQL outage loses nothing: the store waits (FINEWS_DB_RETRY_SECONDS) and goes on
with the batch it held; a database that stays away fails the run (exit 3) without turning
what it could not write into rejects, and the next run closes the dead run's row and
stores exactly what is missing.

The server here is a cluster of the test's own (``tests.pgcluster``), stopped and started
mid-crawl; the machine's shared server is never touched.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from schema.db import make_engine
from schema.models import Article, CrawlRun, Reject
from tests.crawling import ROOT, Crawl, cron_command, environment, expected_from, scalars
from tests.pgcluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

POSTS = 255
OUTAGE = 6.0  # seconds the server is down
# Slow enough that the crawl outlasts the outage with pages left to fetch.
MIRROR_DELAY = 0.15


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    server = Cluster()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> MirrorSite:
    site = MirrorSite(tmp_path_factory.mktemp("outage") / "site", synthetic_files(POSTS, seed=31))
    site.build()
    return site


@pytest.fixture
def db_url(cluster: Cluster) -> str:
    return cluster.create_database(f"finews_outage_{uuid.uuid4().hex[:8]}")


def stored(db_url: str) -> int:
    """Articles stored so far; -1 while the server does not answer."""
    engine = make_engine(db_url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Article)).scalar_one())
    except Exception:
        return -1
    finally:
        engine.dispose()


def start_cron(db_url: str, mirror: MirrorServer, tmp_path: Path, *settings: str):
    args = [arg for setting in settings for arg in ("-s", setting)]
    command = cron_command(db_url, mirror.url, tmp_path / "crawl.lock", *args)
    return subprocess.Popen(
        command, cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> Crawl:
    out, err = process.communicate(timeout=300)
    return Crawl(process.returncode, out, err)


def stop_once_writing(cluster: Cluster, db_url: str, process: subprocess.Popen[str]) -> int:
    """Stop the server once the crawl has stored something; returns what was stored then."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (count := stored(db_url)) > 0:
            cluster.stop()
            return count
        time.sleep(0.2)
    pytest.fail("the crawl stored nothing before it ended")


def assert_complete(db_url: str, site: MirrorSite) -> None:
    codes = {row[0] for row in scalars(db_url, select(Article.info_code))}
    assert codes == set(expected_from(site).articles)
    assert scalars(db_url, select(Reject.reason)) == [], "an outage is never a reject"


@pytest.mark.parametrize("batch", [None, 20], ids=["default-batch", "batch-20"])
def test_a_short_outage_mid_crawl_loses_nothing(
    cluster: Cluster, site: MirrorSite, db_url: str, tmp_path: Path, batch: int | None
):
    settings = [f"FINEWS_STORE_BATCH_SIZE={batch}"] if batch else []
    with MirrorServer(site.root) as mirror:
        mirror.delay = MIRROR_DELAY
        process = start_cron(db_url, mirror, tmp_path, *settings)
        before = stop_once_writing(cluster, db_url, process)
        time.sleep(OUTAGE)
        cluster.start()
        mirror.delay = 0  # the rest at full speed
        crawl = finish(process)

    assert 0 < before < len(expected_from(site).articles), "the outage came mid-crawl"
    assert crawl.returncode == 0, crawl.stderr[-3000:]
    assert crawl.stats["finews/db_outages"] >= 1, "a write met the outage and waited"
    assert "The database answers again" in crawl.stderr
    assert_complete(db_url, site)
    [run] = scalars(db_url, select(CrawlRun.status, CrawlRun.exit_status))
    assert tuple(run) == ("finished", 0)


def test_a_database_that_stays_away_fails_the_run_and_the_next_run_completes_it(
    cluster: Cluster, site: MirrorSite, db_url: str, tmp_path: Path
):
    with MirrorServer(site.root) as mirror:
        mirror.delay = MIRROR_DELAY
        process = start_cron(
            db_url, mirror, tmp_path, "FINEWS_DB_RETRY_SECONDS=3", "FINEWS_STORE_FLUSH_SECONDS=1"
        )
        before = stop_once_writing(cluster, db_url, process)
        crawl = finish(process)
        cluster.start()

        assert crawl.returncode == 3, crawl.stderr[-3000:]
        assert "could not write to the database" in crawl.verdict
        assert "The database stayed unavailable" in crawl.stderr
        assert "the next run fetches their pages again" in crawl.stderr
        assert stored(db_url) == before, "nothing was written after the server went away"
        [dead] = scalars(db_url, select(CrawlRun.id, CrawlRun.status))
        assert dead.status == "running", "its process could not close the row"

        mirror.delay = 0
        second = finish(start_cron(db_url, mirror, tmp_path))
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stats["finews/stored"] == len(expected_from(site).articles) - before
    assert_complete(db_url, site)
    runs = scalars(db_url, select(CrawlRun.id, CrawlRun.status, CrawlRun.close_reason))
    assert sorted(tuple(run) for run in runs) == [
        (dead.id, "interrupted", "process_gone"),
        (dead.id + 1, "finished", "finished"),
    ]
