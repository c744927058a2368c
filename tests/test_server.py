"""The mirror server behaves like the static site: statuses, content types, 404 page, robots;
and its fault switches misbehave as they say, then serve the real page."""

from __future__ import annotations

import http.client
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from fixtures.server import (
    BROKEN,
    BUSY_PAGE,
    FAULT_KINDS,
    Fault,
    MirrorServer,
    MirrorSite,
    corpus_files,
    plan_faults,
    synthetic_files,
)


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


# -- fault switches ---------------------------------------------------------------------------


def raw(server: MirrorServer, path: str, timeout: float = 5) -> bytes:
    """Everything the server sends for one GET before it closes or goes quiet."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


@pytest.mark.parametrize(
    ("kind", "status", "retry_after"),
    [("500", 500, None), ("502", 502, None), ("503", 503, "1"), ("429", 429, "1"),
     ("429-bare", 429, None)],
)  # fmt: skip
def test_status_faults_then_the_page(server, site, kind, status, retry_after):
    post = site.manifest.posts[0].path
    server.answers[post] = [Fault(kind)] * 2
    for _ in range(2):
        answer = get(server, post)
        assert (answer.status, answer.getheader("Retry-After")) == (status, retry_after)
    assert get(server, post).status == 200
    assert server.paths(None) == [post] * 3


def test_200_faults_are_not_the_page(server, site):
    post = site.manifest.posts[0].path
    server.answers[post] = [Fault("empty"), Fault("busy")]
    empty, busy, page = get(server, post), get(server, post), get(server, post)
    assert (empty.status, empty.body) == (200, b"")
    assert (busy.status, busy.body) == (200, BUSY_PAGE)
    assert b"Service busy" in busy.body and len(busy.body) < 200
    assert busy.getheader("Content-Type") == "text/html; charset=utf-8"
    assert page.status == 200 and site.manifest.posts[0].title.encode() in page.body


def test_redirect_faults_keep_the_path(server, site):
    post = site.manifest.posts[0].path
    server.offsite = "http://127.0.0.2:8123/"
    server.answers[post] = [Fault("alias"), Fault("offsite")]
    alias, offsite = get(server, post), get(server, post)
    assert (alias.status, alias.getheader("Location")) == (
        301, "https://finews.withounder.com" + post,
    )  # fmt: skip
    assert (offsite.status, offsite.getheader("Location")) == (302, "http://127.0.0.2:8123" + post)
    assert get(server, post).status == 200


def test_resets_close_the_connection_without_an_answer(server, site):
    post = site.manifest.posts[0].path
    server.answers[post] = [Fault("reset"), Fault("reset-headers")]
    for _ in range(2):
        try:
            sent = raw(server, post)
        except ConnectionResetError:
            sent = b""  # the reset came before the client read what little was sent
        assert b"\r\n\r\n" not in sent, "never a whole status line and headers"
    assert get(server, post).status == 200
    assert server.requests == [("GET", post, BROKEN)] * 2 + [("GET", post, 200)]


def test_a_stall_says_nothing_for_its_time(server, site):
    post = site.manifest.posts[0].path
    server.stall = 1.0
    server.answers[post] = [Fault("stall")]
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        raw(server, post, timeout=0.3)  # the crawler's download timeout, in small
    assert raw(server, post).startswith(b"HTTP/1.1 200 OK")
    assert time.monotonic() - started < 1.0, "other connections are answered meanwhile"
    assert server.paths(None) == [post, post] and server.paths(BROKEN) == [post]


def test_a_truncated_body_is_shorter_than_its_content_length(server, site):
    post = site.manifest.posts[0].path
    server.answers[post] = [Fault("truncated")]
    head, _, body = raw(server, post).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length"))
                 .split(b":")[1])  # fmt: skip
    full = get(server, post).body
    assert 0 < len(body) < len(full) < length
    assert full.startswith(body)


def test_a_permanent_fault_is_never_used_up(server, site):
    post = site.manifest.posts[0].path
    server.answers[post] = [Fault("500", permanent=True)]
    assert [get(server, post).status for _ in range(5)] == [500] * 5
    assert server.pending() == {post: [Fault("500", permanent=True)]}


def test_plan_faults_is_seeded_and_uses_every_kind():
    paths = [f"/emnews/2022/05/26/{n}.html" for n in range(300)]
    plan = plan_faults(paths, seed=7, share=0.2, times=(2, 4))
    assert plan == plan_faults(paths, seed=7, share=0.2, times=(2, 4))
    assert plan != plan_faults(paths, seed=8, share=0.2, times=(2, 4))
    assert len(plan) == 60 and set(plan) <= set(paths)
    assert {queue[0].kind for queue in plan.values()} == set(FAULT_KINDS)
    for queue in plan.values():
        assert 2 <= len(queue) <= 4 and len(set(queue)) == 1
        assert not queue[0].permanent

    few = plan_faults(paths[:5], seed=1, share=0.01, kinds=["503", "empty"], times=(1, 1))
    assert len(few) == 2, "at least one path per kind"
    assert Counter(queue[0].kind for queue in few.values()) == {"503": 1, "empty": 1}

    stuck = plan_faults(paths, seed=2, share=0.1, kinds=["500"], permanent=1.0)
    assert all(queue == [Fault("500", permanent=True)] for queue in stuck.values())
    with pytest.raises(ValueError, match="unknown fault"):
        plan_faults(paths, seed=2, share=0.1, kinds=["404"])
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("teapot")


def test_faults_queue_after_other_answers(server, site):
    post = site.manifest.posts[0].path
    server.answers[post] = [(418, b"teapot", {})]
    server.add_answers({post: [Fault("502")]})
    assert [get(server, post).status for _ in range(3)] == [418, 502, 200]
    assert server.pending() == {}
