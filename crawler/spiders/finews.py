"""``scrapy crawl finews``: the site's home page → category pages → posts not yet stored.

Arguments (``-a name=value``):

- ``base_url``: the site to crawl, default the live site; a mirror's URL for tests and the
  demo. Links to the site's own host names are followed on ``base_url``'s host.
- ``categories``: ``slug1,slug2`` to crawl only those category pages; default every
  category, found from the home page's posts and from every fetched post's back-link.
- ``refresh``: ``1`` fetches every post again (to pick up revised texts); by default a
  post whose infoCode is stored, or whose page an earlier run rejected for its content,
  is not requested (counted under ``finews/skipped``). A stored article seen under a new
  category gets that category link without a download.

What a link is and where it points is decided in ``crawler.pages.site``; a post page
becomes an item in ``crawler.pages.page``, read in a worker process (``crawler.pagepool``)
by the downloader middleware ``crawler.middlewares.ReadPostPages`` before the callback.
This module only decides what to fetch. With FINEWS_CRAWL_PROCESSES > 1 it shares the
posts with other crawl processes (``crawler.shards``): there the same spider runs with
``shard=``, takes its posts from this one and sends back the categories it finds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from crawler.items import DOWNLOAD_FAILED, Article
from crawler.middlewares import READ
from crawler.pagepool import PagePool, default_workers
from crawler.pages import content_type_of
from crawler.pages.site import (
    LIVE_SITE,
    PostLink,
    category_url,
    home_url,
    parse_listing,
    read_post_page,
    site_root,
)
from crawler.processors import parse_flag
from crawler.shards import ShardChannel, Shards, crawl_processes, split_settings

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
        shard: ShardChannel | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Set in a shard process of a split crawl (crawler.shards): posts come from the
        # crawl process, categories go back to it. Never a command-line argument.
        self.shard = shard if isinstance(shard, ShardChannel) else None
        self.shards: Shards | None = None
        self.root = site_root(base_url)
        self.only = tuple(s.strip() for s in (categories or "").split(",") if s.strip())
        self.refresh = parse_flag(refresh)
        self.mode = "refresh" if self.refresh else "incremental"
        self.arguments = {
            "base_url": self.root + "/",
            "categories": list(self.only) or "all",
            "refresh": self.refresh,
        }
        self._categories: set[str] = set()
        self._posts: set[str] = set()
        self.pages = PagePool(self.root, 0)  # from_crawler gives it FINEWS_PAGE_WORKERS

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> FinewsSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        if spider.shard is None:
            cls._split(crawler, spider)  # before the page pool: it may change its size
        workers = crawler.settings.get("FINEWS_PAGE_WORKERS")
        spider.pages = PagePool(spider.root, default_workers() if workers is None else int(workers))
        spider.pages.launch()  # the workers boot while the crawl gets ready
        crawler.signals.connect(spider.pages.start, signal=signals.spider_opened)
        crawler.signals.connect(spider.pages.close, signal=signals.spider_closed)
        if spider.shard is not None:
            spider.shard.attach(crawler, spider._post_request)
        return spider

    @classmethod
    def _split(cls, crawler: Crawler, spider: FinewsSpider) -> None:
        """With FINEWS_CRAWL_PROCESSES > 1, start the shard processes (crawler.shards)."""
        count = crawl_processes(crawler.settings)
        if count <= 1:
            return
        split_settings(crawler.settings, count)
        arguments = {
            "base_url": spider.root + "/",
            "categories": ",".join(spider.only),
            "refresh": "1" if spider.refresh else "",
        }
        shards = Shards(
            crawler, count, f"{cls.__module__}.{cls.__qualname__}", arguments,
            found=spider._category_found, refetch=spider._refetch,
        )  # fmt: skip
        if shards.launch():
            spider.shards = shards
            crawler.signals.connect(spider._open_shards, signal=signals.spider_opened)
            crawler.signals.connect(shards.spider_idle, signal=signals.spider_idle)
            crawler.signals.connect(spider.finish_shards, signal=signals.spider_closed)
            crawler.signals.connect(spider.finish_shards, signal=signals.engine_stopped)

    def _open_shards(self) -> None:
        if self.shards is not None:
            store = getattr(self.crawler, "finews_store", None)
            self.shards.open(store.run_id if store is not None else None)

    def finish_shards(self) -> None:
        """End the shard processes and add their stats to this crawl's (idempotent)."""
        if self.shards is not None:
            self.shards.close()

    @property
    def shard_run(self) -> int | None:
        """In a shard process, the run its store writes under (``Store.open_for_spider``)."""
        return self.shard.run_id() if self.shard is not None else None

    @property
    def store(self) -> Any:
        return self.crawler.finews_store  # set up by the pipelines (pipelines.store.Store)

    async def start(self) -> AsyncIterator[Request]:
        if self.shard is not None:
            return  # a shard's posts come from the crawl process
        if not self.only:
            meta = {"finews_page": "home"}
            yield Request(home_url(self.root), self.parse_home, errback=self.failed, meta=meta)
        for slug in self.only:
            for request in self._category(slug):
                yield request

    # -- callbacks ------------------------------------------------------------------------

    def parse_home(self, response: Response) -> Iterator[Request]:
        self._count_page("home")
        listing = parse_listing(response.body, response.url, self.root, response.headers)
        for slug in listing.categories:
            yield from self._category(slug)
        for post in listing.posts:
            if post.category:
                yield from self._category(post.category)
            yield from self._post(post)

    def parse_category(self, response: Response) -> Iterator[Request]:
        self._count_page("category")
        listing = parse_listing(response.body, response.url, self.root, response.headers)
        for post in listing.posts:
            yield from self._post(post)

    def parse_post(self, response: Response) -> list[Article | Request]:
        try:
            return self._read_post(response)
        finally:
            if self.shard is not None:
                self.shard.finished_post()

    def _read_post(self, response: Response) -> list[Article | Request]:
        # Read already, in a worker, by crawler.middlewares.ReadPostPages; else read here.
        self._count_page("post")
        page = response.meta.pop(READ, None)
        if page is None:
            page = read_post_page(
                response.body, response.url, self.root, content_type_of(response.headers)
            )
        elif isinstance(page, BaseException):
            raise page
        if page.article is None:
            self.store.reject(response.url, page.error, excerpt=response.text[:300])
        output: list[Article | Request] = [page.article] if page.article else []
        for slug in page.categories:
            output += self._category(slug)
        if self.shards is not None:
            output += self._take_from_shards()
        return output

    def failed(self, failure: Failure) -> None:
        """A page not fetched, after the retries: gone, refused by robots.txt, or an error.

        Only errors are logged at ERROR, once per page: they count against FINEWS_MAX_ERRORS.
        """
        request = failure.request  # type: ignore[attr-defined]
        page = request.meta.get("finews_page", "page")
        if page == "post" and self.shard is not None:
            self.shard.finished_post()  # reported when this step ends, after the reject
        http = failure.check(HttpError)
        status = failure.value.response.status if http else None
        detail = f"HTTP {status}" if status else f"{failure.type.__name__}: {failure.value}"
        stats = self.crawler.stats
        if status in GONE:
            stats.inc_value(f"finews/missing/{page}")
            logger.info("No %s page at %s (%s)", page, request.url, detail)
        elif not http and failure.check(IgnoreRequest):  # robots.txt says no: policy, not error
            stats.inc_value(f"finews/ignored/{page}")
            logger.warning("Not fetching the %s page %s: %s", page, request.url, detail)
            return
        else:
            stats.inc_value(f"finews/failed/{page}")
            logger.error("Could not fetch the %s page %s: %s", page, request.url, detail)
        if page == "post":
            link = request.meta.get("finews_post")
            code = link.info_code if isinstance(link, PostLink) else None
            self.store.reject(request.url, DOWNLOAD_FAILED, detail=detail, info_code=code)

    # -- what to fetch ----------------------------------------------------------------------

    def _category(self, slug: str) -> Iterator[Request]:
        if slug in self._categories or (self.only and slug not in self.only):
            return
        self._categories.add(slug)
        if self.shard is not None:
            self.shard.category(slug)  # the crawl process fetches category pages
            return
        yield Request(
            category_url(self.root, slug),
            self.parse_category,
            errback=self.failed,
            priority=CATEGORY_PRIORITY,
            meta={"finews_page": "category"},
        )

    def _post(self, post: PostLink) -> Iterator[Request]:
        if post.url in self._posts or (self.only and post.category not in self.only):
            return
        self._posts.add(post.url)
        if not self.refresh and self._known(post):
            return
        if self.shards is not None and self.shards.give(post):
            return  # another crawl process fetches it
        yield self._post_request(post)

    def _post_request(self, post: PostLink) -> Request:
        # dont_filter: each post URL is requested once already (``_posts``), so Scrapy's
        # duplicate filter would only hash every URL again (~20 µs a request).
        meta = {"finews_page": "post", "finews_post": post}
        return Request(post.url, self.parse_post, errback=self.failed, meta=meta,
                       dont_filter=True)  # fmt: skip

    def _take_from_shards(self) -> list[Request]:
        """Posts waiting for a shard process, once this process has no request queued."""
        assert self.shards is not None
        scheduler = self.crawler.engine.scheduler
        if scheduler is None or scheduler.has_pending_requests() or not self.shards.waiting():
            return []
        batch = self.crawler.settings.getint("CONCURRENT_REQUESTS", 16)
        return [self._post_request(link) for link in self.shards.take(batch)]

    def _category_found(self, slug: str) -> None:
        """A category a shard process's post links back to."""
        for request in self._category(slug):
            self._crawl(request)

    def _refetch(self, post: PostLink) -> None:
        """A post a shard process was given and did not finish: fetch it here."""
        self._crawl(self._post_request(post))

    def _crawl(self, request: Request) -> None:
        engine = self.crawler.engine
        if engine is not None and engine.spider is not None:  # not once the crawl closes
            engine.crawl(request)

    def _known(self, post: PostLink) -> bool:
        """Skip a stored article (adding a new category link) or a page rejected before."""
        stats = self.crawler.stats
        if post.info_code and self.store.is_stored(post.info_code):
            stats.inc_value("finews/skipped")
            stats.inc_value("finews/skipped/stored")
            if post.category and not self.store.is_linked(post.info_code, post.category):
                self.store.add_link(post.info_code, post.category, post.url)
                stats.inc_value("finews/linked_without_download")
            return True
        if self.store.was_rejected(post.url):
            stats.inc_value("finews/skipped")
            stats.inc_value("finews/skipped/rejected")
            return True
        return False

    def _count_page(self, page: str) -> None:
        self.crawler.stats.inc_value("finews/pages")
        self.crawler.stats.inc_value(f"finews/pages/{page}")
