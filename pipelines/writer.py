"""Where the store's batches are written: in the crawl process, or in a writer process.

``pipelines.store.Store`` collects articles, links and file rows into ``Batch``es; a
writer writes each one in one transaction (``pipelines.upsert.write_batch``) and answers
with a ``Report``: what the batch did, and what it could not store. Two writers share
``BatchWriter``, the code that writes:

- ``LocalWriter`` writes in the calling process, at once (tests, one-core machines,
  ``FINEWS_STORE_WRITER = False``);
- ``ProcessWriter`` hands batches to a writer process and goes on. Writing a batch costs
  the crawl process about 0.1 ms a page, a tenth of its whole budget on this machine kind
  (shared/PERF.md): in a second process, that time overlaps the crawl instead.

The process writer keeps the store's guarantees:

- **Order.** One process writes the batches in the order they were submitted, so a later
  batch sees everything an earlier one wrote (a revision, a link to an earlier article).
- **Nothing silently lost.** The crawl process keeps each batch until its report comes
  back. ``drain()`` waits for every report (the store calls it before closing the run's
  ledger row). If the writer process dies, the batches it had not reported are written
  in the crawl process, and so is everything after. A batch it wrote just before dying
  is then written twice, which the upsert makes harmless (it counts as unchanged).
- **Bounded memory.** At most ``IN_FLIGHT`` batches wait unreported; the next submit
  waits for the writer, so a slow database slows the crawl instead of filling memory.
- **Failures as before.** A batch the database refuses is retried article by article in
  the writer, and what still fails comes back as rejects to record. An unexpected error
  (a bug) comes back as text: the store logs it, rejects the batch's articles and marks
  the run failed.

The writer process is a new interpreter (``crawler.childproc``) that talks over its
stdin and stdout. It ignores Ctrl-C (the crawl process decides when to stop) and exits
when its stdin closes, after writing what it was given. It reads stdin in a thread, so
the crawl process's sends never wait while a batch is being written.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import queue
import select
import subprocess
import threading
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from crawler.childproc import NO_SCRAPY, child_streams, frame, read_frame, start, write_all
from crawler.items import Article
from pipelines import ledger, sources
from pipelines.upsert import Link, Outcome, write_batch
from schema.db import make_engine
from schema.types import BEIJING

logger = logging.getLogger(__name__)

IN_FLIGHT = 4  # batches handed to the writer process and not yet reported
EXCERPT_CHARS = 300
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def now() -> datetime:
    return datetime.now(BEIJING)


def excerpt_of(article: Article) -> str | None:
    """A few hundred characters a person can recognise the article by."""
    for text in (article.title, article.digest, *article.paragraphs[:1], article.body_html):
        if text and text.strip():
            return text.strip()[:EXCERPT_CHARS]
    return None


def describe_error(exc: BaseException) -> str:
    """The database's own message, first line, without the SQL and its parameters."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines() or [""]
    return f"{type(original).__name__}: {lines[0]}"


@dataclass
class Batch:
    """One transaction's worth of queued writes."""

    seq: int
    run_id: int | None
    articles: list[Article]
    links: list[Link]
    files: list[dict[str, Any]]  # source_files rows that ride with these articles
    counts: dict[str, int] | None = None  # the run's counts so far, for its ledger row


@dataclass
class Reject:
    """Something a writer could not store, for the store to record in ``rejects``."""

    url: str | None
    reason: str
    detail: str | None
    excerpt: str | None
    info_code: str | None


@dataclass
class Report:
    """What a batch did."""

    seq: int
    outcomes: list[Outcome] = field(default_factory=list)
    failed: str | None = None  # the batch was refused as a whole (then retried one by one)
    rejects: list[Reject] = field(default_factory=list)
    reject_files: list[dict[str, Any]] = field(default_factory=list)  # recorded with rejects
    error: str | None = None  # an unexpected error: nothing of the batch was written


class BatchWriter:
    """Writes batches to one database; remembers the categories it has written."""

    def __init__(self, url: str | URL) -> None:
        self.url = url
        self.engine: Engine | None = None
        self.categories: dict[str, str | None] = {}  # slug -> outlet, committed

    def write(self, batch: Batch) -> Report:
        """One transaction; if the database refuses it, one per article and per link."""
        report = Report(batch.seq)
        try:
            report.outcomes.append(self._write(batch, batch.articles, batch.links, batch.files))
            return report
        except SQLAlchemyError as exc:
            report.failed = describe_error(exc)
        for article in batch.articles:
            try:
                report.outcomes.append(self._write(batch, [article], []))
            except SQLAlchemyError as exc:
                report.rejects.append(
                    Reject(article.url or None, "database error", describe_error(exc),
                           excerpt_of(article), article.info_code)
                )  # fmt: skip
        for link in batch.links:
            try:
                report.outcomes.append(self._write(batch, [], [link]))
            except SQLAlchemyError as exc:
                report.rejects.append(
                    Reject(link.url, "database error", describe_error(exc), None, link.info_code)
                )
        # Recorded after the retries, with the rejects some of them became.
        report.reject_files = batch.files
        return report

    def _write(
        self,
        batch: Batch,
        articles: list[Article],
        links: list[Link],
        files: list[dict[str, Any]] | None = None,
    ) -> Outcome:
        if self.engine is None:
            self.engine = make_engine(self.url)
        with self.engine.begin() as conn:
            outcome = write_batch(
                conn,
                articles,
                links,
                run_id=batch.run_id,
                now=now(),
                known_categories=self.categories,
            )
            sources.write(conn, files or [], run_id=batch.run_id, now=now())
            if batch.run_id is not None and batch.counts is not None:
                ledger.record_counts(conn, batch.run_id, batch.counts)
        # Only once committed: a rolled-back category must be written again.
        for slug, outlet in outcome.categories.items():
            self.categories[slug] = outlet or self.categories.get(slug)
        return outcome

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


class LocalWriter:
    """Writes each batch when it is submitted, in this process."""

    def __init__(self, url: str | URL) -> None:
        self.writer = BatchWriter(url)
        self._done: list[Report] = []

    def submit(self, batch: Batch) -> None:
        self._done.append(self.writer.write(batch))

    def ready(self) -> list[Report]:
        done, self._done = self._done, []
        return done

    def drain(self) -> list[Report]:
        return self.ready()

    def close(self) -> None:
        self.writer.close()


class ProcessWriter:
    """Hands batches to a writer process; ``ready()`` and ``drain()`` give their reports."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.process: subprocess.Popen[bytes] | None = start(_BOOT)
        self.sent: deque[Batch] = deque()  # in pipe order, until reported
        self.received: list[Report] = []  # reported while submit waited for room
        self.local: LocalWriter | None = None  # once the process is gone
        self.fell_back = False
        self._send(url.render_as_string(hide_password=False))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def submit(self, batch: Batch) -> None:
        while self.process is not None and len(self.sent) >= IN_FLIGHT:
            self.received += self._receive()
        if self.process is None:
            self._local().submit(batch)
            return
        self.sent.append(batch)
        self._send(batch)

    def ready(self) -> list[Report]:
        reports, self.received = self.received, []
        while self.process is not None and self.sent and self._readable():
            reports += self._receive()
        return reports + (self.local.ready() if self.local else [])

    def drain(self) -> list[Report]:
        reports, self.received = self.received, []
        while self.process is not None and self.sent:
            reports += self._receive()
        return reports + (self.local.drain() if self.local else [])

    def close(self) -> None:
        """Stop the writer process once it has written what it was given."""
        process, self.process = self.process, None
        if process is not None:
            assert process.stdin and process.stdout
            process.stdin.close()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                logger.warning("The writer process did not stop; killing it")
                process.kill()
                process.wait(timeout=5)
            process.stdout.close()
        if self.local is not None:
            self.local.close()

    # -- the pipes --------------------------------------------------------------------------

    def _send(self, message: Any) -> None:
        assert self.process and self.process.stdin
        payload = pickle.dumps(message, protocol=_PROTOCOL)
        try:
            write_all(self.process.stdin, frame(payload))
        except OSError:
            self._lost("its pipe broke")

    def _readable(self) -> bool:
        assert self.process and self.process.stdout
        readable, _, _ = select.select([self.process.stdout], [], [], 0)
        return bool(readable)

    def _receive(self) -> list[Report]:
        """The next report, waiting for it."""
        assert self.process and self.process.stdout
        try:
            report: Report = pickle.loads(read_frame(self.process.stdout))
        except (EOFError, OSError):
            self._lost("it exited" if self.process.poll() is not None else "its pipe broke")
            return []
        batch = self.sent.popleft()
        assert batch.seq == report.seq, "reports come back in the order batches went"
        return [report]

    def _lost(self, why: str) -> None:
        """The writer process is gone: what it had not reported is written here."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self.fell_back = True
        logger.warning(
            "The writer process stopped (%s): writing its %d unreported batches, and every "
            "later one, in the crawl process",
            why,
            len(self.sent),
        )
        local = self._local()
        while self.sent:
            local.submit(self.sent.popleft())

    def _local(self) -> LocalWriter:
        if self.local is None:
            self.local = LocalWriter(self.url)
        return self.local


_BOOT = NO_SCRAPY + "import pipelines.writer as w; w.main()"  # see crawler.childproc


def main() -> None:
    """The writer process: write each batch read on stdin, in order; report on stdout."""
    source, reports = child_streams()
    logging.basicConfig(level=logging.WARNING, format="finews-writer %(levelname)s: %(message)s")
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def read() -> None:  # keeps the pipe empty, so the crawl process never waits on it
        while True:
            try:
                inbox.put(read_frame(source))
            except (EOFError, OSError):
                inbox.put(None)
                return

    try:
        url = pickle.loads(read_frame(source))
    except (EOFError, OSError):
        return
    threading.Thread(target=read, name="finews-writer-pipe", daemon=True).start()
    writer = BatchWriter(url)
    try:
        while (payload := inbox.get()) is not None:
            batch: Batch = pickle.loads(payload)
            try:
                report = writer.write(batch)
            except Exception:  # a bug, not the database: say so with the batch
                report = Report(batch.seq, error=traceback.format_exc(limit=8))
            message = pickle.dumps(report, protocol=_PROTOCOL)
            with contextlib.suppress(OSError):  # the crawl process is gone: keep writing
                write_all(reports, frame(message))
    finally:
        writer.close()
