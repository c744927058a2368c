"""The ``finews`` command: what analysts run on the stored articles.

    finews search QUERY [--since D] [--until D] [--stock S] [--outlet X] [--limit N]
                        [--format table|json|csv]
    finews export --format parquet|csv [--since D] [--until D] [--stock S] [--outlet X] OUT
    finews report [--days N] [--until D] [--top N] [--runs N] [--format text|json]
    finews browse …                     (analysis.browse: Datasette on the database)

Every subcommand reads the database at FINEWS_DATABASE_URL, as the crawler does (``--url``
overrides it), on SQLite and PostgreSQL alike. Days (``--since``, ``--until``) are Beijing
calendar days, inclusive, and every time shown is at +08:00, as stored.

This module only parses the command line, opens the database and prints: the search itself
is ``schema.search.search`` (one implementation for the command, the tests and Datasette),
the export is ``analysis.export`` and the report ``analysis.report``. Nothing here writes to
the database, creates one or migrates one. A problem the user can fix (no database, a schema
not at the newest revision, no search index, a bad date) is one line on stderr and exit
status 1; a bad command line is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import shutil
import sys
import unicodedata
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import IO, Any, NoReturn

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from schema.db import database_url, dump_json, make_engine, redact, sqlite_file
from schema.migrate import SchemaOutdated, require_current
from schema.search import Hit, SearchIndexMissing, search

OK, FAILED, USAGE = 0, 1, 2
INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C
CONNECT_TIMEOUT = 10  # seconds to wait for PostgreSQL to answer
SEARCH_FIELDS = ("info_code", "published_at", "outlet", "title", "stocks", "snippet")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the table's times; the header says they are at +08:00
# Column widths of the search table, in terminal cells (a CJK character takes two).
FIRST_WIDTH = 20  # a time (19) above its info_code (20)
OUTLET_WIDTH = 12
STOCKS_WIDTH = 24
TITLE_MIN_WIDTH = 20
GAP = "  "
DEFAULT_WIDTH = 120  # when stdout is not a terminal (a pipe, a file, cron mail)


class CommandError(Exception):
    """A problem the user can fix, said in one line (printed after ``finews <command>:``)."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the problem and where help is, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def day(value: str) -> date:
    """A Beijing calendar day on the command line: YYYY-MM-DD."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {value!r} (a day as YYYY-MM-DD, e.g. 2022-05-26)"
        ) from None


def positive(value: str) -> int:
    """A whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {value!r}")
    return number


# -- the database -----------------------------------------------------------------------------


def open_database(url: str | None) -> Engine:
    """An engine on the database at ``url`` (default FINEWS_DATABASE_URL), which exists and
    is at the newest schema; else CommandError saying what to do.

    A SQLite file that does not exist is never created (connecting would create an empty
    one, and the next crawl would then find a database nobody migrated on purpose).
    """
    parsed = database_url(url)
    where = redact(parsed)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(parsed)
        if path is None or not path.is_file():
            raise CommandError(
                f"no database at {where}: crawl into it first (make demo, make crawl), or "
                "point FINEWS_DATABASE_URL or --url at the database"
            )
    elif parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    engine = make_engine(parsed, connect_args=connect_args)
    try:
        require_current(engine)
    except SchemaOutdated as exc:
        engine.dispose()
        raise CommandError(str(exc)) from None
    except SQLAlchemyError as exc:
        engine.dispose()
        raise CommandError(f"cannot use the database at {where}: {first_line(exc)}") from None
    return engine


def first_line(error: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's wrapping."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


# -- search -----------------------------------------------------------------------------------


def run_search(args: argparse.Namespace) -> int:
    engine = open_database(args.url)
    try:
        hits = search(
            engine,
            args.query,
            since=args.since,
            until=args.until,
            stock=args.stock,
            outlet=args.outlet,
            limit=args.limit,
        )
    except (SearchIndexMissing, ValueError) as exc:  # ValueError: an empty query
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()
    WRITERS[args.format](hits, args, sys.stdout)
    return OK


def hit_record(hit: Hit) -> dict[str, Any]:
    """One hit for JSON and CSV: the time in ISO 8601 at +08:00."""
    return {
        "info_code": hit.info_code,
        "published_at": hit.published_at.isoformat(),
        "outlet": hit.outlet,
        "title": hit.title,
        "stocks": list(hit.stocks),
        "snippet": hit.snippet,
    }


def write_json(hits: list[Hit], _args: argparse.Namespace, out: IO[str]) -> None:
    json.dump([hit_record(hit) for hit in hits], out, ensure_ascii=False, indent=2)
    out.write("\n")


def write_csv(hits: list[Hit], _args: argparse.Namespace, out: IO[str]) -> None:
    """CSV with a header; the stocks as a JSON list, as ``finews export`` writes lists."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SEARCH_FIELDS)
    for hit in hits:
        record = hit_record(hit)
        record["stocks"] = dump_json(record["stocks"])
        writer.writerow([record[name] for name in SEARCH_FIELDS])


def write_table(hits: list[Hit], args: argparse.Namespace, out: IO[str]) -> None:
    """Two lines a hit: time, outlet, title and stocks; then the infoCode and the snippet,
    wrapped to the terminal. Widths count terminal cells, so CJK text stays aligned."""
    query = args.query.strip()
    if not hits:
        out.write(f"No article contains “{query}”{describe_filters(args)}.\n")
        return
    total = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    fixed = FIRST_WIDTH + OUTLET_WIDTH + STOCKS_WIDTH + 3 * len(GAP)
    title_width = max(TITLE_MIN_WIDTH, total - fixed - 1)
    text_width = max(TITLE_MIN_WIDTH, total - FIRST_WIDTH - len(GAP) - 1)
    count = f"{len(hits)} article{'' if len(hits) == 1 else 's'}"
    more = f"; the newest {args.limit} shown, --limit for more" if len(hits) == args.limit else ""
    out.write(f"{count} containing “{query}”{describe_filters(args)}, newest first{more}\n\n")
    header = ("published (+08:00)", "outlet", "title", "stocks")
    widths = (FIRST_WIDTH, OUTLET_WIDTH, title_width, STOCKS_WIDTH)
    out.write(table_row(header, widths) + "\n")
    for hit in hits:
        cells = (
            hit.published_at.strftime(TIME_FORMAT),
            hit.outlet or "",
            hit.title or "",
            ",".join(hit.stocks),
        )
        out.write(table_row(cells, widths) + "\n")
        lines = wrap(hit.snippet, text_width) or [""]
        out.write(table_row((hit.info_code, lines[0]), (FIRST_WIDTH, text_width)) + "\n")
        for line in lines[1:]:
            out.write(table_row(("", line), (FIRST_WIDTH, text_width)) + "\n")
        out.write("\n")


WRITERS: dict[str, Callable[[list[Hit], argparse.Namespace, IO[str]], None]] = {
    "table": write_table,
    "json": write_json,
    "csv": write_csv,
}


def describe_filters(args: argparse.Namespace) -> str:
    """The filters given, as words for the table's heading: " about 600160.SH, from …"."""
    parts = []
    if args.stock:
        parts.append(f"about {args.stock}")
    if args.outlet:
        parts.append(f"from {args.outlet}")
    if args.since and args.until:
        parts.append(f"published {args.since} to {args.until}")
    elif args.since:
        parts.append(f"published since {args.since}")
    elif args.until:
        parts.append(f"published until {args.until}")
    return (" " + ", ".join(parts)) if parts else ""


def cell_width(text: str) -> int:
    """Terminal cells ``text`` takes: two for wide and full-width (CJK) characters, none
    for combining marks, one for the rest (ambiguous ones included, as most terminals do)."""
    return sum(char_width(char) for char in text)


def char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells (ending in "…" where cut), padded with spaces."""
    text = " ".join(text.split())
    if cell_width(text) > width:
        kept, used = [], 0
        for char in text:
            if used + char_width(char) > width - 1:
                break
            kept.append(char)
            used += char_width(char)
        text = "".join(kept) + "…"
    return text + " " * (width - cell_width(text))


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells. Chinese has no spaces to break at, so
    any character may start a line; leading spaces of a line are dropped."""
    lines: list[str] = []
    line, used = "", 0
    for char in text:
        size = char_width(char)
        if used + size > width:
            lines.append(line.rstrip())
            line, used = "", 0
        if not line and char == " ":
            continue
        line += char
        used += size
    if line.strip():
        lines.append(line.rstrip())
    return lines


def table_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return GAP.join(fit(cell, width) for cell, width in zip(cells, widths, strict=True)).rstrip()


# -- export and report ------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    # Arrow's default allocator here (mimalloc) kept ~60 MB more resident at the peak of a
    # 100,000-article export than the system's; read when pyarrow is first imported, below.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from analysis import export

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out} is a file, not a directory to write the export into")
    engine = open_database(args.url)
    try:
        result = export.export(
            engine,
            out,
            args.format,
            since=args.since,
            until=args.until,
            stock=args.stock,
            outlet=args.outlet,
        )
    except OSError as exc:
        raise CommandError(f"cannot write the export into {out}: {exc}") from None
    finally:
        engine.dispose()
    print(result.summary())
    return OK


def run_report(args: argparse.Namespace) -> int:
    from analysis import report

    engine = open_database(args.url)
    try:
        found = report.build(engine, days=args.days, until=args.until, top=args.top, runs=args.runs)
    finally:
        engine.dispose()
    if args.format == "json":
        json.dump(found.to_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(found.to_text())
    return OK


# -- browse -----------------------------------------------------------------------------------


def add_browse(subparsers: Any, load: bool) -> None:
    """The ``browse`` subcommand, delegated to ``analysis.browse``.

    That module (Datasette) is imported only when ``browse`` is the command asked for: the
    other commands should not pay for its imports, nor fail when it is missing.
    """
    description = "Browse and query the database in Datasette, in a web browser."
    short = "browse the database in Datasette"
    browse = None
    problem = None
    if load:
        try:
            browse = importlib.import_module("analysis.browse")
        except ImportError as exc:
            missing = isinstance(exc, ModuleNotFoundError) and exc.name == "analysis.browse"
            problem = (
                "analysis.browse is not part of this installation"
                if missing
                else f"{exc}; `make browse` installs what it needs"
            )
    parser = subparsers.add_parser("browse", help=short, description=description)
    if browse is not None:
        browse.add_arguments(parser)
        parser.set_defaults(run=browse.run)
        return
    parser.set_defaults(any_arguments=True)  # whatever browse's own options would have been

    def unavailable(_args: argparse.Namespace) -> int:
        raise CommandError(f"unavailable ({problem})")

    parser.set_defaults(run=unavailable)


# -- the command line -------------------------------------------------------------------------


def build_parser(*, with_browse: bool = False) -> Parser:
    """The ``finews`` parser. ``with_browse``: import ``analysis.browse`` for its options."""
    parser = Parser(
        prog="finews",
        description="Search, export and report on the finews database (FINEWS_DATABASE_URL).",
        epilog="Examples: finews search 茅台 --since 2022-05-01; finews report --days 7; "
        "finews export --format parquet out/. Days are Beijing days (YYYY-MM-DD).",
    )
    common = Parser(add_help=False)
    common.add_argument(
        "--url", help="database URL (default: FINEWS_DATABASE_URL, else sqlite:///data/finews.db)"
    )
    # The filters search and export share.
    filters = Parser(add_help=False)
    filters.add_argument("--since", type=day, metavar="YYYY-MM-DD", help="first Beijing day")
    filters.add_argument("--until", type=day, metavar="YYYY-MM-DD", help="last Beijing day")
    filters.add_argument("--stock", metavar="SYMBOL", help="only articles on 600160.SH")
    filters.add_argument("--outlet", help="only articles of this outlet (证券日报网)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    text = "Find the articles whose title or body contains QUERY, newest first."
    search_parser = subparsers.add_parser(
        "search",
        parents=[common, filters],
        help="find articles containing a word or phrase",
        description=text,
    )
    search_parser.add_argument("query", metavar="QUERY", help="a word or phrase: 茅台, 新市民")
    search_parser.add_argument(
        "--limit", type=positive, default=20, help="at most this many articles (20)"
    )
    search_parser.add_argument("--format", choices=tuple(WRITERS), default="table")
    search_parser.set_defaults(run=run_search)

    text = (
        "Write the articles and their stock mentions to OUT/articles.<format> and "
        "OUT/stock_mentions.<format>, oldest first."
    )
    export_parser = subparsers.add_parser(
        "export",
        parents=[common, filters],
        help="write articles and stock mentions to files",
        description=text,
    )
    export_parser.add_argument("out", metavar="OUT", help="the directory to write into")
    export_parser.add_argument("--format", choices=("parquet", "csv"), required=True)
    export_parser.set_defaults(run=run_export)

    text = (
        "Articles per Beijing day and outlet, the most-mentioned stocks and the rejects of the "
        "last days, and the last runs: for a person or a cron mail (text) or a program (json)."
    )
    report_parser = subparsers.add_parser(
        "report",
        parents=[common],
        help="articles per day, top stocks, rejects, runs",
        description=text,
    )
    report_parser.add_argument("--days", type=positive, default=7, help="days to cover (7)")
    report_parser.add_argument(
        "--until", type=day, metavar="YYYY-MM-DD", help="the last day covered (today in Beijing)"
    )
    report_parser.add_argument("--top", type=positive, default=10, help="stocks listed (10)")
    report_parser.add_argument("--runs", type=positive, default=10, help="runs listed (10)")
    report_parser.add_argument("--format", choices=("text", "json"), default="text")
    report_parser.set_defaults(run=run_report)

    add_browse(subparsers, with_browse)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_browse=argv[:1] == ["browse"])
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since and until and since > until:
        parser.exit(USAGE, f"finews {args.command}: --since {since} is after --until {until}\n")
    try:
        return int(args.run(args))
    except CommandError as exc:
        print(f"finews {args.command}: {exc}", file=sys.stderr)
        return FAILED
    except OperationalError as exc:  # the database went away or stayed locked mid-command
        print(f"finews {args.command}: the database failed: {first_line(exc)}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(f"finews {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader left early (finews search … | head): not an error. Python would
        # complain again when it flushes stdout at exit, so point stdout at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK


if __name__ == "__main__":
    sys.exit(main())
