"""Post-file parsing: the front matter shapes the real generator wrote, and bad files."""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from crawler.pages import ExtractionError
from crawler.pages.post import parse_post, split_front_matter
from crawler.processors import SITE_TZ

BODY = (
    '<p>正文第一段。</p><p class="em_media">（文章来源：证券时报）</p>\n\n'
    "<http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202205261234567890>\n\n"
    "[返回证券时报新闻](//finews.withounder.com/category/zhengquanshibao.html)｜"
    "[返回首页](//finews.withounder.com/)\n"
)
FRONT = (
    '---\nlayout: post\ntitle: "{title}"\ndate: 2022-05-26 09:30:00 +0800\n'
    "categories: zhengquanshibao\ntags: 证券时报新闻\n---\n"
)
URL = "file:///posts/2022-05-26-NW202205261234567890.md"


def post(title: str = "标题", front: str = FRONT, body: str = BODY) -> str:
    return front.format(title=title) + body


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("plain", post().encode()),
        ("BOM", b"\xef\xbb\xbf" + post().encode()),
        ("CRLF", post().replace("\n", "\r\n").encode()),
        ("blank line first", ("\n" + post()).encode()),
        (
            "BOM, CRLF and blank line",
            b"\xef\xbb\xbf" + ("\n" + post()).replace("\n", "\r\n").encode(),
        ),
    ],
)
def test_front_matter_survives_the_generators_quirks(name, data):
    article = parse_post(data, URL)
    assert article.title == "标题"
    assert article.published_at == datetime(2022, 5, 26, 9, 30, tzinfo=SITE_TZ)
    assert article.category == "zhengquanshibao"
    assert article.outlet == "证券时报"
    assert article.source == "证券时报"
    assert article.paragraphs == ["正文第一段。"]
    assert article.info_code == "NW202205261234567890"


@pytest.mark.parametrize(
    "title",
    ['茅台"股王"回归', '"开头引号', '结尾引号"', '含 \\ 反斜杠 与 "引号"'],
)
def test_titles_with_unescaped_quotes_are_salvaged(title):
    assert parse_post(post(title).encode(), URL).title == title


def test_simple_front_matter_reads_exactly_as_yaml_does():
    block = (
        'layout: post\ntitle: "A股-30%"\ndate: 2022-05-26 09:30:00\ncategories: TechWeb\ntags: x'
    )
    front, _ = split_front_matter(f"---\n{block}\n---\nbody")
    assert front == yaml.load(block, Loader=yaml.BaseLoader)


def test_yaml_lists_are_read_by_yaml():
    front, _ = split_front_matter("---\ncategories:\n  - emnews\n  - other\n---\n")
    assert front["categories"] == ["emnews", "other"]


def test_empty_fields_give_none_not_errors():
    article = parse_post(post("").replace("2022-05-26 09:30:00 +0800", " +0800").encode(), URL)
    assert article.title is None
    assert article.published_at is None
    assert article.missing() == ["published_at"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"   \n\n", "empty file"),
        ("正文，没有头部".encode(), "no front matter"),
        ('---\ntitle: "标题"\n---\n正文'.encode("gbk"), "not UTF-8"),
        (b"---\n[unclosed, list\n---\n", "front matter has no readable"),
    ],
)
def test_unreadable_files_raise_one_documented_error(data, reason):
    with pytest.raises(ExtractionError) as info:
        parse_post(data, URL)
    assert info.value.reason.startswith(reason)


def test_other_offsets_are_converted_to_beijing_time():
    text = post().replace("2022-05-26 09:30:00 +0800", "2022-05-26 01:30:00 +0000")
    moment = parse_post(text.encode(), URL).published_at
    assert moment.isoformat() == "2022-05-26T09:30:00+08:00"


def test_quote_links_name_securities_by_code_range_and_data_links_do_not():
    """A quote link names its security whatever its class; an ``infokey`` link to a data
    page is a keyword. On Shanghai (1) and Shenzhen (0) the code range gives the kind."""
    body = (
        '<p>三大指数集体走高，<span id="Info.3259"><a href="http://quote.eastmoney.com/unify/'
        'r/0.399006" class="infokey">创业板指</a></span>大涨，<span id="Info.3321"><a '
        'href="http://data.eastmoney.com/bbsj/" class="infokey">业绩</a></span>向好，'
        '<span id="stock_1.000001"><a href="http://quote.eastmoney.com/unify/r/1.000001" '
        'class="keytip" data-code="1,000001">上证指数</a></span>收涨，'
        '<span web="1" href="http://quote.eastmoney.com/unify/r/1.510300" '
        'class="em_stock_key_common" data-code="1,510300">沪深300ETF</span>、'
        '<a href="http://quote.eastmoney.com/unify/r/0.123107" class="em_stock_key_common" '
        'data-code="123107">温氏转债</a>与<span id="stock_0.000001"><a '
        'href="http://quote.eastmoney.com/unify/r/0.000001" class="keytip" '
        'data-code="0,000001">平安银行</a></span>走强。</p>'
    )
    article = parse_post(post(body=body + BODY).encode(), URL)
    found = [(s.market, s.code, s.symbol, s.kind, s.name, s.mentions) for s in article.stocks]
    assert found == [
        ("0", "399006", "399006.SZ", "index", "创业板指", 1),
        ("1", "000001", "000001.SH", "index", "上证指数", 1),
        ("1", "510300", "510300.SH", "fund", "沪深300ETF", 1),
        ("0", "123107", "123107.SZ", "bond", "温氏转债", 1),
        ("0", "000001", "000001.SZ", "stock", "平安银行", 1),
    ]
    assert article.paragraphs[0].startswith("三大指数集体走高，创业板指大涨，业绩向好，")
