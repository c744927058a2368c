"""The archive spider's parts without a crawl: the walk, the filters, the cheap skip, the
reader and the parser pool, and the progress line. ``test_backfill`` runs the spider.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psutil
import pytest

from crawler.extensions.progress import Progress, Snapshot, progress_line, summary_line
from crawler.postfiles import (
    NOT_A_POST,
    OTHER_CATEGORY,
    OUTSIDE_WINDOW,
    UNCHANGED,
    Filters,
    PostFile,
    ReadResult,
    ReadTask,
    is_post_name,
    is_unchanged,
    name_date,
    post_name,
    read_chunk,
    read_post_file,
    still_held,
    superseded,
    walk,
)
from crawler.spiders.archive import ParserPool
from fixtures.synth import generate, write
from tests.crawling import ROOT

POST = b"""---
layout: post
title: "Title"
date: 2022-04-27 15:22:47 +0800
categories: zhengquanribaowang
tags: \xe8\xaf\x81\xe5\x88\xb8\xe6\x97\xa5\xe6\x8a\xa5\xe7\xbd\x91\xe6\x96\xb0\xe9\x97\xbb
---
<p>Text.</p>

<http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202204272361734680>
"""


@pytest.mark.parametrize(
    ("name", "day"),
    [
        ("2022-04-27-NW202204272361734680.md", date(2022, 4, 27)),
        ("2021-12-08-202112082206672930.cfbae48.md", date(2021, 12, 8)),
        ("2021-12-01-init.md", date(2021, 12, 1)),
        ("-202205262391921712.md", None),  # the generator's undated name
        ("2022-13-45-NW202204272361734680.md", None),  # not a day
        ("README.md", None),
    ],
)
def test_name_date(name, day):
    assert name_date(name) == day


@pytest.mark.parametrize(
    ("name", "parents", "expected"),
    [
        ("2022-04-27-NW202204272361734680.md", (), True),
        ("2022-04-27-NW202204272361734680.markdown", (), True),
        ("-202205262391921712.md", (), True),
        ("README.md", (), False),
        ("about.md", ("site",), False),
        ("notes.md", ("repo", "old_post"), True),
        ("draft.md", ("_posts", "2022"), True),
    ],
)
def test_is_post_name(name, parents, expected):
    assert is_post_name(name, parents) is expected


def test_walk_never_follows_symlinks_out_of_the_root(tmp_path: Path):
    root, outside = tmp_path / "repo", tmp_path / "outside"
    (root / "_posts").mkdir(parents=True)
    (root / "old_post" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    outside.mkdir()
    for path in (
        root / "_posts" / "2022-04-27-NW202204272361734680.md",
        root / "old_post" / "2022-04-26-NW202204262361734680.md",
        root / "old_post" / "deeper" / "2022-04-25-NW202204252361734680.md",
        root / "README.md",
        root / ".git" / "2022-04-24-NW202204242361734680.md",  # hidden: not entered
        root / "old_post" / "image.png",
        outside / "2022-04-23-NW202204232361734680.md",
    ):
        path.write_bytes(POST)
    target = outside / "2022-04-23-NW202204232361734680.md"
    (root / "old_post" / "link-to-file.md").symlink_to(target)
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)

    tree = walk(root)

    assert [Path(f.path).relative_to(root).as_posix() for f in tree.files] == [
        "README.md",
        "_posts/2022-04-27-NW202204272361734680.md",
        "old_post/2022-04-26-NW202204262361734680.md",
        "old_post/deeper/2022-04-25-NW202204252361734680.md",
    ]
    assert [f.named_as_post for f in tree.files] == [False, True, True, True]
    assert sorted(Path(s).name for s in tree.symlinks) == ["link-to-file.md", "linked-dir"]
    assert tree.unreadable == []
    assert tree.files[1].size == len(POST)
    assert tree.files[1].url == (root / "_posts" / "2022-04-27-NW202204272361734680.md").as_uri()


def test_filters_parse_and_refuse_nonsense():
    assert Filters.parse(" 2022-04-26 ", "2022-04-27", "a, b ,") == Filters(
        date(2022, 4, 26), date(2022, 4, 27), frozenset({"a", "b"})
    )
    assert Filters.parse("", None, "") == Filters()
    with pytest.raises(ValueError, match="since must be a day as YYYY-MM-DD"):
        Filters.parse("26/04/2022")
    with pytest.raises(ValueError, match="is after until"):
        Filters.parse("2022-04-28", "2022-04-27")


def post_file(name: str) -> PostFile:
    return PostFile(f"/repo/old_post/{name}", 100, 1, True)


@pytest.mark.parametrize(
    ("name", "since", "until", "expected"),
    [
        ("2022-04-25-NW1.md", "2022-04-26", "2022-04-27", OUTSIDE_WINDOW),
        ("2022-04-26-NW1.md", "2022-04-26", "2022-04-27", None),  # bounds are inclusive
        ("2022-04-27-NW1.md", "2022-04-26", "2022-04-27", None),
        ("2022-04-28-NW1.md", "2022-04-26", "2022-04-27", OUTSIDE_WINDOW),
        ("2022-04-28-NW1.md", "2022-04-26", None, None),
        ("2022-04-25-NW1.md", None, "2022-04-27", None),
        ("-202204252361734680.md", "2022-04-26", "2022-04-27", None),  # decided after parsing
        ("2022-01-01-NW1.md", None, None, None),
    ],
)
def test_skip_by_name(name, since, until, expected):
    assert Filters.parse(since, until).skip_by_name(post_file(name)) == expected


def test_skip_by_content():
    window = Filters.parse("2022-04-26", "2022-04-27")
    assert window.skip_by_content("-x.md", date(2022, 4, 25), "emnews") == OUTSIDE_WINDOW
    assert window.skip_by_content("-x.md", date(2022, 4, 26), "emnews") is None
    assert window.skip_by_content("-x.md", None, "emnews") is None, "validate rejects it"
    # The name's date wins over the parsed time (a post dated just after midnight UTC).
    assert window.skip_by_content("2022-04-27-x.md", date(2022, 4, 28), "emnews") is None
    only = Filters.parse(categories="emnews")
    assert only.skip_by_content("2022-04-27-x.md", None, "emnews") is None
    assert only.skip_by_content("2022-04-27-x.md", None, "TechWeb") == OTHER_CATEGORY
    assert only.skip_by_content("2022-04-27-x.md", None, None) == OTHER_CATEGORY


@dataclass
class Record:
    size: int = 100
    mtime_ns: int = 1
    sha256: str = "s"
    info_code: str | None = "NW1"
    status: str = "article"


@pytest.mark.parametrize(
    ("record", "stored", "unchanged"),
    [
        (None, {"NW1"}, False),
        (Record(), {"NW1"}, True),
        (Record(), set(), False),  # the article was deleted since: read it again
        (Record(size=99), {"NW1"}, False),
        (Record(mtime_ns=2), {"NW1"}, False),
        (Record(info_code=None, status="rejected"), set(), True),
        (Record(info_code=None, status="article"), set(), False),
    ],
)
def test_is_unchanged(record, stored, unchanged):
    assert is_unchanged(post_file("2022-04-27-NW1.md"), record, stored) is unchanged


def test_still_held():
    assert still_held(Record(), {"NW1"})
    assert not still_held(Record(), {"NW2"})
    assert still_held(Record(status="rejected"), set())


# -- reading ----------------------------------------------------------------------------------


def task(path: Path, **fields) -> ReadTask:
    return ReadTask(str(path), path.as_uri(), fields.pop("named", True), **fields)


def test_read_post_file_outcomes(tmp_path: Path):
    good = tmp_path / "2022-04-27-NW202204272361734680.md"
    good.write_bytes(POST)
    result = read_post_file(task(good), Filters())
    assert result.article is not None and result.article.info_code == "NW202204272361734680"
    assert result.article.url == good.as_uri()
    assert (result.error, result.skipped, len(result.sha256 or "")) == (None, None, 64)

    same = read_post_file(task(good, known_sha256=result.sha256), Filters())
    assert (same.article, same.skipped) == (None, UNCHANGED)

    readme = tmp_path / "README.md"
    readme.write_bytes(b"# The site\n")
    assert read_post_file(task(readme, named=False), Filters()).skipped == NOT_A_POST
    page = tmp_path / "about.md"
    page.write_bytes(POST.replace(b"layout: post", b"layout: page"))
    assert read_post_file(task(page, named=False), Filters()).skipped == NOT_A_POST
    post = tmp_path / "post.md"
    post.write_bytes(POST)
    assert read_post_file(task(post, named=False), Filters()).article is not None

    other = read_post_file(task(good), Filters.parse(categories="emnews"))
    assert other.skipped == OTHER_CATEGORY
    late = read_post_file(task(good), Filters.parse(since="2022-04-28"))
    assert late.skipped == OUTSIDE_WINDOW


def test_unreadable_and_broken_files(tmp_path: Path):
    gone = read_post_file(task(tmp_path / "2022-04-27-gone.md"), Filters())
    assert (gone.error, gone.sha256) == ("cannot read file: No such file or directory", None)

    target = tmp_path / "target.md"
    target.write_bytes(POST)
    swapped = tmp_path / "2022-04-27-swapped.md"
    swapped.symlink_to(target)  # put in place of a file after the walk
    assert read_post_file(task(swapped), Filters()).error == (
        "cannot read file: Too many levels of symbolic links"
    )

    posts = [p for p in generate(60, seed=3, broken=0.2) if p.truth["broken"]]
    expected = {
        "empty file": "empty file",
        "no front matter": "no front matter",
        "invalid utf-8": "not UTF-8",
        "truncated front matter": "front matter is not closed",
    }
    for path, post in zip(write(posts, tmp_path / "broken"), posts, strict=True):
        result = read_post_file(task(path), Filters())
        reason = post.truth["broken"]
        if reason in expected:
            assert result.error is not None and result.error.startswith(expected[reason])
            assert result.excerpt == post.data[:1200] and result.sha256
        else:  # readable, but missing required data: the validate pipeline rejects it
            assert result.article is not None and result.article.missing()


def read_all(pool: ParserPool, tasks: Iterable[ReadTask]) -> list[tuple[ReadTask, ReadResult]]:
    async def collect() -> list:
        return [pair async for pair in pool.read(tasks)]

    return asyncio.run(asyncio.wait_for(collect(), timeout=120))


def read_slowly_where_told(tasks: Sequence[ReadTask], filters: Filters) -> list[ReadResult]:
    """``read_chunk``, but a chunk holding a file named ``*-slow.md`` takes half a second."""
    if any(t.path.endswith("-slow.md") for t in tasks):
        time.sleep(0.5)
    return read_chunk(tasks, filters)


def test_the_pool_answers_in_file_order_like_the_crawl_process(tmp_path: Path):
    posts = generate(300, seed=5, broken=0.05)
    slow = tmp_path / "0000-slow.md"  # the first chunk is done last
    slow.write_bytes(POST)
    tasks = [task(path) for path in [slow, *write(posts, tmp_path / "posts")]]

    inline = read_all(ParserPool(Filters(), workers=0), tasks)
    pool = ParserPool(
        Filters(), workers=2, chunk_size=16, ahead=3, inline_below=32,
        reader=read_slowly_where_told,
    )  # fmt: skip
    pooled = read_all(pool, tasks)

    assert [t.path for t, _ in pooled] == [t.path for t in tasks]
    assert [r.article for _, r in pooled] == [r.article for _, r in inline]
    assert [(r.error, r.sha256) for _, r in pooled] == [(r.error, r.sha256) for _, r in inline]
    assert sum(r.article is not None for _, r in pooled) > 250


def test_work_in_flight_is_bounded_whatever_the_number_of_files(tmp_path: Path):
    paths = write(generate(100, seed=2), tmp_path)
    pulled = 0

    def tasks() -> Iterator[ReadTask]:  # 2,000 files: the same 100 twenty times
        nonlocal pulled
        for n in range(2000):
            pulled += 1
            yield task(paths[n % len(paths)])

    pool = ParserPool(Filters(), workers=2, chunk_size=16, ahead=2, inline_below=32)
    ahead = []

    async def collect() -> int:
        taken = 0
        async for _ in pool.read(tasks()):
            ahead.append(pulled - taken)
            taken += 1
            if taken % 100 == 0:
                await asyncio.sleep(0.01)  # a slow consumer: workers would run far ahead
        return taken

    assert asyncio.run(asyncio.wait_for(collect(), timeout=120)) == 2000
    # workers * ahead chunks in flight, the one being taken included.
    assert max(ahead) <= 2 * 2 * 16
    assert max(ahead) > 16, "more than one chunk was in flight"


def test_a_small_job_is_read_in_the_crawl_process(tmp_path: Path, monkeypatch):
    started = []

    def no_workers(self):
        started.append(self)
        raise AssertionError("no worker may start for a few files")

    monkeypatch.setattr(ParserPool, "_new_executor", no_workers)
    paths = write(generate(300, seed=1), tmp_path)
    tasks = [task(p) for p in paths]
    assert len(read_all(ParserPool(Filters(), workers=2), tasks[:255])) == 255
    assert len(read_all(ParserPool(Filters(), workers=0), tasks)) == 300
    assert not started
    with pytest.raises(AssertionError, match="no worker may start"):
        read_all(ParserPool(Filters(), workers=2), tasks[:256])  # 256 files are worth it


def test_a_pool_removes_the_spools_of_crawl_processes_that_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    child = subprocess.Popen(["true"])
    child.wait()
    dead_pid = child.pid  # a pid no process has any more
    assert not psutil.pid_exists(dead_pid)
    left = {
        "dead": temp / f"finews-parsed-{dead_pid}-x1y2z3",  # killed with a result in it
        "alive": temp / f"finews-parsed-{os.getpid()}-a1b2c3",  # another pool of a live process
        "other": temp / "finews-parsed-q9w8e7r6",  # not named by a pid: not ours to judge
    }
    for spool in left.values():
        spool.mkdir()
        (spool / "tmp0.pickle").write_bytes(b"x")
    tasks = [task(path) for path in write(generate(40, seed=2), tmp_path / "posts")]

    assert (
        len(read_all(ParserPool(Filters(), workers=2, chunk_size=8, inline_below=16), tasks)) == 40
    )
    assert sorted(p.name for p in temp.glob("finews-parsed-*")) == sorted(
        left[k].name for k in ("alive", "other")
    ), "the dead process's spool went, and the pool's own at its close"


def worker_processes(pool: ParserPool) -> list[psutil.Process]:
    """The pool's workers (the executor keeps them by pid; it has no public list)."""
    assert pool.executor is not None
    return [psutil.Process(pid) for pid in pool.executor._processes]


def test_a_killed_parser_worker_breaks_the_pool_and_no_worker_is_left(tmp_path: Path):
    tasks = [task(path) for path in write(generate(600, seed=8), tmp_path)]
    pool = ParserPool(Filters(), workers=2, chunk_size=16, ahead=2, inline_below=32)
    workers: list[psutil.Process] = []
    pairs = []

    async def collect() -> None:
        async for pair in pool.read(tasks):
            if len(pairs) == 20:
                workers.extend(worker_processes(pool))
                workers[0].send_signal(signal.SIGKILL)
            pairs.append(pair)

    with pytest.raises(BrokenProcessPool):
        asyncio.run(asyncio.wait_for(collect(), timeout=60))
    assert len(workers) == 2
    assert pool.executor is None, "the pool was shut down"
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "the other worker is stopped too"
    assert 20 <= len(pairs) < len(tasks)
    assert [t.path for t, _ in pairs] == [t.path for t in tasks[: len(pairs)]]
    assert all(r.article is not None for _, r in pairs), "what came out is whole"


def read_and_die_handing_back(tasks: Sequence[ReadTask], filters: Filters) -> list[ReadResult]:
    """``read_chunk``; a chunk holding ``*-die.md`` gets a 64 MB result, and its worker is
    killed while it hands that result back (out of the reader, writing it out)."""
    results = read_chunk(tasks, filters)
    if any(t.path.endswith("-die.md") for t in tasks):
        results[0].excerpt = os.urandom(64 << 20)
        main = threading.main_thread().ident
        threading.Thread(target=kill_when_handing_back, args=(main,), daemon=True).start()
    return results


def kill_when_handing_back(main: int | None) -> None:
    """SIGKILL this process once its main thread is writing a result: in the pool's hand-back
    or in the executor's own pipe (``multiprocessing.connection``'s ``_send``)."""
    while True:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code.co_name in {"_hand_back", "_send"}:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.0005)


KILLED_HANDING_BACK = """
import asyncio, os, sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from crawler.postfiles import Filters
from crawler.spiders.archive import ParserPool
from tests.test_archive import read_and_die_handing_back, task

paths = sorted(Path(sys.argv[1]).iterdir())
pool = ParserPool(
    Filters(), workers=2, chunk_size=16, ahead=2, inline_below=32,
    reader=read_and_die_handing_back,
)

async def collect():
    async for _ in pool.read([task(path) for path in paths]):
        pass

try:
    asyncio.run(collect())
except BrokenProcessPool:
    print("broken")
"""


def test_a_worker_killed_handing_back_a_large_result_breaks_the_pool_without_a_hang(
    tmp_path: Path,
):
    # Run in a process of its own: a pool that hangs would hang this one too, at its exit.
    posts = write(generate(100, seed=4), tmp_path / "posts")
    (tmp_path / "posts" / f"{posts[40].stem}-die.md").write_bytes(POST)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_HANDING_BACK, str(tmp_path / "posts")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the pool hung when a worker died handing back its result")
    assert out.decode().split() == ["broken"], err.decode()[-2000:]
    # Only this run's spool: other backfills (tests in parallel) have theirs.
    left = list(Path(tempfile.gettempdir()).glob(f"finews-parsed-{process.pid}-*"))
    assert not left, "the spool directory is removed"


def test_a_read_abandoned_part_way_stops_its_workers(tmp_path: Path):
    tasks = [task(path) for path in write(generate(600, seed=9), tmp_path)]
    pool = ParserPool(Filters(), workers=2, chunk_size=16, ahead=2, inline_below=32)
    workers: list[psutil.Process] = []

    async def abandon() -> None:
        reading = pool.read(tasks)
        async for _ in reading:
            workers.extend(worker_processes(pool))
            break
        await reading.aclose()  # what Scrapy's shutdown (Ctrl-C) does to start()

    asyncio.run(asyncio.wait_for(abandon(), timeout=60))
    assert pool.executor is None
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert len(workers) == 2 and not alive, "no worker outlives the read"


# -- progress ----------------------------------------------------------------------------------


STATS = {
    "finews/seen": 1234,
    "finews/files_total": 100000,
    "finews/stored": 1200,
    "finews/updated": 3,
    "finews/unchanged": 1,
    "finews/rejected": 20,
    "finews/skipped": 10,
    "finews/skipped/outside_window": 10,
}


def test_progress_and_summary_lines():
    snap = Snapshot.from_stats(STATS)
    assert progress_line(snap, 1650.4) == (
        "files 1,234/100,000 (1.2%) | stored 1,200 updated 3 unchanged 1 | rejects 20 | "
        "skipped 10 | 1,650/s | ETA 1:00"
    )
    assert progress_line(Snapshot.from_stats({"finews/seen": 5}), None).startswith("seen 5 |")
    assert summary_line(snap, 61.0, "finished") == (
        "Summary (finished) after 1:01: 1,234 of 100,000 seen = 1,200 stored, 3 updated, "
        "1 unchanged, 0 duplicates, 20 rejected, 10 skipped (outside_window 10); 20/s"
    )


class FakeStats:
    def __init__(self, stats: dict) -> None:
        self.stats = stats

    def get_stats(self) -> dict:
        return self.stats


class FakeCrawler:
    def __init__(self, stats: dict, settings: dict | None = None) -> None:
        self.stats = FakeStats(stats)
        self.settings = settings or {}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line_and_clears_it_for_logs():
    screen = Terminal()
    progress = Progress(FakeCrawler(dict(STATS)), 2.0, stream=screen)  # type: ignore[arg-type]
    assert progress.tty
    progress.samples.append((0.0, 0))
    progress.tick()
    progress.tick()
    assert screen.getvalue().count("\r") == 2 and "\n" not in screen.getvalue()
    assert screen.getvalue().startswith("\rfiles 1,234/100,000 (1.2%) | stored 1,200")

    handler = logging.StreamHandler(screen)
    handler.addFilter(progress._filter)
    logging.getLogger("test.progress").addHandler(handler)
    try:
        logging.getLogger("test.progress").warning("a reject")
    finally:
        logging.getLogger("test.progress").removeHandler(handler)
    assert screen.getvalue().endswith("\r\x1b[Ka reject\n"), "the line is cleared first"
    assert not progress.showing


def test_progress_elsewhere_is_a_log_line(caplog):
    progress = Progress(FakeCrawler(dict(STATS)), 2.0, stream=io.StringIO())  # type: ignore[arg-type]
    assert not progress.tty
    with caplog.at_level(logging.INFO, logger="crawler.extensions.progress"):
        progress.tick()
    assert caplog.messages == [progress_line(Snapshot.from_stats(STATS), None)]


def test_superseded_copies_of_one_post():
    files = [
        PostFile(f"/repo/{path}", 1, 1, True)
        for path in (
            "_posts/2022-04-27-NW202204272361734680.md",
            "corpus/2021-12-08-202112082206672930.cfbae48.md",
            "corpus/2021-12-08-202112082206672930.fe8c3e7.md",
            "corpus/2021-12-08-202112082206672930.md",
            "corpus/2021-12-08-202112082206703990.3dd119d.md",
            "corpus/2021-12-08-202112082206703990.b5202fa.md",
            "old_post/2022-04-27-NW202204272361734680.md",
            "old_post/2022-04-27-202204272361734680.md",  # the emnews post: another name
        )
    ]
    assert post_name("2021-12-08-202112082206672930.cfbae48.md") == (
        "2021-12-08-202112082206672930.md"
    )
    assert superseded(files) == {
        "/repo/old_post/2022-04-27-NW202204272361734680.md",  # _posts/ holds the live copy
        "/repo/corpus/2021-12-08-202112082206672930.cfbae48.md",  # the plain name wins
        "/repo/corpus/2021-12-08-202112082206672930.fe8c3e7.md",
        "/repo/corpus/2021-12-08-202112082206703990.3dd119d.md",  # else the last one
    }


def test_a_name_that_is_not_utf8_is_reported_not_read(tmp_path: Path):
    (tmp_path / "old_post").mkdir()
    bad = os.fsencode(tmp_path / "old_post") + b"/2022-04-27-\xb2\xe2.md"
    with open(bad, "wb") as file:
        file.write(POST)
    (tmp_path / "old_post" / "2022-04-26-NW202204262361734680.md").write_bytes(POST)

    tree = walk(tmp_path)

    assert [Path(f.path).name for f in tree.files] == ["2022-04-26-NW202204262361734680.md"]
    (entry,) = tree.unreadable
    assert entry.reason == "file name is not UTF-8"
    assert entry.path.endswith("/old_post/2022-04-27-\\xb2\\xe2.md")
    entry.path.encode("utf-8")  # storable as a reject's URL
