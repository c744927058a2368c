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
# AutoThrottle keeps its pace on quick 429/503 answers: BackoffMiddleware doubles the delay
# first. SkipKnownPosts drops a post request whose copy is stored (the incremental skip).
# StayOnSite drops any request off the site (redirects, robots.txt of another host).
DOWNLOADER_MIDDLEWARES = {
    "crawler.middlewares.StayOnSite": 40,  # before everything that could send it
    "crawler.middlewares.SkipKnownPosts": 50,
    "crawler.middlewares.BackoffMiddleware": 560,  # before Retry (550)
}
FINEWS_BACKOFF_DELAY = 1.0
FINEWS_BACKOFF_MAX_DELAY = 60.0
# One item at a time per response keeps the reactor responsive (+45% pages/s measured).
CONCURRENT_ITEMS = 1
# Spider middlewares for features no crawl here uses, each a step for every request and
# item a callback returns: depth tracking and limits, the URL length limit (links are built
# from the site's known shapes), and the debugging check for meta copied between requests.
SPIDER_MIDDLEWARES = {
    "scrapy.spidermiddlewares.depth.DepthMiddleware": None,
    "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None,
    "scrapy.spidermiddlewares.metacopy.MetaCopyDetectionMiddleware": None,
}

ITEM_PIPELINES = {
    "pipelines.validate.ValidatePipeline": 100,
    "pipelines.dedupe.DedupePipeline": 200,
    "pipelines.store.StorePipeline": 300,
}
# Storage (pipelines.store): one transaction per 500 articles costs ~4% of a crawl.
FINEWS_STORE_BATCH_SIZE = 500
# A slow trickle of items still reaches the database within this many seconds.
FINEWS_STORE_FLUSH_SECONDS = 5.0
# An outdated schema stops the run with "run make migrate"; True migrates it instead.
FINEWS_AUTO_MIGRATE = False
# A database that goes away mid-run: a write is tried again, with back-off, for this many
# seconds (the crawl waits meanwhile); then the run stops with exit status 3 and the next
# run fetches what this one could not write.
FINEWS_DB_RETRY_SECONDS = 60.0

# Scale-out (crawler.scaleout, scrapy-redis): with a Redis URL, every `scrapy crawl finews`
# started with the same FINEWS_JOB is a worker of one crawl (shared queue and dupefilter).
# Without one, nothing changes and Redis is not needed.
FINEWS_REDIS_URL = os.environ.get("FINEWS_REDIS_URL") or None
FINEWS_JOB = os.environ.get("FINEWS_JOB", "finews")
# How many workers share the job: the per-domain concurrency is divided between them.
FINEWS_WORKERS = 1
# A worker stops once the shared queue has stayed empty this many seconds.
FINEWS_IDLE_CLOSE = 10.0
# The scale-out add-on: does nothing unless FINEWS_REDIS_URL is set (crawler.scaleout).
ADDONS = {"crawler.scaleout.RedisScaleOut": 0}

# Cron runs (`scrapy cron`): one at a time per lock file; a run with more errors fails.
FINEWS_LOCK_FILE = os.environ.get("FINEWS_LOCK_FILE", "data/crawl.lock")
# A daily crawl of a static site normally has none; a few time-outs are not an outage.
FINEWS_MAX_ERRORS = 10
# Seconds to wait for the database before the run gives up (exit status 3).
FINEWS_DB_CONNECT_TIMEOUT = 10

# Backfills (`scrapy crawl archive`): a progress line this often, so a person can watch.
FINEWS_PROGRESS_INTERVAL = 2.0

# Scrapy's modern defaults, stated so that upgrades do not change behaviour silently.
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
LOG_LEVEL = "INFO"
# Unattended runs (cron, backfills) need no control port open on the machine.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
