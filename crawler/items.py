"""The item contract between extraction (``crawler.pages``) and storage (``pipelines``).

Analysts see these fields as columns, so names and meanings are documented here and
nowhere else. Items hold data only: no parsing, no database access.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from itemloaders.processors import Identity, TakeFirst

# The reject reason for a page that could not be fetched: the one reason that says nothing
# about the page itself, so the next run tries it again (``Store.was_rejected``).
DOWNLOAD_FAILED = "download failed"


@dataclass
class Stock:
    """One security (or board) marked up in an article, merged over all its markup forms."""

    market: str  # raw Eastmoney market id: "1", "0", "116", "90", ...
    code: str  # as written: "601818", "03690", "NIO", "BK0493"
    symbol: str  # normalised, see crawler.processors.stock_symbol
    name: str | None  # display name where the markup carries it (巨化股份)
    kind: str  # stock | index | fund | bond | board | future | other (crawler.processors)
    primary: bool  # True when the article's K-line block charts it
    mentions: int  # how many times the article marks it up


# Output processors live on the fields (Scrapy's loaders docs): single values keep the
# first non-empty value the loader was given, lists keep every value in order.
_ONE = {"output_processor": TakeFirst()}
_MANY = {"output_processor": Identity()}


@dataclass
class Article:
    """One Eastmoney news article as republished by the finews mirror."""

    # Eastmoney infoCode: "NW" + 18 digits; other prefixes (AN, AP...) kept as they are.
    info_code: str | None = field(default=None, metadata=_ONE)
    # The article's own title, never the site title.
    title: str | None = field(default=None, metadata=_ONE)
    # Aware, always at UTC+08:00.
    published_at: datetime | None = field(default=None, metadata=_ONE)
    # The site's category slug (emnews, zhengquanribaowang, ...).
    category: str | None = field(default=None, metadata=_ONE)
    # The post's tag minus 新闻, or the X of its 返回X新闻 back-link.
    outlet: str | None = field(default=None, metadata=_ONE)
    # The em_media source line without its wrapper (证券日报网).
    source: str | None = field(default=None, metadata=_ONE)
    # The "> digest" of emnews posts, else None.
    digest: str | None = field(default=None, metadata=_ONE)
    # Visible text blocks in document order, trimmed, inner whitespace collapsed.
    paragraphs: list[str] = field(default_factory=list, metadata=_MANY)
    # Absolute URLs of the article's images; K-line charts excluded.
    images: list[str] = field(default_factory=list, metadata=_MANY)
    # The article's own content as sanitised HTML (no wrapper, K-line, links, back-links).
    body_html: str | None = field(default=None, metadata=_ONE)
    # The NewsShare or eastmoney.com link line; None for the empty "<>".
    source_url: str | None = field(default=None, metadata=_ONE)
    # The page URL or file:// path the item came from.
    url: str | None = field(default=None, metadata=_ONE)
    # Securities and boards the article marks up, in order of first appearance.
    stocks: list[Stock] = field(default_factory=list, metadata=_MANY)

    def missing(self) -> list[str]:
        """Names of required data this item lacks; empty when it can be stored."""
        gaps = []
        if not self.info_code:
            gaps.append("info_code")
        if self.published_at is None:
            gaps.append("published_at")
        if not (self.title or self.paragraphs or self.digest):
            gaps.append("title_or_text")
        return gaps

    def content_hash(self) -> str:
        """Hash of what the article says, not of where or how it was wrapped.

        Category, outlet, page URL and back-links are wrapper: the same text under a
        new wrapper hashes the same, so it does not count as a revision.
        """
        content = {
            "title": self.title,
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "digest": self.digest,
            "paragraphs": self.paragraphs,
            "images": self.images,
            "body_html": self.body_html,
            "source": self.source,
            "source_url": self.source_url,
            "stocks": [dict(vars(s)) for s in self.stocks],
        }
        blob = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_json_dict(self) -> dict[str, Any]:
        """The item as JSON-ready data: datetimes as ISO 8601 with their offset."""
        data = asdict(self)
        if self.published_at is not None:
            data["published_at"] = self.published_at.isoformat()
        return data
