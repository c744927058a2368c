"""Read post pages in worker processes while the crawl process downloads.

Scrapy's own work on a page keeps the crawl process's core busy (shared/PERF.md), and
reading a post page costs about half as much again: in the crawl process it would cost a
third of the crawl's speed. With FINEWS_PAGE_WORKERS >= 1, pages are read
(``crawler.pages.site.read_post_page``) in that many worker processes on the other cores
(a ``crawler.childproc.WorkerPool``); the crawl process only pickles the bytes out and the
answers in, ~0.06 ms a page. FINEWS_PAGE_WORKERS = 0, or a one-core machine, reads pages
in the crawl process. In a crawl, the downloader middleware
``crawler.middlewares.ReadPostPages`` calls ``read``.

Pages go in batches: whatever queued while the crawl process was busy goes out as one
message (at most ``BATCH`` pages), so a busy crawl pays one round trip for many pages and
an idle one waits for none. A worker holds at most ``IN_FLIGHT`` batches, so it always has
the next one at hand. Workers are new interpreters without Scrapy, so one boots in ~0.1 s;
``launch`` starts them as soon as the spider exists, and ``start`` connects them to the
event loop when the spider opens. If a worker dies, what it held and every later page is
read by the others, or in the crawl process when none is left, and the crawl goes on.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from crawler.childproc import WorkerPool
from crawler.pages.site import PostPage, read_post_page

IN_FLIGHT = 2  # batches per worker: the one it reads and the next
BATCH = 16  # pages per message at most: ~16 ms of parsing

Job = tuple[bytes, str, str | None]  # body, URL, Content-Type


def default_workers() -> int:
    """One worker when a second core exists: Scrapy keeps the first one busy."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


def reader(root: str) -> Callable[[Job], PostPage]:
    """What a worker does with each page (see ``crawler.childproc.serve``)."""

    def read(job: Job) -> PostPage:
        body, url, content_type = job
        return read_post_page(body, url, root, content_type)

    return read


class PagePool(WorkerPool):
    """``await pool.read(body, url, content_type)`` gives the page's ``PostPage``; a parser
    bug raises its exception there."""

    def __init__(self, root: str, workers: int) -> None:
        super().__init__(
            "crawler.pagepool:reader", root, workers,
            name="page", batch=BATCH, in_flight=IN_FLIGHT,
        )  # fmt: skip
        self.root = root

    def read(self, body: bytes, url: str, content_type: str | None) -> Awaitable[PostPage]:
        return self.submit((body, url, content_type))
