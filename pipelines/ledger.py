"""The run ledger: one ``crawl_runs`` row per run, opened at start, closed at the end.

The row is closed whatever the end (finished, interrupted, failed, a CLOSESPIDER_* limit), with
the counts the pipelines keep under ``finews/…`` stats keys. A process killed outright (or one
that could not close its row while the database was away) leaves it ``running`` with the
progress last recorded: ``scrapy cron`` closes its dead workers' rows as ``failed``, and the next
run on the same host marks any row whose process is gone ``interrupted`` (``close_dead_runs``).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Table, insert, select, update

from crawler.scaleout import pid_exists
from schema.models import CrawlRun

RUNS: Table = CrawlRun.__table__  # type: ignore[assignment]

# crawl_runs columns, each counted under the stats key finews/<column>.
COUNTED = ("seen", "stored", "updated", "unchanged", "duplicates", "rejected", "skipped")
ERROR_KEYS = ("log_count/ERROR", "finews/errors")

# Scrapy close reason -> run status; any other reason (CLOSESPIDER_* limits) is "stopped".
STATUS_BY_REASON = {
    "finished": "finished",
    "shutdown": "interrupted",
    "cancelled": "interrupted",
    "start_error": "failed",
    "closespider_errorcount": "failed",
    "engine_stopped": "failed",  # the engine stopped without closing the spider
}


class Stats(Protocol):
    def get_value(self, key: str, default: Any = None) -> Any: ...


def status_for(reason: str | None, *, storage_failed: bool) -> str:
    return "failed" if storage_failed else STATUS_BY_REASON.get(reason or "", "stopped")


def counts_from(stats: Stats) -> dict[str, int]:
    counts = {column: int(stats.get_value(f"finews/{column}", 0) or 0) for column in COUNTED}
    counts["errors"] = sum(int(stats.get_value(key, 0) or 0) for key in ERROR_KEYS)
    return counts


def open_run(
    engine: Engine,
    *,
    spider: str,
    mode: str,
    arguments: dict[str, Any],
    now: datetime,
    job: str | None = None,
) -> int:
    """Insert the run's row, ``running``; ``job`` names the scaled-out crawl it is a worker of."""
    row = {
        "spider": spider,
        "mode": mode,
        # Whatever the spider was given, as JSON: odd values become their text.
        "arguments": json.loads(json.dumps(arguments, default=str)),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": now,
        "status": "running",
        "job": job,
    }
    with engine.begin() as conn:
        return int(conn.execute(insert(RUNS).values(row).returning(RUNS.c.id)).scalar_one())


def record_counts(conn: Connection, run_id: int, counts: dict[str, int]) -> None:
    """Progress of a running run, so a killed process still leaves how far it got."""
    conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(**counts))


def close_run(
    engine: Engine,
    run_id: int,
    *,
    status: str,
    reason: str | None,
    counts: dict[str, int],
    now: datetime,
    exit_status: int | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "close_reason": reason, "finished_at": now}
    if exit_status is not None:
        values["exit_status"] = exit_status
    with engine.begin() as conn:
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values, **counts))


def record_exit_status(engine: Engine, run_id: int, exit_status: int) -> None:
    """Set the exit status of a closed row (a job is judged after its rows were closed)."""
    with engine.begin() as conn:
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(exit_status=exit_status))


def close_abandoned(engine: Engine, run_id: int, *, reason: str, now: datetime) -> bool:
    """Close as ``failed`` a row its dead process left ``running``, keeping its progress counts;
    False if the row was not running (its process closed it)."""
    query = (
        update(RUNS)
        .where(RUNS.c.id == run_id, RUNS.c.status == "running")
        .values(status="failed", close_reason=reason, finished_at=now)
    )
    with engine.begin() as conn:
        return conn.execute(query).rowcount == 1


def close_dead_runs(engine: Engine, *, now: datetime) -> list[int]:
    """Mark ``interrupted`` the ``running`` rows of this host whose process is gone; their ids.

    Rows of other hosts are left alone: their processes cannot be seen from here. A pid taken
    again by a new process keeps its row ``running`` until that process ends."""
    host = socket.gethostname()
    query = select(RUNS.c.id, RUNS.c.pid).where(RUNS.c.status == "running", RUNS.c.host == host)
    with engine.begin() as conn:
        dead = [run for run, pid in conn.execute(query) if pid is not None and not pid_exists(pid)]
        if dead:
            conn.execute(
                update(RUNS)
                .where(RUNS.c.id.in_(dead), RUNS.c.status == "running")
                .values(status="interrupted", close_reason="process_gone", finished_at=now)
            )
    return dead
