"""Downloader middlewares: skip posts already stored; back off when the site is overloaded.

``SkipKnownPosts``, the incremental skip (in the spirit of scrapy-deltafetch), drops a post
request (``meta["finews_post"]``) whose copy is recorded: the article under that category
was read, by an earlier run (its link's content hash) or by this one (learnt from
``item_scraped``), or an earlier run rejected the page for what it holds. Every other copy
is downloaded once, including an outlet's copy of an article stored from its emnews copy:
that copy cannot change the stored text (emnews is preferred) nor the digest it supplies,
but it can add securities to the merged stock rows (``pipelines.upsert``; an outlet's
markup is not always a subset of emnews's), so linking it unread would make the stored
article depend on which copy came first. Skips are counted (``finews/skipped/stored|
rejected``); ``refresh=1`` turns it off and reads every copy again.

``StayOnSite`` drops every request for another host than the crawled site's, whatever made
it: a link, a redirect (HTTP or meta refresh), a retry, robots.txt. A URL on one of the
site's own host names is taken to ``base_url`` instead (``crawler.pages.site.on_site``).
Scrapy's OffsiteMiddleware would let retries and robots.txt through (``dont_filter``).
The spider records a dropped redirect as a failed download of the page, tried again next run.

``BackoffMiddleware``: AutoThrottle keeps its pace on a quick 429 or 503 (its latency is
small), so such a response at least doubles the slot's delay (from FINEWS_BACKOFF_DELAY,
at least ``Retry-After``, at most FINEWS_BACKOFF_MAX_DELAY) before RetryMiddleware retries
it; AutoThrottle brings the delay back down as normal responses return.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import Request, signals
from scrapy.exceptions import IgnoreRequest

from crawler.items import Article
from crawler.pages.site import PostLink, on_site

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

BACKOFF_STATUSES = (429, 503)


class OffSite(IgnoreRequest):
    """A request for a host other than the site's: never sent."""


class StayOnSite:
    """Keeps every request of the site crawl (a spider with a ``root``) on the site."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StayOnSite:
        return cls(crawler)

    def process_request(self, request: Request) -> Request | None:
        root = getattr(self.crawler.spider, "root", None)
        if root is None or request.url.startswith(root + "/"):
            return None
        if urlsplit(request.url).netloc.lower() == urlsplit(root).netloc.lower():
            return None  # the site's host outside a mirror's prefix: /robots.txt
        url = on_site(request.url, request.url, root)
        if url is None:
            self.crawler.stats.inc_value("finews/offsite")
            raise OffSite(f"{request.url} is not on the site")
        if url == request.url:
            return None
        # On the site under another name: the same request, already past the dupefilter.
        return request.replace(url=url, dont_filter=True)


class KnownPost(IgnoreRequest):
    """A post not downloaded because the database already has what it would give."""


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


class SkipKnownPosts:
    """Drops post requests whose copy was read before or whose page was rejected before.

    The skip is per copy, (infoCode, category), never per article: every copy of an article
    is downloaded once. That holds for the outlet copy of an article stored from its emnews
    copy too: its text cannot change the merge (the emnews text is preferred), but its stock
    markup can (the mentions are the union over copies, and a copy may chart a security or
    count more mentions than the other), and that is only known once it is read.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.read: set[tuple[str, str | None]] | None = None  # None until the first post
        self.rejected: set[str] = set()
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SkipKnownPosts:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        post = request.meta.get("finews_post")
        if not isinstance(post, PostLink) or getattr(self.crawler.spider, "refresh", False):
            return
        if self.read is None:
            store = self.crawler.finews_store  # type: ignore[attr-defined]
            self.read = set(store.read_copies())
            self.rejected = store.rejected_paths()
        if post.info_code and (post.info_code, post.category) in self.read:
            self._skip("stored")
            raise KnownPost(f"{post.info_code} under {post.category} is stored")
        if self.rejected and urlsplit(post.url).path in self.rejected:
            self._skip("rejected")
            raise KnownPost(f"{post.url} was rejected by an earlier run")

    def item_scraped(self, item: Any) -> None:
        """A copy this run stores: not to be downloaded again under another URL."""
        if self.read is not None and isinstance(item, Article) and item.info_code:
            self.read.add((item.info_code, item.category))

    def _skip(self, why: str) -> None:
        self.crawler.stats.inc_value("finews/skipped")
        self.crawler.stats.inc_value(f"finews/skipped/{why}")
