"""``kill -9`` of a site crawl (``scrapy cron`` over a mirror, into SQLite) at six moments.

Each moment is one test: the crawl is killed (SIGKILL) the moment the mirror's request log,
the database or SQLite's write lock says it got there; then

- no process is left: the crawl's descendants exit, and no process names its database;
- no half-written article: every article the killed run left has exactly the article row,
  category links and stock rows of the undisturbed crawl (computed once per module);
- the same command run again fetches exactly the posts the killed run did not store, and
  ends with the rows of the undisturbed crawl.

The mirror has no article under two categories, so each stored article is whole after one
copy is read and can be compared with the undisturbed crawl's at any moment. Killed workers
of a scaled-out crawl are ``test_cron``'s and ``test_scaleout``'s; a killed backfill is
``test_backfill``'s, whose process helpers and row comparison this module reuses.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from crawler.commands.cron import OK
from crawler.items import DOWNLOAD_FAILED
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from tests.crawling import ROOT, cron_command, environment, expected_from, post_paths, run_cron
from tests.crawling import scalars as query
from tests.test_backfill import descendants, leftovers, rows

pytestmark = pytest.mark.slow

__all__ = ["leftovers"]  # test_backfill's fixture: processes a test started, killed at its end

POSTS = 100  # with broken=0.05: 96 post pages, 95 articles and one page rejected
SMALL_BATCH = 10
# Nothing is written before close, unless a test says so.
ONE_BATCH = ("-s", "FINEWS_STORE_BATCH_SIZE=100000", "-s", "FINEWS_STORE_FLUSH_SECONDS=3600")
# Small batches, by size only: what is stored at a moment depends on the pages fetched.
BATCHES = ("-s", f"FINEWS_STORE_BATCH_SIZE={SMALL_BATCH}", "-s", "FINEWS_STORE_FLUSH_SECONDS=3600")
SLOW = 0.02  # seconds per mirror answer: the crawl takes long enough to be caught mid-way
WAIT = 60.0  # seconds a moment may take to come before the test fails
# SQLite's WAL write lock: byte 120 of the -shm file (os_unix.c UNIX_SHM_BASE + WAL_WRITE_LOCK),
# held (fcntl) by the one connection inside a write transaction, from its first write to its
# commit or rollback.
WAL_WRITE_LOCK = 120
FLOCK = "hhqqi4x"  # struct flock on Linux x86_64: l_type, l_whence, l_start, l_len, l_pid


@dataclass
class Crawl:
    """A crawl running in the background, as a test sees it."""

    process: subprocess.Popen[bytes]
    database: Path
    server: MirrorServer
    posts: set[str]  # every post page of the mirror

    def fetched(self) -> set[str]:
        return set(post_paths(self.server.paths(None)))

    def count(self, table: str) -> int:
        try:
            found = query(f"sqlite:///{self.database}", text(f"SELECT count(*) FROM {table}"))
            return int(found[0][0])
        except OperationalError:  # locked while the crawl opens it: not yet
            return 0

    def wait_until(self, ready: Callable[[], bool], what: str, interval: float = 0.01) -> None:
        deadline = time.monotonic() + WAIT
        while not ready():
            assert self.process.poll() is None, f"the crawl ended before {what}"
            assert time.monotonic() < deadline, f"no {what} within {WAIT:.0f} s"
            time.sleep(interval)

    def writing(self) -> bool:
        """The crawl process holds SQLite's write lock: it is inside a write transaction."""
        shm = Path(f"{self.database}-shm")
        try:
            fd = os.open(shm, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            probe = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, WAL_WRITE_LOCK, 1, 0)
            kind, _, _, _, pid = struct.unpack(FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
        finally:
            os.close(fd)  # the test process holds no SQLite lock on it: closing loses none
        return kind == fcntl.F_WRLCK and pid == self.process.pid

    def stop_while_writing(self) -> None:
        """Freeze the crawl at a moment it holds the write lock (checked frozen)."""

        def frozen_writing() -> bool:
            if not self.writing():
                return False
            self.process.send_signal(signal.SIGSTOP)
            if self.writing():
                return True
            self.process.send_signal(signal.SIGCONT)  # committed meanwhile: try the next one
            return False

        self.wait_until(frozen_writing, "write transaction", interval=0.0005)


# -- the moments --------------------------------------------------------------------------------


def started(crawl: Crawl) -> None:
    """The run's crawl_runs row exists; robots.txt, the first request, is still in flight."""
    crawl.wait_until(lambda: crawl.count("crawl_runs") > 0, "crawl_runs row")


def fetched_none_written(crawl: Crawl) -> None:
    """A few post pages fetched; nothing is written before close (ONE_BATCH)."""
    crawl.wait_until(lambda: len(crawl.fetched()) >= 5, "5 post pages")


def first_batch_written(crawl: Crawl) -> None:
    crawl.wait_until(lambda: crawl.count("articles") >= SMALL_BATCH, "first batch", 0.005)


def writing_a_batch(crawl: Crawl) -> None:
    """Frozen inside a batch's transaction mid-crawl (the ledger's writes came before)."""
    crawl.wait_until(lambda: len(crawl.fetched()) >= 3 * SMALL_BATCH, "30 post pages")
    crawl.stop_while_writing()


def closing(crawl: Crawl) -> None:
    """The mirror served every post page; the crawl is parsing the last ones or closing."""
    crawl.wait_until(lambda: crawl.fetched() == crawl.posts, "every post page", 0.002)


def writing_at_close(crawl: Crawl) -> None:
    """Frozen inside the transaction of the only batch, written at close (ONE_BATCH)."""
    crawl.wait_until(lambda: crawl.fetched() == crawl.posts, "every post page", 0.002)
    crawl.stop_while_writing()


@dataclass(frozen=True)
class Moment:
    wait: Callable[[Crawl], None]
    settings: tuple[str, ...]
    delay: float  # of each mirror answer
    # What the killed run must have stored: (articles, rejects) -> is it this moment?
    stored: Callable[[int, int], bool]


MOMENTS = {
    "started": Moment(started, BATCHES, 0.5, lambda articles, rejects: articles == 0),
    "fetched_none_written": Moment(
        fetched_none_written, ONE_BATCH, SLOW, lambda articles, rejects: articles == rejects == 0
    ),
    "first_batch_written": Moment(
        first_batch_written, BATCHES, SLOW, lambda articles, rejects: SMALL_BATCH <= articles < 60
    ),
    # The batch in hand is lost whole: what is stored is whole batches.
    "writing_a_batch": Moment(
        writing_a_batch, BATCHES, SLOW, lambda articles, rejects: articles % SMALL_BATCH == 0
    ),
    "closing": Moment(closing, BATCHES, 0.0, lambda articles, rejects: True),
    # The one batch is lost whole: nothing is stored.
    "writing_at_close": Moment(
        writing_at_close, ONE_BATCH, 0.0, lambda articles, rejects: articles == rejects == 0
    ),
}


# -- the mirror and the undisturbed crawl -------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> MirrorSite:
    site = MirrorSite(
        tmp_path_factory.mktemp("kill") / "site", synthetic_files(POSTS, seed=41, broken=0.05)
    )
    site.build()
    return site


@pytest.fixture(scope="module")
def server(site: MirrorSite) -> Iterator[MirrorServer]:
    """One server for every crawl: stored URLs name its port, so crawls compare."""
    with MirrorServer(site.root) as server:
        yield server


def fresh_database(directory: Path, template: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "finews.db"
    shutil.copyfile(template, path)
    return path


@pytest.fixture(scope="module")
def undisturbed(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, server: MirrorServer,
    site: MirrorSite,
) -> str:  # fmt: skip
    """The database of one crawl of the mirror that nothing disturbed."""
    directory = tmp_path_factory.mktemp("undisturbed")
    url = f"sqlite:///{fresh_database(directory, sqlite_template)}"
    server.clear()
    server.delay = 0.0
    crawl = run_cron(url, server.url, directory / "lock")
    assert crawl.returncode == OK, crawl.stderr[-5000:]
    expected = expected_from(site)
    assert sorted(c for (c,) in query(url, text("SELECT info_code FROM articles"))) == sorted(
        expected.articles
    )
    assert len(expected.rejected_paths) == 1 == len(query(url, text("SELECT id FROM rejects")))
    assert all(len(copies) == 1 for copies in expected.articles.values()), "one copy each"
    return url


# -- what a database holds ----------------------------------------------------------------------


# An article's parts, by table: its row, its category links (each with the copy read there),
# its stock rows; everything but times and run ids.
PARTS = {
    "articles": "title, published_at, category, outlet, source, digest, paragraphs, body_text, "
    "body_html, images, source_url, url, content_hash, revision",
    "article_categories": "category, url, content_hash, digest, stocks",
    "stock_mentions": "market, code, symbol, name, kind, is_primary, mentions",
}


def articles(db_url: str) -> dict[str, tuple[list, ...]]:
    """Per infoCode found in any of the PARTS tables: its rows there, table by table."""
    found: dict[str, tuple[list, ...]] = {}
    for index, (table, columns) in enumerate(PARTS.items()):
        for code, *values in query(db_url, text(f"SELECT info_code, {columns} FROM {table}")):
            found.setdefault(code, tuple([] for _ in PARTS))[index].append(tuple(values))
    return {code: tuple(sorted(part, key=repr) for part in parts) for code, parts in found.items()}


def done_paths(db_url: str) -> set[str]:
    """Post pages a rerun must not fetch again: the copies read, and pages rejected for what
    they hold."""
    links = query(db_url, text("SELECT url FROM article_categories WHERE content_hash IS NOT NULL"))
    failed = text("SELECT url FROM rejects WHERE reason != :failed").bindparams(
        failed=DOWNLOAD_FAILED
    )
    rejects = query(db_url, failed)
    return {urlsplit(url).path for (url,) in [*links, *rejects] if url}


def processes_naming(path: Path) -> list[psutil.Process]:
    """Processes whose command line names ``path``: the crawl, or anything it started."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


# -- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_crawl_killed_leaves_whole_articles_and_the_rerun_ends_undisturbed(
    moment: str, tmp_path: Path, sqlite_template: Path, server: MirrorServer, site: MirrorSite,
    undisturbed: str, leftovers: list,
):  # fmt: skip
    how = MOMENTS[moment]
    database = fresh_database(tmp_path, sqlite_template)
    url = f"sqlite:///{database}"
    command = cron_command(url, server.url, tmp_path / "lock", *how.settings)
    server.clear()
    server.delay = how.delay
    with (tmp_path / "killed.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=log
        )
    leftovers.append(process)
    crawl = Crawl(process, database, server, {post.path for post in site.manifest.posts})

    how.wait(crawl)
    helpers = descendants(process.pid)
    leftovers.extend(helpers)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    served, fetched = server.paths(None), crawl.fetched()
    server.delay = 0.0

    _, alive = psutil.wait_procs(helpers, timeout=5)
    assert not alive, "the crawl's children outlived it"
    assert processes_naming(database) == [], "a process still names the crawl's database"

    stored = articles(url)
    reference = articles(undisturbed)
    for code, parts in stored.items():
        assert parts == reference.get(code), f"{code} is not whole after the kill at {moment}"
    count, rejects = crawl.count("articles"), crawl.count("rejects")
    assert how.stored(count, rejects), f"{count} articles, {rejects} rejects at {moment}"
    if moment == "started":
        assert served == [], "killed before any page was served"
    else:
        assert fetched, "killed once post pages were fetched"
    # Killed on its way out, a run may have closed its row (not while writing at close).
    closed = ["running", "finished"] if moment == "closing" else ["running"]
    runs = query(url, text("SELECT status FROM crawl_runs"))
    assert [status for (status,) in runs] in ([s] for s in closed), "the killed run's row"

    done = done_paths(url)
    server.clear()
    again = run_cron(url, server.url, tmp_path / "lock", *how.settings)
    assert again.returncode == OK, again.stderr[-5000:]
    refetched = post_paths(server.paths(None))
    assert sorted(refetched) == sorted(crawl.posts - done), "the rerun fetches what was left"
    assert rows(url) == rows(undisturbed)
