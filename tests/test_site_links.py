"""The site's link rules (crawler.pages.site): what is the site, what is a post or category.

The tables are the specification; a mirror (base_url on 127.0.0.1) stands for the site.
"""

from __future__ import annotations

import pytest

from crawler.pages.site import (
    PostLink,
    backlink_categories,
    category_of_link,
    category_url,
    on_site,
    parse_listing,
    post_link,
    site_root,
)

LIVE = "https://finews.withounder.com"
MIRROR = "http://127.0.0.1:8123"
POST_PAGE = MIRROR + "/emnews/2022/05/26/202205262391921712.html"


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("https://finews.withounder.com/", LIVE),
        ("https://finews.withounder.com", LIVE),
        ("http://127.0.0.1:8123/", MIRROR),
        ("http://127.0.0.1:8123/finews/", MIRROR + "/finews"),
    ],
)
def test_site_root(base_url, root):
    assert site_root(base_url) == root


@pytest.mark.parametrize("base_url", ["", "finews.withounder.com", "ftp://x/", "file:///tmp/"])
def test_site_root_refuses_what_is_not_a_web_site(base_url):
    with pytest.raises(ValueError):
        site_root(base_url)


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        # The site's own host names, in every form, land on the mirror.
        ("//finews.withounder.com/category/emnews.html", MIRROR + "/category/emnews.html"),
        ("https://finews.withounder.com/", MIRROR + "/"),
        ("http://finews.withounder.com/emnews/", MIRROR + "/emnews/"),
        ("//finews.zning.me/emnews/", MIRROR + "/emnews/"),
        ("//FINEWS.ZNING.ME/emnews/", MIRROR + "/emnews/"),
        (
            "/zhengquanribaowang/2022/04/27/NW1.html",
            MIRROR + "/zhengquanribaowang/2022/04/27/NW1.html",
        ),
        ("http://127.0.0.1:8123/category/x.html", MIRROR + "/category/x.html"),
        # Off the site: Eastmoney, images, the NewsShare host, other schemes.
        ("http://quote.eastmoney.com/unify/r/1.600160", None),
        ("https://dfscdn.dfcfw.com/download/D1.jpg", None),
        ("http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW1", None),
        ("http://finance.eastmoney.com/a/202205262391921712.html", None),
        ("http://127.0.0.1:9999/category/x.html", None),
        ("mailto:someone@example.com", None),
        ("javascript:void(0)", None),
        ("#top", None),
        ("", None),
    ],
)
def test_on_site(href, expected):
    assert on_site(href, POST_PAGE, MIRROR) == expected


def test_on_site_keeps_a_mirror_prefix():
    root = MIRROR + "/finews"
    page = root + "/category/emnews.html"
    assert on_site("//finews.withounder.com/category/x.html", page, root) == (
        root + "/category/x.html"
    )
    assert on_site("/finews/emnews/2022/05/26/1.html", page, root) == (
        root + "/emnews/2022/05/26/1.html"
    )


@pytest.mark.parametrize(
    ("path", "category", "info_code"),
    [
        ("/emnews/2022/05/26/202205262391921712.html", "emnews", "NW202205262391921712"),
        ("/shanghaizhengquanbao/2022/05/26/NW202205262391921712.html",
         "shanghaizhengquanbao", "NW202205262391921712"),
        ("/21shijijingjibaodao%2021caijingAPP/2022/05/27/NW202205272392593075.html",
         "21shijijingjibaodao 21caijingAPP", "NW202205272392593075"),
        ("/anxinguojizhengquan%28xianggang%29/2022/05/27/NW202205272392675909.html",
         "anxinguojizhengquan(xianggang)", "NW202205272392675909"),
        ("/emnews/2021/12/01/init.html", "emnews", None),  # a post, but no infoCode in its name
        ("/2022/05/26/NW202205262391921712.html", None, "NW202205262391921712"),  # no category
        ("/emnews/2022/05/26/AN202205261234567890.html", "emnews", "AN202205261234567890"),
    ],
)  # fmt: skip
def test_post_link_knows_category_and_info_code_before_the_fetch(path, category, info_code):
    assert post_link(MIRROR + path, MIRROR) == PostLink(MIRROR + path, category, info_code)


@pytest.mark.parametrize(
    "path", ["/", "/category/emnews.html", "/emnews/", "/feed.xml", "/emnews/2022/05/x.html"]
)
def test_post_link_is_none_for_other_pages(path):
    assert post_link(MIRROR + path, MIRROR) is None


@pytest.mark.parametrize(
    ("href", "slug"),
    [
        ("//finews.withounder.com/category/zhengquanribaowang.html", "zhengquanribaowang"),
        ("//finews.withounder.com/category/21shijijingjibaodao 21caijingAPP.html",
         "21shijijingjibaodao 21caijingAPP"),
        ("/category/anxinguojizhengquan%28xianggang%29.html", "anxinguojizhengquan(xianggang)"),
        ("//finews.withounder.com/emnews/", "emnews"),  # the older /<slug>/ style
        ("//finews.zning.me/emnews/", "emnews"),
        ("../emnews/", "emnews"),  # relative to the site's root, not to the post
        ("./emnews/", "emnews"),
        ("//finews.withounder.com/", None),  # 返回首页
        ("../", None),
        ("/category/", None),
        ("http://quote.eastmoney.com/center/", None),
        ("//finews.withounder.com/emnews/2022/05/26/1.html", None),
    ],
)  # fmt: skip
def test_category_of_link(href, slug):
    assert category_of_link(href, POST_PAGE, MIRROR) == slug


@pytest.mark.parametrize(
    ("slug", "url"),
    [
        ("emnews", MIRROR + "/category/emnews.html"),
        (
            "21shijijingjibaodao 21caijingAPP",
            MIRROR + "/category/21shijijingjibaodao%2021caijingAPP.html",
        ),
        (
            "anxinguojizhengquan(xianggang)",
            MIRROR + "/category/anxinguojizhengquan%28xianggang%29.html",
        ),
        ("TechWeb", MIRROR + "/category/TechWeb.html"),
    ],
)
def test_category_url_percent_encodes_the_slug(slug, url):
    assert category_url(MIRROR, slug) == url


HOME = """<!DOCTYPE html><html><head><meta charset="UTF-8">
<meta property="og:description" content="<h2 id="证券日报网新闻">证券日报网新闻</h2>
<ul><li><a href="/zhengquanribaowang/2022/04/27/NW202204272361734680.html">T</a></li></ul>">
<link rel="alternate" href="https://finews.withounder.com/feed.xml"></head>
<body><div class="wrapper"><header><h1><a href="https://finews.withounder.com/">金融消息</a></h1>
</header><section>
<h2 id="证券日报网新闻">证券日报网新闻</h2>
<ul><li><a href="/zhengquanribaowang/2022/04/27/NW202204272361734680.html">T</a></li>
<li><a href="/emnews/2022/05/26/202205262391921712.html">U</a></li>
<li><a href="//finews.zning.me/category/emnews.html">more</a></li>
<li><a href="http://quote.eastmoney.com/unify/r/1.600160">off site</a></li></ul>
</section></div></body></html>"""


def test_parse_listing_reads_each_site_link_once_despite_the_og_description_trap():
    listing = parse_listing(HOME.encode(), MIRROR + "/", MIRROR, {"Content-Type": "text/html"})
    assert listing.posts == [
        PostLink(
            MIRROR + "/zhengquanribaowang/2022/04/27/NW202204272361734680.html",
            "zhengquanribaowang",
            "NW202204272361734680",
        ),
        PostLink(MIRROR + "/emnews/2022/05/26/202205262391921712.html", "emnews",
                 "NW202205262391921712"),
    ]  # fmt: skip
    assert listing.categories == ["emnews"]


def test_parse_listing_of_a_listing_that_lists_nothing():
    page = """<html><head><meta property="og:description" content="<h2 id=""></h2>
<ul>
</ul>
"></head><body><div class="wrapper"><header><h1><a href="/">金融消息</a></h1></header>
<section><h2 id=""></h2><ul></ul></section></div></body></html>"""
    listing = parse_listing(page, MIRROR + "/category/x.html", MIRROR)
    assert (listing.posts, listing.categories, listing.error) == ([], [], None)
    assert parse_listing(HOME, MIRROR + "/", MIRROR).error is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "an empty page"),
        (b" \r\n ", "an empty page"),
        (
            b'<html><body><h1>Service busy</h1><a href="/emnews/2022/05/26/1.html">x</a>'
            b"</body></html>",
            "not a page of the site: no <section> inside div.wrapper",
        ),
    ],
)
def test_parse_listing_tells_an_error_page_from_an_empty_listing(body, error):
    listing = parse_listing(body, MIRROR + "/", MIRROR)
    assert (listing.posts, listing.categories, listing.error) == ([], [], error)


def test_backlink_categories_reads_every_style_once():
    page = (
        '<meta property="og:description" content="'
        '<p><a href="../emnews/">返回东财滚动新闻</a></p>">'
        '<p><a href="../emnews/">返回东财滚动新闻</a>｜<a href="../">返回首页</a></p>'
        '<p><a href="//finews.withounder.com/category/shanghaizhengquanbao.html">'
        "返回上海证券报新闻</a></p>"
        '<p><a href="http://quote.eastmoney.com/center/">返回行情中心</a></p>'
    )
    assert backlink_categories(page, POST_PAGE, MIRROR) == ["emnews", "shanghaizhengquanbao"]
