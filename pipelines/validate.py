"""Validate items before anything is stored: required data present, values storable.

An invalid item is dropped (Scrapy's DropItem, so Scrapy counts it too), counted under
``drop_item/article/<reason>`` and recorded in ``rejects`` with a readable reason.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import DropItem

from crawler.items import Article
from pipelines.store import Store

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

# Eastmoney codes are "NW" + 18 digits, but other prefixes exist: only reject what no
# code can look like, never guess a shape.
_INFO_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Text fields PostgreSQL refuses to store NUL in (SQLite would take it: stay identical).
_TEXT_FIELDS = ("info_code", "title", "category", "outlet", "source", "digest", "body_html")
_READABLE = {"title_or_text": "title or text"}


def problems(item: Any) -> list[tuple[str, str]]:
    """What is wrong with an item, as (stats key, readable reason) pairs; empty if valid."""
    if not isinstance(item, Article):
        name = type(item).__name__
        return [("not_an_article", f"not an Article item but {name}")]
    found = [(f"missing_{gap}", f"missing {_READABLE.get(gap, gap)}") for gap in item.missing()]
    moment = item.published_at
    if moment is not None and (not isinstance(moment, datetime) or moment.utcoffset() is None):
        found.append(("naive_published_at", f"published_at {moment!r} has no UTC offset"))
    if item.info_code and not _INFO_CODE.fullmatch(item.info_code):
        found.append(("malformed_info_code", f"malformed info_code {item.info_code[:80]!r}"))
    texts = [(name, getattr(item, name)) for name in _TEXT_FIELDS]
    texts += [("paragraphs", p) for p in item.paragraphs]
    nul = sorted({name for name, text in texts if text and "\x00" in text})
    if nul:
        found.append(("nul_character", f"NUL character in {', '.join(nul)}"))
    return found


class ValidatePipeline:
    """Drops and records items that cannot be stored; counts every item seen."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.store = Store.for_crawler(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidatePipeline:
        return cls(crawler)

    def open_spider(self) -> None:
        self.store.open_for_spider(self.crawler.spider)

    def process_item(self, item: Any) -> Any:
        self.stats.inc_value("finews/seen")
        found = problems(item)
        if not found:
            return item
        for key, _ in found:
            self.stats.inc_value(f"drop_item/article/{key}")
        reason = "; ".join(text for _, text in found)
        if isinstance(item, Article):
            self.store.reject_item(item, reason)
        else:
            self.store.reject(None, reason, excerpt=repr(item))
        # INFO: the reject above already logged a concise warning; this line adds the item.
        raise DropItem(f"Invalid article: {reason}", log_level="INFO")
