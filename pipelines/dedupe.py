"""Within a run, one item per infoCode: later sightings only add their category.

The first sighting goes on to the store; a later one under another category becomes a
category link of the first (``Article.more_categories`` while it is queued, a link row
after), and is dropped. Across runs the store's rule applies (see ``pipelines.upsert``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import DropItem

from crawler.items import Article
from pipelines.store import Store

if TYPE_CHECKING:
    from scrapy.crawler import Crawler


class DedupePipeline:
    """Keeps the first sighting of each infoCode; remembers only codes and categories."""

    def __init__(self, crawler: Crawler) -> None:
        self.stats = crawler.stats
        self.store = Store.for_crawler(crawler)
        self.seen: dict[str, set[str]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DedupePipeline:
        return cls(crawler)

    def process_item(self, item: Article) -> Article:
        assert item.info_code, "validate runs first"
        sightings = {item.category: item.url} if item.category else {}
        sightings.update(item.more_categories)
        categories = self.seen.get(item.info_code)
        if categories is None:
            self.seen[item.info_code] = set(sightings)
            return item
        self.stats.inc_value("finews/duplicates")
        for slug, url in sightings.items():
            if slug not in categories:
                categories.add(slug)
                self.store.add_link(item.info_code, slug, url)
        # DEBUG: a duplicate is expected (emnews and an outlet list the same article).
        raise DropItem(f"Duplicate of {item.info_code} (under {item.category})", log_level="DEBUG")
