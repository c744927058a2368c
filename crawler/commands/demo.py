"""``scrapy demo``: crawl a local mirror of the bundled articles and say what was stored.

It builds the mirror (``fixtures/corpus`` plus ``--synthetic`` generated posts) under
``--site``, serves it on 127.0.0.1 (a free port), runs the ``finews`` spider against it
exactly as ``scrapy cron`` does, then prints a short summary: this run's counts, and what
the database holds (articles, categories, the most mentioned stocks, rejects). A second
demo finds every article already stored and says there is nothing new.

Needs nothing but the project's own files; no network beyond 127.0.0.1. The exit status
is the one ``scrapy cron`` would give the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scrapy.commands import ScrapyCommand
from sqlalchemy import Engine, distinct, func, select

from crawler.commands.cron import RunWatch, crawl, database_problem
from fixtures.server import MirrorServer, MirrorSite
from schema.db import database_url, make_engine, redact
from schema.models import Article, ArticleCategory, CrawlRun, Reject, StockMention

TOP_STOCKS = 5
# Some synthetic articles are republished under a second category, as on the site.
DUPLICATES = 0.02


class Command(ScrapyCommand):
    requires_project = True

    def syntax(self) -> str:
        return "[--synthetic N] [--seed S] [--site DIR]"

    def short_desc(self) -> str:
        return "Crawl a local mirror of the bundled articles and print a summary"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--synthetic", type=int, default=500, help="synthetic posts to add")
        parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic posts")
        parser.add_argument("--site", default="data/demo-site", help="where to build the mirror")

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        if not opts.loglevel:  # the summary is the output: the log speaks up only on errors
            assert self.settings is not None
            self.settings.set("LOG_LEVEL", "ERROR", priority="cmdline")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        settings = self.settings
        assert settings is not None and self.crawler_process is not None
        url = settings.get("FINEWS_DATABASE_URL")
        problem = database_problem(url, 10, auto_migrate=settings.getbool("FINEWS_AUTO_MIGRATE"))
        if problem:
            print(f"finews demo: {problem}", file=sys.stderr)
            self.exitcode = 3
            return

        started = time.monotonic()
        site = MirrorSite.bundled(
            Path(opts.site), synthetic=opts.synthetic, seed=opts.seed, duplicates=DUPLICATES
        )
        posts = site.manifest.posts
        categories = len({p.category for p in posts})
        real = sum(not source.startswith("synthetic:") for source, _, _ in site.files)
        with MirrorServer(site.root) as server:
            print(
                f"finews demo: a mirror of {len(posts)} posts in {categories} categories "
                f"({real} real post files and {opts.synthetic} synthetic ones, seed {opts.seed}),"
                f" served at {server.url}",
                flush=True,
            )
            watch = crawl(self.crawler_process, {"base_url": server.url})
        outcome = watch.final()
        engine = make_engine(url)
        try:
            print(summary(engine, watch, time.monotonic() - started))
        finally:
            engine.dispose()
        print(next_steps(url))
        if outcome.code:
            print(f"finews demo: {outcome.message} (exit {outcome.code})", file=sys.stderr)
        self.exitcode = outcome.code


def summary(engine: Engine, watch: RunWatch, seconds: float) -> str:
    """What this run did and what the database holds, for a person to read."""
    stats = watch.stats
    count = {
        key: int(stats.get(f"finews/{key}", 0) or 0)
        for key in ("pages", "stored", "updated", "skipped", "rejected", "pages/post")
    }
    lines = [""]
    if count["stored"] or count["updated"]:
        lines.append(
            f"This run ({seconds:.0f} s): {count['pages']} pages fetched, "
            f"{count['stored']} new articles stored, {count['updated']} revised, "
            f"{count['rejected']} pages rejected."
        )
    else:
        lines.append(
            f"This run: nothing new. {count['pages']} pages fetched (home and category pages, "
            f"{count['pages/post']} posts); {count['skipped']} posts already stored or "
            "rejected were not fetched again."
        )
    with engine.connect() as conn:
        articles = conn.scalar(select(func.count()).select_from(Article)) or 0
        slugs = conn.scalar(select(func.count(distinct(ArticleCategory.category)))) or 0
        twice = conn.scalar(
            select(func.count()).select_from(
                select(ArticleCategory.info_code)
                .group_by(ArticleCategory.info_code)
                .having(func.count() > 1)
                .subquery()
            )
        )
        runs = conn.scalar(select(func.count()).select_from(CrawlRun)) or 0
        top = conn.execute(
            select(
                StockMention.symbol,
                func.max(StockMention.name),
                func.sum(StockMention.mentions).label("mentions"),
                func.count(distinct(StockMention.info_code)),
            )
            .where(StockMention.kind == "stock")
            .group_by(StockMention.symbol)
            .order_by(func.sum(StockMention.mentions).desc(), StockMention.symbol)
            .limit(TOP_STOCKS)
        ).all()
        rejects = conn.execute(
            select(Reject.reason, func.count(), func.min(Reject.url))
            .group_by(Reject.reason)
            .order_by(func.count().desc(), Reject.reason)
        ).all()
    lines.append("")
    plural = "" if runs == 1 else "s"
    lines.append(f"The database ({redact(engine.url)}, {runs} run{plural} so far) holds:")
    lines.append(
        f"  {articles} articles in {slugs} categories"
        f" ({twice} of them published under two categories)"
    )
    if top:
        lines.append("  Top stocks by mentions:")
        for rank, (symbol, name, mentions, in_articles) in enumerate(top, 1):
            lines.append(
                f"    {rank}. {symbol:<10} {mentions:>5} mentions in {in_articles:>4} articles"
                f"  {name or ''}"
            )
    total = sum(n for _, n, _ in rejects)
    if total:
        lines.append(f"  {total} rejects (pages that are not storable articles; table rejects):")
        for reason, n, example in rejects:
            lines.append(f"    {n:>4}  {reason}  e.g. {example}")
    else:
        lines.append("  No rejects.")
    return "\n".join(lines)


def next_steps(url: str | None) -> str:
    """Where to go from here: the analyst command on the database just filled.

    ``--url`` is added where ``finews`` would otherwise read another database (a
    DEMO_DATABASE_URL that is not FINEWS_DATABASE_URL).
    """
    script = Path(sys.executable).with_name("finews")
    command = "finews"
    if script.exists():
        command = str(
            script.relative_to(Path.cwd()) if script.is_relative_to(Path.cwd()) else script
        )
    option = "" if database_url(url) == database_url() else f" --url {redact(database_url(url))}"
    return "\n".join(
        [
            "",
            f"Next: {command} search 茅台{option}   articles holding a word, newest first",
            f"      {command} report{option}   articles per day, top stocks, rejects, runs",
            f"      {command} browse{option}   the database in Datasette, in a web browser",
        ]
    )
