"""The fixture mirror renders post files into the site exactly as docs/site.md describes it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from urllib.parse import quote, unquote

import lxml.etree
import lxml.html
import pytest

from fixtures.mirror import build_site, main, render_markdown, render_post
from fixtures.synth import generate, write

CORPUS = Path(__file__).parent.parent / "fixtures" / "corpus" / "posts"

CST = timezone(timedelta(hours=8))
OUTLET_POST = "2022-04-27-NW202204272361734680.md"
OUTLET_TITLE = "光大银行联合美团发力“新市民” 数字化平台正“链接”机构共建金融服务生态圈"
OUTLET_PATH = "/zhengquanribaowang/2022/04/27/NW202204272361734680.html"
# Files Jekyll would not render: four with a blank line before the opening "---", and
# one whose name has no date (and whose date is empty).
NOT_RENDERED = [
    "-202205262391921712.md",
    "2021-12-08-202112082206672930.cfbae48.md",
    "2021-12-08-202112082206703990.md",
    "2021-12-08-202112082206727327.cfbae48.md",
    "2021-12-08-202112082206928461.cfbae48.md",
]


def read(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8-sig")


@cache
def outlet_post():
    return render_post(read(OUTLET_POST), OUTLET_POST)


@cache
def outlet_page() -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(outlet_post().html)


# ------------------------------------------------------------------- one post


def test_rendered_post_fields():
    post = outlet_post()
    assert post.path == OUTLET_PATH
    assert post.title == OUTLET_TITLE
    assert post.published_at == datetime(2022, 4, 27, 15, 22, 47, tzinfo=CST)
    assert post.published_at.utcoffset() == timedelta(hours=8)
    assert post.category == "zhengquanribaowang"
    assert post.tag == "证券日报网新闻"
    assert post.name == "NW202204272361734680"


def test_og_description_holds_the_unescaped_html():
    html = outlet_post().html
    head = html[: html.index("</head>")]
    assert head.index('<meta charset="UTF-8">') < head.index('property="og:title"')
    assert head.index('property="og:title"') < head.index('property="og:description"')
    assert '<meta property="og:description" content="<p style="display:none;' in html
    assert f'<meta property="og:title" content="{OUTLET_TITLE}">' in html
    # In an HTML parser the attribute ends at the content's first quote...
    first = outlet_page().xpath('//meta[@property="og:description"]/@content')[0]
    assert first == "<p style="
    # ...and the article spills into the page, so a naive //p sees it twice.
    lead = "4月27日，光大银行、美团宣布联合发起新市民小微生意支持计划。"
    assert len(outlet_page().xpath(f'//p[contains(., "{lead}")]')) == 2


def test_header_and_section_titles():
    page = outlet_page()
    headings = page.xpath("//h1")
    assert headings[0].text_content() == "金融消息"
    assert headings[0].xpath("./a/@href") == ["https://finews.withounder.com/"]
    assert page.xpath('//div[@class="wrapper"]/header/h1/a/text()') == ["金融消息"]
    assert page.xpath('//div[@class="wrapper"]/section/h1/text()') == [OUTLET_TITLE]
    smalls = page.xpath('//div[@class="wrapper"]/section/small')
    assert smalls[0].text_content() == "(GMT+8, Asia/Shanghai, CST) 2022-04-27 15:22:47"
    assert smalls[-1].text_content() == "tags: 证券日报网新闻"
    assert smalls[-1].xpath("./em/text()") == ["证券日报网新闻"]
    assert page.xpath('//div[@class="wrapper"]/footer/p')[0].text_content() == "© 2021"


def test_seo_block():
    page = outlet_page()
    url = "https://finews.withounder.com" + OUTLET_PATH
    assert page.xpath("//title/text()") == [f"{OUTLET_TITLE} | 金融消息"]
    assert page.xpath('//link[@rel="canonical"]/@href') == [url]
    assert page.xpath('//meta[@property="og:type"]/@content') == ["article"]
    published = page.xpath('//meta[@property="article:published_time"]/@content')
    assert published == ["2022-04-27T15:22:47+08:00"]
    ld = json.loads(page.xpath('//script[@type="application/ld+json"]/text()')[0])
    assert ld["@type"] == "BlogPosting"
    assert ld["headline"] == OUTLET_TITLE
    assert ld["datePublished"] == ld["dateModified"] == "2022-04-27T15:22:47+08:00"
    assert ld["url"] == url
    assert ld["description"].startswith("4月27日，光大银行、美团宣布联合发起")
    html = outlet_post().html
    assert html.index('rel="stylesheet"') > html.index("application/ld+json")
    assert "AutoRefresh(60000)" in html and "location.reload(true)" in html


def test_body_links_keep_their_hrefs():
    section = outlet_page().xpath('//div[@class="wrapper"]/section')[0]
    links = section.xpath(".//p/a")
    assert [a.get("href") for a in links[-3:]] == [
        "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202204272361734680",
        "//finews.withounder.com/category/zhengquanribaowang.html",
        "//finews.withounder.com/",
    ]
    assert [a.text for a in links[-2:]] == ["返回证券日报网新闻", "返回首页"]


def test_base_url_moves_canonical_and_header_only():
    post = render_post(read(OUTLET_POST), OUTLET_POST, base_url="http://127.0.0.1:8000")
    page = lxml.html.document_fromstring(post.html)
    assert page.xpath('//link[@rel="canonical"]/@href') == ["http://127.0.0.1:8000" + OUTLET_PATH]
    assert page.xpath("//header/h1/a/@href") == ["http://127.0.0.1:8000/"]
    assert "//finews.withounder.com/category/zhengquanribaowang.html" in post.content


def test_emnews_post_renders_digest_and_links():
    post = render_post(read("2022-05-26-202205262391921712.md"), "2022-05-26-202205262391921712.md")
    assert post.path == "/emnews/2022/05/26/202205262391921712.html"
    assert post.content.startswith("<blockquote>\n<p>据霍尼韦尔官网消息，5月24日")
    assert (
        '<p><a href="http://finance.eastmoney.com/news/1354,202205262391921712.html">'
        "http://finance.eastmoney.com/news/1354,202205262391921712.html</a></p>"
    ) in post.content
    assert (
        '<p><a href="//finews.withounder.com/emnews/">返回东财滚动新闻</a>｜'
        '<a href="//finews.withounder.com/">返回首页</a></p>'
    ) in post.content


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("> 摘要（上海证券报）", "<blockquote>\n<p>摘要（上海证券报）</p>\n</blockquote>\n"),
        ("祝贺开站", "<p>祝贺开站</p>\n"),
        ("<>", "<p>&lt;&gt;</p>\n"),
        ('<p class="em_media">（文章来源：X）</p>\n', '<p class="em_media">（文章来源：X）</p>\n'),
        (
            "[返回X新闻](//finews.withounder.com/category/21shijijingjibaodao 21caijingAPP.html)",
            '<p><a href="//finews.withounder.com/category/21shijijingjibaodao 21caijingAPP.html">'
            "返回X新闻</a></p>\n",
        ),
        (
            "[返回东财滚动新闻](../emnews/)\n[返回首页](../)",
            '<p><a href="../emnews/">返回东财滚动新闻</a>\n<a href="../">返回首页</a></p>\n',
        ),
    ],
)
def test_markdown_like_kramdown(markdown, html):
    assert render_markdown(markdown) == html


# ------------------------------------------------------ what Jekyll would skip


@pytest.mark.parametrize("name", NOT_RENDERED)
def test_files_jekyll_skips(name):
    assert render_post(read(name), name) is None


def test_only_those_corpus_files_are_skipped():
    rendered = {p.name for p in CORPUS.glob("*.md") if render_post(read(p.name), p.name)}
    assert {p.name for p in CORPUS.glob("*.md")} - rendered == set(NOT_RENDERED)


FRONT = (
    '---\nlayout: post\ntitle: "T"\ndate: 2022-05-26 09:30:00 +0800\n'
    "categories: c\ntags: X新闻\n---\n"
)


@pytest.mark.parametrize(
    ("text", "filename"),
    [
        ("", "2022-05-26-NW202205260000000001.md"),
        ("\n" + FRONT + "body", "2022-05-26-NW202205260000000001.md"),
        (FRONT.replace("2022-05-26 09:30:00 +0800", " +0800") + "body", "2022-05-26-a.md"),
        (FRONT.replace("2022-05-26 09:30:00 +0800", "") + "body", "2022-05-26-a.md"),
        (FRONT[: FRONT.index("categories")], "2022-05-26-a.md"),
        (FRONT + "body", "NW202205260000000001.md"),
    ],
    ids=["empty", "blank-line-first", "offset-only-date", "empty-date", "truncated", "no-date"],
)
def test_not_rendered(text, filename):
    assert render_post(text, filename) is None


def test_bom_crlf_and_quotes_in_title():
    text = FRONT.replace('"T"', '"光大银行发力"新市民" 布局"').replace("\n", "\r\n") + "<p>正文</p>"
    post = render_post("\ufeff" + text, "2022-05-26-NW202205260000000001.md")
    assert post.title == '光大银行发力"新市民" 布局'
    assert post.published_at == datetime(2022, 5, 26, 9, 30, tzinfo=CST)
    page = lxml.html.document_fromstring(post.html)
    assert page.xpath("//section/h1/text()") == [post.title]
    assert page.xpath('//meta[@property="og:title"]/@content')[0] == post.title
    assert json.loads(page.xpath("//script[@type='application/ld+json']/text()")[0])[
        "headline"
    ] == post.title.replace('"', "&quot;")  # jekyll-seo-tag escapes the headline


def test_dates_without_offset_and_from_the_file_name():
    post = render_post(read("2021-12-08-202112082206928461.md"), "2021-12-08-202112082206928461.md")
    assert post.published_at == datetime(2021, 12, 8, 12, 41, 23, tzinfo=CST)
    no_date = FRONT.replace("date: 2022-05-26 09:30:00 +0800\n", "")
    post = render_post(no_date, "2022-05-24-NW202205240000000001.md")
    assert post.published_at == datetime(2022, 5, 24, tzinfo=CST)
    utc = render_post(FRONT.replace("+0800", "+0000"), "2022-05-26-a.md")
    assert utc.published_at.isoformat() == "2022-05-26T17:30:00+08:00"


def test_commit_suffix_is_not_part_of_the_name():
    name = "2021-12-08-202112082206928461.2b5b53f.md"
    post = render_post(read(name), name)
    assert post.name == "202112082206928461"
    assert post.path == "/emnews/2021/12/08/202112082206928461.html"


def test_empty_title_falls_back_to_the_site_title():
    text = FRONT.replace('"T"', '""')
    post = render_post(text, "2022-05-26-NW202205260000000001.md")
    page = lxml.html.document_fromstring(post.html)
    assert page.xpath("//title/text()") == ["金融消息"]
    ld = json.loads(page.xpath("//script[@type='application/ld+json']/text()")[0])
    assert ld["headline"] == "金融消息"


def test_awkward_slugs_are_percent_encoded():
    for slug in ("21shijijingjibaodao 21caijingAPP", "anxinguojizhengquan(xianggang)", "TechWeb"):
        post = render_post(FRONT.replace("categories: c", f"categories: {slug}"), "2022-05-26-a.md")
        assert post.path == f"/{quote(slug)}/2022/05/26/a.html"
        assert post.category == slug
    assert quote("21shijijingjibaodao 21caijingAPP") == "21shijijingjibaodao%2021caijingAPP"


# ------------------------------------------------------------------ the site


@pytest.fixture(scope="module")
def corpus_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    manifest = build_site(sorted(CORPUS.glob("*.md")), out)
    return out, manifest


def links(path: Path) -> list[str]:
    page = lxml.html.document_fromstring(path.read_text(encoding="utf-8"))
    return page.xpath('//div[@class="wrapper"]/section//li/a/@href')


def test_manifest_lists_every_file(corpus_site):
    _, manifest = corpus_site
    files = sorted(CORPUS.glob("*.md"))
    assert len(manifest.posts) + len(manifest.skipped) == len(files)
    assert len({p.path for p in manifest.posts}) == len(manifest.posts)
    skipped = {Path(s.source).name: s.reason for s in manifest.skipped}
    for name in NOT_RENDERED:
        assert name in skipped
    assert skipped["2021-12-08-202112082206928461.b5202fa.md"].startswith("superseded by")
    sources = {p.path: Path(p.source).name for p in manifest.posts}
    # The file without a commit suffix is the version the site serves.
    assert sources["/emnews/2021/12/08/202112082206928461.html"] == (
        "2021-12-08-202112082206928461.md"
    )
    assert sources["/emnews/2021/12/01/init.html"] == "2021-12-01-init.5e7a196.md"
    assert sources["/sitenews/2021/12/01/init.html"] == "2021-12-01-init.md"


def test_post_files_written(corpus_site):
    out, manifest = corpus_site
    for post in manifest.posts:
        page = (out / unquote(post.path).lstrip("/")).read_bytes().decode("utf-8")
        assert f"<h1>{post.title}</h1>" in page


def test_category_pages(corpus_site):
    out, manifest = corpus_site
    outlets = ("zhengquanribaowang", "shanghaizhengquanbao", "cailianshe", "quanshangzhongguo")
    for slug in ("emnews", "sitenews", *outlets):
        path = out / "category" / f"{slug}.html"
        expected = sorted(
            (p for p in manifest.posts if p.category == slug),
            key=lambda p: p.published_at,
            reverse=True,
        )
        assert links(path) == [p.path for p in expected], slug
        page = lxml.html.document_fromstring(path.read_text(encoding="utf-8"))
        assert page.xpath('//div[@class="wrapper"]/section/h2')[0].text_content() == ""
    assert links(out / "category" / "shanghaizhengquanbao.html") == [
        "/shanghaizhengquanbao/2022/05/26/NW202205262391921712.html"
    ]
    assert links(out / "category" / "quanshangzhongguo.html") == [
        "/quanshangzhongguo/2022/01/07/NW202201072239307540.html"
    ]
    emnews = links(out / "category" / "emnews.html")
    assert len(emnews) > 50
    assert emnews[:2] == [
        "/emnews/2022/05/31/202205312398034850.html",
        "/emnews/2022/05/26/202205262391921712.html",
    ]


def test_home_page(corpus_site):
    out, _ = corpus_site
    page = lxml.html.document_fromstring((out / "index.html").read_text(encoding="utf-8"))
    section = page.xpath('//div[@class="wrapper"]/section')[0]
    tags = section.xpath("./h2/@id")
    outlets = ["证券日报网新闻", "上海证券报新闻", "财联社新闻", "券商中国新闻"]
    assert sorted(tags) == sorted(["东财滚动新闻", "站长消息", *outlets])
    for heading in section.xpath("./h2"):
        assert heading.text_content() == heading.get("id")
        items = heading.getnext()
        assert items.tag == "ul"
        assert 1 <= len(items.xpath("./li/a")) <= 5
        assert items.getnext().tag == "hr"
    assert len(section.xpath('./ul[preceding-sibling::h2[1][@id="东财滚动新闻"]]/li')) == 5
    assert not page.xpath('//a[contains(@href, "/category/")]')


def test_feed_404_and_robots(corpus_site):
    out, manifest = corpus_site
    feed = lxml.etree.fromstring((out / "feed.xml").read_bytes())
    atom = {"a": "http://www.w3.org/2005/Atom"}
    entries = feed.xpath("//a:entry", namespaces=atom)
    assert len(entries) == min(20, len(manifest.posts))
    newest = max(manifest.posts, key=lambda p: p.published_at)
    assert entries[0].xpath("a:link/@href", namespaces=atom) == [
        "https://finews.withounder.com" + newest.path
    ]
    not_found = (out / "404.html").read_text(encoding="utf-8")
    assert "本站消息时效性为三天" in not_found
    assert "github.com/zning1994/finews/blob/main/old_post/" in not_found
    assert (out / "robots.txt").read_text(encoding="utf-8") == "User-agent: *\nAllow: /\n"


def test_same_posts_same_bytes(corpus_site, tmp_path):
    out, _ = corpus_site
    build_site(sorted(CORPUS.glob("*.md")), tmp_path)
    for path in out.rglob("*"):
        if path.is_file():
            assert (tmp_path / path.relative_to(out)).read_bytes() == path.read_bytes()


# ------------------------------------------------------------ synthetic posts


def section_texts(html: str) -> list[str]:
    page = lxml.html.document_fromstring(html)
    section = page.xpath('//div[@class="wrapper"]/section')[0]
    texts = []
    for element in section.iter("p", "tr", "h1"):
        text = " ".join(cell.text_content() for cell in element) if element.tag == "tr" else None
        texts.append(" ".join((text or element.text_content()).split()))
    return texts


def test_synthetic_posts_render_as_their_truth():
    for post in generate(200, seed=8):
        truth = post.truth
        page = render_post(post.data.decode("utf-8-sig"), post.filename)
        name = post.filename.removesuffix(".md")[11:]
        day = truth["published_at"].strftime("%Y/%m/%d")
        assert page.path == f"/{quote(truth['category'])}/{day}/{name}.html"
        assert page.title == truth["title"]
        assert page.published_at == truth["published_at"]
        assert page.tag == truth["outlet"] + "新闻"
        texts = iter(section_texts(page.html))
        # Every expected paragraph shows in the section, in order.
        for paragraph in truth["paragraphs"]:
            assert paragraph in texts, (post.filename, paragraph)


def test_build_site_with_awkward_slugs_and_broken_files(tmp_path):
    posts = generate(80, seed=11, broken=0.1)
    manifest = build_site(write(posts, tmp_path / "posts"), tmp_path / "site")
    reasons = {Path(s.source).name: s.reason for s in manifest.skipped}
    for post in posts:
        if post.truth["broken"] in (None, "missing title and empty body"):
            assert post.filename not in reasons
        else:
            assert post.filename in reasons
            if post.truth["broken"] == "invalid utf-8":
                assert reasons[post.filename] == "invalid UTF-8"
    for slug in ("21shijijingjibaodao 21caijingAPP", "anxinguojizhengquan(xianggang)", "TechWeb"):
        page = tmp_path / "site" / "category" / f"{slug}.html"
        hrefs = links(page)
        assert hrefs, slug
        for href in hrefs:
            assert href.startswith(f"/{quote(slug)}/")
            assert (tmp_path / "site" / unquote(href).lstrip("/")).is_file()
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert f'<a href="/{quote("21shijijingjibaodao 21caijingAPP")}/' in home


def test_cli(tmp_path, capsys):
    manifest_path = tmp_path / "manifest.json"
    code = main(
        [
            "--out", str(tmp_path / "site"), "--posts", str(CORPUS), "--synthetic", "30",
            "--seed", "2", "--manifest", str(manifest_path),
        ]
    )  # fmt: skip
    assert code == 0
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and summary.startswith("mirror: ")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert len(manifest["posts"]) + len(manifest["skipped"]) == len(list(CORPUS.glob("*.md"))) + 30
    assert (tmp_path / "site" / OUTLET_PATH.lstrip("/")).is_file()
