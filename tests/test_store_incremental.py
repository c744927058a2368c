"""What an incremental crawl asks the store before fetching a post: stored, linked, rejected."""

from __future__ import annotations

from crawler.items import DOWNLOAD_FAILED
from pipelines.store import Store
from tests.conftest import make_article

CODE = "NW202204272361734680"


def test_is_linked_knows_stored_and_queued_links(db_url, pipeline_run):
    pipeline_run(db_url, [make_article()])
    store = Store(db_url)
    store.open("test")
    try:
        assert store.is_linked(CODE, "zhengquanribaowang")
        assert not store.is_linked(CODE, "emnews")
        assert not store.is_linked("NW202204272361734681", "zhengquanribaowang")
        store.add(make_article("NW202204272361734681", category="emnews"))
        assert store.is_linked("NW202204272361734681", "emnews")  # queued, not yet written
    finally:
        store.finish()


def test_was_rejected_compares_paths_and_ignores_failed_downloads(db_url):
    store = Store(db_url)
    store.open("test")
    store.reject("http://127.0.0.1:8001/emnews/2021/12/01/init.html", "missing info_code")
    store.reject("http://127.0.0.1:8001/emnews/2022/05/26/x.html", DOWNLOAD_FAILED)
    store.finish()

    later = Store(db_url)
    later.open("test")
    try:
        # Another port, the same site path: the page's verdict stands.
        assert later.was_rejected("http://127.0.0.1:9002/emnews/2021/12/01/init.html")
        assert not later.was_rejected("http://127.0.0.1:8001/emnews/2022/05/26/x.html")
        assert not later.was_rejected("http://127.0.0.1:8001/emnews/2022/05/26/y.html")
    finally:
        later.finish()
