"""Back-off on 429/503: the slot's delay grows before RetryMiddleware retries."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from scrapy import Request
from scrapy.core.downloader import Slot
from scrapy.http import Response
from scrapy.utils.test import get_crawler

from crawler import settings as project_settings
from crawler.middlewares import BackoffMiddleware, backed_off_delay, retry_after_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"5", 5.0), ("2.5", 2.5), (None, 0.0), (b"", 0.0), (b"-3", 0.0),
     (b"Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_seconds(value, seconds):
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize(
    ("current", "retry_after", "expected"),
    [
        (0.0, 0.0, 1.0),  # from nothing to the starting delay
        (1.0, 0.0, 2.0),  # doubles
        (2.0, 10.0, 10.0),  # the server asks for more
        (40.0, 0.0, 60.0),  # capped
        (5.0, 600.0, 60.0),  # a huge Retry-After is capped too
    ],
)
def test_backed_off_delay(current, retry_after, expected):
    assert backed_off_delay(current, retry_after, start=1.0, cap=60.0) == expected


def middleware(slot: Slot) -> tuple[BackoffMiddleware, object]:
    crawler = get_crawler(settings_dict={"FINEWS_BACKOFF_DELAY": 1.0})
    crawler.engine = SimpleNamespace(downloader=SimpleNamespace(slots={"127.0.0.1": slot}))
    return BackoffMiddleware.from_crawler(crawler), crawler


@pytest.mark.parametrize(("status", "delay"), [(429, 3.0), (503, 3.0), (500, 0.2), (200, 0.2)])
def test_only_overload_answers_slow_the_slot(status, delay):
    slot = Slot(concurrency=8, delay=0.2, jitter=0)
    mw, crawler = middleware(slot)
    request = Request("http://127.0.0.1/x", meta={"download_slot": "127.0.0.1"})
    response = Response(request.url, status=status, headers={"Retry-After": "3"})
    assert mw.process_response(request, response) is response
    assert slot.delay == delay
    assert crawler.stats.get_value("finews/backoff") == (1 if status in (429, 503) else None)


def test_the_middleware_sees_responses_before_retry():
    # Downloader middlewares see responses from the highest number down: Retry is 550.
    assert project_settings.DOWNLOADER_MIDDLEWARES["crawler.middlewares.BackoffMiddleware"] > 550
    assert {429, 503} <= set(project_settings.RETRY_HTTP_CODES)
