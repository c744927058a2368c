"""Render a post file's Markdown body to HTML as the site's kramdown does.

The generator writes few block shapes: raw HTML blocks, ``> digest``, plain text,
``<http://…>`` link lines and ``[返回…](…)`` back-links. Those shapes are rendered
directly (microseconds); any other block goes through markdown-it-py (CommonMark with
raw HTML), which costs ~0.3 ms per call on this machine. ``tests/test_kramdown.py``
checks that both paths give the same HTML.
"""

from __future__ import annotations

import re
from functools import lru_cache
from html import escape

from markdown_it import MarkdownIt

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
# CommonMark HTML block starts (types 1-7, approximately): a tag, a closing tag or a comment.
_HTML_BLOCK = re.compile(r"^ {0,3}<(?:[A-Za-z][A-Za-z0-9-]*[\s/>]|/[A-Za-z]|!--)")
_AUTOLINK = re.compile(r"^<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*)>$")
# A back-link target as kramdown reads it: spaces and one level of balanced brackets are
# allowed, for slugs like "21shijijingjibaodao 21caijingAPP" and "anxin(xianggang)".
_TARGET = r"(?:[^()\s<>\\]|\([^()\s<>\\]*\)| (?=[^()\n]*\)))+"
_LINK_TEXT = r"[^\[\]\\`*_<>&!]+"
_LINK = re.compile(rf"\[({_LINK_TEXT})\]\(({_TARGET})\)")
_LINK_LINE = re.compile(rf"^(?:\[{_LINK_TEXT}\]\({_TARGET}\)[｜|\n ]*)+$")
# Characters and line starts that may carry Markdown meaning in plain text.
_MARKDOWN_SYNTAX = re.compile(r"[\\`*_\[\]<>&!~|]|^\s*(?:[#>=+-]|\d+[.)]\s|-{3,}|\s{4})", re.M)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True})


def render_markdown(text: str) -> str:
    """Full CommonMark rendering (the slow, exact path)."""
    return _markdown().render(text)


def render_body(text: str) -> str:
    """The post body as HTML, block by block (read as a file is: ending in a newline)."""
    return "".join(_render_block(block) for block in _BLANK_LINES.split(text) if block.strip())


def _render_block(block: str) -> str:
    stripped = block.strip()
    if _HTML_BLOCK.match(block):
        return block.rstrip("\n") + "\n"
    if stripped == "<>":
        return "<p>&lt;&gt;</p>\n"
    match = _AUTOLINK.match(stripped)
    if match:
        url = escape(match[1])
        return f'<p><a href="{url}">{url}</a></p>\n'
    if _LINK_LINE.match(stripped):
        return "<p>" + _LINK.sub(_link, stripped) + "</p>\n"
    if stripped.startswith(">"):
        inner = re.sub(r"^ {0,3}> ?", "", stripped, flags=re.M)
        if not _MARKDOWN_SYNTAX.search(inner):
            return f"<blockquote>\n<p>{_text(inner)}</p>\n</blockquote>\n"
    elif not _MARKDOWN_SYNTAX.search(block.strip("\n")):
        return f"<p>{_text(stripped)}</p>\n"
    return render_markdown(block)


def _text(text: str) -> str:
    lines = [line.strip() for line in text.split("\n")]
    return escape("\n".join(lines), quote=True).replace("&#x27;", "'")


def _link(match: re.Match) -> str:
    return f'<a href="{escape(match[2])}">{escape(match[1], quote=False)}</a>'
