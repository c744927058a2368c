"""Scrapy settings for finews-ingest. Each non-default value says why it is set."""

import os

BOT_NAME = "finews"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"
COMMANDS_MODULE = "crawler.commands"

# Where articles go: SQLite by default, postgresql+psycopg://... for PostgreSQL.
FINEWS_DATABASE_URL = os.environ.get("FINEWS_DATABASE_URL", "sqlite:///data/finews.db")

# Say who we are; the site's owner can find the project from this.
USER_AGENT = "finews-ingest/0.1 (+https://github.com/finews-ingest; news archive crawler)"
# Polite by default: the site is a small static mirror.
ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8
DOWNLOAD_DELAY = 0
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.5
AUTOTHROTTLE_TARGET_CONCURRENCY = 4.0
# Retry server errors and time-outs, and 429 too: AutoThrottle alone does not back off on it.
RETRY_ENABLED = True
RETRY_TIMES = 3
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]
DOWNLOAD_TIMEOUT = 30
# The spider's errback logs each lost page once, at ERROR, saying what kind of page it was.
RETRY_GIVE_UP_LOG_LEVEL = "WARNING"
# AutoThrottle keeps its pace on quick 429/503 answers: this doubles the delay first.
# Post pages are read in worker processes before their callback (FINEWS_PAGE_WORKERS), as
# the last step on the way out of the downloader: after decompression and redirects.
DOWNLOADER_MIDDLEWARES = {
    "crawler.middlewares.BackoffMiddleware": 560,  # before Retry (550)
    "crawler.middlewares.ReadPostPages": 20,
}
FINEWS_BACKOFF_DELAY = 1.0
FINEWS_BACKOFF_MAX_DELAY = 60.0
# One item at a time per response keeps the reactor responsive (PERF.md: +45% pages/s).
CONCURRENT_ITEMS = 1
# Spider middlewares for features no crawl here uses, each a step for every request and
# item a callback returns (together ~4% of a crawl's CPU): depth tracking and limits, the
# URL length limit (links are built from the site's known shapes), and the debugging
# check for meta copied between requests. Referer stays: Scrapy's redirect middlewares
# warn at every start without it. Scrapy's StartSpiderMiddleware is replaced by one that
# marks start requests the same way without wrapping every callback's output.
SPIDER_MIDDLEWARES = {
    "scrapy.spidermiddlewares.start.StartSpiderMiddleware": None,
    "crawler.middlewares.MarkStartRequests": 25,
    "scrapy.spidermiddlewares.depth.DepthMiddleware": None,
    "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None,
    "scrapy.spidermiddlewares.metacopy.MetaCopyDetectionMiddleware": None,
}

ITEM_PIPELINES = {
    "pipelines.validate.ValidatePipeline": 100,
    "pipelines.dedupe.DedupePipeline": 200,
    "pipelines.store.StorePipeline": 300,
}
# Storage (pipelines.store): 500-row transactions cost ~4% of a crawl (PERF.md: 0.68 vs 0.71).
FINEWS_STORE_BATCH_SIZE = 500
# A slow trickle of items still reaches the database within this many seconds.
FINEWS_STORE_FLUSH_SECONDS = 5.0
# Batches are written by a writer process (pipelines.writer), so the crawl process does not
# spend ~0.1 ms a page on SQL: True, False (write in the crawl process), or None: a writer
# process when the machine has a second core.
FINEWS_STORE_WRITER = None
# An outdated schema stops the run with "run make migrate"; True migrates it instead.
FINEWS_AUTO_MIGRATE = False

# Python's garbage collector, tuned while a spider runs (crawler.extensions.gctuning):
# start-up objects frozen, a young collection every this many allocations instead of 700.
EXTENSIONS = {"crawler.extensions.gctuning.GcTuning": 0}
FINEWS_GC_THRESHOLD = 20_000

# Post pages are parsed in this many worker processes: Scrapy keeps the crawl process's core
# busy (PERF.md). None: one when the machine has a second core; 0 parses in the crawl process.
FINEWS_PAGE_WORKERS = None

# Processes the crawl runs in (crawler.shards): Scrapy uses one core per process. 1 is
# plenty for the live site, whose pace is set by politeness; a mirror or a full refresh on
# a machine with more cores can use 2 or more. The concurrency settings are split between
# them, so the site sees the load of one crawl.
FINEWS_CRAWL_PROCESSES = 1

# Cron runs (`scrapy cron`): one at a time per lock file; a run with more errors fails.
FINEWS_LOCK_FILE = os.environ.get("FINEWS_LOCK_FILE", "data/crawl.lock")
# A daily crawl of a static site normally has none; a few time-outs are not an outage.
FINEWS_MAX_ERRORS = 10
# Seconds to wait for the database before the run gives up (exit status 3).
FINEWS_DB_CONNECT_TIMEOUT = 10

# Backfills (`scrapy crawl archive`): a progress line this often, so a person can watch.
FINEWS_PROGRESS_INTERVAL = 2.0

# Scrapy's modern defaults, stated so that upgrades do not change behaviour silently.
REQUEST_FINGERPRINTER_IMPLEMENTATION = "2.7"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
LOG_LEVEL = "INFO"
# Unattended runs (cron, backfills) need no control port open on the machine.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
