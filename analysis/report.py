"""``finews report``: how the last days went, as plain text a cron mail can carry, or JSON.

For the last ``days`` Beijing calendar days up to ``until`` (today in Beijing by default):

- articles per day and outlet (view ``daily_outlet_counts``), every day listed, a day
  without articles as 0, since a gap is what the reader should notice;
- the most-mentioned stocks in the articles published those days (view ``article_stocks``,
  kind ``stock``: boards, indexes and funds are left out), by mentions summed over articles;
- the rejects recorded those days, by reason, with one example each (table ``rejects``);
- the last runs, newest first, whatever the days (view ``run_health``): status, counts,
  errors and duration, so a failed or still-running crawl shows up.

This module only reads the database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock
from typing import Any

from sqlalchemy import Connection, Date, Engine, Float, Integer, bindparam, text

from schema.db import redact
from schema.types import BEIJING, Timestamp

NO_OUTLET = "(no outlet)"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
COUNTS = ("seen", "stored", "updated", "unchanged", "duplicates", "rejected", "skipped", "errors")

DAILY = text(
    "SELECT day, outlet, articles FROM daily_outlet_counts "
    "WHERE day >= :first AND day <= :last ORDER BY day DESC, articles DESC, outlet"
).bindparams(bindparam("first", type_=Date()), bindparam("last", type_=Date()))
TOP_STOCKS = (
    text(
        "SELECT symbol, max(name) AS name, sum(mentions) AS mentions, "
        "count(DISTINCT info_code) AS articles FROM article_stocks "
        "WHERE kind = 'stock' AND published_at >= :start AND published_at < :end "
        "GROUP BY symbol ORDER BY sum(mentions) DESC, count(DISTINCT info_code) DESC, symbol "
        "LIMIT :top"
    )
    .bindparams(bindparam("start", type_=Timestamp()), bindparam("end", type_=Timestamp()))
    .columns(mentions=Integer(), articles=Integer())
)
REJECTS = (
    text(
        "SELECT reason, count(*) AS rejects, min(coalesce(url, info_code)) AS example "
        "FROM rejects WHERE created_at >= :start AND created_at < :end "
        "GROUP BY reason ORDER BY count(*) DESC, reason"
    )
    .bindparams(bindparam("start", type_=Timestamp()), bindparam("end", type_=Timestamp()))
    .columns(rejects=Integer())
)
NEWEST = text("SELECT max(published_at) AS newest FROM articles").columns(newest=Timestamp())
RUNS = text(
    "SELECT id, job, spider, mode, status, close_reason, exit_status, started_at, finished_at, "
    f"duration_s, {', '.join(COUNTS)} FROM run_health "
    "ORDER BY started_at DESC, id DESC LIMIT :runs"
).columns(started_at=Timestamp(), finished_at=Timestamp(), duration_s=Float())


@dataclass
class Day:
    day: date
    articles: int = 0
    outlets: dict[str, int] = field(default_factory=dict)  # most articles first


@dataclass
class Report:
    database: str  # the URL, password hidden
    first: date
    last: date
    days: list[Day]  # newest first
    stocks: list[dict[str, Any]]  # symbol, name, mentions, articles
    rejects: list[dict[str, Any]]  # reason, rejects, example
    runs: list[dict[str, Any]]  # run_health columns, newest first
    newest: date | None = None  # the Beijing day of the newest article, whatever the days

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: days as YYYY-MM-DD, times ISO 8601 at +08:00."""
        return {
            "database": self.database,
            "since": self.first.isoformat(),
            "until": self.last.isoformat(),
            "articles": sum(d.articles for d in self.days),
            "newest_article_day": self.newest.isoformat() if self.newest else None,
            "days": [{**asdict(d), "day": d.day.isoformat()} for d in self.days],
            "top_stocks": self.stocks,
            "rejects": sum(r["rejects"] for r in self.rejects),
            "rejects_by_reason": self.rejects,
            "runs": [
                {
                    key: iso(value) if isinstance(value, datetime) else value
                    for key, value in run.items()
                }
                for run in self.runs
            ],
        }

    def to_text(self) -> str:
        """The report for a person: a few short sections, lines under 100 characters where
        the data allows."""
        span = f"{self.first} to {self.last}" if self.first != self.last else f"{self.last}"
        count = len(self.days)
        lines = [
            f"finews report: {self.database}",
            f"{span} ({count} day{'' if count == 1 else 's'}, Beijing time)",
            "",
            f"Articles per day and outlet: {sum(d.articles for d in self.days)} in all",
        ]
        if self.newest and not any(d.articles for d in self.days):
            # An older database (a backfill, the demo): say where its articles are.
            lines.append(f"  (the newest article is of {self.newest}: --until {self.newest})")
        for d in self.days:
            outlets = ", ".join(f"{name} {n}" for name, n in d.outlets.items())
            lines.append(f"  {d.day}  {d.articles:>6}  {outlets}".rstrip())
        lines += ["", "Most-mentioned stocks in those articles:"]
        if not self.stocks:
            lines.append("  none")
        for rank, stock in enumerate(self.stocks, 1):
            lines.append(
                f"  {rank:>3}. {stock['symbol']:<10} {stock['mentions']:>6} "
                f"mention{'' if stock['mentions'] == 1 else 's'} in "
                f"{stock['articles']:>5} article{'' if stock['articles'] == 1 else 's'}  "
                f"{stock['name'] or ''}".rstrip()
            )
        total = sum(r["rejects"] for r in self.rejects)
        lines += ["", f"Rejects recorded in those days: {total}"]
        for reject in self.rejects:
            lines.append(f"  {reject['rejects']:>6}  {reject['reason']}  e.g. {reject['example']}")
        lines += ["", f"Last runs, newest first ({len(self.runs)}; times +08:00):"]
        if not self.runs:
            lines.append("  none")
        else:
            lines.append(
                f"  {'id':>5}  {'started':<19}  {'status':<11} {'exit':>4} {'seconds':>9} "
                f"{'seen':>7} {'stored':>7} {'updated':>7} {'rejected':>8} {'errors':>6}  spider"
            )
        for run in self.runs:
            started = run["started_at"].strftime(TIME_FORMAT) if run["started_at"] else ""
            exit_status = "" if run["exit_status"] is None else str(run["exit_status"])
            seconds = "" if run["duration_s"] is None else f"{run['duration_s']:.1f}"
            spider = f"{run['spider']} ({run['mode']})"
            if run["job"]:
                spider += f" job {run['job']}"
            if run["status"] != "finished" and run["close_reason"]:
                spider += f": {run['close_reason']}"
            lines.append(
                f"  {run['id']:>5}  {started:<19}  {run['status']:<11} {exit_status:>4} "
                f"{seconds:>9} {run['seen']:>7} {run['stored']:>7} {run['updated']:>7} "
                f"{run['rejected']:>8} {run['errors']:>6}  {spider}"
            )
        return "\n".join(lines) + "\n"


def iso(value: datetime) -> str:
    return value.astimezone(BEIJING).isoformat()


def today() -> date:
    """Today in Beijing, whatever the machine's zone."""
    return datetime.now(BEIJING).date()


def build(
    engine: Engine, *, days: int = 7, until: date | None = None, top: int = 10, runs: int = 10
) -> Report:
    """The report of the ``days`` Beijing days up to ``until`` (inclusive; default today)."""
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    last = until or today()
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, clock(0), BEIJING)
    end = datetime.combine(last + timedelta(days=1), clock(0), BEIJING)
    with engine.connect() as conn:
        return Report(
            database=redact(engine.url),
            first=first,
            last=last,
            days=daily(conn, first, last),
            stocks=[
                dict(row._mapping)
                for row in conn.execute(TOP_STOCKS, {"start": start, "end": end, "top": top})
            ],
            rejects=[
                dict(row._mapping) for row in conn.execute(REJECTS, {"start": start, "end": end})
            ],
            runs=[dict(row._mapping) for row in conn.execute(RUNS, {"runs": runs})],
            newest=newest.astimezone(BEIJING).date()
            if (newest := conn.execute(NEWEST).scalar()) is not None
            else None,
        )


def daily(conn: Connection, first: date, last: date) -> list[Day]:
    """Every day from ``last`` back to ``first``, with its articles per outlet."""
    days = {
        last - timedelta(days=k): Day(last - timedelta(days=k))
        for k in range((last - first).days + 1)
    }
    for value, outlet, articles in conn.execute(DAILY, {"first": first, "last": last}):
        # The view's day is text on SQLite and a date on PostgreSQL.
        found = days[value if isinstance(value, date) else date.fromisoformat(value)]
        found.articles += articles
        found.outlets[outlet or NO_OUTLET] = articles
    return list(days.values())
