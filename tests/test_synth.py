"""The synthetic post generator: deterministic, varied, and truthful about its own markup.

``test_truth_matches_markup`` re-reads every generated body with lxml and a small
reference reading of the truth rules, so the truth cannot drift from the bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from functools import cache

import lxml.html
import pytest

from fixtures.synth import BROKEN_REASONS, OUTLETS, SynthPost, generate, market_kind, write

CST = timezone(timedelta(hours=8))
BOM = b"\xef\xbb\xbf"


@cache
def sample() -> tuple[SynthPost, ...]:
    return tuple(generate(600, seed=1))


def text_of(post: SynthPost) -> str:
    return post.data.decode("utf-8-sig").replace("\r\n", "\n")


def body_of(post: SynthPost) -> str:
    return text_of(post).split("\n---\n", 1)[1]


def normalise(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_and_truth():
    first, second = generate(200, seed=5), generate(200, seed=5)
    assert [p.filename for p in first] == [p.filename for p in second]
    assert [p.data for p in first] == [p.data for p in second]
    assert [p.truth for p in first] == [p.truth for p in second]


def test_other_seed_other_posts():
    assert [p.data for p in generate(50, seed=5)] != [p.data for p in generate(50, seed=6)]


def test_start_sets_the_clock():
    start = datetime(2023, 1, 2, 9, 30, tzinfo=CST)
    posts = generate(20, seed=2, start=start)
    times = [p.truth["published_at"] for p in posts]
    assert times == sorted(times)
    assert start < times[0] < start + timedelta(hours=1)
    assert all(p.filename.startswith("2023-01-02-") for p in posts)


# --------------------------------------------------------------- identity, names


def test_info_codes_unique_and_dated():
    posts = sample()
    codes = [p.truth["info_code"] for p in posts]
    assert len(set(codes)) == len(codes)
    assert len({p.filename for p in posts}) == len(posts)
    for post in posts:
        code = post.truth["info_code"]
        assert re.fullmatch(r"NW\d{18}", code)
        assert code[2:10] == post.truth["published_at"].strftime("%Y%m%d")
        assert post.truth["published_at"].utcoffset() == timedelta(hours=8)


def test_file_names_follow_the_generator():
    for post in sample():
        truth = post.truth
        day = truth["published_at"].strftime("%Y-%m-%d")
        if truth["category"] == "emnews":
            assert post.filename == f"{day}-{truth['info_code'][2:]}.md"
        else:
            assert post.filename == f"{day}-{truth['info_code']}.md"


def test_front_matter_shape():
    for post in sample():
        lines = text_of(post).split("\n")
        truth = post.truth
        assert lines[0] == "---"
        assert lines[1] == "layout: post"
        assert lines[2] == f'title: "{truth["title"]}"'
        stamp = truth["published_at"].strftime("%Y-%m-%d %H:%M:%S")
        assert lines[3] in (f"date: {stamp}", f"date: {stamp} +0800")
        assert lines[4] == f"categories: {truth['category']}"
        assert lines[5] == f"tags: {truth['outlet']}新闻"
        assert lines[6] == "---"


def test_mostly_outlet_posts_over_many_categories():
    posts = sample()
    categories = Counter(p.truth["category"] for p in posts)
    outlet_posts = len(posts) - categories["emnews"]
    assert outlet_posts > len(posts) / 2
    assert categories["emnews"] > 0
    assert len(set(categories) - {"emnews"}) >= 24
    for slug in ("21shijijingjibaodao 21caijingAPP", "anxinguojizhengquan(xianggang)", "TechWeb"):
        assert categories[slug] > 0, slug


def test_categories_argument():
    posts = generate(200, seed=3, categories=40)
    slugs = {p.truth["category"] for p in posts} - {"emnews"}
    assert len(slugs) == 40
    assert {slug for _, slug in OUTLETS} <= slugs
    assert len({p.truth["category"] for p in generate(80, seed=3, categories=3)}) == 4


def test_links_by_format():
    for post in sample():
        text, truth = text_of(post), post.truth
        assert f"\n\n<{truth['source_url']}>" in text
        if truth["category"] == "emnews":
            assert re.fullmatch(
                r"http://(finance|hk|stock|futures|forex|mss)\.eastmoney\.com/"
                r"(news/\d+,\d{18}|a/\d{18})\.html",
                truth["source_url"],
            )
            assert truth["source_url"].endswith(f"{truth['info_code'][2:]}.html")
            assert text.split("---\n", 2)[2].startswith(f"> {truth['digest']}\n\n")
        else:
            assert truth["source_url"].endswith(f"NewsShare.html?infoCode={truth['info_code']}")
            assert truth["digest"] is None


# ----------------------------------------------------------------------- traits


TRAITS = {
    "K-line market 1": lambda p, t: 'data-code="' in t and "|1|1" in t and "EmImageRemark" in t,
    "K-line market 0": lambda p, t: re.search(r'data-code="\w+\|0\|\d" data-code2', t),
    "K-line market 116": lambda p, t: re.search(r'data-code="\w+\|116\|\d" data-code2', t),
    "K-line market 105": lambda p, t: re.search(r'data-code="\w+\|105\|\d" data-code2', t),
    "K-line market 106": lambda p, t: re.search(r'data-code="\w+\|106\|\d" data-code2', t),
    "K-line market 107": lambda p, t: re.search(r'data-code="\w+\|107\|\d" data-code2', t),
    "hidden paragraph": lambda p, t: '<p style="display:none;height:1px;overflow:hidden;">' in t,
    "keytip stock span": lambda p, t: re.search(
        r'<span id="stock_\d+\.\w+"><a href="[^"]+" class="keytip" data-code="\d+,\w+">', t
    ),
    "em_stock_key_common span": lambda p, t: '<span web="1" href="' in t,
    "board span": lambda p, t: re.search(r'<span id="bk_90\.BK\d{4}"><a [^>]*class="keytip"', t),
    "data keyword span": lambda p, t: (
        '<span id="Info.3321"><a href="http://data.eastmoney.com/bbsj/" class="infokey">' in t
    ),
    "bare data-code anchor": lambda p, t: re.search(
        r'<a class="em_stock_key_common" href="http://quote\.eastmoney\.com/unify/r/0\.(\d{6})" '
        r'data-code="\1">',
        t,
    ),
    "unknown market id": lambda p, t: any(s["market"] == "188" for s in p.truth["stocks"]),
    "index": lambda p, t: any(s["kind"] == "index" for s in p.truth["stocks"]),
    "future": lambda p, t: any(s["kind"] == "future" for s in p.truth["stocks"]),
    "security mentioned several times": lambda p, t: any(
        s["mentions"] >= 3 and not s["primary"] for s in p.truth["stocks"]
    ),
    "board in the source line": lambda p, t: re.search(
        r'<p class="em_media">（文章来源：[^<]*<span id="bk_90\.', t
    ),
    "image with caption": lambda p, t: re.search(
        r'<center><img src="https://dfscdn\.dfcfw\.com/download/[^"]+"[^>]*/></center>\n? ?'
        r'<p style="text-align:center;">',
        t,
    ),
    "strong subheading": lambda p, t: "<p><strong>" in t,
    "table": lambda p, t: "<table" in t and "<tr><td>" in t,
    "long body": lambda p, t: len(p.truth["paragraphs"]) >= 25,
    "ASCII quote in title": lambda p, t: '"' in p.truth["title"],
    "CRLF": lambda p, t: b"\r\n" in p.data,
    "UTF-8 BOM": lambda p, t: p.data.startswith(BOM),
    "full-width space": lambda p, t: "\u3000" in t,
    "nbsp inside a paragraph": lambda p, t: "。&nbsp;" in t,
    "entity-escaped text": lambda p, t: "&lt;" in t or "&amp;" in t,
    "date with offset": lambda p, t: re.search(r"^date: [\d-]+ [\d:]+ \+0800$", t, re.M),
    "date without offset": lambda p, t: re.search(r"^date: [\d-]+ [\d:]+$", t, re.M),
    "emnews digest": lambda p, t: "\n> " in t and p.truth["digest"],
    "NewsShare link": lambda p, t: "NewsShare.html?infoCode=NW" in t,
    "multi-line body": lambda p, t: "</p>\n <p>" in t,
    "one-line body": lambda p, t: "</p><p>" in t and "</p>\n <p>" not in t,
}


def test_every_trait_occurs():
    found = Counter()
    for post in sample():
        text = text_of(post)
        for name, check in TRAITS.items():
            if check(post, text):
                found[name] += 1
    missing = [name for name in TRAITS if not found[name]]
    assert not missing, f"traits never generated: {missing}"


# ------------------------------------------------------------------------ truth


def reference_reading(post: SynthPost) -> dict:
    """The truth rules of fixtures/synth.py, applied to the file's bytes with lxml."""
    digest, html_blocks = None, []
    for block in body_of(post).split("\n\n"):
        if block.startswith("> "):
            digest = normalise(block[2:])
        elif block.startswith("<p") or block.startswith("<!--"):
            html_blocks.append(block)
        else:
            assert block.startswith("<http") or block.startswith("[返回"), block
    root = lxml.html.fragment_fromstring("".join(html_blocks), create_parent="div")
    paragraphs, images, source = [], [], None
    stocks: dict[tuple[str, str], dict] = {}

    def count(market, code, name, primary):
        entry = stocks.setdefault(
            (market, code),
            {"market": market, "code": code, "name": None, "kind": market_kind(market, code),
             "primary": False, "mentions": 0},
        )  # fmt: skip
        entry["mentions"] += 1
        entry["primary"] = entry["primary"] or primary
        if name and entry["name"] is None:
            entry["name"] = name

    for block in root:
        if not isinstance(block.tag, str):
            continue  # the EM_StockImg comments
        if block.get("class") == "em_media":
            source = normalise(block.text_content()).removeprefix("（文章来源：").removesuffix("）")
            continue
        if "display:none" in (block.get("style") or ""):
            continue
        for element in block.iter():
            if not isinstance(element.tag, str):
                continue
            classes = element.get("class") or ""
            code = element.get("data-code") or ""
            if classes == "EmImageRemark":
                stock_code, market, _ = code.split("|")
                count(market, stock_code, None, True)
            elif classes in ("keytip", "em_stock_key_common"):
                if "," in code:
                    market, stock_code = code.split(",")
                else:
                    market = element.get("href").rsplit("/", 1)[1].split(".")[0]
                    stock_code = code
                count(market, stock_code, normalise(element.text_content()), False)
            elif element.tag == "img" and "webquoteklinepic" not in element.get("src"):
                images.append(element.get("src"))
        if block.tag == "table":
            for row in block.iter("tr"):
                paragraphs.append(normalise(" ".join(cell.text_content() for cell in row)))
            continue
        text = normalise(block.text_content())
        if text:
            paragraphs.append(text)
    return {
        "digest": digest,
        "paragraphs": paragraphs,
        "images": images,
        "source": source,
        "stocks": list(stocks.values()),
    }


@pytest.mark.parametrize("field", ["digest", "paragraphs", "images", "source", "stocks"])
def test_truth_matches_markup(field):
    for post in sample():
        expected = reference_reading(post)[field]
        assert post.truth[field] == expected, (post.filename, field)


def test_truth_rules_hold():
    for post in sample():
        truth = post.truth
        assert truth["broken"] is None
        assert truth["paragraphs"]
        for paragraph in truth["paragraphs"]:
            assert paragraph == normalise(paragraph) and paragraph
        if truth["category"] == "emnews":
            assert truth["outlet"] == "东财滚动"
        else:
            assert dict(OUTLETS)[truth["outlet"]] == truth["category"]
        keys = [(s["market"], s["code"]) for s in truth["stocks"]]
        assert len(keys) == len(set(keys))
        for stock in truth["stocks"]:
            assert stock["kind"] == market_kind(stock["market"], stock["code"])
            assert stock["mentions"] >= 1
            assert stock["name"] is not None or stock["primary"]


@pytest.mark.parametrize(
    ("market", "code", "kind"),
    [
        ("116", "00700", "stock"), ("128", "01530", "stock"), ("105", "AAPL", "stock"),
        ("106", "NIO", "stock"), ("107", "SPY", "stock"), ("155", "HSBA", "stock"),
        ("90", "BK0493", "board"), ("100", "HSI", "index"), ("8", "IF2206", "future"),
        ("113", "au2212", "future"), ("114", "m2209", "future"), ("115", "SR209", "future"),
        ("142", "sc2207", "future"), ("225", "si2308", "future"), ("188", "U00150", "other"),
        ("118", "AU9999", "other"),
        # Shanghai (1) and Shenzhen (0): the code range decides
        ("1", "600519", "stock"), ("1", "688981", "stock"), ("1", "900901", "stock"),
        ("1", "000001", "index"), ("1", "510300", "fund"), ("1", "113050", "bond"),
        ("1", "700001", "other"),
        ("0", "000001", "stock"), ("0", "300750", "stock"), ("0", "200011", "stock"),
        ("0", "399006", "index"), ("0", "159915", "fund"), ("0", "161725", "fund"),
        ("0", "123107", "bond"), ("0", "430047", "stock"), ("0", "832566", "stock"),
        ("0", "920001", "stock"), ("0", "700001", "other"), ("0", "39900", "other"),
    ],
)  # fmt: skip
def test_market_kind(market, code, kind):
    assert market_kind(market, code) == kind


# ----------------------------------------------------------------------- broken


def test_broken_fraction_and_reasons():
    posts = generate(300, seed=3, broken=0.1)
    broken = [p for p in posts if p.truth["broken"]]
    assert len(broken) == 30
    assert Counter(p.truth["broken"] for p in broken) == dict.fromkeys(BROKEN_REASONS, 5)
    for post in broken:
        reason, data = post.truth["broken"], post.data.removeprefix(BOM)
        if reason == "empty file":
            assert data == b""
        elif reason == "no front matter":
            assert b"---" not in data and b"title:" not in data
        elif reason == "invalid utf-8":
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")
        elif reason == "missing date":
            assert b"\ndate:  +0800" in data
        elif reason == "missing title and empty body":
            assert b'\ntitle: ""' in data
            assert data.endswith((b"\n---\n", b"\r\n---\r\n"))
        elif reason == "truncated front matter":
            assert data.startswith((b"---\n", b"---\r\n"))
            assert data.count(b"---") == 1


def test_no_broken_files_by_default():
    assert not any(p.truth["broken"] for p in sample())


def test_duplicates_republish_one_article_under_two_categories():
    posts = generate(300, seed=4, duplicates=0.05)
    by_code: dict[str, list[SynthPost]] = {}
    for post in posts:
        by_code.setdefault(post.truth["info_code"], []).append(post)
    pairs = [group for group in by_code.values() if len(group) > 1]
    assert len(pairs) == 15
    same = ("title", "published_at", "paragraphs", "stocks", "images", "source")
    for first, second in pairs:
        assert {first.truth["category"] == "emnews", second.truth["category"] == "emnews"} == {
            True,
            False,
        }
        for key in same:
            assert first.truth[key] == second.truth[key], key
        assert first.filename != second.filename


def test_write(tmp_path):
    posts = generate(12, seed=9, broken=0.5)
    paths = write(posts, tmp_path / "posts")
    assert [p.name for p in paths] == [p.filename for p in posts]
    assert [p.read_bytes() for p in paths] == [p.data for p in posts]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate(10, broken=1.5)
    with pytest.raises(ValueError):
        generate(10, categories=0)
