# finews-ingest: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export FINEWS_DATABASE_URL ?= sqlite:///data/finews.db
# Extra scrapy arguments: make crawl ARGS="-a categories=emnews -s FINEWS_MAX_ERRORS=20".
ARGS ?=
# make demo writes here whatever FINEWS_DATABASE_URL says: never into a real database.
DEMO_DATABASE_URL ?= sqlite:///data/finews.db
DEMO_POSTS ?= 500
DEMO_SEED ?= 1
DEMO_SITE ?= data/demo-site
# make backfill DIR=clone [SINCE=2022-01-01] [UNTIL=2022-12-31] [CATEGORIES=emnews,...] [REFRESH=1]
DIR ?=
SINCE ?=
UNTIL ?=
CATEGORIES ?=
REFRESH ?=

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,browse]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

lint: $(STAMP) ## Run ruff: the checks, and the formatting
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Test processes: most tests wait on subprocess crawls, local servers and kills rather than
# compute, so 3 on a 2-core machine finish sooner than 2 (4m16s against 6m27s, 8m48s alone).
TEST_WORKERS ?= 3

test: $(STAMP) lint ## Lint, then run the whole test suite (needs PostgreSQL; see README)
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist worksteal

extract: $(STAMP) ## Extract local files: make extract FILES="a.md b.html"
	$(VENV)/bin/scrapy extract $(FILES)

crawl: $(STAMP) ## Crawl the live site once, incrementally, into FINEWS_DATABASE_URL (for cron)
	$(VENV)/bin/scrapy cron $(ARGS)

demo: $(STAMP) ## Crawl a local mirror of the bundled articles into data/finews.db; print a summary
	@$(VENV)/bin/scrapy demo --synthetic $(DEMO_POSTS) --seed $(DEMO_SEED) --site $(DEMO_SITE) \
		-s FINEWS_DATABASE_URL=$(DEMO_DATABASE_URL)

backfill: $(STAMP) ## Backfill post files under DIR (a clone of the site's repository); see README
	@test -n "$(DIR)" || { echo "usage: make backfill DIR=path/to/site-repo" \
		"[SINCE=YYYY-MM-DD] [UNTIL=YYYY-MM-DD] [CATEGORIES=slug,...] [REFRESH=1]" >&2; exit 2; }
	$(VENV)/bin/scrapy crawl archive -a "path=$(DIR)" $(if $(SINCE),-a "since=$(SINCE)") \
		$(if $(UNTIL),-a "until=$(UNTIL)") $(if $(CATEGORIES),-a "categories=$(CATEGORIES)") \
		$(if $(REFRESH),-a "refresh=$(REFRESH)") $(ARGS)

browse: $(STAMP) ## Browse the database at FINEWS_DATABASE_URL in Datasette (SQLite)
	$(VENV)/bin/pip install --quiet -e '.[browse]'
	$(VENV)/bin/finews browse $(ARGS)

browse-check: $(STAMP) ## Screenshot a search in finews browse with headless Chromium (installs it)
	$(PY) -m analysis.browse_check

migrate: $(STAMP) ## Upgrade the database at FINEWS_DATABASE_URL to the newest schema
	$(VENV)/bin/python -m schema.migrate

bench: $(STAMP) ## Run every benchmark and print side-by-side ratios
	$(PY) -m tests.bench all

bench-extract: $(STAMP) ## Benchmark extraction of post files and rendered pages
	$(PY) -m tests.bench extract

bench-crawl: $(STAMP) ## Benchmark the crawl: bare spider, full crawl, two Redis workers (nginx)
	$(PY) -m tests.bench crawl

bench-backfill: $(STAMP) ## Benchmark a backfill of 100,000 synthetic post files (a few minutes)
	$(PY) -m tests.bench backfill

bench-export: $(STAMP) ## Benchmark finews export of 100,000 synthetic articles: time and peak memory
	$(PY) -m tests.bench export

bench-search: $(STAMP) ## Benchmark search at 100,000 articles on SQLite and PostgreSQL
	$(PY) -m tests.bench search

.PHONY: help install lint test extract crawl demo backfill migrate bench bench-extract \
	bench-crawl bench-backfill bench-search bench-export browse browse-check
