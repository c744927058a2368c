"""Log formats for runs of many pages and items: short lines, none per stored item.

Scrapy makes a "Scraped from" DEBUG record for every item, and a "Crawled (200)" one for
every page, even when DEBUG is not shown (its root logger passes everything to the
handler, which filters): at thousands of items a second that costs more than validating
them. "Crawled" lines are still made at LOG_LEVEL=DEBUG. A dropped item is logged without the
whole item printed after it: its ``rejects`` row already holds an excerpt.
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy.logformatter import LogFormatter, LogFormatterResult


class QuietLogFormatter(LogFormatter):
    def __init__(self, debug: bool = True) -> None:
        self.debug = debug

    @classmethod
    def from_crawler(cls, crawler: Any) -> QuietLogFormatter:
        level = crawler.settings.get("LOG_LEVEL") or "DEBUG"
        if isinstance(level, str):
            level = logging.getLevelName(level.upper())
        return cls(debug=not isinstance(level, int) or level <= logging.DEBUG)

    def crawled(self, request: Any, response: Any, spider: Any) -> LogFormatterResult | None:  # type: ignore[override]
        # "Crawled (200) <GET …>" is a DEBUG record per page, made even when DEBUG is not
        # shown: only when it is.
        return super().crawled(request, response, spider) if self.debug else None

    def scraped(self, item: Any, response: Any, spider: Any) -> None:  # type: ignore[override]
        return None

    def dropped(
        self, item: Any, exception: BaseException, response: Any, spider: Any
    ) -> LogFormatterResult:
        result = super().dropped(item, exception, response, spider)
        return {**result, "msg": "Dropped: %(exception)s", "args": {"exception": exception}}
