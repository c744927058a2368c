"""``scrapy crawl archive`` end to end, in a subprocess, on SQLite and PostgreSQL.

The tree is the real corpus plus 2,000 synthetic post files (5% broken, 3% emnews/outlet
twins) laid out like a checkout of the site's repository, with a README and a symlink to
posts outside it. Checked: every valid post stored once, every broken file rejected with
its reason, the crawl_runs identity, cheap re-runs, the since/until window, and runs
disturbed by SIGKILL (the crawl process, or one of its parser processes) and started again
ending with the rows of an uninterrupted run, leaving no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from fixtures.synth import SynthPost, generate, write
from schema.db import make_engine
from schema.models import Article, ArticleCategory, CrawlRun, Reject, SourceFile
from schema.types import BEIJING
from tests.golden import CORPUS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

SYNTHETIC = 2000
# Truth's broken reason -> how the reject's reason starts.
REJECT_REASONS = {
    "empty file": "empty file",
    "no front matter": "no front matter",
    "invalid utf-8": "not UTF-8",
    "truncated front matter": "front matter is not closed",
    "missing date": "missing published_at",
    "missing title and empty body": "missing title or text",
}
OUTCOMES = ("stored", "updated", "unchanged", "duplicates", "rejected", "skipped")


@dataclass
class Tree:
    root: Path
    posts: dict[Path, SynthPost]  # synthetic file -> its truth
    corpus: list[Path]

    @property
    def files(self) -> int:
        return len(self.posts) + len(self.corpus) + 1  # + README.md

    @property
    def superseded(self) -> int:
        """Corpus files that are saved versions of a post another file holds."""
        names = {re.sub(r"\.[0-9a-f]{7}\.md$", ".md", path.name) for path in self.corpus}
        return len(self.corpus) - len(names)

    def valid_codes(self) -> set[str]:
        codes = {p.truth["info_code"] for p in self.posts.values() if not p.truth["broken"]}
        for path in self.corpus:
            golden = CORPUS / path.with_suffix(".json").name
            expected = json.loads(golden.read_text(encoding="utf-8"))
            if expected["info_code"] and expected["published_at"]:
                codes.add(expected["info_code"])
        return codes

    def broken(self) -> dict[str, str]:
        """File URL -> the start of its reject's reason."""
        found = {
            path.as_uri(): REJECT_REASONS[post.truth["broken"]]
            for path, post in self.posts.items()
            if post.truth["broken"]
        }
        corpus = self.root / "corpus"
        found[(corpus / "-202205262391921712.md").as_uri()] = "missing published_at"
        found[(corpus / "2021-12-01-init.md").as_uri()] = "missing info_code"
        return found  # 2021-12-01-init.5e7a196.md: an older version of init.md, not read


@pytest.fixture(scope="session")
def site_tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """A checkout-like tree: old_post/, _posts/, the corpus, a README and a symlink out."""
    base = tmp_path_factory.mktemp("archive")
    root = base / "site"
    start = datetime(2023, 3, 1, 8, 0, tzinfo=BEIJING)  # far from the corpus's infoCodes
    posts = generate(SYNTHETIC, seed=11, start=start, broken=0.05, duplicates=0.03)
    split = SYNTHETIC * 4 // 5
    paths = write(posts[:split], root / "old_post") + write(posts[split:], root / "_posts")
    corpus = []
    for source in sorted(CORPUS.glob("*.md")):
        corpus.append(root / "corpus" / source.name)
        corpus[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(source, corpus[-1])
    (root / "README.md").write_text("# finews\n\nThe site's source.\n", encoding="utf-8")
    outside = base / "outside"
    write(generate(3, seed=99, start=datetime(2024, 1, 1, tzinfo=BEIJING)), outside)
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    return Tree(root, dict(zip(paths, posts, strict=True)), sorted(corpus))


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FINEWS_DATABASE_URL", None)
    return env


def command(tree: Path, db_url: str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "scrapy", "crawl", "archive", "-a", f"path={tree}",
        "-s", f"FINEWS_DATABASE_URL={db_url}", "-s", "TELNETCONSOLE_ENABLED=False",
        "-s", "LOG_LEVEL=INFO", "-s", "FINEWS_PROGRESS_INTERVAL=0.3", *args,
    ]  # fmt: skip


def backfill(tree: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command(tree, db_url, *args),
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def last_run(db_url: str) -> CrawlRun:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return session.scalars(select(CrawlRun).order_by(CrawlRun.id.desc())).first()
    finally:
        engine.dispose()


def outcomes(run: CrawlRun) -> dict[str, int]:
    return {name: getattr(run, name) for name in ("seen", *OUTCOMES)}


def assert_counts_add_up(run: CrawlRun) -> None:
    assert run.status == "finished"
    assert run.seen == sum(getattr(run, name) for name in OUTCOMES), outcomes(run)


def check_first_backfill(tree: Tree, db_url: str) -> CrawlRun:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            codes = session.scalars(select(Article.info_code)).all()
            rejects = session.execute(select(Reject.url, Reject.reason, Reject.detail)).all()
            pairs = select(ArticleCategory.info_code, ArticleCategory.category)
            links = set(session.execute(pairs))
            files = session.scalar(select(func.count()).select_from(SourceFile))
    finally:
        engine.dispose()
    assert sorted(codes) == sorted(tree.valid_codes()), "every valid post stored, once"
    broken = tree.broken()
    assert Counter(url for url, _, _ in rejects) == Counter(list(broken)), "each broken file once"
    for url, reason, detail in rejects:
        assert reason.startswith(broken[url]), (url, reason)
        assert detail is None or detail.startswith(str(tree.root))
    for post in tree.posts.values():  # emnews/outlet twins: one article, both categories
        if not post.truth["broken"]:
            assert (post.truth["info_code"], post.truth["category"]) in links
    assert files == tree.files - 1 - tree.superseded, "every file read is recorded"
    run = last_run(db_url)
    assert_counts_add_up(run)
    assert (run.seen, run.rejected, run.skipped) == (tree.files, len(broken), 1)
    assert run.duplicates == tree.superseded == 13
    assert run.arguments["path"] == str(tree.root)
    return run


@dataclass
class Backfilled:
    """The site tree backfilled once into a SQLite file that tests copy."""

    path: Path
    log: str

    def copy(self, to: Path) -> str:
        target = to / "finews.db"
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"


@pytest.fixture(scope="module")
def backfilled(site_tree: Tree, tmp_path_factory: pytest.TempPathFactory) -> Backfilled:
    path = tmp_path_factory.mktemp("backfilled") / "finews.db"
    result = backfill(site_tree.root, f"sqlite:///{path}")
    return Backfilled(path, result.stderr)


def check_log(tree: Tree, log: str) -> None:
    assert "Not following 1 symlinks" in log
    progress = [line for line in log.splitlines() if "files " in line and "ETA" in line]
    assert progress, "progress lines every few tenths of a second in this test"
    assert f"/{tree.files:,} (" in progress[-1]
    assert "Summary (finished) after" in log


def test_backfill_the_corpus_and_2000_synthetic_posts_into_sqlite(
    site_tree: Tree, backfilled: Backfilled
):
    check_first_backfill(site_tree, f"sqlite:///{backfilled.path}")
    check_log(site_tree, backfilled.log)


@pytest.mark.postgres
def test_backfill_the_corpus_and_2000_synthetic_posts_into_postgresql(
    site_tree: Tree, postgres_url: str
):
    result = backfill(site_tree.root, postgres_url)
    check_first_backfill(site_tree, postgres_url)
    check_log(site_tree, result.stderr)


def test_reruns_are_cheap_and_refresh_reads_everything(
    site_tree: Tree, backfilled: Backfilled, tmp_path: Path
):
    db_url = backfilled.copy(tmp_path)
    first = last_run(db_url)
    started = time.monotonic()
    backfill(site_tree.root, db_url)
    again = last_run(db_url)
    assert_counts_add_up(again)
    assert outcomes(again) == {
        **dict.fromkeys(("stored", "updated", "unchanged", "rejected"), 0),
        "seen": site_tree.files,
        "duplicates": site_tree.superseded,
        "skipped": site_tree.files - site_tree.superseded,
    }
    assert time.monotonic() - started < 30

    # New mtime, same bytes: not parsed. New text: a revision. Only those two are read.
    singles = Counter(post.truth["info_code"] for post in site_tree.posts.values())
    touched, edited = [
        path
        for path, post in site_tree.posts.items()
        if not post.truth["broken"] and singles[post.truth["info_code"]] == 1
    ][:2]
    saved = {path: (path.read_bytes(), path.stat()) for path in (touched, edited)}
    new_mtime = saved[touched][1].st_mtime_ns + 10**9
    try:
        os.utime(touched, ns=(new_mtime, new_mtime))
        edited.write_bytes(edited.read_bytes().replace(b'title: "', b'title: "\xe6\x9b\xb4 ', 1))
        backfill(site_tree.root, db_url)
        changed = last_run(db_url)
    finally:
        for path, (data, stat) in saved.items():
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert_counts_add_up(changed)
    assert (changed.stored, changed.updated, changed.unchanged) == (0, 1, 0)
    assert changed.skipped == site_tree.files - site_tree.superseded - 1
    engine = make_engine(db_url)
    with engine.connect() as conn:
        recorded = select(SourceFile.mtime_ns).where(SourceFile.path == str(touched))
        assert conn.execute(recorded).scalar_one() == new_mtime, "next time, stat will do"
    engine.dispose()

    backfill(site_tree.root, db_url, "-a", "refresh=1")
    refreshed = last_run(db_url)
    assert_counts_add_up(refreshed)
    assert refreshed.mode == "backfill-refresh"
    assert (refreshed.stored, refreshed.rejected) == (0, first.rejected)
    assert refreshed.updated == 1, "the original text again"
    # Every article read and stored (first.stored + first.updated + first.unchanged: twins
    # merge into their article) is read again; all but the edited one are unchanged.
    assert refreshed.unchanged == first.stored + first.updated + first.unchanged - 1


# -- the window ---------------------------------------------------------------------------------


def post(code: str, when: str, category: str = "zhengquanribaowang", body: str = "正文") -> bytes:
    return (
        f'---\nlayout: post\ntitle: "标题 {code}"\ndate: {when}\ncategories: {category}\n'
        f"tags: 证券日报网新闻\n---\n<p>{body}</p>\n\n"
        f"<http://finews.zning.xyz/html_News/NewsShare.html?infoCode={code}>\n"
    ).encode()


# (file name, date line or None for an empty file, category, inside the window)
WINDOW = [
    # Named by date: placed by the name; those outside are not even read.
    ("2022-04-25-NW202204252000000001.md", "2022-04-25 23:59:59 +0800", "", False),
    ("2022-04-26-NW202204262000000002.md", "2022-04-26 00:00:00 +0800", "", True),
    ("2022-04-27-NW202204272000000003.md", "2022-04-27 23:59:59", "", True),
    ("2022-04-28-NW202204282000000004.md", "2022-04-28 00:00:00 +0800", "", False),
    ("2022-04-20-NW202204202000000005.md", None, "", False),  # broken, but never read
    # Undated names: placed by the parsed time, in Beijing time.
    ("-202204262000000006.md", "2022-04-25 16:00:00 +0000", "", True),
    ("-202204252000000007.md", "2022-04-25 15:59:59 +0000", "", False),
    ("-202204272000000008.md", "2022-04-27 16:30:00 -0800", "", False),
    ("-202204272000000009.md", "2022-04-27 08:00:00", "emnews", True),
]


def window_tree(root: Path) -> dict[str, bool]:
    """Posts on both sides of 2022-04-26 .. 2022-04-27; file name -> inside the window."""
    root.mkdir(parents=True)
    for name, when, category, _ in WINDOW:
        code = "NW" + name[-21:-3].removeprefix("NW")
        data = post(code, when, category or "zhengquanribaowang") if when else b""
        (root / name).write_bytes(data)
    return {name: inside for name, _, _, inside in WINDOW}


def stored_codes(db_url: str) -> set[str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT info_code FROM articles")).scalars())
    finally:
        engine.dispose()


def test_since_and_until_select_exactly_the_files_in_the_window(tmp_path: Path, sqlite_url: str):
    db_url = sqlite_url
    inside = window_tree(tmp_path / "window")

    backfill(tmp_path / "window", db_url, "-a", "since=2022-04-26", "-a", "until=2022-04-27")

    expected = {"NW" + name[-21:-3].removeprefix("NW") for name, yes in inside.items() if yes}
    assert stored_codes(db_url) == expected
    run = last_run(db_url)
    assert_counts_add_up(run)
    assert (run.stored, run.rejected, run.skipped) == (4, 0, 5)
    assert run.arguments["since"] == "2022-04-26" and run.arguments["until"] == "2022-04-27"
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            read = set(conn.execute(select(SourceFile.path)).scalars())
    finally:
        engine.dispose()
    assert {Path(p).name for p in read} == {name for name, yes in inside.items() if yes}


def test_only_the_named_categories(tmp_path: Path, sqlite_url: str):
    window_tree(tmp_path / "window")
    backfill(tmp_path / "window", sqlite_url, "-a", "categories=emnews")
    assert stored_codes(sqlite_url) == {"NW202204272000000009"}
    run = last_run(sqlite_url)
    assert_counts_add_up(run)
    assert (run.stored, run.rejected, run.skipped) == (1, 1, 7), "the empty file is rejected"


# -- SIGKILL and a restart ----------------------------------------------------------------------

# What must be equal after a restart: everything but times and run ids.
COMPARED = {
    "articles": "info_code, title, published_at, category, outlet, source, digest, paragraphs, "
    "body_html, images, source_url, url, content_hash, revision",
    "article_categories": "info_code, category, url",
    "categories": "slug, outlet",
    "stock_mentions": "info_code, market, code, symbol, name, kind, is_primary, mentions",
    "rejects": "url, info_code, reason, detail, excerpt",
    "source_files": "path, size, mtime_ns, sha256, info_code, status",
}


def rows(db_url: str) -> dict[str, Counter]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                table: Counter(tuple(r) for r in conn.execute(text(f"SELECT {cols} FROM {table}")))
                for table, cols in COMPARED.items()
            }
    finally:
        engine.dispose()


SMALL_BATCHES = ("-s", "FINEWS_STORE_BATCH_SIZE=100")  # several commits before a kill


@pytest.fixture
def leftovers() -> Iterator[list[subprocess.Popen[bytes] | psutil.Process]]:
    """Processes a test started: any still running at its end (it failed) is killed."""
    started: list[subprocess.Popen[bytes] | psutil.Process] = []
    yield started
    for process in started:
        with contextlib.suppress(psutil.Error, OSError):
            process.kill()
        if isinstance(process, subprocess.Popen):
            process.wait()


def start_backfill(
    tree: Path, db_url: str, log: Path, leftovers: list, **popen: Any
) -> subprocess.Popen[bytes]:
    """A backfill in the background, logging to ``log``."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command(tree, db_url, *SMALL_BATCHES),
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            **popen,
        )
    leftovers.append(process)
    return process


def descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def parser_processes(pid: int) -> list[psutil.Process]:
    """The crawl process's parser workers: the forkserver's children, or spawned children
    (not the forkserver itself, nor multiprocessing's resource tracker)."""
    found = []
    for proc in descendants(pid):
        with contextlib.suppress(psutil.Error):
            if proc.ppid() != pid or "--multiprocessing-fork" in proc.cmdline():
                found.append(proc)
    return found


def wait_for_parsers(
    process: subprocess.Popen[bytes], db_url: str, leftovers: list, seen: int = 1
) -> list[psutil.Process]:
    """The crawl process's helpers (parser processes, forkserver, resource tracker) once both
    parser processes run and ``seen`` files are recorded; [] if the run ended before."""
    database = Path(db_url.removeprefix("sqlite:///"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        if len(parser_processes(process.pid)) < 2 or not database.exists():
            continue
        if stored_so_far(db_url) >= seen:
            helpers = descendants(process.pid)
            leftovers.extend(helpers)
            return helpers
    return []


def test_a_killed_backfill_restarted_ends_like_an_uninterrupted_one(
    site_tree: Tree, backfilled: Backfilled, tmp_path: Path, leftovers: list
):
    killed = f"sqlite:///{tmp_path / 'killed.db'}"
    process = start_backfill(site_tree.root, killed, tmp_path / "log", leftovers)
    helpers = wait_for_parsers(process, killed, leftovers, seen=500)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = last_run(killed)
    assert interrupted.status == "running", "killed: nobody closed the ledger row"
    assert 0 < interrupted.seen < site_tree.files, "killed part-way"
    assert len(helpers) >= 2, "the parser processes were running"
    _, alive = psutil.wait_procs(helpers, timeout=10)
    assert not alive, "parser processes (and their forkserver) exit when the crawl process dies"

    check_resumed(site_tree, killed, backfilled)


def check_resumed(site_tree: Tree, db_url: str, backfilled: Backfilled) -> None:
    """The same backfill run again after a stop: it reads only what was left, and ends with
    the rows of an uninterrupted backfill."""
    backfill(site_tree.root, db_url, *SMALL_BATCHES)
    resumed = last_run(db_url)
    assert_counts_add_up(resumed)
    assert resumed.skipped > 1, "the files done before the stop were not read again"
    assert rows(db_url) == rows(f"sqlite:///{backfilled.path}")


def test_a_parser_process_killed_stops_the_backfill_and_a_rerun_completes_it(
    site_tree: Tree, backfilled: Backfilled, tmp_path: Path, leftovers: list
):
    broken = f"sqlite:///{tmp_path / 'broken.db'}"
    process = start_backfill(site_tree.root, broken, tmp_path / "log", leftovers)
    helpers = wait_for_parsers(process, broken, leftovers)
    assert helpers, "the backfill was still running"
    parser_processes(process.pid)[0].send_signal(signal.SIGKILL)
    process.wait(timeout=120)
    log = (tmp_path / "log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log[-3000:]
    errors = [line for line in log.splitlines() if " ERROR: " in line]
    assert len(errors) == 1, errors
    assert "The parser processes died" in errors[0]
    assert "Run the same command again to resume" in errors[0]
    stopped = last_run(broken)
    assert (stopped.status, stopped.close_reason) == ("stopped", "parser_pool_broken")
    assert stopped.errors == 1
    assert 0 < stopped.seen < site_tree.files, "stopped part-way"
    assert stopped.seen == sum(getattr(stopped, name) for name in OUTCOMES)
    _, alive = psutil.wait_procs(helpers, timeout=10)
    assert not alive, "no process is left behind"

    check_resumed(site_tree, broken, backfilled)


def test_ctrl_c_stops_the_backfill_and_its_parser_processes(
    site_tree: Tree, backfilled: Backfilled, tmp_path: Path, leftovers: list
):
    stopped = f"sqlite:///{tmp_path / 'stopped.db'}"
    # In its own process group, as in a terminal, where Ctrl-C signals the whole group.
    process = start_backfill(
        site_tree.root, stopped, tmp_path / "log", leftovers, start_new_session=True
    )
    helpers = wait_for_parsers(process, stopped, leftovers)
    assert helpers, "the backfill was still running"
    assert all(ignores_sigint(proc.pid) for proc in parser_processes(process.pid))
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=5)  # a close takes 1-2 s
    except subprocess.TimeoutExpired:
        # Scrapy 2.19 may never finish closing a spider whose start() items are still in the
        # pipelines at Ctrl-C; its log says "Send again to force": sent, as a person would.
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    log = (tmp_path / "log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR: " not in log, "the parser processes leave Ctrl-C to the crawl process"
    interrupted = last_run(stopped)
    assert interrupted.status in ("interrupted", "running"), "running: forced, as if killed"
    assert 0 < interrupted.seen < site_tree.files, "stopped part-way"
    _, alive = psutil.wait_procs(helpers, timeout=10)
    assert not alive, "the executor was shut down: no process is left behind"

    backfill(site_tree.root, stopped, *SMALL_BATCHES)

    assert_counts_add_up(last_run(stopped))
    assert rows(stopped) == rows(f"sqlite:///{backfilled.path}")


def ignores_sigint(pid: int) -> bool:
    """From the process's ignored-signals mask (Linux): Ctrl-C is left to the crawl process."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    mask = int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.MULTILINE)[1], 16)
    return bool(mask & (1 << (signal.SIGINT - 1)))


def stored_so_far(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(text("SELECT coalesce(max(seen), 0) FROM crawl_runs")).scalar_one()
            )
    except Exception:
        return 0
    finally:
        engine.dispose()
