"""Acceptance on the real post files: parse_post → validate → dedupe → store, twice over.

Each file is one item, as a backfill reads them; files that cannot be extracted become
rejects through the store's reject API, as a backfill would record them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from crawler.pages import ExtractionError
from crawler.pages.post import parse_post
from schema.models import Article, ArticleCategory, Category, CrawlRun, Reject, StockMention

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "corpus" / "posts"
REVISED = "2021-12-08-202112082206928461"
PAIR = ("2022-05-26-202205262391921712.md", "2022-05-26-NW202205262391921712.md")


def corpus_files(pattern: str = "*.md") -> list[Path]:
    files = sorted(CORPUS.glob(pattern))
    assert files, f"no post files matching {pattern} in {CORPUS}"
    return files


def store_files(pipeline_run, db_url: str, files: list[Path]):
    """One run over ``files``: items through the pipelines, unreadable files as rejects."""
    from tests.conftest import PipelineRun

    run = PipelineRun(db_url).open()
    for path in files:
        try:
            item = parse_post(path.read_bytes(), path.as_uri())
        except ExtractionError as exc:
            run.store.reject(path.as_uri(), "unreadable post file", detail=exc.reason)
            continue
        run.feed(item)
    return run.close()


def table_counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Article, ArticleCategory, Category, StockMention)
        }


def test_storing_the_corpus_twice_changes_nothing(db_url, engine, pipeline_run):
    files = corpus_files()
    items = []
    for path in files:
        with contextlib.suppress(ExtractionError):  # store_files records those as rejects
            items.append(parse_post(path.read_bytes(), path.as_uri()))
    valid = [item for item in items if not item.missing()]
    codes = {item.info_code for item in valid}
    pairs = {(item.info_code, item.category) for item in valid}

    first = store_files(pipeline_run, db_url, files)
    counts = table_counts(engine)
    second = store_files(pipeline_run, db_url, files)

    assert table_counts(engine) == counts
    assert counts["articles"] == len(codes)
    assert counts["article_categories"] == len(pairs)
    assert first.stats["finews/stored"] == len(codes)
    assert second.stats.get("finews/stored", 0) == 0
    assert second.stats.get("finews/updated", 0) == 0
    assert second.stats["finews/unchanged"] == len(pairs), "each copy (code, category) once"
    with Session(engine) as session:
        runs = session.scalars(select(CrawlRun).order_by(CrawlRun.id)).all()
        assert [(r.status, r.seen, r.rejected) for r in runs] == [
            ("finished", len(files), len(files) - len(valid))
        ] * 2
        assert session.scalar(select(func.max(Article.revision))) == 1
        reasons = session.scalars(select(Reject.reason).where(Reject.run_id == runs[0].id)).all()
    assert sorted(reasons) == sorted(
        "; ".join(f"missing {gap.replace('_or_', ' or ')}" for gap in item.missing())
        for item in items
        if item.missing()
    )


def test_emnews_and_outlet_posts_are_one_article_in_two_categories(db_url, engine, pipeline_run):
    files = [CORPUS / name for name in PAIR]
    store_files(pipeline_run, db_url, files)
    store_files(pipeline_run, db_url, files[::-1])

    with Session(engine) as session:
        [article] = session.scalars(select(Article)).all()
        categories = session.scalars(select(ArticleCategory.category)).all()
        symbols = set(session.scalars(select(StockMention.symbol)))
    assert article.info_code == "NW202205262391921712"
    assert sorted(categories) == ["emnews", "shanghaizhengquanbao"]
    assert (article.category, article.revision) == ("emnews", 1), "the emnews copy's text"
    assert article.digest, "the emnews version, with its digest"
    assert "600160.SH" in symbols, "with the inline stock links only emnews marks up"


def test_eight_versions_of_one_post_give_four_revisions(db_url, engine, pipeline_run):
    files = corpus_files(f"{REVISED}*.md")
    assert len(files) == 8
    for path in files:
        store_files(pipeline_run, db_url, [path])

    last = parse_post(files[-1].read_bytes(), files[-1].as_uri())
    with Session(engine) as session:
        [article] = session.scalars(select(Article)).all()
        runs = session.scalars(select(CrawlRun).order_by(CrawlRun.id)).all()
    assert article.info_code == "NW202112082206928461"
    assert article.revision == 4
    assert (article.paragraphs, article.content_hash) == (last.paragraphs, last.content_hash())
    assert article.url == files[0].as_uri(), "the URL first seen"
    assert [(r.stored, r.updated, r.unchanged) for r in runs] == [
        (1, 0, 0),  # .2b5b53f: text A
        (0, 1, 0),  # .3d6524e: text B
        (0, 0, 1),  # .3dd119d: B, other back-links
        (0, 0, 1),  # .5eaf3f1: B, relative back-links
        (0, 0, 1),  # .8a12823: B, no back-links
        (0, 1, 0),  # .b5202fa: A again, date without +0800
        (0, 1, 0),  # .cfbae48: B, blank line before the front matter
        (0, 0, 1),  # the current file: B
    ]


def test_published_at_as_raw_sql_shows_beijing_time(db_url, engine, pipeline_run):
    store_files(pipeline_run, db_url, [CORPUS / "2022-04-27-NW202204272361734680.md"])

    sql = text("SELECT published_at FROM articles WHERE info_code = 'NW202204272361734680'")
    with engine.connect() as conn:
        raw = conn.execute(sql).scalar_one()
    with Session(engine) as session:
        stored = session.get(Article, "NW202204272361734680").published_at
    assert stored.isoformat() == "2022-04-27T15:22:47+08:00"
    if engine.dialect.name == "sqlite":
        assert raw == "2022-04-27 15:22:47+08:00"
    else:
        assert raw == stored
        with engine.connect() as conn:  # what psql shows an analyst in Beijing
            conn.execute(text("SET TIME ZONE 'Asia/Shanghai'"))
            shown = conn.execute(text("SELECT published_at::text FROM articles")).scalar_one()
        assert shown == "2022-04-27 15:22:47+08"
