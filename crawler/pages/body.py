"""The one body extractor shared by rendered pages and post files.

Input: the top-level nodes of an article's content, as kramdown renders it (the
children of the page's ``<section>`` between the title and the tags line, or the HTML
rendered from a post file's body). Output: ``Body`` with paragraphs, digest, source,
links, images, stocks and sanitised HTML. Selectors of the site wrapper never live here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import nh3
from lxml import etree

from crawler.items import Stock
from crawler.processors import (
    clean_text,
    outlet_from_backlink,
    parse_source_line,
    parse_stock_markup,
    stock_kind,
    stock_symbol,
)

# URL fields (images, source_url) keep web addresses only: a javascript: or data: URL is
# markup a hostile page planted, not a link an analyst can follow.
_WEB_SCHEMES = frozenset({"http", "https"})
_KLINE_START = "EM_StockImg_Start"
_KLINE_END = "EM_StockImg_End"
_SOURCE_CLASS = "em_media"
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none", re.I)
_BACKLINK_SEPARATORS = re.compile(r"[｜|\s]+")
_CATEGORY_HREF = re.compile(
    r"/category/([^/?#]+?)\.html"  # //finews.withounder.com/category/<slug>.html
    r"|^(?:https?:)?//[^/]+/([^/?#]+)/?$"  # //finews.withounder.com/emnews/
    r"|^\.{0,2}/([^/?#]+)/?$"  # ../emnews/ and ./emnews/
)

# Elements that start and end a text block; everything else is inline.
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "tfoot", "thead", "ul",
})  # fmt: skip
_SKIP = frozenset(["script", "style", "noscript", "template"])

_HTML_TAGS = {
    "a", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup", "dd", "del",
    "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
_HTML_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}


@dataclass
class Body:
    """What the article content holds, before the wrapper adds title, time and category."""

    digest: str | None = None
    paragraphs: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    body_html: str | None = None
    source: str | None = None
    source_url: str | None = None
    stocks: list[Stock] = field(default_factory=list)
    backlink_outlet: str | None = None  # X of 返回X新闻
    backlink_category: str | None = None  # slug of the back-link's category URL


def extract_body(nodes: list, base_url: str) -> Body:
    """Read the content's top-level nodes (elements and comments) into a ``Body``."""
    return _BodyReader(base_url).read(nodes)


# lxml's plain HTML parser, without its id index (nothing here looks elements up by id)
# and without lxml.html's element classes, which cost a Python call for every element
# touched (~7% of reading a page); ``text_of`` is their ``text_content()``.
HTML_PARSER = etree.HTMLParser(collect_ids=False)
_STRING_VALUE = etree.XPath("string()")


def parse_html(text: str):
    """The document root, as ``lxml.html.document_fromstring`` gives it (ParserError for
    an empty document)."""
    root = etree.fromstring(text, HTML_PARSER)
    if root is None:
        raise etree.ParserError("Document is empty")
    return root


def text_of(el) -> str:
    """An element's text, its descendants' included: lxml.html's ``text_content()``."""
    return _STRING_VALUE(el)


def parse_fragment(html: str) -> list:
    """The top-level nodes of an HTML fragment, comments included."""
    root = parse_html(f"<html><body><div>{html}</div></body></html>")
    container = root.find("body/div")
    assert container is not None
    return content_nodes(container.text, container)


def content_nodes(leading: str | None, children) -> list:
    """``children`` with the non-blank text before them (``leading``) and after each."""
    nodes: list = []
    if leading and leading.strip():
        nodes.append(leading)
    for child in children:
        nodes.append(child)
        if child.tail and child.tail.strip():
            nodes.append(child.tail)
    return nodes


def has_class(el, name: str) -> bool:
    classes = el.get("class")
    return classes is not None and name in classes.split()


def _is_hidden(el) -> bool:
    style = el.get("style")
    return style is not None and "none" in style and bool(_HIDDEN_STYLE.search(style))


class _BodyReader:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.body = Body()
        self.run: list[str] = []
        self.html_parts: list[str] = []
        self.stocks: dict[tuple[str, str], Stock] = {}
        self.in_kline = False

    # -- top level ------------------------------------------------------------
    def read(self, nodes: list) -> Body:
        for node in nodes:
            if isinstance(node, str):  # bare text between blocks
                self.run.append(node)
                self.html_parts.append(f"<p>{_escape(node.strip())}</p>")
                self._flush()
                continue
            if self._top_level_special(node):
                continue
            self._walk(node)
            self._flush()
            self.html_parts.append(_serialise(node))
        body = self.body
        body.stocks = list(self.stocks.values())
        html = "".join(self.html_parts).strip()
        body.body_html = _sanitise(html) if html else None
        return body

    def _top_level_special(self, node) -> bool:
        """Handle nodes that are wrapper or metadata, not article text. True if consumed."""
        if not isinstance(node.tag, str):  # comment or processing instruction
            self._comment(node)
            return True
        if self.in_kline:
            self._kline_node(node)
            return True
        if _is_hidden(node):
            return True
        tag = node.tag
        if tag == "blockquote" and not self.body.paragraphs and self.body.digest is None:
            self.body.digest = clean_text(text_of(node)) or None
            return True
        if tag == "p":
            if has_class(node, _SOURCE_CLASS):
                self.body.source = parse_source_line(text_of(node))
                return True
            if self._link_line(node) or self._backlinks(node):
                return True
        return False

    def _comment(self, node) -> None:
        text = (node.text or "") if node.tag is etree.Comment else ""
        if _KLINE_START in text:
            self.in_kline = True
        elif _KLINE_END in text:
            self.in_kline = False

    def _kline_node(self, node) -> None:
        """K-line blocks chart the article's main securities: primary mentions."""
        for el in node.iter("a"):
            self._mention(el, primary=True)

    def _link_line(self, p) -> bool:
        """A paragraph that is only the source link (or the empty ``<>``)."""
        if len(p) == 0:
            return (p.text or "").strip() == "<>"
        if len(p) != 1 or p[0].tag != "a" or (p.text or "").strip() or (p[0].tail or "").strip():
            return False
        link = p[0]
        href = (link.get("href") or "").strip()
        if not href or clean_text(text_of(link)) != href:
            return False
        if self.body.source_url is None and _is_web_url(href):
            self.body.source_url = href
        return True

    def _backlinks(self, p) -> bool:
        """A paragraph of 返回X新闻 / 返回首页 links and separators only."""
        if not len(p) or p[0].tag != "a" or (p.text or "").strip():
            return False
        links = p.findall("a")
        if not links or len(p) != len(links):
            return False
        texts = [clean_text(text_of(a)) for a in links]
        if not all(t.startswith("返回") for t in texts):
            return False
        rest = clean_text(text_of(p))
        for t in texts:
            rest = rest.replace(t, "", 1)
        if _BACKLINK_SEPARATORS.sub("", rest):
            return False
        for a, text in zip(links, texts, strict=True):
            outlet = outlet_from_backlink(text)
            if outlet:
                self.body.backlink_outlet = outlet
                match = _CATEGORY_HREF.search(a.get("href") or "")
                if match:
                    self.body.backlink_category = next(g for g in match.groups() if g)
        return True

    # -- inside the article ---------------------------------------------------------
    def _walk(self, el) -> None:
        tag = el.tag
        if not isinstance(tag, str):
            self._comment(el)
            return
        if tag in _SKIP or _is_hidden(el):
            return
        if self.in_kline:
            self._kline_node(el)
            return
        if has_class(el, _SOURCE_CLASS):
            self._flush()
            if self.body.source is None:
                self.body.source = parse_source_line(text_of(el))
            return
        if tag == "img":
            self._image(el)
        if tag == "br":
            self.run.append(" ")
            return
        if tag == "tr":
            self._flush()
            cells = [clean_text(text_of(c)) for c in el if c.tag in ("td", "th")]
            self.run.append(" ".join(c for c in cells if c))
            for img in el.iter("img"):
                self._image(img)
            for a in el.iter():
                if a is not el and isinstance(a.tag, str):
                    self._mention(a)
            self._flush()
            return
        block = tag in _BLOCKS
        if block:
            self._flush()
        counted = self._mention(el)
        if el.text:
            self.run.append(el.text)
        for child in el:
            if counted and isinstance(child.tag, str):
                # markup inside a counted mention is the same mention
                self.run.append(text_of(child))
            else:
                self._walk(child)
            if child.tail:
                self.run.append(child.tail)
        if block:
            self._flush()

    def _flush(self) -> None:
        if self.run:
            text = clean_text("".join(self.run))
            self.run = []
            if text:
                self.body.paragraphs.append(text)

    def _image(self, el) -> None:
        src = (el.get("src") or "").strip()
        if src:
            try:
                url = urljoin(self.base_url, src)
            except ValueError:  # e.g. an unclosed "[" in the host: not a usable address
                return
            if _is_web_url(url) and url not in self.body.images:
                self.body.images.append(url)

    def _mention(self, el, primary: bool = False) -> bool:
        data_code, href = el.get("data-code"), el.get("href")
        if (data_code is None and (href is None or "/unify/r/" not in href)) or el.tag == "img":
            return False
        key = parse_stock_markup(data_code, href)
        if key is None:
            return False
        market, code = key
        stock = self.stocks.get(key)
        if stock is None:
            stock = self.stocks[key] = Stock(
                market=market,
                code=code,
                symbol=stock_symbol(market, code),
                name=None,
                kind=stock_kind(market, code),
                primary=False,
                mentions=0,
            )
        stock.mentions += 1
        stock.primary = stock.primary or primary
        if stock.name is None and not primary:
            stock.name = clean_text(text_of(el)) or None
        return True


def _serialise(el) -> str:
    return etree.tostring(el, method="html", encoding="unicode", with_tail=False)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Keep the article's structure (tables, emphasis, images, links), drop the rest.
_SANITISER = nh3.Cleaner(
    tags=_HTML_TAGS,
    attributes=_HTML_ATTRIBUTES,
    link_rel=None,
    url_schemes={"http", "https"},
    strip_comments=True,
)


def _sanitise(html: str) -> str:
    return _SANITISER.clean(html).strip()


def _is_web_url(url: str) -> bool:
    try:
        return urlsplit(url).scheme.lower() in _WEB_SCHEMES
    except ValueError:  # e.g. an unclosed "[" in the host
        return False
