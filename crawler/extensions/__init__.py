"""Scrapy extensions: behaviour around a whole run (progress), not per item or response."""
