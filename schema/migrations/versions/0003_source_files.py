"""source_files: what each backfilled post file held, so unchanged files are skipped;
crawl_runs.skipped: files or pages passed over without an item

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import schema.types

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("crawl_runs") as batch:
        batch.add_column(
            sa.Column("skipped", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.create_table(
        "source_files",
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("info_code", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("read_at", schema.types.Timestamp(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["crawl_runs.id"],
            name=op.f("fk_source_files_run_id_crawl_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_source_files")),
    )
    op.create_index(op.f("ix_source_files_info_code"), "source_files", ["info_code"])


def downgrade() -> None:
    op.drop_table("source_files")
    with op.batch_alter_table("crawl_runs") as batch:
        batch.drop_column("skipped")
