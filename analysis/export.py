"""``finews export``: the articles and their stock mentions as Parquet or CSV files, streamed.

Two files in the output directory: ``articles.<ext>``, one row per article, oldest first,
and ``stock_mentions.<ext>``, one row per mention of an exported article, in the articles'
order. The filters (Beijing days, a symbol, an outlet) choose articles; the mentions follow
the articles chosen, so the two files join on ``info_code`` with nothing missing or left
over (with ``--stock``, an article comes with all its mentions, not only that symbol's).

Memory stays flat whatever the number of articles: rows come FETCH at a time from a
streaming cursor (server-side on PostgreSQL), each batch's mentions are read by their
infoCodes, and a Parquet row group is written once it holds ROW_GROUP_ROWS rows or
ROW_GROUP_BYTES of data, whichever comes first (pyarrow writes one row group per call, so
a group is gathered in Arrow form first: the byte cap keeps long articles from making it
hundreds of megabytes). The whole export reads one snapshot (REPEATABLE READ on PostgreSQL,
one read transaction on SQLite), so a crawl writing meanwhile cannot make the files disagree.

Each file is written as ``.<name>.partial`` beside its final name and renamed into place
only when both files are complete; an interrupted export removes its partial files and
leaves any earlier export untouched.

- Parquet (zstd): an explicit schema. Times are ``timestamp[us, tz=Asia/Shanghai]`` at the
  stored instants; the JSON lists (``paragraphs``, ``images``) ``list<string>``; booleans
  ``bool``; counts ``int32``, ``run_id`` ``int64``.
- CSV: UTF-8 with a byte-order mark (``utf-8-sig``) so that spreadsheets read the Chinese
  text as Chinese; times ISO 8601 at +08:00 (``2022-05-26T00:19:55+08:00``); lists as JSON
  text; booleans ``true``/``false``; NULL as an empty field.

This module only reads the database.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import ColumnElement, Connection, Engine, Table, exists, select

from schema.db import dump_json
from schema.models import Article, StockMention
from schema.types import BEIJING

ARTICLES: Table = Article.__table__  # type: ignore[assignment]
STOCKS: Table = StockMention.__table__  # type: ignore[assignment]

FORMATS = ("parquet", "csv")
FETCH = 1_000  # rows read from the cursor at a time; also infoCodes per mentions query
ROW_GROUP_ROWS = 50_000
# Arrow data gathered before a row group is written. At 100,000 synthetic articles (~3 kB
# each in Arrow: groups of ~15,000) the export peaked at 248 MB; 64 MB: 268 MB.
ROW_GROUP_BYTES = 48 * 1024 * 1024
COMPRESSION = "zstd"  # smaller than snappy on Chinese text; pandas, DuckDB, Spark read it
TIMESTAMP = pa.timestamp("us", tz="Asia/Shanghai")
STRINGS = pa.list_(pa.string())

ARTICLE_SCHEMA = pa.schema(
    [
        pa.field("info_code", pa.string(), nullable=False),
        pa.field("published_at", TIMESTAMP, nullable=False),
        pa.field("title", pa.string()),
        pa.field("outlet", pa.string()),
        pa.field("source", pa.string()),
        pa.field("category", pa.string()),
        pa.field("digest", pa.string()),
        pa.field("paragraphs", STRINGS),
        pa.field("body_text", pa.string(), nullable=False),
        pa.field("body_html", pa.string()),
        pa.field("images", STRINGS),
        pa.field("source_url", pa.string()),
        pa.field("url", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("revision", pa.int32(), nullable=False),
        pa.field("first_seen_at", TIMESTAMP, nullable=False),
        pa.field("updated_at", TIMESTAMP, nullable=False),
        pa.field("run_id", pa.int64()),
    ]
)
# secid (Eastmoney's <market>.<code>, as in the article_stocks view) is computed, not stored.
MENTION_SCHEMA = pa.schema(
    [
        pa.field("info_code", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("secid", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("is_primary", pa.bool_(), nullable=False),
        pa.field("mentions", pa.int32(), nullable=False),
    ]
)
MENTION_COLUMNS = [name for name in MENTION_SCHEMA.names if name != "secid"]
# Dictionary encoding only where values repeat; for unique text it only costs memory.
DICTIONARY = {
    "articles": ["outlet", "source", "category"],
    "stock_mentions": ["symbol", "secid", "market", "code", "name", "kind"],
}


@dataclass
class ExportResult:
    """What an export wrote."""

    format: str
    articles: int = 0
    mentions: int = 0
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for a person: rows written, files and their sizes."""
        lines = [
            f"finews export: {plural(self.articles, 'article')} and "
            f"{plural(self.mentions, 'stock mention')} written as {self.format} "
            f"in {self.seconds:.1f} s:"
        ]
        lines += [f"  {path} ({size_text(path.stat().st_size)})" for path in self.files]
        return "\n".join(lines)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def size_text(size: int) -> str:
    for unit in ("bytes", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def export(
    engine: Engine,
    out: Path,
    format: str,
    *,
    since: date | None = None,
    until: date | None = None,
    stock: str | None = None,
    outlet: str | None = None,
) -> ExportResult:
    """Write ``out/articles.<format>`` and ``out/stock_mentions.<format>`` (see the module
    docstring); ``since``/``until`` are inclusive Beijing days of ``published_at``."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: parquet or csv")
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(format)
    final = {name: out / f"{name}.{format}" for name in ("articles", "stock_mentions")}
    partial = {name: path.with_name(f".{path.name}.partial") for name, path in final.items()}
    try:
        articles = open_sink(format, partial["articles"], ARTICLE_SCHEMA, "articles")
        try:
            mentions = open_sink(
                format, partial["stock_mentions"], MENTION_SCHEMA, "stock_mentions"
            )
            try:
                with engine.connect() as conn:
                    result.articles, result.mentions = copy_rows(
                        snapshot(conn), articles, mentions, filters(since, until, stock, outlet)
                    )
            finally:
                mentions.close()
        finally:
            articles.close()
        for name in final:
            os.replace(partial[name], final[name])
    except BaseException:
        for path in partial.values():
            path.unlink(missing_ok=True)
        raise
    result.files = list(final.values())
    result.seconds = time.monotonic() - started
    return result


def filters(
    since: date | None, until: date | None, stock: str | None, outlet: str | None
) -> list[ColumnElement[bool]]:
    """The conditions on ``articles`` that choose what is exported."""
    a = ARTICLES.c
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(a.published_at >= midnight(since))
    if until is not None:
        where.append(a.published_at < midnight(until + timedelta(days=1)))
    if stock is not None:
        s = STOCKS.c
        where.append(exists().where(s.info_code == a.info_code, s.symbol == stock))
    if outlet is not None:
        where.append(a.outlet == outlet)
    return where


def midnight(day: date) -> datetime:
    return datetime.combine(day, clock(0), BEIJING)


def snapshot(conn: Connection) -> Connection:
    """Make every query on ``conn`` read the same committed state, until it closes."""
    if conn.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    # SQLite: pysqlite opens a transaction only before a write; without one, each query
    # would read the database as it is when that query starts.
    conn.exec_driver_sql("BEGIN")
    return conn


def copy_rows(
    conn: Connection, articles: Sink, mentions: Sink, where: list[ColumnElement[bool]]
) -> tuple[int, int]:
    """Stream the chosen articles into ``articles`` and their mentions into ``mentions``;
    return how many of each were written."""
    a, s = ARTICLES.c, STOCKS.c
    query = select(*(a[name] for name in ARTICLE_SCHEMA.names)).where(*where)
    # Oldest first, by the published_at index alone: a tie-breaker would make both
    # databases sort every row, bodies included, before the first one comes out.
    query = query.order_by(a.published_at)
    stream = {"stream_results": True, "yield_per": FETCH}
    written = mentioned = 0
    with conn.execute(query, execution_options=stream) as result:  # closes the cursor
        for rows in result.partitions():
            codes = [row.info_code for row in rows]
            by_code: dict[str, list[tuple[Any, ...]]] = {}
            found = conn.execute(
                select(*(s[name] for name in MENTION_COLUMNS))
                .where(s.info_code.in_(codes))
                .order_by(s.info_code, s.is_primary.desc(), s.mentions.desc(), s.symbol)
            )
            for code, symbol, market, number, *rest in found:
                row = (code, symbol, f"{market}.{number}", market, number, *rest)
                by_code.setdefault(code, []).append(row)
            batch = [row for code in codes for row in by_code.get(code, ())]
            articles.add(rows)
            mentions.add(batch)
            written += len(rows)
            mentioned += len(batch)
    return written, mentioned


# -- the files --------------------------------------------------------------------------------


class Sink(Protocol):
    def add(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


def open_sink(format: str, path: Path, schema: pa.Schema, table: str) -> Sink:
    if format == "parquet":
        return ParquetSink(path, schema, DICTIONARY[table])
    return CsvSink(path, schema.names)


class ParquetSink:
    """A Parquet file written a row group at a time (see ROW_GROUP_ROWS, ROW_GROUP_BYTES)."""

    def __init__(self, path: Path, schema: pa.Schema, dictionary: list[str]) -> None:
        self.schema = schema
        self.handle: IO[bytes] = path.open("wb")
        self.writer = pq.ParquetWriter(
            self.handle, schema, compression=COMPRESSION, use_dictionary=dictionary
        )
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0
        self.bytes = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        columns = zip(*rows, strict=True)
        arrays = [
            pa.array(values, type=f.type) for values, f in zip(columns, self.schema, strict=True)
        ]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self.batches.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self.write_row_group()

    def write_row_group(self) -> None:
        if self.batches:
            table = pa.Table.from_batches(self.batches, schema=self.schema)
            self.writer.write_table(table, row_group_size=table.num_rows)
        self.batches, self.rows, self.bytes = [], 0, 0

    def close(self) -> None:
        try:
            self.write_row_group()
            self.writer.close()
            self.handle.flush()
            os.fsync(self.handle.fileno())
        finally:
            self.handle.close()


class CsvSink:
    """A CSV file with a header row, UTF-8 with a byte-order mark (see the module docstring)."""

    def __init__(self, path: Path, names: Sequence[str]) -> None:
        self.handle: IO[str] = path.open("w", encoding="utf-8-sig", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(names)

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        self.writer.writerows([csv_value(value) for value in row] for row in rows)

    def close(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        finally:
            self.handle.close()


def csv_value(value: Any) -> Any:
    """A value as CSV text: ISO 8601 times at +08:00, JSON lists, true/false, "" for NULL."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(BEIJING).isoformat()
    if isinstance(value, list | dict):
        return dump_json(value)
    return value
