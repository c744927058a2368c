"""The crawl's log formatter: no per-page or per-item DEBUG records unless DEBUG is shown."""

from __future__ import annotations

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from crawler.logformatter import QuietLogFormatter


def formatter(level: str | int | None) -> QuietLogFormatter:
    settings = {} if level is None else {"LOG_LEVEL": level}
    return QuietLogFormatter.from_crawler(get_crawler(settings_dict=settings))


def test_crawled_pages_are_logged_only_at_debug():
    request = Request("https://x/a.html")
    response = HtmlResponse(request.url, body=b"<html></html>", request=request)
    for level in ("INFO", "warning", 20):
        assert formatter(level).crawled(request, response, None) is None
    for level in ("DEBUG", 10):
        logged = formatter(level).crawled(request, response, None)
        assert logged is not None and logged["args"]["status"] == 200


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_scraped_items_are_never_logged(level):
    assert formatter(level).scraped({"a": 1}, None, None) is None
