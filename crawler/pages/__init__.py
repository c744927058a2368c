"""Page parsers: one response or one post file in, one ``Article`` out.

Parsers are pure functions of bytes, a URL and headers. Every failure to read an
input raises ``ExtractionError`` with a human-readable reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from w3lib.encoding import html_to_unicode, http_content_type_encoding, read_bom, to_unicode


def content_type_of(headers: Mapping | None) -> str | None:
    """The Content-Type of response headers: Scrapy's ``Headers`` or a plain mapping."""
    if not headers:
        return None
    raw = headers.get(b"Content-Type") or headers.get("Content-Type")
    if isinstance(raw, list | tuple):
        raw = raw[0] if raw else None
    return raw.decode("latin-1") if isinstance(raw, bytes) else raw


def decode_html(body: bytes | str, content_type: str | None = None) -> str:
    """An HTML body as text, decoded exactly as Scrapy's ``response.text`` decodes it
    (header charset, BOM, ``<meta charset>``; w3lib maps gb2312/gbk to gb18030).

    A body without a BOM under a header that names its charset, every page of the site,
    takes ``html_to_unicode``'s own path for that case with the header's charset worked
    out once per header value instead of once per page."""
    if isinstance(body, str):
        return body
    encoding = _header_charset(content_type) if content_type else None
    if encoding is not None and read_bom(body) == (None, None):
        return to_unicode(body, encoding)
    return html_to_unicode(content_type, body)[1]


@lru_cache(maxsize=64)
def _header_charset(content_type: str) -> str | None:
    """The charset ``html_to_unicode`` decodes with for this Content-Type (no BOM)."""
    encoding = http_content_type_encoding(content_type)
    return f"{encoding}-be" if encoding in ("utf-16", "utf-32") else encoding


class ExtractionError(ValueError):
    """The input cannot be read as an article; ``reason`` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
