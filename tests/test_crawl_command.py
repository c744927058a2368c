"""``scrapy crawl`` with wrong spider arguments: one error line and status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["archive"], "error: spider 'archive': name the directory to backfill"),
        (["archive", "-a", "path=/nonexistent"], "is not a directory"),
        (
            ["archive", "-a", "path=fixtures/corpus/posts", "-a", "since=2022-13-01"],
            "since must be a day as YYYY-MM-DD",
        ),
        (["finews", "-a", "base_url=notaurl"], "error: spider 'finews': not an http(s) URL"),
    ],
)
def test_wrong_arguments_end_with_one_clear_error(args, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scrapy.cmdline", "crawl", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "FINEWS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
