"""Rendered-page parsing: the site's traps and the documented fallback order."""

from __future__ import annotations

import re
from datetime import datetime

import lxml.html
import pytest

from crawler.pages import ExtractionError
from crawler.pages.body import HTML_PARSER
from crawler.pages.page import LANDMARK_XPATHS, _landmarks, parse_page
from crawler.pages.post import parse_post
from crawler.processors import SITE_TZ
from fixtures.mirror import render_post
from tests.golden import CORPUS

NAME = "2022-04-27-NW202204272361734680.md"
URL = "https://finews.withounder.com/zhengquanribaowang/2022/04/27/NW202204272361734680.html"


@pytest.fixture(scope="module")
def html() -> str:
    page = render_post((CORPUS / NAME).read_text(encoding="utf-8"), NAME)
    return page.html


def test_the_og_description_trap_is_present_and_text_appears_once(html):
    # The unescaped paste puts the article's text in the document twice...
    assert html.count("4月27日，光大银行、美团宣布联合发起新市民小微生意支持计划") >= 2
    article = parse_page(html.encode(), URL)
    # ...but the item holds it once, exactly as the post file gives it.
    first = "4月27日，光大银行、美团宣布联合发起新市民小微生意支持计划。"
    assert article.paragraphs.count(first) == 1
    assert len(article.paragraphs) == 21
    assert len(article.stocks) == 2


def test_the_header_h1_is_not_the_title(html):
    assert '<h1><a href="https://finews.withounder.com/">金融消息</a></h1>' in html
    assert parse_page(html.encode(), URL).title.startswith("光大银行联合美团")


def _without(html: str, pattern: str) -> str:
    stripped, count = re.subn(pattern, "", html, flags=re.S)
    assert count, pattern
    return stripped


EXPECTED_TIME = datetime(2022, 4, 27, 15, 22, 47, tzinfo=SITE_TZ)
NO_META = r'<meta property="article:published_time"[^>]*>'
NO_LD = r'<script type="application/ld\+json">.*?</script>'
NO_SMALL = r"<small>\(GMT\+8[^<]*</small>"


@pytest.mark.parametrize(
    "removed",
    [[NO_META], [NO_META, NO_LD], [NO_LD, NO_SMALL], [NO_META, NO_SMALL]],
    ids=["no meta", "only the visible time", "only the meta", "only JSON-LD"],
)
def test_time_falls_back_in_documented_order(html, removed):
    for pattern in removed:
        html = _without(html, pattern)
    assert parse_page(html.encode(), URL).published_at == EXPECTED_TIME


def test_no_time_anywhere_gives_none(html):
    for pattern in (NO_META, NO_LD, NO_SMALL):
        html = _without(html, pattern)
    assert parse_page(html.encode(), URL).published_at is None


def test_title_falls_back_to_og_title_but_never_to_the_site_title(html):
    no_h1 = re.sub(r"(<section>.*?)<h1>[^<]*</h1>", r"\1", html, count=1, flags=re.S)
    assert parse_page(no_h1.encode(), URL).title.startswith("光大银行联合美团")
    bare = re.sub(r'<meta property="og:title"[^>]*>', "", no_h1)
    bare = re.sub(r"<title>[^<]*</title>", "<title>金融消息</title>", bare)
    bare = re.sub(r'"headline":"[^"]*"', '"headline":"金融消息"', bare)
    assert parse_page(bare.encode(), URL).title is None


def test_same_item_from_page_and_post_file(html):
    page = parse_page(html.encode(), URL)
    post = parse_post((CORPUS / NAME).read_bytes(), (CORPUS / NAME).as_uri())
    page.url = post.url
    assert page == post


def test_gbk_page_decodes_like_scrapy(html):
    gbk = html.replace('<meta charset="UTF-8">', '<meta charset="gbk">').encode("gb18030")
    article = parse_page(gbk, URL, {"Content-Type": "text/html; charset=gbk"})
    assert article.title.startswith("光大银行联合美团")
    assert "\ufffd" not in "".join(article.paragraphs)


def test_a_page_that_is_not_a_post_is_a_clear_error():
    with pytest.raises(ExtractionError, match="not a post page"):
        parse_page(b"<html><body><h2>category</h2><ul></ul></body></html>", URL)


def test_landmarks_are_what_their_xpaths_select():
    """One walk finds the section, canonical URL and publish time the XPaths would."""
    rendered = [
        render_post(p.read_text(encoding="utf-8"), p.name) for p in sorted(CORPUS.glob("*.md"))
    ]
    pages = [page.html for page in rendered if page is not None]
    assert len(pages) > 60
    # Traps too: a second wrapper (the last section wins), a section outside any wrapper,
    # meta and link elements without the attribute the XPath reads.
    pages.append(
        '<html><head><meta property="article:published_time"><link rel="canonical">'
        '<link rel="canonical" href="https://x/a.html">'
        '<meta property="article:published_time" content="2024-01-02T03:04:05+08:00">'
        '</head><body><section>no</section><div class="a  wrapper"><section>1</section></div>'
        '<div class="wrapperx"><section>no</section></div>'
        '<div class="wrapper"><p><section>no</section></p><section>2</section></div></body></html>'
    )
    for html in pages:
        root = lxml.html.document_fromstring(html, parser=HTML_PARSER)
        sections, canonical, published = (root.xpath(x) for x in LANDMARK_XPATHS)
        expected = (
            sections[-1] if sections else None,
            str(canonical[0]) if canonical else None,
            str(published[0]) if published else None,
        )
        assert _landmarks(root) == expected
    assert _landmarks(root)[0].text == "2"
