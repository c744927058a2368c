"""Post files in a directory tree, for the archive spider's backfill: find them, place them
in a window, decide what to read, and read them.

The walk and the decisions depend only on the file system and their arguments (the store's
file records and stored infoCodes come in as arguments), and the reading runs in the
backfill's parser processes (``read_chunk``), so nothing here may use the crawl process's
state or the database.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol
from urllib.parse import quote_from_bytes

from crawler.items import Article
from crawler.pages import ExtractionError
from crawler.pages.post import parse_post, split_front_matter

POST_SUFFIXES = (".md", ".markdown")
# Directories whose Markdown files are posts even when their names are not (Jekyll's own
# _posts, and old_post/ where the generator moves posts older than three days).
POST_DIRS = frozenset({"_posts", "old_post"})
# Jekyll post names (YYYY-MM-DD-title.md) and the generator's undated "-<id>.md".
_POST_NAME = re.compile(r"^(?:\d{4}-\d{2}-\d{2}-.+|-.+)\.(?:md|markdown)$")
_NAME_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})-")
# Saved versions of one repository path: <name>.<commit7>.md (fixtures/corpus).
_VERSION = re.compile(r"\.[0-9a-f]{7}(?=\.(?:md|markdown)$)")
_LIVE_DIR = f"{os.sep}_posts{os.sep}"
_NOT_UTF8 = re.compile("[\ud800-\udfff]")  # how os.fsdecode keeps bytes that are not UTF-8

# Why a file was passed over without an item (stats: finews/skipped/<reason>).
OUTSIDE_WINDOW = "outside_window"
OTHER_CATEGORY = "other_category"
UNCHANGED = "unchanged"
NOT_A_POST = "not_a_post"
# source_files.status of a file whose item was rejected (pipelines.sources.REJECTED).
_REJECTED = "rejected"
EXCERPT_BYTES = 1200  # the store keeps 300 characters; 1,200 bytes hold them in UTF-8


@dataclass(frozen=True, slots=True)
class PostFile:
    """A Markdown file found under the root, as ``lstat`` saw it."""

    path: str  # absolute
    size: int
    mtime_ns: int
    # Named like a post or inside a post directory: if it cannot be read as a post it is
    # a broken post (a reject), not some other Markdown file (README.md: passed over).
    named_as_post: bool

    @property
    def url(self) -> str:
        """``Path(path).as_uri()``, without building a Path (a backfill asks 100,000 times)."""
        return "file://" + quote_from_bytes(os.fsencode(self.path))

    @property
    def name_date(self) -> date | None:
        return name_date(os.path.basename(self.path))


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A directory or file the walk could not look into."""

    path: str
    reason: str


@dataclass
class Tree:
    """What ``walk`` found: post files in path order, and what it could not read."""

    files: list[PostFile]
    unreadable: list[Unreadable]
    symlinks: list[str]  # never followed, never read


def name_date(name: str) -> date | None:
    """The date a post file's name starts with (``2022-04-27-NW….md``), if it is one."""
    match = _NAME_DATE.match(name)
    try:
        return date(*map(int, match.groups())) if match else None
    except ValueError:
        return None


def is_post_name(name: str, parents: Iterable[str] = ()) -> bool:
    return bool(_POST_NAME.match(name)) or any(part in POST_DIRS for part in parents)


def post_name(name: str) -> str:
    """The post a file holds, by name: ``<name>.<commit7>.md`` versions are ``<name>.md``."""
    return _VERSION.sub("", name)


def superseded(files: Iterable[PostFile]) -> set[str]:
    """Paths of files that hold an older copy of a post another file holds.

    One post is one file name (Jekyll derives its URL from it), in ``_posts/`` or
    ``old_post/`` or as saved versions ``<name>.<commit7>.md``. The copy read is the plain
    name, then the one in ``_posts/`` (the live site's), then the last in path order. (An
    emnews post and an outlet's copy of it have different names: both are read.)
    """
    best: dict[str, PostFile] = {}
    older: set[str] = set()
    for file in files:
        key = post_name(os.path.basename(file.path))
        other = best.setdefault(key, file)
        if other is not file:  # a second copy: keep the better one
            best[key], old = (file, other) if _rank(file) > _rank(other) else (other, file)
            older.add(old.path)
    return older


def _rank(file: PostFile) -> tuple[bool, bool, str]:
    name = os.path.basename(file.path)
    return (post_name(name) == name, _LIVE_DIR in file.path, file.path)


_Stack = list[tuple[str, tuple[str, ...]]]  # directories to walk, with their parents' names


def walk(root: Path) -> Tree:
    """Every Markdown file under ``root``, sorted by path. Symlinks are listed apart, never
    followed (nothing outside ``root`` is read); hidden directories (``.git``) not entered."""
    tree = Tree(files=[], unreadable=[], symlinks=[])
    stack: _Stack = [(str(root), ())]
    while stack:
        directory, parents = stack.pop()
        try:
            # One entry at a time: a list of 100,000 DirEntry objects would cost ~70 MB.
            with os.scandir(directory) as entries:
                for entry in entries:
                    _visit(entry, parents, tree, stack)
        except OSError as exc:
            tree.unreadable.append(Unreadable(directory, _os_reason("directory", exc)))
    tree.files.sort(key=lambda f: f.path)
    tree.symlinks.sort()
    return tree


def _visit(entry: os.DirEntry[str], parents: tuple[str, ...], tree: Tree, stack: _Stack) -> None:
    try:
        if _NOT_UTF8.search(entry.name):
            # A name the database cannot hold (not UTF-8): said in a reject, never read.
            shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
            tree.unreadable.append(Unreadable(shown, "file name is not UTF-8"))
        elif entry.is_symlink():
            tree.symlinks.append(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):
                stack.append((entry.path, (*parents, entry.name)))
        elif entry.name.lower().endswith(POST_SUFFIXES) and entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
            named = is_post_name(entry.name, parents)
            tree.files.append(PostFile(entry.path, stat.st_size, stat.st_mtime_ns, named))
    except OSError as exc:
        tree.unreadable.append(Unreadable(entry.path, _os_reason("file", exc)))


def _os_reason(what: str, exc: OSError) -> str:
    return f"cannot read {what}: {exc.strerror or exc}"


@dataclass(frozen=True)
class Filters:
    """``-a since/until`` (inclusive days, Beijing time) and ``-a categories`` (slugs)."""

    since: date | None = None
    until: date | None = None
    categories: frozenset[str] | None = None

    @classmethod
    def parse(
        cls, since: str | None = None, until: str | None = None, categories: str | None = None
    ) -> Filters:
        """From the spider's arguments; ValueError says which one is wrong."""
        slugs = None
        if categories is not None and categories.strip():
            slugs = frozenset(s.strip() for s in categories.split(",") if s.strip())
        filters = cls(_day("since", since), _day("until", until), slugs)
        if filters.since and filters.until and filters.since > filters.until:
            raise ValueError(f"since {filters.since} is after until {filters.until}")
        return filters

    @property
    def windowed(self) -> bool:
        return self.since is not None or self.until is not None

    def in_window(self, day: date) -> bool:
        return not ((self.since and day < self.since) or (self.until and day > self.until))

    def skip_by_name(self, file: PostFile) -> str | None:
        """Why ``file`` need not even be read, judging by its name's date; else None."""
        day = file.name_date if self.windowed else None
        return OUTSIDE_WINDOW if day is not None and not self.in_window(day) else None

    def skip_by_content(
        self, name: str, published: date | None, category: str | None
    ) -> str | None:
        """Why a parsed post is passed over; else None. A name's date wins over the parsed
        time; a post with neither goes on (the validate pipeline rejects it)."""
        day = name_date(name) or published
        if self.windowed and day is not None and not self.in_window(day):
            return OUTSIDE_WINDOW
        if self.categories is not None and category not in self.categories:
            return OTHER_CATEGORY
        return None


def _day(name: str, value: str | None) -> date | None:
    if value is None or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{name} must be a day as YYYY-MM-DD, not {value!r}") from None


class FileRecord(Protocol):
    """What the store recorded of a file (``pipelines.sources.FileRecord``)."""

    size: int
    mtime_ns: int
    sha256: str
    info_code: str | None
    status: str


def still_held(record: FileRecord, stored_codes: Container[str]) -> bool:
    """True if what the file produced last time is still in the database: its article is
    stored, or it was rejected (a rejects row says why; ``refresh`` tries it again)."""
    if record.status == _REJECTED:
        return True
    return record.info_code is not None and record.info_code in stored_codes


def is_unchanged(file: PostFile, record: FileRecord | None, stored_codes: Container[str]) -> bool:
    """The cheap skip: same size and mtime as recorded, and its article still stored."""
    same = record is not None and (record.size, record.mtime_ns) == (file.size, file.mtime_ns)
    return same and still_held(record, stored_codes)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadTask:
    """One file to read; ``known_sha256`` is the hash of bytes already ingested."""

    path: str
    url: str
    named_as_post: bool
    known_sha256: str | None = None
    size: int = 0  # as the walk saw it, for the file ledger
    mtime_ns: int = 0


@dataclass(slots=True)
class ReadResult:
    """What a file held: an article, why it cannot be read, or why it was passed over."""

    sha256: str | None = None  # None when the file could not be read at all
    article: Article | None = None
    error: str | None = None  # a reject's reason
    excerpt: bytes | None = None
    skipped: str | None = None  # a skip reason (UNCHANGED, NOT_A_POST, ...)
    crashed: bool = False  # the parser raised something other than ExtractionError


def read_chunk(tasks: Sequence[ReadTask], filters: Filters) -> list[ReadResult]:
    """``read_post_file`` for each task, in order: one unit of work for a parser process."""
    return [read_post_file(task, filters) for task in tasks]


def read_post_file(task: ReadTask, filters: Filters) -> ReadResult:
    """Read, hash and parse one file; never raises."""
    try:
        data = read_nofollow(task.path)
    except OSError as exc:
        return ReadResult(error=_os_reason("file", exc))
    digest = hashlib.sha256(data).hexdigest()
    if digest == task.known_sha256:
        return ReadResult(digest, skipped=UNCHANGED)
    if not task.named_as_post and not has_post_front_matter(data):
        return ReadResult(digest, skipped=NOT_A_POST)
    try:
        article = parse_post(data, task.url)
    except ExtractionError as exc:
        return ReadResult(digest, error=exc.reason, excerpt=data[:EXCERPT_BYTES])
    except Exception as exc:  # a parser bug must cost one file, not the backfill
        reason = f"parser error: {type(exc).__name__}: {exc}"
        return ReadResult(digest, error=reason, excerpt=data[:EXCERPT_BYTES], crashed=True)
    published = article.published_at.date() if article.published_at else None
    skip = filters.skip_by_content(os.path.basename(task.path), published, article.category)
    if skip is not None:
        return ReadResult(digest, skipped=skip)
    return ReadResult(digest, article=article)


def read_nofollow(path: str) -> bytes:
    """The file's bytes; a symlink put in its place since the walk is refused (ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def has_post_front_matter(data: bytes) -> bool:
    """True for a Markdown file whose front matter says ``layout: post``."""
    try:
        front, _ = split_front_matter(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ExtractionError):
        return False
    return str(front.get("layout") or "").strip() == "post"
