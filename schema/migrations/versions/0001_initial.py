"""initial schema: articles, categories, stock mentions, crawl runs, rejects

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import schema.types

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, schema.types.Timestamp(), nullable=nullable)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "categories",
        sa.Column("slug", sa.String(), nullable=False),
        sa.Column("outlet", sa.String(), nullable=True),
        _time("first_seen_at"),
        sa.PrimaryKeyConstraint("slug", name=op.f("pk_categories")),
    )
    op.create_table(
        "crawl_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("spider", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("arguments", JSON, nullable=False),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        _time("started_at"),
        _time("finished_at", nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("close_reason", sa.String(), nullable=True),
        _count("seen"),
        _count("stored"),
        _count("updated"),
        _count("unchanged"),
        _count("duplicates"),
        _count("rejected"),
        _count("errors"),
        sa.Column("exit_status", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crawl_runs")),
    )
    op.create_index(op.f("ix_crawl_runs_started_at"), "crawl_runs", ["started_at"])
    op.create_table(
        "articles",
        sa.Column("info_code", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(), nullable=True),
        _time("published_at"),
        sa.Column("category", sa.String(), nullable=True),
        sa.Column("outlet", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("digest", sa.Text(), nullable=True),
        sa.Column("paragraphs", JSON, nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("images", JSON, nullable=False),
        sa.Column("source_url", sa.String(), nullable=True),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _time("first_seen_at"),
        _time("updated_at"),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["category"], ["categories.slug"], name=op.f("fk_articles_category_categories")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["crawl_runs.id"],
            name=op.f("fk_articles_run_id_crawl_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("info_code", name=op.f("pk_articles")),
    )
    op.create_index(op.f("ix_articles_published_at"), "articles", ["published_at"])
    op.create_index(op.f("ix_articles_run_id"), "articles", ["run_id"])
    op.create_table(
        "rejects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        _time("created_at"),
        sa.Column("url", sa.String(), nullable=True),
        sa.Column("info_code", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("excerpt", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["crawl_runs.id"],
            name=op.f("fk_rejects_run_id_crawl_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejects")),
    )
    op.create_index(op.f("ix_rejects_run_id"), "rejects", ["run_id"])
    op.create_table(
        "article_categories",
        sa.Column("info_code", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        _time("first_seen_at"),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["category"],
            ["categories.slug"],
            name=op.f("fk_article_categories_category_categories"),
        ),
        sa.ForeignKeyConstraint(
            ["info_code"],
            ["articles.info_code"],
            name=op.f("fk_article_categories_info_code_articles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["crawl_runs.id"],
            name=op.f("fk_article_categories_run_id_crawl_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("info_code", "category", name=op.f("pk_article_categories")),
    )
    op.create_index(op.f("ix_article_categories_category"), "article_categories", ["category"])
    op.create_table(
        "stock_mentions",
        sa.Column("info_code", sa.String(length=64), nullable=False),
        sa.Column("market", sa.String(), nullable=False),
        sa.Column("code", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("mentions", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["info_code"],
            ["articles.info_code"],
            name=op.f("fk_stock_mentions_info_code_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("info_code", "market", "code", name=op.f("pk_stock_mentions")),
    )
    op.create_index(op.f("ix_stock_mentions_market_code"), "stock_mentions", ["market", "code"])
    op.create_index(
        op.f("ix_stock_mentions_symbol_info_code"), "stock_mentions", ["symbol", "info_code"]
    )


def downgrade() -> None:
    op.drop_table("stock_mentions")
    op.drop_table("article_categories")
    op.drop_table("rejects")
    op.drop_table("articles")
    op.drop_table("crawl_runs")
    op.drop_table("categories")
