"""Parse one rendered post page of the site into an ``Article``.

The site's traps (docs/site.md): the header's ``<h1>`` is the site title, and ``og:description``
pastes the whole article HTML unescaped into ``<head>``, so the article text also spills
into an implicit early ``<body>``. Only the ``<section>`` of ``div.wrapper`` is content.

Fields are read from structured data first, then from visible text:
- time: ``article:published_time`` → JSON-LD ``datePublished`` → the ``<small>`` time line;
- title: the section's ``<h1>`` → ``og:title`` → JSON-LD ``headline`` → ``<title>``,
  never the site title 金融消息;
- category: the post URL's first path segment → the canonical URL's → the back-link's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from lxml import etree

from crawler.items import Article
from crawler.loaders import ArticleLoader
from crawler.pages import ExtractionError, content_type_of, decode_html
from crawler.pages.body import content_nodes, extract_body, has_class, parse_html, text_of
from crawler.processors import SITE_TITLE, clean_text

# What ``_landmarks`` finds, as XPaths (section: the last match; the others: the first).
LANDMARK_XPATHS = (
    "//div[contains(concat(' ', normalize-space(@class), ' '), ' wrapper ')]/section",
    "//link[@rel='canonical']/@href",
    "//meta[@property='article:published_time']/@content",
)
_OG_TITLE = "//meta[@property='og:title']/@content"
_JSON_LD = "//script[@type='application/ld+json']/text()"
_TITLE = "//title/text()"
_TAGS_LINE = re.compile(r"^\s*tags\s*:", re.I)
_POST_PATH = re.compile(r"/(?P<slug>[^/]+)/\d{4}/\d{2}/\d{2}/(?P<name>[^/]+?)\.html?$")


def parse_page(body: bytes | str, url: str, headers: Mapping | None = None) -> Article:
    """Parse a rendered post page. ``body`` as served; ``headers`` give its charset."""
    text = decode_html(body, content_type_of(headers))
    try:
        root = parse_html(text)
    except (etree.ParserError, ValueError) as exc:
        raise ExtractionError(f"not an HTML page: {exc}") from None
    section, canonical, published = _landmarks(root)
    if section is None:
        raise ExtractionError("not a post page: no <section> inside div.wrapper")
    time_line, heading, nodes, tag = _split_section(section)

    loader = ArticleLoader()
    loader.add_value("url", url)
    loader.add_value("title", heading)
    # Later sources are read only while the earlier ones gave nothing usable.
    for title_from in (_og_title, _seo_headline, _page_title):
        if loader.has("title"):
            break
        loader.add_value("title", _not_site_title(title_from(root)))
    loader.add_value("published_at", published)
    if not loader.has("published_at"):
        loader.add_value("published_at", _json_ld(root).get("datePublished"))
    loader.add_fallback("published_at", time_line)
    # A served page knows its own URL; a saved file trusts its canonical link first.
    candidates = (url, canonical) if url.startswith("http") else (canonical, url)
    post_path = _post_path(candidates[0]) or _post_path(candidates[1])
    if post_path:
        loader.add_value("category", unquote(post_path["slug"]))
    loader.add_value("outlet", tag)
    content = extract_body(nodes, url if url.startswith("http") else (canonical or url))
    loader.add_body(content)
    name = post_path["name"] if post_path else None
    loader.add_info_code(content.source_url, name)
    return loader.load_item()


def _landmarks(root) -> tuple[Any, str | None, str | None]:
    """(the last ``<section>`` child of a ``div.wrapper``, the first canonical link's
    ``href``, the first ``article:published_time`` meta's ``content``), in one walk over
    the tree instead of one XPath walk each (``LANDMARK_XPATHS`` say the same)."""
    section = canonical = published = None
    for el in root.iter("section", "meta", "link"):
        tag = el.tag
        if tag == "section":
            parent = el.getparent()
            if parent is not None and parent.tag == "div" and has_class(parent, "wrapper"):
                section = el
        elif tag == "meta":
            if published is None and el.get("property") == "article:published_time":
                published = el.get("content")
        elif canonical is None and el.get("rel") == "canonical":
            canonical = el.get("href")
    return section, canonical, published


def _split_section(section) -> tuple[str | None, str | None, list, str | None]:
    """(time line, title, content nodes, tag) of the post's ``<section>``."""
    children = list(section)
    time_line = heading = tag = None
    start, end = 0, len(children)
    for i, child in enumerate(children):
        if child.tag == "h1":
            heading = text_of(child)
            start = i + 1
            break
        if child.tag == "small" and time_line is None:
            time_line = text_of(child)
    for i in range(len(children) - 1, start - 1, -1):
        child = children[i]
        if child.tag == "small" and _TAGS_LINE.match(text_of(child)):
            em = child.find("em")
            tag = clean_text(text_of(em) if em is not None else "") or None
            end = i
            break
    leading = children[start - 1].tail if start else None
    return time_line, heading, content_nodes(leading, children[start:end]), tag


def _json_ld(root) -> dict:
    for raw in root.xpath(_JSON_LD):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def _og_title(root) -> str | None:
    return _first(root.xpath(_OG_TITLE))


def _seo_headline(root) -> str | None:
    return _json_ld(root).get("headline")


def _page_title(root) -> str | None:
    title = _first(root.xpath(_TITLE))
    if title and title.endswith(" | " + SITE_TITLE):
        title = title[: -len(SITE_TITLE) - 3]
    return title


def _not_site_title(title: str | None) -> str | None:
    return None if clean_text(title) == SITE_TITLE else title


def _first(values: list) -> str | None:
    return str(values[0]) if values else None


def _post_path(url: str | None) -> re.Match | None:
    if not url:
        return None
    return _POST_PATH.search(urlsplit(url).path)
