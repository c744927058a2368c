"""``scrapy crawl finews``: the site's home page → category pages → posts not yet stored.

Arguments (``-a name=value``):

- ``base_url``: the site to crawl, default the live site; a mirror's URL for tests and the
  demo. Links to the site's own host names are followed on ``base_url``'s host.
- ``categories``: ``slug1,slug2`` to crawl only those category pages; default every
  category, found from the home page's posts and from every fetched post's back-link.
- ``refresh``: ``1`` fetches every post again (to pick up revised texts); by default a
  post whose copy of the article (its infoCode under its category) is stored, or whose
  page an earlier run rejected for its content, is not requested (the downloader
  middleware ``crawler.middlewares.SkipKnownPosts``, counted under ``finews/skipped``).
  A copy under another category is fetched once, and the store merges it in.

What a link is and where it points is decided in ``crawler.pages.site``; a post page
becomes an item in ``crawler.pages.page``, read here in the callback from Scrapy's
decoded ``response.text``. This module only decides what links exist and what to fetch.
Scrapy's duplicate filter sees that each page is fetched once (shared between workers when
the crawl is scaled out, ``crawler.scaleout``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

from scrapy import Request, Spider
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from crawler.items import DOWNLOAD_FAILED, Article
from crawler.middlewares import KnownPost, OffSite
from crawler.pages.site import (
    LIVE_SITE,
    Listing,
    PostLink,
    category_url,
    home_url,
    parse_listing,
    read_post_page,
    site_root,
)
from crawler.processors import parse_flag

logger = logging.getLogger(__name__)

# Category pages first: they say which posts exist, before posts are fetched.
CATEGORY_PRIORITY = 10
# Statuses that mean "not (or no longer) on the site": posts leave it after three days.
GONE = (404, 410)


class FinewsSpider(Spider):
    name = "finews"
    custom_settings = {
        # No record per stored item, and a dropped item's line without the whole item:
        # its rejects row holds an excerpt.
        "LOG_FORMATTER": "crawler.logformatter.QuietLogFormatter",
    }

    def __init__(
        self,
        base_url: str = LIVE_SITE,
        categories: str | None = None,
        refresh: str | bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = site_root(base_url)
        self.only = tuple(s.strip() for s in (categories or "").split(",") if s.strip())
        self.refresh = parse_flag(refresh)
        self.mode = "refresh" if self.refresh else "incremental"
        self.arguments = {
            "base_url": self.root + "/",
            "categories": list(self.only) or "all",
            "refresh": self.refresh,
        }
        self._categories: set[str] = set()  # asked for already: no request to filter again

    @property
    def store(self) -> Any:
        return self.crawler.finews_store  # set up by the pipelines (pipelines.store.Store)

    async def start(self) -> AsyncIterator[Request]:
        if not self.only:
            meta = {"finews_page": "home"}
            yield Request(home_url(self.root), self.parse_home, errback=self.failed, meta=meta)
        for slug in self.only:
            for request in self._category(slug):
                yield request

    # -- callbacks ------------------------------------------------------------------------

    def parse_home(self, response: Response) -> Iterator[Request]:
        listing = yield from self._listing(response, "home")
        for slug in listing.categories:
            yield from self._category(slug)
        for post in listing.posts:
            if post.category:
                yield from self._category(post.category)
            yield from self._post(post)

    def parse_category(self, response: Response) -> Iterator[Request]:
        listing = yield from self._listing(response, "category")
        for post in listing.posts:
            yield from self._post(post)

    def parse_post(self, response: Response) -> list[Article | Request]:
        self._count_page("post")
        # The line between a failed download and a reject is drawn here. A response that is
        # not a post page at all (not text, empty, no article structure: an error page
        # served as 200) tells how the server answered, not what the post holds: it is
        # retried like a 5xx and, if it stays so, a failed download the next run fetches
        # again. What a post page says (no infoCode, no time) is judged by the validate
        # pipeline: a reject, which later runs do not fetch again.
        page = None
        if isinstance(response, TextResponse):
            page = read_post_page(response.text, response.url, self.root)
        if page is None or page.article is None:
            reason = page.error if page is not None else "not an HTML page"
            retry = get_retry_request(response.request, spider=self, reason="not_a_post_page")
            if retry is not None:
                return [retry]
            self._download_failed(response.request, "post", f"HTTP 200 but {reason}")
            return []
        output: list[Article | Request] = [page.article]
        for slug in page.categories:
            output += self._category(slug)
        return output

    def _listing(self, response: Response, page: str) -> Generator[Request, None, Listing]:
        """The links of a home or category page; a retry request when it is not one.

        As for post pages, a response that is not one of the site's listing pages (not
        text, empty, an error page served as 200) is retried like a 5xx and, if it stays
        so, a failed download. A page of the site that lists nothing is an empty listing.
        """
        self._count_page(page)
        error = "not an HTML page"
        if isinstance(response, TextResponse):
            listing = parse_listing(response.text, response.url, self.root)
            if listing.error is None:
                return listing
            error = listing.error
        retry = get_retry_request(response.request, spider=self, reason=f"not_a_{page}_page")
        if retry is not None:
            yield retry
        else:
            self._download_failed(response.request, page, f"HTTP 200 but {error}")
        return Listing()

    def failed(self, failure: Failure) -> None:
        """A page not fetched, after the retries: gone, refused by robots.txt, or an error.

        Only errors are logged at ERROR, once per page: they count against FINEWS_MAX_ERRORS.
        """
        if failure.check(KnownPost):
            return  # the incremental skip: counted by the middleware
        request = failure.request  # type: ignore[attr-defined]
        page = request.meta.get("finews_page", "page")
        http = failure.check(HttpError)
        status = failure.value.response.status if http else None
        detail = f"HTTP {status}" if status else f"{failure.type.__name__}: {failure.value}"
        stats = self.crawler.stats
        offsite = failure.check(OffSite)  # sent off the site: the page failed, tried again
        if offsite and request.meta.get("redirect_urls"):
            detail = f"redirected off the site to {request.url}"
            request = request.replace(url=request.meta["redirect_urls"][0])
        if status in GONE:
            stats.inc_value(f"finews/missing/{page}")
            logger.info("No %s page at %s (%s)", page, request.url, detail)
            if page == "post":
                self._reject_download(request, detail)
        elif not (http or offsite) and failure.check(IgnoreRequest):  # robots.txt: policy
            stats.inc_value(f"finews/ignored/{page}")
            logger.warning("Not fetching the %s page %s: %s", page, request.url, detail)
        else:
            self._download_failed(request, page, detail)

    def _download_failed(self, request: Request, page: str, detail: str) -> None:
        self.crawler.stats.inc_value(f"finews/failed/{page}")
        logger.error("Could not fetch the %s page %s: %s", page, request.url, detail)
        if page == "post":
            self._reject_download(request, detail)

    def _reject_download(self, request: Request, detail: str) -> None:
        """A failed download's reject: it says nothing of the post, the next run tries again."""
        link = request.meta.get("finews_post")
        code = link.info_code if isinstance(link, PostLink) else None
        self.store.reject(request.url, DOWNLOAD_FAILED, detail=detail, info_code=code)

    # -- what to fetch ----------------------------------------------------------------------

    def _category(self, slug: str) -> Iterator[Request]:
        if slug in self._categories or (self.only and slug not in self.only):
            return
        self._categories.add(slug)
        yield Request(
            category_url(self.root, slug),
            self.parse_category,
            errback=self.failed,
            priority=CATEGORY_PRIORITY,
            meta={"finews_page": "category"},
        )

    def _post(self, post: PostLink) -> Iterator[Request]:
        if self.only and post.category not in self.only:
            return
        meta = {"finews_page": "post", "finews_post": post}
        yield Request(post.url, self.parse_post, errback=self.failed, meta=meta)

    def _count_page(self, page: str) -> None:
        self.crawler.stats.inc_value("finews/pages")
        self.crawler.stats.inc_value(f"finews/pages/{page}")
