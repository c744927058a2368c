"""A page is never rejected for good because of how the server answered: an empty 200, an
error page served as 200 or a page of another type is retried like a 5xx; if it stays so,
it is a failed download, fetched again by the next run. What a post says (no infoCode, no
time) stays a reject that later runs do not fetch again."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from crawler.items import DOWNLOAD_FAILED
from fixtures.server import MirrorServer, MirrorSite, synthetic_files
from schema.models import Article, Reject
from tests.crawling import expected_from, post_paths, run_cron, scalars

pytestmark = pytest.mark.slow

HTML = {"Content-Type": "text/html; charset=utf-8"}
BUSY = (200, b"<html><body><h1>Service busy</h1></body></html>", HTML)
EMPTY = (200, b"", HTML)
BINARY = (200, b"\x00\x01\x02", {"Content-Type": "application/octet-stream"})


def test_bad_200_answers_are_retried_then_fetched_again_next_run(tmp_path: Path, sqlite_url):
    site = MirrorSite(tmp_path / "site", synthetic_files(12, seed=23))
    site.build()
    posts = [post.path for post in site.manifest.posts]
    with MirrorServer(site.root) as mirror:
        mirror.answers = {
            posts[0]: [EMPTY],  # once: the retry stores it in this run
            posts[1]: [BUSY, EMPTY],
            posts[2]: [BUSY] * 4,  # more than the 3 retries: failed, next run
            posts[3]: [BINARY] * 4,
        }
        lock = tmp_path / "crawl.lock"
        first = run_cron(sqlite_url, mirror.url, lock)
        assert first.returncode == 0, first.stderr[-3000:]
        assert first.stats["finews/failed/post"] == 2
        assert first.stats["retry/reason_count/not_a_post_page"] == 1 + 2 + 3 + 3
        rejects = scalars(sqlite_url, select(Reject.url, Reject.reason, Reject.detail))
        assert sorted(url.removeprefix(mirror.url.rstrip("/")) for url, _, _ in rejects) == sorted(
            posts[2:4]
        )
        assert {reason for _, reason, _ in rejects} == {DOWNLOAD_FAILED}
        assert any("not a post page" in detail for _, _, detail in rejects)
        expected = expected_from(site).articles
        assert len(scalars(sqlite_url, select(Article.info_code))) == len(expected) - 2

        mirror.clear()
        second = run_cron(sqlite_url, mirror.url, lock)
        assert second.returncode == 0, second.stderr[-3000:]
        assert sorted(post_paths(mirror.paths(None))) == sorted(posts[2:4])
        assert {row[0] for row in scalars(sqlite_url, select(Article.info_code))} == set(expected)
