"""``make demo``: a summary with real counts the first time, nothing new the second time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crawling import ROOT, environment

pytestmark = pytest.mark.slow


def make_demo(tmp_path: Path) -> str:
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        # -o: never reinstall the venv from a test, whatever pyproject.toml's mtime says.
        ["make", "-s", "-o", str(venv / ".installed"), "demo", f"VENV={venv}",
         f"DEMO_DATABASE_URL=sqlite:///{tmp_path / 'demo.db'}", f"DEMO_SITE={tmp_path / 'site'}",
         "DEMO_POSTS=120"],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stderr == "", "the log stays quiet when all is well"
    return result.stdout


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return int(match[1])


def test_make_demo_twice(tmp_path: Path):
    first = make_demo(tmp_path)
    assert "finews demo: a mirror of " in first
    stored = number(r"This run \(\d+ s\): \d+ pages fetched, (\d+) new articles stored", first)
    articles = number(r"  (\d+) articles in \d+ categories", first)
    assert stored == articles > 100
    assert number(r"articles in (\d+) categories", first) >= 20
    assert number(r"1\. \S+\.S[HZ] +(\d+) mentions", first) > 0
    assert number(r"  (\d+) rejects", first) == 2  # the corpus's two site-news posts

    second = make_demo(tmp_path)
    assert "This run: nothing new." in second
    assert number(r"category pages, (\d+) posts\)", second) == 0
    assert number(r"  (\d+) articles in \d+ categories", second) == articles
