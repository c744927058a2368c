"""``MarkStartRequests``: start requests marked as Scrapy's own middleware marks them."""

from __future__ import annotations

import asyncio

from scrapy import Request

from crawler.middlewares import MarkStartRequests
from crawler.settings import SPIDER_MIDDLEWARES


def test_start_requests_are_marked_and_items_pass():
    async def start():
        yield Request("https://x/a")
        yield {"an": "item"}
        yield Request("https://x/b", meta={"is_start_request": False})

    async def collect():
        return [o async for o in MarkStartRequests().process_start(start())]

    first, item, last = asyncio.run(collect())
    assert first.meta["is_start_request"] is True
    assert item == {"an": "item"}
    assert last.meta["is_start_request"] is False  # set by the spider: kept


def test_it_replaces_scrapys_and_touches_no_callback_output():
    assert SPIDER_MIDDLEWARES["scrapy.spidermiddlewares.start.StartSpiderMiddleware"] is None
    assert SPIDER_MIDDLEWARES["crawler.middlewares.MarkStartRequests"] == 25
    assert not hasattr(MarkStartRequests, "process_spider_output")
