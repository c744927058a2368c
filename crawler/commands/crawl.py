"""``scrapy crawl``, with spider arguments checked before the crawl starts.

A wrong ``-a`` argument (no ``path`` for the backfill, a day that is not YYYY-MM-DD, a
path that is not a directory) ends with one ``error:`` line and exit status 2, instead
of a traceback from inside the crawl. The spider's own ``__init__`` is the check, so
the rules live in one place.
"""

from __future__ import annotations

import argparse

from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.exceptions import UsageError


class Command(ScrapyCrawl):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) == 1:
            assert self.crawler_process
            spidercls = self.crawler_process.spider_loader.load(args[0])
            try:
                spidercls(**opts.spargs)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"spider {args[0]!r}: {exc}", print_help=False) from None
        super().run(args, opts)
