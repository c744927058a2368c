"""The normaliser tables are the specification for times, infoCodes, markets and sources."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crawler.processors import (
    SITE_TZ,
    clean_text,
    clean_title,
    info_code_from_article_link,
    info_code_from_name,
    info_code_from_share_link,
    normalise_info_code,
    outlet_from_backlink,
    outlet_from_tag,
    parse_flag,
    parse_site_time,
    parse_source_line,
    parse_stock_markup,
    stock_kind,
    stock_symbol,
)

CST = SITE_TZ


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-04-27 15:22:47 +0800", datetime(2022, 4, 27, 15, 22, 47, tzinfo=CST)),
        ("2022-04-27 15:22:47", datetime(2022, 4, 27, 15, 22, 47, tzinfo=CST)),  # Shanghai
        ("2022-04-27T15:22:47+08:00", datetime(2022, 4, 27, 15, 22, 47, tzinfo=CST)),
        # another offset: the same instant, shown at +08:00
        ("2022-04-27 07:22:47 +0000", datetime(2022, 4, 27, 15, 22, 47, tzinfo=CST)),
        ("2022-04-26T23:22:47-08:00", datetime(2022, 4, 27, 15, 22, 47, tzinfo=CST)),
        (
            "(GMT+8, Asia/Shanghai, CST) 2022-04-27 15:22:47",
            datetime(2022, 4, 27, 15, 22, 47, tzinfo=CST),
        ),
        ("2022年4月27日 15:22", datetime(2022, 4, 27, 15, 22, tzinfo=CST)),
        ("  +0800", None),  # the empty date of a broken post
        ("", None),
        (None, None),
    ],
)
def test_parse_site_time(text, expected):
    parsed = parse_site_time(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(hours=8)


def test_dateparser_fallback_reads_free_text_in_site_time():
    parsed = parse_site_time("April 27, 2022 3:22 PM")
    assert parsed == datetime(2022, 4, 27, 15, 22, tzinfo=CST)
    assert parsed.utcoffset() == timedelta(hours=8)


def test_naive_time_is_shanghai_wall_time_even_in_its_old_summer_time():
    # Shanghai kept summer time in 1986-1991: 1990-07-01 12:00 there was UTC+9.
    parsed = parse_site_time("1990-07-01 12:00:00")
    assert parsed == datetime(1990, 7, 1, 3, 0, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NW202204272361734680", "NW202204272361734680"),
        ("202204272361734680", "NW202204272361734680"),
        ("AN202204271561234567", "AN202204271561234567"),  # other prefixes kept
        ("AP202204271561234567", "AP202204271561234567"),
        ("NW2022042723617346", None),  # 16 digits: not an infoCode
        ("init", None),
        ("", None),
    ],
)
def test_normalise_info_code(value, expected):
    assert normalise_info_code(value) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2022-04-27-NW202204272361734680.md", "NW202204272361734680"),
        ("2021-12-08-202112082206672930.fe8c3e7.md", "NW202112082206672930"),
        ("-202205262391921712.md", "NW202205262391921712"),
        ("/emnews/2021/12/08/202112082206672930.html", "NW202112082206672930"),
        ("2021-12-01-init.md", None),
    ],
)
def test_info_code_from_name(name, expected):
    assert info_code_from_name(name) == expected


@pytest.mark.parametrize(
    ("url", "share", "article"),
    [
        (
            "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202204272361734680",
            "NW202204272361734680",
            None,
        ),
        (
            "http://choicewzp1.eastmoney.com/html_News/NewsShare.html?infoCode=NW202204272361734680",
            "NW202204272361734680",
            None,
        ),
        ("http://finance.eastmoney.com/a/202112082206672930.html", None, "NW202112082206672930"),
        ("http://hk.eastmoney.com/news/1535,202112082206672930.html", None, "NW202112082206672930"),
        ("http://example.com/news/1535,202112082206672930.html", None, None),
        (None, None, None),
    ],
)
def test_info_code_from_links(url, share, article):
    assert info_code_from_share_link(url) == share
    assert info_code_from_article_link(url) == article


@pytest.mark.parametrize(
    ("data_code", "href", "expected"),
    [
        ("601818|1|1", "http://quote.eastmoney.com/unify/r/1.601818", ("1", "601818")),
        ("03690|116|5", None, ("116", "03690")),
        ("NIO|106|7", None, ("106", "NIO")),
        ("K 601818|1|1", None, None),  # the K-line image repeats its anchor
        ("1,600160", None, ("1", "600160")),
        ("90,BK0493", None, ("90", "BK0493")),
        ("002353", "http://quote.eastmoney.com/unify/r/0.002353", ("0", "002353")),
        ("002353", None, None),  # a bare code without its market is not guessed
        (None, "http://quote.eastmoney.com/unify/r/0.002353", ("0", "002353")),
        (None, "http://data.eastmoney.com/bbsj/", None),  # data keyword, not a security
        (None, "http://quote.eastmoney.com/unify/r/0.399006", ("0", "399006")),  # index link
        (None, "http://quote.eastmoney.com/unify/r/1.000001", ("1", "000001")),
        ("188,XYZ1", None, ("188", "XYZ1")),  # unknown market ids are kept
    ],
)
def test_parse_stock_markup(data_code, href, expected):
    assert parse_stock_markup(data_code, href) == expected


@pytest.mark.parametrize(
    ("market", "code", "symbol", "kind"),
    [
        ("1", "601818", "601818.SH", "stock"),
        ("0", "300343", "300343.SZ", "stock"),
        ("0", "430047", "430047.BJ", "stock"),
        ("0", "832000", "832000.BJ", "stock"),
        ("0", "920001", "920001.BJ", "stock"),
        # Shanghai and Shenzhen: the kind follows the exchanges' code ranges
        ("0", "399006", "399006.SZ", "index"),  # 创业板指
        ("1", "000001", "000001.SH", "index"),  # 上证指数
        ("0", "000001", "000001.SZ", "stock"),  # 平安银行: same digits, other market
        ("1", "510300", "510300.SH", "fund"),  # an ETF
        ("0", "159915", "159915.SZ", "fund"),
        ("0", "161725", "161725.SZ", "fund"),  # a LOF
        ("1", "113050", "113050.SH", "bond"),  # convertibles
        ("0", "123107", "123107.SZ", "bond"),
        ("1", "600519", "600519.SH", "stock"),
        ("1", "688981", "688981.SH", "stock"),  # STAR Market
        ("1", "900901", "900901.SH", "stock"),  # B share
        ("0", "300750", "300750.SZ", "stock"),  # ChiNext
        ("0", "200011", "200011.SZ", "stock"),  # B share
        ("0", "002594", "002594.SZ", "stock"),
        ("0", "830799", "830799.BJ", "stock"),
        ("1", "700001", "700001.SH", "other"),  # no range covers it
        ("0", "700001", "700001.SZ", "other"),
        ("0", "399", "399.SZ", "other"),  # not a 6-digit code
        ("116", "03690", "03690.HK", "stock"),
        ("128", "00700", "00700.HK", "stock"),
        ("105", "AAPL", "AAPL.O", "stock"),
        ("106", "NIO", "NIO.N", "stock"),
        ("107", "SPY", "SPY.A", "stock"),
        ("155", "HSBA", "HSBA.L", "stock"),
        ("90", "BK0493", "BK0493", "board"),
        ("100", "HSI", "HSI.GI", "index"),
        ("8", "IF2206", "IF2206.CFE", "future"),
        ("113", "AU2206", "AU2206.SHF", "future"),
        ("188", "XYZ1", "188.XYZ1", "other"),
    ],
)
def test_symbols_and_kinds(market, code, symbol, kind):
    assert stock_symbol(market, code) == symbol
    assert stock_kind(market, code) == kind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("（文章来源：证券日报网）", "证券日报网"),
        ("(文章来源:上海证券报)", "上海证券报"),
        ("（文章来源： 中国证券报 ）", "中国证券报"),
        ("来源：新华社", "新华社"),
        ("本文不是来源行", None),
    ],
)
def test_parse_source_line(text, expected):
    assert parse_source_line(text) == expected


@pytest.mark.parametrize(
    ("tag", "outlet"),
    [
        ("证券日报网新闻", "证券日报网"),
        ("东财滚动新闻", "东财滚动"),
        ("站长消息", "站长消息"),
        ("", None),
    ],
)
def test_outlet_from_tag(tag, outlet):
    assert outlet_from_tag(tag) == outlet


def test_outlet_from_backlink():
    assert outlet_from_backlink("返回证券日报网新闻") == "证券日报网"
    assert outlet_from_backlink("返回首页") is None


def test_clean_text_trims_cjk_and_nbsp_and_collapses_runs():
    assert clean_text("\u3000 正文\u00a0 第一段\n\t第二句 \u3000") == "正文 第一段 第二句"
    assert clean_title(" &quot;股王&quot; 茅台 ") == '"股王" 茅台'
    assert clean_title("   ") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), (" Yes ", True), ("on", True), (True, True),
     ("0", False), ("", False), ("no", False), (False, False), (None, False)],
)  # fmt: skip
def test_parse_flag(value, expected):
    assert parse_flag(value) is expected
