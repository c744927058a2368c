"""``scrapy extract PATH…``: run the page parsers on local files, one JSON line each.

``.md``/``.markdown`` files are source post files; anything else is read as a rendered
page. A file that cannot be parsed prints ``{"path": …, "error": …}`` on its line, and
the command exits 1 at the end if any input failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from crawler.items import Article
from crawler.pages import ExtractionError
from crawler.pages.page import parse_page
from crawler.pages.post import parse_post
from crawler.postfiles import POST_SUFFIXES


def extract_file(path: Path) -> Article:
    """Parse one local file with the parser its suffix calls for."""
    data = path.read_bytes()
    url = path.resolve().as_uri()
    if path.suffix.lower() in POST_SUFFIXES:
        return parse_post(data, url)
    return parse_page(data, url)


def describe(article: Article) -> dict:
    """The item as one JSON object, with ``missing`` naming absent key fields."""
    data = article.to_json_dict()
    missing = [name for name in ("info_code", "title", "published_at") if not data[name]]
    if not (article.paragraphs or article.digest):
        missing.append("text")
    if missing:
        data["missing"] = missing
    return data


class Command(ScrapyCommand):
    requires_project = True
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "PATH [PATH ...]"

    def short_desc(self) -> str:
        return "Extract articles from local post files (.md) or saved pages (.html) as JSON lines"

    def run(self, args: list[str], opts) -> None:
        if not args:
            raise UsageError("name at least one .md post file or .html page")
        failed = 0
        for name in args:
            path = Path(name)
            try:
                record = describe(extract_file(path))
            except ExtractionError as exc:
                record, failed = {"path": name, "error": exc.reason}, failed + 1
            except OSError as exc:
                record, failed = {"path": name, "error": f"cannot read: {exc.strerror}"}, failed + 1
            print(json.dumps(record, ensure_ascii=False), flush=True)
        if failed:
            print(f"{failed} of {len(args)} inputs failed", file=sys.stderr)
            self.exitcode = 1
