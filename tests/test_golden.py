"""Golden tests: every corpus post file and its rendered page against the expected JSON.

Each (file, field) pair is its own test, so a broken selector fails by field name:
``test_post_field[2022-04-27-NW202204272361734680.md-title]``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from crawler.pages.page import parse_page
from crawler.pages.post import parse_post
from fixtures.mirror import render_post
from tests.golden import CORPUS, golden_fields, load_expected

POSTS = sorted(CORPUS.glob("*.md"))
FIELDS = sorted(golden_fields(parse_post(POSTS[0].read_bytes(), POSTS[0].as_uri())))


@cache
def post_item(name: str) -> dict:
    path = CORPUS / name
    return golden_fields(parse_post(path.read_bytes(), path.as_uri()))


@cache
def rendered(name: str):
    path = CORPUS / name
    return render_post(path.read_text(encoding="utf-8-sig"), name)


@cache
def page_item(name: str) -> dict:
    page = rendered(name)
    return golden_fields(
        parse_page(page.html.encode("utf-8"), "https://finews.withounder.com" + page.path)
    )


def test_corpus_is_complete():
    assert len(POSTS) == 82
    assert all(path.with_suffix(".json").exists() for path in POSTS)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.name)
def test_post_field(post: Path, field: str):
    assert post_item(post.name)[field] == load_expected(post)[field], field


PAGES = [post for post in POSTS if rendered(post.name) is not None]


def test_jekyll_skips_only_the_broken_front_matter():
    skipped = sorted(post.name for post in POSTS if rendered(post.name) is None)
    assert skipped == [
        "-202205262391921712.md",  # empty date, no date in the file name
        "2021-12-08-202112082206672930.cfbae48.md",  # blank line before the front matter
        "2021-12-08-202112082206703990.md",
        "2021-12-08-202112082206727327.cfbae48.md",
        "2021-12-08-202112082206928461.cfbae48.md",
    ]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("post", PAGES, ids=lambda p: p.name.replace(".md", ".html"))
def test_page_field(post: Path, field: str):
    assert page_item(post.name)[field] == load_expected(post)[field], field
