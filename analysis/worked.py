"""The worked queries of the analysts' guide (``docs/analysts.md``), read from the guide itself.

The guide is the one place the queries live: this module parses them out of it, so that
``tests/test_analysts.py`` runs every query on both databases and compares the rows with the
documented ones, and the Datasette configuration (``analysis/datasette/``) offers them as
canned queries. It reads Markdown only: no database, no Datasette.

The convention, per query (any other part of the guide is ignored)::

    ### Query: Articles about one security between two instants

    The first paragraph under the heading is the description (plain text: `code` and
    **emphasis** marks and link targets are dropped).

    ```sql
    -- name: articles-about-a-security
    -- param: symbol = BK0473
    -- param: since = 2022-01-01 00:00:00+08:00
    SELECT ... WHERE symbol = :symbol AND published_at >= :since ...
    ```

    | published_at | info_code | ... |
    |---|---|---|
    | 2022-01-07 08:14:19+08:00 | NW202201072239307540 | ... |

- A section runs from its ``### Query: `` heading to the next heading of level 1 to 3.
- Its SQL is either one ```` ```sql ```` block that runs on SQLite and PostgreSQL alike, or
  one ```` ```sql sqlite ```` and one ```` ```sql postgresql ```` block (in either order).
- Every block starts with ``-- name: <slug>`` (lower-case letters, digits, hyphens), then one
  ``-- param: <name> = <value>`` line per named parameter (``:name`` in the SQL; the value
  runs to the end of the line, spaces included). Variant blocks repeat the same lines.
  These header lines are not part of ``WorkedQuery.sql``; other comments are.
- The first Markdown table after the SQL holds the expected rows: a header of column names,
  the ``|---|`` line, then one line per row. An empty cell is NULL; ``\\|`` is a literal
  bar. A query that returns nothing shows the header alone.

Anything else (a section without SQL or table, a missing or repeated name, a parameter the
SQL uses but the header does not give, or the other way round) raises ``GuideError`` naming
the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "analysts.md"
DIALECTS = ("sqlite", "postgresql")

_QUERY_HEADING = re.compile(r"^###\s+Query:\s*(?P<title>.+?)\s*#*\s*$")
_SECTION_END = re.compile(r"^#{1,3}\s")
_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>.*?)\s*$")
_NAME = re.compile(r"^--\s*name:\s*(?P<name>\S*)\s*$")
_PARAM = re.compile(r"^--\s*param:\s*(?P<name>[^=\s]*)\s*=\s*(?P<value>.*?)\s*$")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# :name as a bound parameter: not PostgreSQL's ::cast, not inside a string or a comment.
_BOUND = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)(?!:)")
_STRINGS_AND_COMMENTS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_DELIMITER_CELL = re.compile(r"^:?-{3,}:?$")
_INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")


class GuideError(ValueError):
    """The guide does not follow the worked-query convention (see the module docstring)."""


@dataclass(frozen=True)
class WorkedQuery:
    name: str  # a slug, e.g. "articles-about-a-security"
    title: str  # the heading text
    description: str  # the first paragraph under the heading (plain text)
    sql: dict[str, str]  # by dialect name: "sqlite" and "postgresql" (the same text when portable)
    params: dict[str, str]  # named parameters (:symbol) with the values the guide uses
    expected: list[tuple[str, ...]]  # the documented rows, as text cells
    columns: tuple[str, ...]  # the documented column names


def worked_queries(path: Path | None = None) -> list[WorkedQuery]:
    """Every worked query of the guide (``docs/analysts.md`` by default), in guide order."""
    guide = path or GUIDE
    lines = guide.read_text(encoding="utf-8").splitlines()
    queries: list[WorkedQuery] = []
    seen: dict[str, int] = {}
    starts = [n for n, line in enumerate(lines) if _QUERY_HEADING.match(line)]
    for start in starts:
        end = next(
            (n for n in range(start + 1, len(lines)) if _SECTION_END.match(lines[n])), len(lines)
        )
        query = _Section(guide, lines, start, end).parse()
        if query.name in seen:
            raise GuideError(
                f"{guide}:{start + 1}: query name {query.name!r} is already used by the query "
                f"at line {seen[query.name] + 1}; names must be unique"
            )
        seen[query.name] = start
        queries.append(query)
    return queries


@dataclass
class _Block:
    line: int  # 0-based line of the opening fence
    dialect: str | None  # None: portable
    body: list[str]


class _Section:
    """One ``### Query:`` section, lines [start, end) of the guide."""

    def __init__(self, path: Path, lines: list[str], start: int, end: int) -> None:
        self.path, self.lines, self.start, self.end = path, lines, start, end
        match = _QUERY_HEADING.match(lines[start])
        assert match is not None
        self.title = match["title"]

    def fail(self, line: int, message: str) -> GuideError:
        return GuideError(f"{self.path}:{line + 1}: query {self.title!r}: {message}")

    def parse(self) -> WorkedQuery:
        blocks, after = self._sql_blocks()
        name, params, sql = self._sql(blocks)
        columns, expected = self._table(after)
        return WorkedQuery(
            name=name,
            title=self.title,
            description=self._description(),
            sql=sql,
            params=params,
            expected=expected,
            columns=columns,
        )

    def _description(self) -> str:
        paragraph: list[str] = []
        for n in range(self.start + 1, self.end):
            line = self.lines[n].strip()
            if not line:
                if paragraph:
                    break
                continue
            if _FENCE.match(line) or line.startswith("|"):
                break
            paragraph.append(line)
        if not paragraph:
            raise self.fail(self.start, "no description: a paragraph must follow the heading")
        text = _INLINE_LINK.sub(r"\1", " ".join(paragraph))
        return " ".join(_EMPHASIS.sub("", text).split())

    def _sql_blocks(self) -> tuple[list[_Block], int]:
        """The section's ```sql blocks, and the line after the last of them."""
        blocks: list[_Block] = []
        after = self.start + 1
        n = self.start + 1
        while n < self.end:
            opening = _FENCE.match(self.lines[n])
            if opening is None:
                n += 1
                continue
            fence, words = opening["fence"], opening["info"].split()
            close = next(
                (m for m in range(n + 1, self.end) if self.lines[m].strip() == fence), None
            )
            if close is None:
                raise self.fail(n, f"code block not closed with {fence} before the next heading")
            if words and words[0].lower() == "sql":
                dialect = words[1].lower() if len(words) > 1 else None
                if dialect is not None and dialect not in DIALECTS:
                    raise self.fail(
                        n,
                        f"unknown dialect {words[1]!r} (```sql, ```sql sqlite, ```sql postgresql)",
                    )
                blocks.append(_Block(n, dialect, self.lines[n + 1 : close]))
                after = close + 1
            n = close + 1
        return blocks, after

    def _sql(self, blocks: list[_Block]) -> tuple[str, dict[str, str], dict[str, str]]:
        if not blocks:
            raise self.fail(self.start, "no ```sql block")
        dialects = [block.dialect for block in blocks]
        if dialects != [None] and sorted(d or "" for d in dialects) != sorted(DIALECTS):
            raise self.fail(
                blocks[0].line,
                "give one ```sql block, or one ```sql sqlite and one ```sql postgresql block",
            )
        headers = [self._header(block) for block in blocks]
        name, params, _ = headers[0]
        for block, (other_name, other_params, _) in zip(blocks[1:], headers[1:], strict=True):
            if (other_name, other_params) != (name, params):
                raise self.fail(block.line, "the variants must have the same name and params")
        sql: dict[str, str] = {}
        for block, (_, _, text) in zip(blocks, headers, strict=True):
            used = set(_BOUND.findall(_STRINGS_AND_COMMENTS.sub(" ", text)))
            if used - params.keys():
                missing = ", ".join(sorted(used - params.keys()))
                raise self.fail(block.line, f"no '-- param:' line for :{missing}")
            if params.keys() - used:
                unused = ", ".join(sorted(params.keys() - used))
                raise self.fail(block.line, f"parameter {unused} is never used in the SQL")
            for dialect in DIALECTS if block.dialect is None else (block.dialect,):
                sql[dialect] = text
        return name, params, sql

    def _header(self, block: _Block) -> tuple[str, dict[str, str], str]:
        body = list(block.body)
        while body and not body[0].strip():
            body.pop(0)
        named = _NAME.match(body[0].strip()) if body else None
        if named is None:
            raise self.fail(block.line, "the SQL must start with '-- name: <slug>'")
        name = named["name"]
        if not _SLUG.match(name):
            raise self.fail(
                block.line + 1, f"name {name!r} is not a slug (lower-case letters, digits, -)"
            )
        params: dict[str, str] = {}
        rest = body[1:]
        while rest and rest[0].strip().startswith("-- param:"):
            line = rest.pop(0).strip()
            param = _PARAM.match(line)
            if param is None or not _IDENTIFIER.match(param["name"]) or not param["value"]:
                raise self.fail(block.line, f"expected '-- param: <name> = <value>', got {line!r}")
            if param["name"] in params:
                raise self.fail(block.line, f"parameter {param['name']!r} is given twice")
            params[param["name"]] = param["value"]
        text = "\n".join(rest).strip()
        if not text:
            raise self.fail(block.line, "the block holds no SQL")
        return name, params, text + "\n"

    def _table(self, after: int) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        n = after
        while n < self.end and not self.lines[n].lstrip().startswith("|"):
            if _FENCE.match(self.lines[n]):
                raise self.fail(n, "a code block between the SQL and its result table")
            n += 1
        if n >= self.end:
            raise self.fail(after, "no result table after the SQL")
        columns = _cells(self.lines[n])
        if n + 1 >= self.end or not all(
            _DELIMITER_CELL.match(cell) for cell in _cells(self.lines[n + 1])
        ):
            raise self.fail(n + 1, "a table's header must be followed by a |---| line")
        if len(_cells(self.lines[n + 1])) != len(columns) or not all(columns):
            raise self.fail(n, "the header needs a name for every column")
        rows: list[tuple[str, ...]] = []
        for m in range(n + 2, self.end):
            line = self.lines[m]
            if not line.lstrip().startswith("|"):
                break
            row = _cells(line)
            if len(row) != len(columns):
                raise self.fail(m, f"{len(row)} cells in a table of {len(columns)} columns")
            rows.append(row)
        return columns, rows


def _cells(line: str) -> tuple[str, ...]:
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    return tuple(cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(text))
