"""The post parser against the synthetic generator's own truth, an independent oracle.

The generator knows what it wrote (every paragraph, every stock with its mentions), so
this checks the extractor on what the real corpus lacks: outlet posts, every market,
every inline markup form, tables, long bodies, quoted titles, CRLF and BOM files.
"""

from __future__ import annotations

from functools import cache

import pytest

from crawler.pages import ExtractionError
from crawler.pages.post import parse_post
from fixtures.synth import generate

FIELDS = (
    "info_code", "title", "published_at", "category", "outlet", "source", "digest",
    "paragraphs", "images", "source_url",
)  # fmt: skip
STOCK_KEYS = ("market", "code", "name", "kind", "primary", "mentions")


@cache
def posts():
    return generate(600, seed=1, broken=0.05)


def valid():
    return [p for p in posts() if not p.truth["broken"]]


@pytest.mark.parametrize("field", FIELDS)
def test_field_matches_truth(field):
    wrong = []
    for post in valid():
        article = parse_post(post.data, "file:///synthetic/" + post.filename)
        if getattr(article, field) != post.truth[field]:
            wrong.append(post.filename)
    assert not wrong, f"{field} differs in {len(wrong)} posts, e.g. {wrong[:3]}"


def test_stocks_match_truth():
    wrong = []
    for post in valid():
        article = parse_post(post.data, "file:///synthetic/" + post.filename)
        got = [{k: getattr(s, k) for k in STOCK_KEYS} for s in article.stocks]
        expected = [{k: s[k] for k in STOCK_KEYS} for s in post.truth["stocks"]]
        if got != expected:
            wrong.append(post.filename)
    assert not wrong, f"stocks differ in {len(wrong)} posts, e.g. {wrong[:3]}"


def test_every_market_and_markup_form_is_covered():
    stocks = [s for p in valid() for s in p.truth["stocks"]]
    markets = {s["market"] for s in stocks}
    assert {"0", "1", "116", "105", "106", "107", "90"} <= markets
    assert {s["kind"] for s in stocks} >= {"stock", "board", "other"}


@pytest.mark.parametrize(
    "reason",
    ["empty file", "no front matter", "invalid utf-8", "truncated front matter"],
)
def test_unreadable_files_raise(reason):
    broken = [p for p in posts() if p.truth["broken"] == reason]
    assert broken
    for post in broken:
        with pytest.raises(ExtractionError):
            parse_post(post.data, "file:///synthetic/" + post.filename)


@pytest.mark.parametrize(
    ("reason", "missing"),
    [("missing date", ["published_at"]), ("missing title and empty body", ["title_or_text"])],
)
def test_incomplete_files_say_what_is_missing(reason, missing):
    broken = [p for p in posts() if p.truth["broken"] == reason]
    assert broken
    for post in broken:
        assert parse_post(post.data, "file:///synthetic/" + post.filename).missing() == missing
