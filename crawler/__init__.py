"""finews-ingest: the Scrapy project that turns finews mirror articles into typed items."""
