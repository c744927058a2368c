"""Progress a person can watch during a long run: one line every few seconds, a summary.

On a terminal the line is rewritten in place (``\\r``) and cleared before any log record,
so the two never mix; otherwise (a log file, cron, CI) it is an INFO log line. Counts come
from the crawl's stats (the ``finews/…`` keys the pipelines and spiders increment), the
total from ``finews/files_total`` where the spider knows it (the archive spider does).
Enabled per spider (``EXTENSIONS``); ``FINEWS_PROGRESS_INTERVAL`` sets the seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
RATE_WINDOW = 10.0  # seconds of history behind the rate, so the ETA follows changes
_OUTCOMES = ("stored", "updated", "unchanged", "duplicates", "rejected", "skipped")


@dataclass(frozen=True)
class Snapshot:
    """The counts at one moment of a run."""

    seen: int
    total: int | None
    counts: dict[str, int]
    skipped_by: dict[str, int]

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> Snapshot:
        counts = {name: int(stats.get(f"finews/{name}", 0) or 0) for name in _OUTCOMES}
        prefix = "finews/skipped/"
        skipped_by = {
            key[len(prefix) :]: int(value)
            for key, value in sorted(stats.items())
            if key.startswith(prefix) and value
        }
        total = stats.get("finews/files_total")
        return cls(int(stats.get("finews/seen", 0) or 0), total, counts, skipped_by)


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(snap: Snapshot, rate: float | None) -> str:
    """``files 1,234/100,000 (1.2%) | stored 1,200 … | 1,650 files/s | ETA 1:00``"""
    c = snap.counts
    if snap.total:
        head = f"files {snap.seen:,}/{snap.total:,} ({100 * snap.seen / snap.total:.1f}%)"
    else:
        head = f"seen {snap.seen:,}"
    parts = [
        head,
        f"stored {c['stored']:,} updated {c['updated']:,} unchanged {c['unchanged']:,}",
        f"rejects {c['rejected']:,}",
        f"skipped {c['skipped']:,}",
    ]
    if c["duplicates"]:
        parts.insert(2, f"duplicates {c['duplicates']:,}")
    if rate is not None:
        parts.append(f"{rate:,.0f}/s")
        if snap.total and rate > 0:
            parts.append(f"ETA {duration((snap.total - snap.seen) / rate)}")
    return " | ".join(parts)


def summary_line(snap: Snapshot, elapsed: float, reason: str) -> str:
    c = snap.counts
    outcomes = ", ".join(f"{c[name]:,} {name}" for name in _OUTCOMES)
    if snap.skipped_by:
        detail = ", ".join(f"{reason_} {n:,}" for reason_, n in snap.skipped_by.items())
        outcomes += f" ({detail})"
    rate = snap.seen / elapsed if elapsed > 0 else 0.0
    total = f" of {snap.total:,}" if snap.total is not None else ""
    return (
        f"Summary ({reason}) after {duration(elapsed)}: {snap.seen:,}{total} seen = "
        f"{outcomes}; {rate:,.0f}/s"
    )


class _ClearLine(logging.Filter):
    """Clears the progress line before a log record is written under it."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True


class Progress:
    """Every ``interval`` seconds: seen/total, outcomes, rate and ETA; a summary at close."""

    def __init__(self, crawler: Crawler, interval: float, stream: TextIO | None = None) -> None:
        self.stats = crawler.stats
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and not (
            crawler.settings.get("LOG_FILE")
        )
        self.started = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque()
        self.showing = False
        self._timer: Any = None
        self._filter = _ClearLine(self)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Progress:
        interval = crawler.settings.getfloat("FINEWS_PROGRESS_INTERVAL", DEFAULT_INTERVAL)
        if interval <= 0:
            raise NotConfigured
        progress = cls(crawler, interval)
        crawler.signals.connect(progress.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(progress.spider_closed, signal=signals.spider_closed)
        return progress

    def spider_opened(self, spider: Any) -> None:
        self.started = time.monotonic()
        self.samples.append((self.started, 0))
        if self.tty:
            for handler in logging.root.handlers:
                handler.addFilter(self._filter)
        self._timer = create_looping_call(self.tick)
        self._timer.start(self.interval, now=False)

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self.clear()
        for handler in logging.root.handlers:
            handler.removeFilter(self._filter)
        snap = Snapshot.from_stats(self.stats.get_stats())
        logger.info(summary_line(snap, time.monotonic() - self.started, reason))

    def tick(self) -> None:
        snap = Snapshot.from_stats(self.stats.get_stats())
        line = progress_line(snap, self.rate(snap.seen))
        if self.tty:
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()
            self.showing = True
        else:
            logger.info(line)

    def rate(self, seen: int) -> float | None:
        """Items per second over the last RATE_WINDOW seconds (None before two samples)."""
        now = time.monotonic()
        self.samples.append((now, seen))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        then, before = self.samples[0]
        if now <= then:
            return None
        return (seen - before) / (now - then)

    def clear(self) -> None:
        if self.showing:
            self.showing = False
            self.stream.write("\r\x1b[K")
            self.stream.flush()
