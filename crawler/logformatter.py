"""Log formats for runs of many items (the backfill): short lines, none per stored item.

Scrapy makes a "Scraped from" DEBUG record for every item even when DEBUG is not shown
(its root logger passes everything to the handler, which filters): at thousands of items
a second that costs more than validating them. A dropped item is logged without the
whole item printed after it: its ``rejects`` row already holds an excerpt.
"""

from __future__ import annotations

from typing import Any

from scrapy.logformatter import LogFormatter, LogFormatterResult


class QuietLogFormatter(LogFormatter):
    def scraped(self, item: Any, response: Any, spider: Any) -> None:  # type: ignore[override]
        return None

    def dropped(
        self, item: Any, exception: BaseException, response: Any, spider: Any
    ) -> LogFormatterResult:
        result = super().dropped(item, exception, response, spider)
        return {**result, "msg": "Dropped: %(exception)s", "args": {"exception": exception}}
