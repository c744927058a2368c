"""A crawl split over processes (``crawler.shards``, FINEWS_CRAWL_PROCESSES).

The end-to-end runs of a split crawl (every article once, downloads, incremental runs) are
in ``test_crawl_finews.py``; here: the routing, the settings split, the stats merge, and
a shard process killed in the middle of a crawl.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from scrapy.settings import Settings
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.test import get_crawler

from crawler import settings as project_settings
from crawler.pages.site import PostLink
from crawler.shards import (
    crawl_processes,
    explicit_settings,
    merge_stats,
    shard_of,
    split_settings,
)
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from tests.crawling import ROOT, cron_command, environment, expected_from, post_paths
from tests.test_crawl_finews import check_stored


def link(code: str | None, url: str = "https://x/a/2024/01/02/p.html") -> PostLink:
    return PostLink(url, "a", code)


def test_a_post_has_one_shard_by_its_info_code_else_its_url():
    codes = [f"NW2024010{n:011d}" for n in range(2000)]
    shares = Counter(shard_of(link(code), 2) for code in codes)
    assert set(shares) == {0, 1} and min(shares.values()) > 800  # about half each
    # The same article under another category (another URL) goes to the same shard.
    assert all(shard_of(link(c, "https://x/b/1.html"), 3) == shard_of(link(c), 3) for c in codes)
    urls = [f"https://x/a/2024/01/02/{n}.html" for n in range(300)]
    assert len({shard_of(link(None, url), 2) for url in urls}) == 2
    assert {shard_of(link(code), 1) for code in codes} == {0}


def test_each_process_gets_its_share_of_the_concurrency(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    settings = Settings({"CONCURRENT_REQUESTS": 32, "CONCURRENT_REQUESTS_PER_DOMAIN": 5,
                         "AUTOTHROTTLE_TARGET_CONCURRENCY": 3.0})  # fmt: skip
    split_settings(settings, 2)
    assert settings.getint("CONCURRENT_REQUESTS") == 16
    assert settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 3  # rounded up, never 0
    assert settings.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY") == 1.5
    # Two crawl processes take both cores: no page workers, no writer process.
    assert settings.getint("FINEWS_PAGE_WORKERS") == 0
    assert settings.getbool("FINEWS_STORE_WRITER") is False
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    roomy = Settings({"FINEWS_STORE_WRITER": False})
    split_settings(roomy, 2)
    assert roomy.getint("FINEWS_PAGE_WORKERS") == 1
    assert roomy.getbool("FINEWS_STORE_WRITER") is False  # as the user said


def test_feed_exports_or_a_jobdir_keep_the_crawl_in_one_process(caplog):
    assert crawl_processes(Settings({"FINEWS_CRAWL_PROCESSES": 3})) == 3
    assert crawl_processes(Settings({})) == 1
    with caplog.at_level(logging.WARNING):
        assert crawl_processes(Settings({"FINEWS_CRAWL_PROCESSES": 2, "JOBDIR": "x"})) == 1
        feeds = {"a.jl": {"format": "jsonlines"}}
        assert crawl_processes(Settings({"FINEWS_CRAWL_PROCESSES": 2, "FEEDS": feeds})) == 1
    assert "feed exports" in caplog.text and "JOBDIR" in caplog.text


def test_a_shard_starts_from_the_settings_given_above_the_defaults():
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    settings.set("CONCURRENT_REQUESTS", 7, priority="cmdline")
    given = explicit_settings(settings)
    assert given["CONCURRENT_REQUESTS"] == 7
    assert given["ITEM_PIPELINES"] == project_settings.ITEM_PIPELINES
    assert "DOWNLOAD_HANDLERS_BASE" not in given  # a Scrapy default: the shard has it too


def test_a_shards_stats_are_added_to_the_crawls():
    crawler = get_crawler()
    stats = MemoryStatsCollector(crawler)
    stats.set_value("finews/stored", 3)
    stats.set_value("memusage/max", 100)
    stats.set_value("elapsed_time_seconds", 9.0)
    merge_stats(stats, {"finews/stored": 4, "finews/pages/post": 2, "memusage/max": 250,
                        "elapsed_time_seconds": 8.0, "finish_reason": "finished",
                        "bench/cpu_ms": 1.5, "flag": True})  # fmt: skip
    assert stats.get_value("finews/stored") == 7
    assert stats.get_value("finews/pages/post") == 2
    assert stats.get_value("memusage/max") == 250
    assert stats.get_value("elapsed_time_seconds") == 9.0  # this process's own
    assert stats.get_value("bench/cpu_ms") == 1.5
    assert stats.get_value("finish_reason") is None and stats.get_value("flag") is None


@pytest.mark.slow
def test_a_killed_shard_process_costs_no_article(tmp_path: Path, sqlite_url: str):
    """SIGKILL the second crawl process mid-crawl: the crawl process fetches every post it
    had been given, says so at ERROR, and the run still stores every article once."""
    files = synthetic_files(1500, seed=21, categories=12)
    site = MirrorSite(tmp_path / "site", files)
    site.build()
    expected = expected_from(site)
    command = cron_command(
        sqlite_url, "", tmp_path / "crawl.lock", "-s", "FINEWS_CRAWL_PROCESSES=2",
        "-s", "AUTOTHROTTLE_ENABLED=False",
    )  # fmt: skip
    with MirrorServer(site.root) as server:
        command[command.index("base_url=")] = f"base_url={server.url}"
        crawl = subprocess.Popen(
            command, cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and crawl.poll() is None and time.monotonic() < deadline:
            # A shard is forked (the crawl's own command line) or spawned (crawler.shards).
            parent = psutil.Process(crawl.pid)
            shards = [p for p in parent.children() if p.cmdline() == parent.cmdline()
                      or "crawler.shards" in " ".join(p.cmdline())]  # fmt: skip
            if shards and len(post_paths(server.paths(None))) >= 100:
                shards[0].send_signal(signal.SIGKILL)
                killed = shards[0].pid
            time.sleep(0.02)
        _, stderr = crawl.communicate(timeout=300)
        assert killed, "the crawl ended before its second process could be killed"
        assert crawl.returncode == 0, stderr[-3000:]
        assert "Crawl process 2 of 2 exited (status -9) before it finished" in stderr
        check_stored(sqlite_url, expected, server.url)
