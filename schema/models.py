"""The database analysts query: typed SQLAlchemy 2.0 models, one schema for SQLite and PostgreSQL.

Column meanings follow ``crawler.items.Article``. Only models live here: writing rows is
the pipelines' job (``pipelines.store``), changing tables is Alembic's (``schema.migrations``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from schema.types import JSONType, Timestamp

# Predictable constraint and index names, so migrations can name what they change.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: Timestamp(),
        dict[str, Any]: JSONType,
        list[str]: JSONType,
    }


class CrawlRun(Base):
    """One run of a spider or a backfill: opened at start, closed at finish or failure."""

    __tablename__ = "crawl_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    spider: Mapped[str]
    mode: Mapped[str]  # spider attribute `mode`, else "crawl"
    arguments: Mapped[dict[str, Any]]  # the spider's -a arguments
    host: Mapped[str | None]
    pid: Mapped[int | None]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str]  # running | finished | failed | interrupted | stopped
    close_reason: Mapped[str | None]  # Scrapy's close reason (finished, shutdown, ...)
    seen: Mapped[int] = mapped_column(server_default=text("0"))
    stored: Mapped[int] = mapped_column(server_default=text("0"))
    updated: Mapped[int] = mapped_column(server_default=text("0"))
    unchanged: Mapped[int] = mapped_column(server_default=text("0"))
    duplicates: Mapped[int] = mapped_column(server_default=text("0"))
    rejected: Mapped[int] = mapped_column(server_default=text("0"))
    # Files or pages passed over without an item: unchanged, outside -a since/until, ...
    skipped: Mapped[int] = mapped_column(server_default=text("0"))
    errors: Mapped[int] = mapped_column(server_default=text("0"))
    exit_status: Mapped[int | None]  # the process exit status, where the caller records one
    # FINEWS_JOB of a scaled-out crawl (FINEWS_REDIS_URL set): one row per worker of the job.
    job: Mapped[str | None] = mapped_column(String(100))

    # "The runs of job X, newest first": job -> started_at.
    __table_args__ = (Index(None, "started_at"), Index(None, "job", "started_at"))


class Category(Base):
    """A site category: its slug and the outlet it republishes (东财滚动, 证券日报网, ...)."""

    __tablename__ = "categories"

    slug: Mapped[str] = mapped_column(primary_key=True)
    outlet: Mapped[str | None]  # unknown until an article is seen under the slug itself
    first_seen_at: Mapped[datetime]


class Article(Base):
    """One Eastmoney article, whatever number of categories and versions it was seen in."""

    __tablename__ = "articles"

    info_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str | None]
    published_at: Mapped[datetime] = mapped_column(index=True)
    # The copy whose text is stored (pipelines.upsert: emnews first, then outlets by slug).
    category: Mapped[str | None] = mapped_column(ForeignKey("categories.slug"))
    outlet: Mapped[str | None]
    source: Mapped[str | None]
    digest: Mapped[str | None] = mapped_column(Text)
    paragraphs: Mapped[list[str]]
    body_text: Mapped[str] = mapped_column(Text)  # paragraphs joined by newlines
    body_html: Mapped[str | None] = mapped_column(Text)
    images: Mapped[list[str]]
    source_url: Mapped[str | None]
    url: Mapped[str]  # the page URL or file path that copy was first seen at
    content_hash: Mapped[str] = mapped_column(String(64))  # of that copy
    revision: Mapped[int]  # 1 + the number of times that copy's text was revised
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("crawl_runs.id", ondelete="SET NULL"), index=True
    )  # the run that last wrote the article

    categories: Mapped[list[ArticleCategory]] = relationship(
        back_populates="article", cascade="all, delete-orphan", passive_deletes=True
    )
    stocks: Mapped[list[StockMention]] = relationship(
        back_populates="article", cascade="all, delete-orphan", passive_deletes=True
    )


class ArticleCategory(Base):
    """An article seen under a category, with its URL there and what its copy there holds
    beyond the text: what the merge (``pipelines.upsert``) needs without reading it again."""

    __tablename__ = "article_categories"

    info_code: Mapped[str] = mapped_column(
        ForeignKey("articles.info_code", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(ForeignKey("categories.slug"), primary_key=True)
    url: Mapped[str]
    first_seen_at: Mapped[datetime]
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("crawl_runs.id", ondelete="SET NULL")
    )  # the run that first saw the article under this category
    content_hash: Mapped[str | None] = mapped_column(String(64))  # None: copy never read
    digest: Mapped[str | None] = mapped_column(Text)
    stocks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)  # its stock rows

    article: Mapped[Article] = relationship(back_populates="categories")

    __table_args__ = (Index(None, "category"),)


class StockMention(Base):
    """A security or board an article marks up (see ``crawler.items.Stock``)."""

    __tablename__ = "stock_mentions"

    info_code: Mapped[str] = mapped_column(
        ForeignKey("articles.info_code", ondelete="CASCADE"), primary_key=True
    )
    market: Mapped[str] = mapped_column(primary_key=True)  # raw Eastmoney market id
    code: Mapped[str] = mapped_column(primary_key=True)
    symbol: Mapped[str]  # 600160.SH
    name: Mapped[str | None]
    kind: Mapped[str]  # stock | index | fund | bond | board | future | other
    # `primary` is a reserved word in SQL; the column name spares analysts the quoting.
    is_primary: Mapped[bool]
    mentions: Mapped[int]

    article: Mapped[Article] = relationship(back_populates="stocks")

    # "All articles about 600160.SH": symbol -> info_code, then articles by published_at.
    __table_args__ = (Index(None, "symbol", "info_code"), Index(None, "market", "code"))


class Reject(Base):
    """Something that could not be stored, with the evidence to find and fix it."""

    __tablename__ = "rejects"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("crawl_runs.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime]
    url: Mapped[str | None]  # page URL or file path
    info_code: Mapped[str | None]
    reason: Mapped[str]  # readable and short: "missing info_code"
    detail: Mapped[str | None] = mapped_column(Text)
    excerpt: Mapped[str | None] = mapped_column(Text)  # at most a few hundred characters


class SourceFile(Base):
    """A post file a backfill has read, as it was then: an unchanged file is not read again."""

    __tablename__ = "source_files"

    path: Mapped[str] = mapped_column(primary_key=True)  # absolute path, symlinks not followed
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the file's bytes
    info_code: Mapped[str | None] = mapped_column(String(64))  # of the item it held, if any
    status: Mapped[str]  # article (went to storage) | rejected (a rejects row says why)
    read_at: Mapped[datetime]
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("crawl_runs.id", ondelete="SET NULL")
    )  # the run that last read the file

    __table_args__ = (Index(None, "info_code"),)
