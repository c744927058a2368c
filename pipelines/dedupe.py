"""Within a run, one item per copy of an article: per (infoCode, category).

A copy of the same article under another category goes on: the store merges the copies
(``pipelines.upsert``). The same copy a second time in one run (one post reached by two
URLs) is a duplicate, counted and dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import DropItem

from crawler.items import Article

if TYPE_CHECKING:
    from scrapy.crawler import Crawler


class DedupePipeline:
    """Keeps the first item of each (infoCode, category); remembers only those keys."""

    def __init__(self, crawler: Crawler) -> None:
        self.stats = crawler.stats
        self.seen: set[tuple[str, str | None]] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DedupePipeline:
        return cls(crawler)

    def process_item(self, item: Article) -> Article:
        assert item.info_code, "validate runs first"
        key = (item.info_code, item.category)
        if key not in self.seen:
            self.seen.add(key)
            return item
        self.stats.inc_value("finews/duplicates")
        # DEBUG: expected when a post is linked under two URLs.
        raise DropItem(f"Duplicate of {item.info_code} (under {item.category})", log_level="DEBUG")
