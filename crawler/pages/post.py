"""Parse one source post file (YAML front matter + kramdown body) into an ``Article``.

Front matter must survive what the real generator wrote: a leading blank line, a UTF-8
BOM, CRLF line endings, empty fields and titles with unescaped ASCII ``"`` that break
YAML (the title is then salvaged from between the first and last quote of its line).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from crawler.items import Article
from crawler.loaders import ArticleLoader
from crawler.pages import ExtractionError
from crawler.pages.body import extract_body, parse_fragment
from crawler.pages.kramdown import render_body

_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\n(?:(.*?)\n)?---[ \t]*(?:\n|\Z)", re.S)
_OPENING = re.compile(r"\A\s*---[ \t]*\n")
# A plain scalar that YAML reads as the same string: no indicator first, no ": " or " #".
_SIMPLE_LINE = re.compile(
    r'^([A-Za-z_][\w-]*):[ \t]*("[^"\n]*"|(?:[^-?:,\[\]{}#&*!|>\'"%@`\s]|-[^\s])'
    r"(?:(?!: | #)[^\n])*?|)[ \t]*$"
)
_SALVAGE_LINE = re.compile(r"^([A-Za-z_][\w-]*)[ \t]*:[ \t]?(.*)$")
_YAML_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)  # every scalar stays a string


def parse_post(data: bytes, url: str) -> Article:
    """Parse a post file's bytes; ``url`` is where it came from (``file://…`` or a path)."""
    text = _decode(data)
    front, body = split_front_matter(text)
    loader = ArticleLoader()
    loader.add_value("url", url)
    loader.add_value("title", front.get("title"))
    loader.add_value("published_at", front.get("date"))
    loader.add_value("category", front.get("categories") or front.get("category"))
    loader.add_value("outlet", front.get("tags") or front.get("tag"))
    content = extract_body(parse_fragment(render_body(body)), "https://finews.withounder.com/")
    loader.add_body(content)
    loader.add_info_code(content.source_url, Path(url).name)
    return loader.load_item()


def _decode(data: bytes) -> str:
    if not data.strip():
        raise ExtractionError("empty file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(
            f"not UTF-8: undecodable byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_front_matter(text: str) -> tuple[dict[str, object], str]:
    """The front matter as a dict of strings (or lists of strings) and the body."""
    match = _FRONT_MATTER.match(text)
    if not match:
        if _OPENING.match(text):
            raise ExtractionError("front matter is not closed: no second '---' line")
        raise ExtractionError("no front matter: the file does not start with a '---' block")
    block, body = match[1] or "", text[match.end() :]
    simple = _simple(block)
    if simple is not None:
        return simple, body
    try:
        data = yaml.load(block, Loader=_YAML_LOADER)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        data = _salvage(block)
    return {str(k): v for k, v in data.items()}, body


def _simple(block: str) -> dict[str, object] | None:
    """The generator's own shape, read without YAML: every line ``key: value`` with a
    plain or double-quoted value holding no YAML syntax. None when any line is more."""
    data: dict[str, object] = {}
    for line in block.split("\n"):
        if not line.strip():
            continue
        match = _SIMPLE_LINE.match(line)
        if not match:
            return None
        value = match[2]
        if value.startswith('"'):  # _SIMPLE_LINE's "[^"\n]*": only escapes need YAML
            if "\\" in value:
                return None
            value = value[1:-1]
        data[match[1]] = value
    return data


def _salvage(block: str) -> dict[str, object]:
    """Read ``key: value`` lines the way the generator wrote them, quotes unescaped."""
    data: dict[str, object] = {}
    for line in block.split("\n"):
        match = _SALVAGE_LINE.match(line.strip())
        if not match:
            continue
        key, value = match[1], match[2].strip()
        if len(value) >= 2 and value[0] == '"' and value.rfind('"') > 0:
            value = value[1 : value.rfind('"')]
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("''", "'")
        data[key] = value
    if not data:
        raise ExtractionError("front matter has no readable 'key: value' line")
    return data
