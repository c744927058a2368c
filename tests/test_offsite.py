"""No request leaves the site: redirects (HTTP and meta refresh) and links to another host
are never followed; a page redirected off the site is a failed download, fetched again by
the next run. A redirect to one of the site's own host names is taken to the mirror.

The mirror listens on 127.0.0.1; a decoy serving the same pages on 127.0.0.2 records
anything that reaches it (robots.txt included).
"""

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


def test_redirects_and_links_off_the_site_are_never_followed(tmp_path: Path, sqlite_url: str):
    site = MirrorSite(tmp_path / "site", synthetic_files(12, seed=21))
    site.build()
    posts = [post.path for post in site.manifest.posts]
    with MirrorServer(site.root) as mirror, MirrorServer(site.root, host="127.0.0.2") as decoy:
        away = decoy.url.rstrip("/")
        refresh = f'<html><head><meta http-equiv="refresh" content="0; url={away}{posts[1]}">'
        home = (
            (site.root / "index.html")
            .read_bytes()
            .replace(
                b"</body>",
                f'<a href="{away}/category/emnews.html">x</a><a href="{away}{posts[3]}">y</a>'
                "</body>".encode(),
            )
        )
        mirror.answers = {
            posts[0]: [(302, b"", {"Location": away + posts[0]})],  # off the site, once
            posts[1]: [(200, refresh.encode(), HTML)],  # a meta refresh off the site, once
            # On one of the site's own names: followed on the mirror, stored in this run.
            posts[2]: [(301, b"", {"Location": "https://finews.withounder.com" + posts[2]})],
            "/": [(200, home, HTML)],  # links to another host on the home page
        }
        lock = tmp_path / "crawl.lock"
        first = run_cron(sqlite_url, mirror.url, lock)
        assert first.returncode == 0, first.stderr[-3000:]
        assert decoy.paths(None) == [], "nothing reached another host"
        assert first.stats["finews/failed/post"] == 2
        stored = {row[0] for row in scalars(sqlite_url, select(Article.info_code))}
        expected = expected_from(site).articles
        assert len(stored) == len(expected) - 2
        rejects = scalars(sqlite_url, select(Reject.url, Reject.reason, Reject.detail))
        assert sorted((url.removeprefix(mirror.url.rstrip("/")), reason) for url, reason, _ in
                      rejects) == sorted((path, DOWNLOAD_FAILED) for path in posts[:2])  # fmt: skip
        assert all("redirected off the site to http://127.0.0.2" in d for _, _, d in rejects)

        mirror.clear()
        second = run_cron(sqlite_url, mirror.url, lock)
        assert second.returncode == 0, second.stderr[-3000:]
        assert sorted(post_paths(mirror.paths(None))) == sorted(posts[:2]), "tried again"
        stored = {row[0] for row in scalars(sqlite_url, select(Article.info_code))}
        assert stored == set(expected)
        assert decoy.paths(None) == []
