"""Downloader middlewares: back off when the site is overloaded; read post pages early.

``BackoffMiddleware``: AutoThrottle only ever raises the delay by the latency it
measures, and a quick 429 or 503 has a small latency, so it would keep the pace. Here
such a response at least doubles the download slot's delay (from FINEWS_BACKOFF_DELAY,
and at least the ``Retry-After`` seconds the server asks for), capped at
FINEWS_BACKOFF_MAX_DELAY; RetryMiddleware then retries the request at that slower pace,
and AutoThrottle brings the delay back down as normal responses return.

``ReadPostPages``: a post page (``request.meta["finews_page"] == "post"``) answered 2xx is
read by the spider's page pool (``crawler.pagepool``, worker processes) before the
response leaves the downloader, and the result waits in ``request.meta[READ]`` for the
callback. Awaiting the pool here costs the crawl process less than an ``async def``
callback, which Scrapy wraps in a task and two Deferreds per page (measured: ~0.07 ms
a page, about 8% of a crawl's speed on this machine).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from scrapy import Request

from crawler.pages import content_type_of

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

BACKOFF_STATUSES = (429, 503)
# Where ReadPostPages leaves a post page's PostPage (or the exception its reading raised).
READ = "finews_read"


def retry_after_seconds(value: bytes | str | None) -> float:
    """Seconds in a ``Retry-After`` header; 0 for none or an HTTP date (not worth parsing)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        return max(0.0, float((value or "").strip()))
    except ValueError:
        return 0.0


def backed_off_delay(current: float, retry_after: float, start: float, cap: float) -> float:
    """The next delay after an overload answer: double, at least ``start`` and Retry-After."""
    return min(cap, max(current * 2, start, retry_after))


class BackoffMiddleware:
    """Slows the download slot of a request answered 429 or 503, before it is retried."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.start = crawler.settings.getfloat("FINEWS_BACKOFF_DELAY", 1.0)
        self.cap = crawler.settings.getfloat("FINEWS_BACKOFF_MAX_DELAY", 60.0)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BackoffMiddleware:
        return cls(crawler)

    def process_response(self, request: Request, response: Response) -> Response:
        if response.status not in BACKOFF_STATUSES:
            return response
        slots = self.crawler.engine.downloader.slots if self.crawler.engine else {}
        slot = slots.get(request.meta.get("download_slot", ""))
        if slot is not None:
            wait = retry_after_seconds(response.headers.get(b"Retry-After"))
            slot.delay = backed_off_delay(slot.delay, wait, self.start, self.cap)
            self.crawler.stats.inc_value("finews/backoff")
            logger.info(
                "%s answered %d: waiting %.1f s between requests", request.url,
                response.status, slot.delay,
            )  # fmt: skip
        return response


class ReadPostPages:
    """Reads 2xx post pages with ``crawler.spider.pages`` (a ``PagePool``), if it has one."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ReadPostPages:
        return cls(crawler)

    async def process_response(self, request: Request, response: Response) -> Response:
        if request.meta.get("finews_page") != "post" or not 200 <= response.status < 300:
            return response
        pages = getattr(self.crawler.spider, "pages", None)
        if pages is None:
            return response
        try:
            read = await pages.read(response.body, response.url, content_type_of(response.headers))
        except Exception as exc:  # a parser bug: raised again in the callback, as before
            read = exc
        request.meta[READ] = read
        return response


class MarkStartRequests:
    """Scrapy's ``StartSpiderMiddleware`` for start requests only.

    Scrapy's middleware marks start requests (``meta["is_start_request"]``, which the
    scheduler's start queues read), but as a ``BaseSpiderMiddleware`` it also wraps every
    callback's output in an async generator that only passes each request and item on:
    for a crawl of thousands of pages, a step per page for nothing. This one marks the
    start requests the same way and leaves callback output alone.
    """

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request_or_item in start:
            if isinstance(request_or_item, Request):
                request_or_item.meta.setdefault("is_start_request", True)
            yield request_or_item
