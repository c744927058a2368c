"""Page parsers: one response or one post file in, one ``Article`` out.

Parsers are pure functions of bytes, a URL and headers. Every failure to read an
input raises ``ExtractionError`` with a human-readable reason.
"""

from __future__ import annotations

from collections.abc import Mapping

from w3lib.encoding import html_to_unicode


def content_type_of(headers: Mapping | None) -> str | None:
    """The Content-Type of response headers: Scrapy's ``Headers`` or a plain mapping."""
    if not headers:
        return None
    raw = headers.get(b"Content-Type") or headers.get("Content-Type")
    if isinstance(raw, list | tuple):
        raw = raw[0] if raw else None
    return raw.decode("latin-1") if isinstance(raw, bytes) else raw


def decode_html(body: bytes | str, content_type: str | None = None) -> str:
    """An HTML body as text, decoded as Scrapy's ``response.text`` decodes it (w3lib:
    header charset, BOM, ``<meta charset>``; gb2312/gbk read as gb18030). Text is returned
    as it is: in a crawl the parsers are given ``response.text``."""
    if isinstance(body, str):
        return body
    return html_to_unicode(content_type, body)[1]


class ExtractionError(ValueError):
    """The input cannot be read as an article; ``reason`` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
