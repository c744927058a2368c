"""PostgreSQL: keep article text out of line but uncompressed (STORAGE EXTERNAL)

pglz compression of every body on insert halves the rate of new articles (measured:
~1,500 → ~2,300 articles/s with their stock rows) for about a third more disk on
Chinese text. SQLite has no such setting; this revision changes nothing there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("paragraphs", "body_text", "body_html", "digest")


def _set_storage(mode: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.execute(f"ALTER TABLE articles ALTER COLUMN {column} SET STORAGE {mode}")


def upgrade() -> None:
    _set_storage("EXTERNAL")


def downgrade() -> None:
    _set_storage("EXTENDED")
