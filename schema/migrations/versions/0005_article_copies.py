"""Articles merged from their copies; security kinds by code range

Each ``article_categories`` row records what its copy of the article holds beyond the text
(``content_hash``, ``digest``, ``stocks``), so that copies merge whatever order they come
in (``pipelines.upsert``). What this upgrade can re-derive from what is stored, it does:

- the copy whose text is stored (``articles.category``) gets its hash, the article's digest
  and the article's stock rows on its link;
- ``stock_mentions.kind`` of Shanghai, Shenzhen and Beijing codes follows the code range
  (indices, funds and bonds were stored as ``stock``), on the rows and the links alike.

The content of every other copy was never kept (the old rule linked a second copy without
storing what it said): those links keep ``content_hash`` NULL. The next incremental crawl
downloads such a copy while the site still lists it; older ones need ``refresh=1``, on a
crawl or on the backfill (``make backfill DIR=… REFRESH=1``), which reads every copy again
and completes the merge. Downgrading drops the three columns; kinds stay as re-derived.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")
PAGE = 1000  # articles read and written at a time: memory stays flat on a large database

# The code ranges as the exchanges assign them, frozen here as this revision applies them
# (crawler.processors.stock_kind is the living copy): market id -> (prefix, kind), first
# match wins (no two prefixes of one market overlap); a code no range covers is "other".
RANGES = {
    "1": (("60", "stock"), ("68", "stock"), ("900", "stock"), ("000", "index"),
          ("5", "fund"), ("1", "bond")),
    "0": (("00", "stock"), ("30", "stock"), ("200", "stock"), ("399", "index"),
          ("15", "fund"), ("16", "fund"), ("12", "bond"), ("4", "stock"), ("8", "stock"),
          ("920", "stock")),
}  # fmt: skip
SIX_DIGITS = re.compile(r"\d{6}")

articles = sa.table(
    "articles",
    sa.column("info_code"), sa.column("category"), sa.column("content_hash"),
    sa.column("digest"),
)  # fmt: skip
stocks = sa.table(
    "stock_mentions",
    sa.column("info_code"), sa.column("market"), sa.column("code"), sa.column("symbol"),
    sa.column("name"), sa.column("kind"), sa.column("is_primary", sa.Boolean),
    sa.column("mentions", sa.Integer),
)  # fmt: skip
links = sa.table(
    "article_categories",
    sa.column("info_code"), sa.column("category"), sa.column("content_hash"),
    sa.column("digest"), sa.column("stocks", JSON_TYPE),
)  # fmt: skip


def kind_of(market: str, code: str, kind: str) -> str:
    if market not in RANGES or code.upper().startswith("BK"):
        return kind
    if not SIX_DIGITS.fullmatch(code):
        return "other"
    return next((k for prefix, k in RANGES[market] if code.startswith(prefix)), "other")


def upgrade() -> None:
    with op.batch_alter_table("article_categories") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("digest", sa.Text(), nullable=True))
        batch.add_column(sa.Column("stocks", JSON_TYPE, nullable=True))
    conn = op.get_bind()
    rekind(conn)
    record_stored_copies(conn)


def rekind(conn: sa.Connection) -> None:
    query = sa.select(stocks.c.market, stocks.c.code, stocks.c.kind).distinct()
    query = query.where(stocks.c.market.in_(list(RANGES)))
    changes = [
        {"m": market, "c": code, "k": new}
        for market, code, kind in conn.execute(query)
        if (new := kind_of(market, code, kind)) != kind
    ]
    if changes:
        conn.execute(
            stocks.update()
            .where(stocks.c.market == sa.bindparam("m"), stocks.c.code == sa.bindparam("c"))
            .values(kind=sa.bindparam("k")),
            changes,
        )


def record_stored_copies(conn: sa.Connection) -> None:
    """The stored copy's link gets its hash, digest and stock rows, a page at a time."""
    update = (
        links.update()
        .where(links.c.info_code == sa.bindparam("k_code"))
        .where(links.c.category == sa.bindparam("k_category"))
        .values(content_hash=sa.bindparam("k_hash"), digest=sa.bindparam("k_digest"),
                stocks=sa.bindparam("k_stocks", type_=JSON_TYPE))
    )  # fmt: skip
    columns = (articles.c.info_code, articles.c.category, articles.c.content_hash,
               articles.c.digest)  # fmt: skip
    after = ""
    while True:
        page = conn.execute(
            sa.select(*columns)
            .where(articles.c.info_code > after, articles.c.category.is_not(None))
            .order_by(articles.c.info_code)
            .limit(PAGE)
        ).all()
        if not page:
            return
        after = page[-1][0]
        rows: dict[str, list[dict]] = {code: [] for code, *_ in page}
        query = sa.select(stocks).where(stocks.c.info_code.in_(list(rows)))
        for row in conn.execute(query.order_by(stocks.c.market, stocks.c.code)).mappings():
            rows[row["info_code"]].append({k: v for k, v in row.items() if k != "info_code"})
        conn.execute(
            update,
            [
                {"k_code": code, "k_category": category, "k_hash": content_hash,
                 "k_digest": digest, "k_stocks": rows[code]}
                for code, category, content_hash, digest in page
            ],
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("article_categories") as batch:
        batch.drop_column("stocks")
        batch.drop_column("digest")
        batch.drop_column("content_hash")
