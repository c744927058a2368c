"""The incremental skip: what earlier runs left (the store), what a post request meets
(``crawler.middlewares.SkipKnownPosts``)."""

from __future__ import annotations

import pytest
from scrapy import Request
from scrapy.utils.test import get_crawler
from sqlalchemy import update

from crawler.items import DOWNLOAD_FAILED
from crawler.middlewares import KnownPost, SkipKnownPosts
from crawler.pages.site import PostLink
from crawler.spiders.finews import FinewsSpider
from pipelines.store import Store
from schema.models import ArticleCategory
from tests.conftest import make_article

CODE = "NW202204272361734680"
OTHER = "NW202204272361734681"
SITE = "http://127.0.0.1:8001"


def test_read_copies_are_the_links_whose_content_is_recorded(db_url, engine, pipeline_run):
    pipeline_run(db_url, [make_article(), make_article(OTHER)])
    with engine.begin() as conn:  # a link from before copies were recorded: never read
        conn.execute(
            update(ArticleCategory)
            .where(ArticleCategory.info_code == OTHER)
            .values(content_hash=None)
        )
    store = Store(db_url)
    store.open("test")
    try:
        assert store.read_copies() == {(CODE, "zhengquanribaowang")}
        assert store.stored_codes() == {CODE, OTHER}
    finally:
        store.finish()


def test_rejected_paths_compare_paths_and_leave_out_failed_downloads(db_url):
    store = Store(db_url)
    store.open("test")
    store.reject(f"{SITE}/emnews/2021/12/01/init.html", "missing info_code")
    store.reject(f"{SITE}/emnews/2022/05/26/x.html", DOWNLOAD_FAILED)
    store.finish()

    later = Store(db_url)
    later.open("test")
    try:
        assert later.rejected_paths() == {"/emnews/2021/12/01/init.html"}
    finally:
        later.finish()


def post_request(code: str, category: str, name: str | None = None) -> Request:
    url = f"http://127.0.0.1:9002/{category}/2022/04/27/{name or code}.html"
    return Request(url, meta={"finews_post": PostLink(url, category, code)})


@pytest.fixture
def skip(db_url, pipeline_run):
    """A SkipKnownPosts over a database holding CODE (under zhengquanribaowang) and a page
    rejected for its content, with the crawler's store open."""
    pipeline_run(db_url, [make_article()])
    first = Store(db_url)
    first.open("earlier")
    first.reject(f"{SITE}/emnews/2022/04/27/broken.html", "missing published_at")
    first.reject(f"{SITE}/emnews/2022/04/27/lost.html", DOWNLOAD_FAILED)
    first.finish()

    crawler = get_crawler(FinewsSpider, {"FINEWS_DATABASE_URL": db_url})
    crawler.spider = FinewsSpider.from_crawler(crawler, base_url="http://127.0.0.1:9002/")
    store = Store.for_crawler(crawler)
    store.open("test")
    middleware = SkipKnownPosts.from_crawler(crawler)
    yield middleware, store, crawler
    store.finish()


def test_a_stored_copy_is_not_downloaded_another_copy_is(skip):
    middleware, _, crawler = skip
    with pytest.raises(KnownPost):
        middleware.process_request(post_request(CODE, "zhengquanribaowang"))
    # The same article under emnews: a copy not read yet, which the merge needs.
    assert middleware.process_request(post_request(CODE, "emnews", name=CODE[2:])) is None
    stats = crawler.stats.get_stats()
    assert stats["finews/skipped"] == 1
    assert stats["finews/skipped/stored"] == 1


def test_a_page_rejected_for_its_content_is_skipped_a_failed_download_is_not(skip):
    middleware, _, crawler = skip
    with pytest.raises(KnownPost):
        middleware.process_request(post_request(None, "emnews", name="broken"))
    assert middleware.process_request(post_request(None, "emnews", name="lost")) is None
    assert middleware.process_request(post_request(OTHER, "emnews")) is None
    assert crawler.stats.get_value("finews/skipped/rejected") == 1


def test_a_copy_scraped_in_this_run_is_not_downloaded_again(skip):
    middleware, store, _ = skip
    assert middleware.process_request(post_request(OTHER, "emnews")) is None
    article = make_article(OTHER, category="emnews")
    store.add(article)
    middleware.item_scraped(article)
    with pytest.raises(KnownPost):  # the same copy under another URL
        middleware.process_request(post_request(OTHER, "emnews", name="other-copy"))
    assert middleware.process_request(post_request(OTHER, "zhengquanribaowang")) is None


def test_refresh_downloads_everything(skip):
    middleware, _, crawler = skip
    crawler.spider.refresh = True
    assert middleware.process_request(post_request(CODE, "zhengquanribaowang")) is None
    assert middleware.process_request(post_request(None, "emnews", name="broken")) is None


def test_other_requests_pass(skip):
    middleware, _, _ = skip
    assert middleware.process_request(Request(f"{SITE}/category/emnews.html")) is None
