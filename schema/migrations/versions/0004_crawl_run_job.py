"""crawl_runs.job: the FINEWS_JOB a worker of a scaled-out crawl ran under

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("crawl_runs") as batch:
        batch.add_column(sa.Column("job", sa.String(length=100), nullable=True))
        batch.create_index(op.f("ix_crawl_runs_job_started_at"), ["job", "started_at"])


def downgrade() -> None:
    with op.batch_alter_table("crawl_runs") as batch:
        batch.drop_index(op.f("ix_crawl_runs_job_started_at"))
        batch.drop_column("job")
