"""Alembic on empty SQLite and PostgreSQL databases: upgrade, check, downgrade, CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from schema import migrate
from schema.db import make_engine
from schema.migrate import (
    SchemaLocked,
    alembic_config,
    current_revisions,
    head_revisions,
    lock_file,
    main,
    schema_lock,
    upgrade,
)
from schema.models import Base
from schema.search import is_index_table

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "articles",
    "article_categories",
    "categories",
    "stock_mentions",
    "crawl_runs",
    "rejects",
    "source_files",
}


def tables(url: str) -> set[str]:
    """The schema's tables: not alembic_version, nor the SQLite search index's (0006)."""
    engine = make_engine(url)
    try:
        names = set(inspect(engine).get_table_names()) - {"alembic_version"}
        return {name for name in names if not is_index_table(name)}
    finally:
        engine.dispose()


def test_models_and_migrations_agree(empty_db_url):
    upgrade(empty_db_url)

    assert tables(empty_db_url) == TABLES == set(Base.metadata.tables)
    command.check(alembic_config(empty_db_url))  # raises if autogenerate finds a difference


def test_downgrade_to_base_and_up_again(empty_db_url):
    config = alembic_config(empty_db_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert tables(empty_db_url) == set()
    command.upgrade(config, "head")

    engine = make_engine(empty_db_url)
    try:
        assert current_revisions(engine) == head_revisions()
    finally:
        engine.dispose()


def test_one_head_only():
    assert len(head_revisions()) == 1, "merge the Alembic branches"


def run_tool(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FINEWS_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_alembic_cli_upgrades_and_checks(empty_db_url):
    ini = "schema/alembic.ini"
    for args in (["upgrade", "head"], ["check"]):
        result = run_tool(["-m", "alembic", "-c", ini, *args], empty_db_url)
        assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr
    assert tables(empty_db_url) == TABLES


@pytest.mark.slow
def test_make_migrate_creates_the_sqlite_directory(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'finews.db'}"
    assert run_tool(["-m", "schema.migrate", "--check"], url).returncode == 1

    result = run_tool(["-m", "schema.migrate"], url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{url} is at {''.join(head_revisions())}."
    assert run_tool(["-m", "schema.migrate", "--check"], url).returncode == 0


# -- the schema lock -----------------------------------------------------------------------------


def test_the_sqlite_lock_file_is_beside_the_database(tmp_path):
    assert lock_file(f"sqlite:///{tmp_path}/db/finews.db") == tmp_path / "db/finews.db.migrate.lock"
    assert lock_file("sqlite:///data/finews.db") == Path("data/finews.db.migrate.lock")
    assert lock_file("sqlite://") is None
    assert lock_file("sqlite:///:memory:") is None
    with schema_lock("sqlite://"):  # nobody else can see a database in memory: no lock
        pass


def test_a_migration_waits_for_the_lock_and_says_so(empty_db_url, caplog, monkeypatch):
    monkeypatch.setattr(migrate, "LOCK_NOTICE", 0.1)
    held = threading.Event()

    def holder() -> None:  # another process, checking or changing the schema
        with schema_lock(empty_db_url):
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="schema.migrate"):
        migrated = upgrade(empty_db_url, blank_only=True)
    waited = time.monotonic() - started
    thread.join()

    assert migrated and tables(empty_db_url) == TABLES
    assert waited >= 0.3, "it waited for the holder"
    [message] = caplog.messages
    assert message.startswith("Waiting for the schema lock of ")
    assert "another process is creating or upgrading the schema" in message


def test_a_lock_held_too_long_is_given_up_with_a_clear_error(empty_db_url, monkeypatch):
    monkeypatch.setattr(migrate, "LOCK_TIMEOUT", 0.3)
    gave_up = r"Gave up after 0 s waiting for the schema lock of .*: another process held it"
    with schema_lock(empty_db_url), pytest.raises(SchemaLocked, match=gave_up):
        upgrade(empty_db_url)
    assert tables(empty_db_url) == set()
    assert upgrade(empty_db_url) and tables(empty_db_url) == TABLES  # released


def test_migrate_check_names_the_fix_without_the_password(empty_postgres_url, capsys):
    url = empty_postgres_url.replace("postgres@", "postgres:s3cret-pw@")

    assert main(["--check", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "run `make migrate`" in err
    assert "s3cret-pw" not in err and "postgres:***@" in err


def test_an_older_revision_is_refused_until_migrated(empty_db_url):
    from pipelines.store import Store
    from schema.migrate import SchemaOutdated

    upgrade(empty_db_url, "0001")
    with pytest.raises(SchemaOutdated, match=r"is at \['0001'\], not at the newest revision"):
        Store(empty_db_url).open("storage-test")
    upgrade(empty_db_url)
    store = Store(empty_db_url)
    store.open("storage-test")
    assert store.finish() == "finished"


def test_0005_gives_kinds_by_code_range_and_records_the_stored_copy(empty_db_url):
    upgrade(empty_db_url, "0004")
    now = "2022-05-31 18:03:41+08:00"
    securities = {  # (market, code): (symbol, kind stored before 0005, kind after)
        ("0", "399006"): ("399006.SZ", "stock", "index"),  # 创业板指
        ("1", "000001"): ("000001.SH", "stock", "index"),  # 上证指数
        ("1", "510300"): ("510300.SH", "stock", "fund"),  # an ETF
        ("1", "113050"): ("113050.SH", "stock", "bond"),
        ("0", "000001"): ("000001.SZ", "stock", "stock"),  # 平安银行
        ("90", "BK1037"): ("BK1037", "board", "board"),
    }
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO categories VALUES ('cailianshe', '财联社', :t)"), {"t": now}
            )
            conn.execute(
                text(
                    "INSERT INTO articles (info_code, title, published_at, category, outlet, "
                    "digest, paragraphs, body_text, images, url, content_hash, revision, "
                    "first_seen_at, updated_at) VALUES ('NW1', 't', :t, 'cailianshe', '财联社', "
                    "'摘要', '[]', '', '[]', 'file:///x.md', 'h1', 1, :t, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                text("INSERT INTO article_categories VALUES ('NW1', 'cailianshe', 'u', :t, NULL)"),
                {"t": now},
            )
            for (market, code), (symbol, before, _) in securities.items():
                conn.execute(
                    text("INSERT INTO stock_mentions VALUES ('NW1', :m, :c, :s, NULL, :k, :p, 1)"),
                    {"m": market, "c": code, "s": symbol, "k": before, "p": code == "BK1037"},
                )
        upgrade(empty_db_url)
        with engine.connect() as conn:
            kinds = dict(
                ((m, c), k)
                for m, c, k in conn.execute(text("SELECT market, code, kind FROM stock_mentions"))
            )
            link = conn.execute(
                text("SELECT content_hash, digest, stocks FROM article_categories")
            ).one()
    finally:
        engine.dispose()
    assert kinds == {key: after for key, (_, _, after) in securities.items()}
    content_hash, digest, stocks = link
    stocks = json.loads(stocks) if isinstance(stocks, str) else stocks
    assert (content_hash, digest) == ("h1", "摘要")
    assert {(s["market"], s["code"], s["kind"]) for s in stocks} == {
        (m, c, after) for (m, c), (_, _, after) in securities.items()
    }
    assert [s["is_primary"] for s in stocks if s["code"] == "BK1037"] == [True]


@pytest.mark.postgres
def test_article_text_is_stored_uncompressed_on_postgresql(postgres_url):
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            storage = dict(
                conn.execute(
                    text(
                        "SELECT attname, attstorage FROM pg_attribute "
                        "WHERE attrelid = 'articles'::regclass AND attnum > 0"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    text_columns = ("paragraphs", "body_text", "body_html", "digest")
    assert {c: storage[c] for c in text_columns} == dict.fromkeys(text_columns, "e")
    assert storage["title"] == "x", "short columns keep the default (extended)"
