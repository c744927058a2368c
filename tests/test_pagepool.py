"""Post pages read in worker processes give what reading them in the crawl process gives."""

from __future__ import annotations

import asyncio

import pytest

from crawler.childproc import frame, unframe
from crawler.pagepool import PagePool
from crawler.pages.site import read_post_page
from fixtures.mirror import render_post
from fixtures.synth import generate

ROOT = "http://127.0.0.1:8123"
HTML = "text/html; charset=utf-8"


@pytest.fixture(scope="module")
def pages() -> list[tuple[bytes, str]]:
    out = []
    for post in generate(12, seed=6):
        page = render_post(post.data.decode("utf-8-sig"), post.filename)
        assert page is not None
        out.append((page.html.encode("utf-8"), ROOT + page.path))
    out.append((b"<html><body><p>no section here</p></body></html>", ROOT + "/x/2022/05/26/y.html"))
    return out


async def read_all(pool: PagePool, pages, kill_after: int | None = None):
    pool.start()
    try:
        reads = []
        for n, (body, url) in enumerate(pages):
            reads.append(asyncio.ensure_future(pool.read(body, url, HTML)))
            if n == kill_after:
                pool._workers[0].process.kill()
        return await asyncio.gather(*reads)
    finally:
        pool.close()


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_workers_read_pages_as_the_crawl_process_does(pages, workers):
    expected = [read_post_page(body, url, ROOT, HTML) for body, url in pages]
    pool = PagePool(ROOT, workers)
    assert asyncio.run(read_all(pool, pages)) == expected
    assert expected[-1].article is None and expected[-1].error.startswith("not a post page")
    assert all(page.article is not None for page in expected[:-1])
    assert pool._workers == []


def test_a_dead_worker_costs_speed_not_pages(pages, caplog):
    expected = [read_post_page(body, url, ROOT, HTML) for body, url in pages]
    pool = PagePool(ROOT, 1)
    assert asyncio.run(read_all(pool, pages, kill_after=2)) == expected
    assert pool.inline > 0
    assert "its jobs go elsewhere" in caplog.text


def test_frames_survive_any_split():
    payloads = [b"", b"x" * 5, bytes(range(256)) * 300]
    stream = b"".join(frame(p) for p in payloads)
    for cut in (1, 3, 4, 5, 100, len(stream) - 1):
        buffer = bytearray(stream[:cut])
        got = unframe(buffer)
        buffer += stream[cut:]
        got += unframe(buffer)
        assert got == payloads and buffer == b""
