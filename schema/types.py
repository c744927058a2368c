"""Column types that behave the same on SQLite and PostgreSQL.

Times are stored at Beijing time (UTC+08:00), the site's own zone: PostgreSQL as
``timestamptz``, SQLite as ISO 8601 text with the offset, so raw SQL on either shows
Beijing time and text comparison on SQLite sorts by instant.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

BEIJING = timezone(timedelta(hours=8))

# PostgreSQL gets jsonb (indexable, compact); SQLite keeps JSON as text.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Timestamp(TypeDecorator[datetime]):
    """An aware datetime, stored and returned at +08:00; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            # "2022-04-27 15:22:47+08:00" plus room for microseconds.
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} (an offset is required)")
        value = value.astimezone(BEIJING)
        if dialect.name == "sqlite":
            return value.isoformat(sep=" ")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.astimezone(BEIJING)
