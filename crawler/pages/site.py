"""The site's link rules and its listing pages: which URLs are the site, and what they are.

The site (docs/site.md) is the host finews.withounder.com, earlier finews.zning.me; post bodies
link to it protocol-relative (``//finews.withounder.com/category/x.html``) or relative
(``../emnews/``). A crawl may point at a mirror (``base_url``): every link to one of the
site's host names is then taken to the same path on the mirror. Anything else (Eastmoney
quote pages, dfcfw images, the NewsShare host finews.zning.xyz) is not the site.

URLs on the site:

- ``/`` the home page, ``/category/<slug>.html`` a category page (every post of it);
- ``/<slug>/YYYY/MM/DD/<name>.html`` a post, whose ``<name>`` carries its infoCode;
- ``/<slug>/`` an older back-link style naming a category; the page itself may not exist,
  so it is read as the category, whose page is ``/category/<slug>.html``.

Pure functions of strings and bytes: no network, no settings, no database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote, urljoin, urlsplit

from lxml import etree

from crawler.items import Article
from crawler.pages import ExtractionError, content_type_of, decode_html
from crawler.pages.body import parse_html
from crawler.pages.page import LANDMARK_XPATHS, parse_page
from crawler.processors import info_code_from_name

LIVE_SITE = "https://finews.withounder.com/"
# The site's own host names, old and new; finews.zning.xyz is the NewsShare host, not the site.
SITE_HOSTS = frozenset({"finews.withounder.com", "finews.zning.me"})

_LINKS = "//a/@href"
_LAYOUT = LANDMARK_XPATHS[0]  # the <section> of div.wrapper
_POST_PATH = re.compile(r"^/(?:(?P<slug>[^/]+)/)?\d{4}/\d{2}/\d{2}/(?P<name>[^/]+?)\.html?$")
_CATEGORY_PATH = re.compile(r"^/category/(?P<slug>[^/]+?)\.html?$")
_SLUG_DIR = re.compile(r"^/(?P<slug>[^/]+)/?$")
_RELATIVE_SLUG_DIR = re.compile(r"^\.{1,2}/(?P<slug>[^/?#]+)/$")
# A 返回X新闻 back-link as kramdown renders it: <a href="…">返回证券日报网新闻</a>.
_BACKLINK = re.compile(r'<a\s[^>]*?href="(?P<href>[^"]*)"[^>]*>\s*返回(?!首页)')


@dataclass(frozen=True)
class PostLink:
    """A post as its link names it, before it is fetched."""

    url: str  # absolute, on the crawled site (the mirror's host when crawling a mirror)
    category: str | None  # the slug, decoded; None for a post without a category
    info_code: str | None  # from the post's name; None when the name does not carry one


@dataclass
class PostPage:
    """What a post page holds for the crawl: its article (or why none) and its back-links."""

    article: Article | None
    error: str | None  # ExtractionError's reason when the page is not a readable post
    categories: list[str]  # slugs its 返回X新闻 back-links name


@dataclass
class Listing:
    """The links of a home or category page, in page order, each once."""

    posts: list[PostLink] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # slugs, decoded
    # Why the page is not one of the site's listing pages (an empty body, an error page
    # served as 200), None when it is: then no links means the listing is empty.
    error: str | None = None


def site_root(base_url: str) -> str:
    """``scheme://host[:port][/prefix]`` of the site to crawl, without a trailing slash."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def home_url(root: str) -> str:
    return root + "/"


def category_url(root: str, slug: str) -> str:
    """The category page of ``slug``, percent-encoded (slugs hold spaces and brackets)."""
    return f"{root}/category/{quote(slug, safe='')}.html"


def on_site(href: str | None, page_url: str, root: str) -> str | None:
    """``href`` (as written on ``page_url``) as an absolute URL under ``root``, or None.

    Links to any of the site's host names, or to ``root``'s own host, are the site and
    land under ``root``; every other host is off the site.
    """
    href = (href or "").strip()
    if not href or href.startswith(("#", "mailto:", "javascript:")):
        return None
    if href[0] == "/" and href[1:2] != "/":
        return _rooted(href, root)  # the usual case on listing pages: no URL parsing needed
    absolute = urlsplit(urljoin(page_url, href))
    if absolute.scheme not in ("http", "https"):
        return None
    rooted = urlsplit(root)
    host = (absolute.hostname or "").lower()
    if host not in SITE_HOSTS and absolute.netloc.lower() != rooted.netloc.lower():
        return None
    path = absolute.path or "/"
    if absolute.netloc.lower() == rooted.netloc.lower() and rooted.path:
        path = path.removeprefix(rooted.path) or "/"  # already under the mirror's prefix
    query = f"?{absolute.query}" if absolute.query else ""
    return f"{root}{path}{query}"


@lru_cache(maxsize=64)
def _prefix(root: str) -> str:
    return urlsplit(root).path


def _rooted(href: str, root: str) -> str:
    """A root-relative ``href`` under ``root``, without its fragment."""
    href = href.partition("#")[0]
    prefix = _prefix(root)
    if prefix and (href == prefix or href.startswith(prefix + "/")):
        href = href[len(prefix) :] or "/"
    return root + href


def site_path(url: str, root: str) -> str:
    """The path of ``url`` on the site, without ``root``'s prefix: ``/emnews/…html``."""
    path = urlsplit(url).path
    prefix = _prefix(root)
    return (path.removeprefix(prefix) if prefix else path) or "/"


def post_link(url: str, root: str) -> PostLink | None:
    """The post ``url`` (under ``root``) names, or None when it is not a post URL."""
    match = _POST_PATH.match(site_path(url, root))
    if not match:
        return None
    slug = unquote(match["slug"]) if match["slug"] else None
    return PostLink(url, slug, info_code_from_name(unquote(match["name"])))


def category_of(url: str, root: str) -> str | None:
    """The slug of a category URL under ``root``: ``/category/<slug>.html`` or ``/<slug>/``."""
    path = site_path(url, root)
    match = _CATEGORY_PATH.match(path)
    if match is None and path.endswith("/"):
        match = _SLUG_DIR.match(path)
    if match is None or match["slug"] == "category":
        return None
    return unquote(match["slug"])


def category_of_link(href: str, page_url: str, root: str) -> str | None:
    """The category a link names, written as on the page; None if it names none.

    ``../emnews/`` and ``./emnews/`` are written relative to the site's root, whatever page
    holds them (they only resolve on the home page), so they are read as ``/emnews/``.
    """
    href = href.strip()
    relative = _RELATIVE_SLUG_DIR.match(href)
    if relative:
        return unquote(relative["slug"])
    if href.startswith(("/", "http:", "https:")):
        return _category_of_absolute(href, root)  # the page does not matter: cache it
    url = on_site(href, page_url, root)
    return category_of(url, root) if url else None


@lru_cache(maxsize=4096)
def _category_of_absolute(href: str, root: str) -> str | None:
    url = on_site(href, root + "/", root)
    return category_of(url, root) if url else None


def parse_listing(
    body: bytes | str, url: str, root: str, headers: Mapping | None = None
) -> Listing:
    """The posts and categories a home or category page links to, on the site only."""
    text = decode_html(body, content_type_of(headers))
    if not text.strip():
        return Listing(error="an empty page")
    try:
        tree = parse_html(text)
    except (etree.ParserError, ValueError) as exc:
        return Listing(error=f"not an HTML page: {exc}")
    # Home and category pages share the post pages' layout: an answer without it is the
    # server's error page, whatever its status, and its links are not the site's listing.
    if not tree.xpath(_LAYOUT):
        return Listing(error="not a page of the site: no <section> inside div.wrapper")
    listing = Listing()
    seen: set[str] = set()
    # The og:description trap repeats the page's links in <head>: each counts once.
    for href in tree.xpath(_LINKS):
        absolute = on_site(href, url, root)
        if absolute is None or absolute in seen:
            continue
        seen.add(absolute)
        post = post_link(absolute, root)
        if post is not None:
            listing.posts.append(post)
            continue
        slug = category_of(absolute, root)
        if slug is not None and slug not in listing.categories:
            listing.categories.append(slug)
    return listing


def read_post_page(body: bytes | str, url: str, root: str) -> PostPage:
    """A post page's article (``crawler.pages.page.parse_page``) and back-link categories,
    decoding the body once for both. Never raises ExtractionError: it is returned."""
    text = decode_html(body)
    categories = backlink_categories(text, url, root)
    try:
        return PostPage(parse_page(text, url), None, categories)
    except ExtractionError as exc:
        return PostPage(None, exc.reason, categories)


def backlink_categories(text: str, url: str, root: str) -> list[str]:
    """The categories a post page's 返回X新闻 back-links name, each once, in page order.

    A regular expression rather than a second HTML parse: the page parser already parsed
    the page once, and this runs on every post.
    """
    slugs: list[str] = []
    for match in _BACKLINK.finditer(text):
        slug = category_of_link(match["href"], url, root)
        if slug and slug not in slugs:
            slugs.append(slug)
    return slugs
