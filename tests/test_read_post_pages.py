"""Post pages are read by the downloader middleware ``ReadPostPages``, before the callback.

The callback then uses what the middleware left in ``request.meta``: the same item as
reading the page itself, a parser bug raised in the callback as before, and a page read
in the callback when no middleware read it.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from crawler.extensions.gctuning import GcTuning
from crawler.items import Article
from crawler.middlewares import READ, ReadPostPages
from crawler.pagepool import PagePool
from crawler.pages.site import PostPage, read_post_page
from crawler.spiders.finews import FinewsSpider
from fixtures.mirror import render_post
from fixtures.synth import generate

ROOT = "http://127.0.0.1:8123"


class CountingPool(PagePool):
    """A pool that reads in this process and counts what it was asked to read."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(ROOT, 0)
        self.urls: list[str] = []
        self.fail = fail

    async def read(self, body: bytes, url: str, content_type: str | None) -> PostPage:
        self.urls.append(url)
        if self.fail:
            raise RuntimeError("parser bug")
        return await super().read(body, url, content_type)


@pytest.fixture(scope="module")
def post_page() -> tuple[bytes, str]:
    post = generate(1, seed=3)[0]
    page = render_post(post.data.decode("utf-8-sig"), post.filename)
    assert page is not None
    return page.html.encode("utf-8"), ROOT + page.path


def spider_with(pool: PagePool | None) -> tuple[FinewsSpider, ReadPostPages]:
    crawler = get_crawler(FinewsSpider, {"FINEWS_PAGE_WORKERS": 0})
    spider = FinewsSpider.from_crawler(crawler, base_url=ROOT + "/")
    crawler.spider = spider
    if pool is not None:
        spider.pages = pool
    return spider, ReadPostPages.from_crawler(crawler)


def response_for(body: bytes, url: str, page: str = "post", status: int = 200) -> HtmlResponse:
    request = Request(url, meta={"finews_page": page})
    return HtmlResponse(url, status=status, body=body, encoding="utf-8", request=request)


def through(middleware: ReadPostPages, response: HtmlResponse) -> HtmlResponse:
    return asyncio.run(middleware.process_response(response.request, response))


def test_the_callback_gives_the_item_the_middleware_read(post_page):
    body, url = post_page
    pool = CountingPool()
    spider, middleware = spider_with(pool)
    response = through(middleware, response_for(body, url))
    assert pool.urls == [url]
    assert isinstance(response.meta[READ], PostPage)
    output = spider.parse_post(response)
    articles = [o for o in output if isinstance(o, Article)]
    expected = read_post_page(body, url, ROOT, "text/html; charset=utf-8").article
    assert articles == [expected]
    assert READ not in response.meta  # taken, not kept with the request
    assert pool.urls == [url]  # read once, by the middleware


def test_a_page_no_middleware_read_is_read_in_the_callback(post_page):
    body, url = post_page
    spider, _ = spider_with(CountingPool())
    output = spider.parse_post(response_for(body, url))
    assert [o for o in output if isinstance(o, Article)] == [
        read_post_page(body, url, ROOT, "text/html; charset=utf-8").article
    ]


def test_a_parser_bug_is_raised_in_the_callback(post_page):
    body, url = post_page
    spider, middleware = spider_with(CountingPool(fail=True))
    response = through(middleware, response_for(body, url))
    with pytest.raises(RuntimeError, match="parser bug"):
        spider.parse_post(response)


@pytest.mark.parametrize(("page", "status"), [("category", 200), ("home", 200), ("post", 404)])
def test_other_pages_and_error_answers_are_left_alone(post_page, page, status):
    body, url = post_page
    pool = CountingPool()
    _, middleware = spider_with(pool)
    response = through(middleware, response_for(body, url, page, status))
    assert READ not in response.meta
    assert pool.urls == []


def test_spiders_without_a_page_pool_are_left_alone(post_page):
    body, url = post_page
    crawler = get_crawler(settings_dict={})
    crawler.spider = object()
    middleware = ReadPostPages.from_crawler(crawler)
    response = through(middleware, response_for(body, url))
    assert READ not in response.meta


def test_the_collector_is_tuned_while_the_spider_runs_and_restored_after():
    before = gc.get_threshold()
    crawler = get_crawler(settings_dict={"FINEWS_GC_THRESHOLD": 12_345})
    tuning = GcTuning.from_crawler(crawler)
    tuning.spider_opened()
    try:
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        tuning.spider_closed()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_collector_tuning_can_be_turned_off():
    from scrapy.exceptions import NotConfigured

    with pytest.raises(NotConfigured):
        GcTuning.from_crawler(get_crawler(settings_dict={"FINEWS_GC_THRESHOLD": 0}))
