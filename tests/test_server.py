"""The mirror server behaves like the static site: statuses, content types, 404 page, robots."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from fixtures.server import MirrorServer, MirrorSite, corpus_files, synthetic_files


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> MirrorSite:
    root = tmp_path_factory.mktemp("mirror")
    site = MirrorSite(root, corpus_files()[:10] + synthetic_files(12, seed=4))
    site.build()
    return site


@pytest.fixture
def server(site):
    with MirrorServer(site.root) as server:
        yield server


def get(server: MirrorServer, path: str, method: str = "GET") -> http.client.HTTPResponse:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request(method, path)
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def test_pages_are_utf8_html(server, site):
    post = site.manifest.posts[0]
    for path in ("/", post.path, "/category/emnews.html"):
        response = get(server, path)
        assert response.status == 200, path
        assert response.getheader("Content-Type") == "text/html; charset=utf-8"
        assert int(response.getheader("Content-Length")) == len(response.body)
    assert post.title.encode() in get(server, post.path).body


def test_robots_feed_and_the_404_page(server):
    robots = get(server, "/robots.txt")
    assert (robots.status, robots.body) == (200, b"User-agent: *\nAllow: /\n")
    assert robots.getheader("Content-Type").startswith("text/plain")
    assert get(server, "/feed.xml").getheader("Content-Type") == "application/xml"
    missing = get(server, "/emnews/")  # the old back-link style: no such page
    assert missing.status == 404
    assert "本站消息时效性为三天".encode() in missing.body
    assert get(server, "/../../etc/passwd").status == 404


def test_a_directory_redirects_to_its_slash_and_head_has_no_body(server):
    redirect = get(server, "/category")
    assert (redirect.status, redirect.getheader("Location")) == (301, "/category/")
    head = get(server, "/", method="HEAD")
    assert head.status == 200 and head.body == b""


def test_requests_are_recorded_and_errors_can_be_scripted(server):
    server.script["/robots.txt"] = [429, 503]
    assert get(server, "/robots.txt").status == 429
    retry = get(server, "/robots.txt")
    assert (retry.status, retry.getheader("Retry-After")) == (503, "1")
    assert get(server, "/robots.txt").status == 200
    server.fail_with = 500
    assert get(server, "/").status == 500
    assert server.paths(None) == ["/robots.txt"] * 3 + ["/"]
    assert server.paths() == ["/robots.txt"]


def test_posts_added_later_appear_on_their_category_page(tmp_path: Path):
    site = MirrorSite(tmp_path, synthetic_files(5, seed=1))
    before = {p.path for p in site.build().posts}
    extra = synthetic_files(3, seed=2, start=site.manifest.posts[0].published_at)
    after = site.add(extra)
    added = [p for p in after.posts if p.path not in before]
    assert len(added) == 3
    with MirrorServer(site.root) as server:
        for post in added:
            page = get(server, f"/category/{post.path.split('/')[1]}.html").body.decode()
            assert post.path in page
            assert get(server, post.path).status == 200
