"""``finews export`` of 100,000 synthetic articles: time and peak memory, SQLite and PostgreSQL.

Each backend gets a fresh database filled through ``pipelines.store.Store`` with the items
of ``fixtures.synth`` (``tests.bench_search``'s ``fill``: the same articles as the search
benchmark). Then ``finews export`` runs in a child process, as a user runs it, three times:
Parquet of everything, Parquet of the first tenth (``--until``: memory must not grow with
the number of rows, so both peaks should be about the same) and CSV of everything. The
child's peak memory is the kernel's high-water mark of its resident set (VmHWM in
/proc/<pid>/status), read every POLL seconds while it runs (psutil tells when it has started
the export). Target: under TARGET_MB for the Parquet export of everything. The synthetic
articles have no ``body_html``; the byte cap on row groups bounds the Arrow data whatever
the size of an article.

``python -m tests.bench_export`` (``make bench-export``); FINEWS_BENCH_EXPORT_ARTICLES sets
the number of articles.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from fixtures.synth import DEFAULT_START
from tests.bench_search import CHUNK, CHUNK_DAYS, fill, on_each_backend
from tests.crawling import ROOT, environment

ARTICLES = int(os.environ.get("FINEWS_BENCH_EXPORT_ARTICLES", "100000"))
TARGET_MB = 300
POLL = 0.02  # seconds between two looks at the child's memory
MB = 1024 * 1024


@dataclass
class Run:
    """One ``finews export`` child process."""

    seconds: float
    peak_bytes: int
    articles: int
    mentions: int
    files: list[Path]


def tenth_until() -> str:
    """The last day of the first tenth of the articles (whole chunks of ``items``)."""
    chunks = max(1, -(-ARTICLES // CHUNK) // 10)
    return (DEFAULT_START + timedelta(days=CHUNK_DAYS * chunks - 1)).date().isoformat()


def resident_peak(pid: int) -> int:
    """The peak resident memory of process ``pid`` since it started its program, in bytes:
    the kernel's VmHWM, else (no /proc) the resident memory now; 0 before it has started.

    Not ``ru_maxrss``: for a child, Linux counts in it the memory of this process, which
    the child shared from the fork until its exec (the filled benchmark: ~200 MB).
    """
    with contextlib.suppress(psutil.Error, OSError):
        process = psutil.Process(pid)
        if "analysis.cli" not in process.cmdline():  # forked, not yet running the export
            return 0
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
            if found:
                return int(found[1]) * 1024
        return process.memory_info().rss
    return 0


def run_export(url: str, out: Path, *options: str) -> Run:
    """``finews export`` in a child process; its time and its peak resident memory."""
    command = [sys.executable, "-m", "analysis.cli", "export", "--url", url, *options, str(out)]
    # Output to files, not pipes: a pipe nobody reads while the child runs could fill up.
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=stdout, stderr=stderr)
        peak = 0
        while child.poll() is None:
            peak = max(peak, resident_peak(child.pid))
            time.sleep(POLL)
        seconds = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read().decode(), stderr.read().decode()
    if child.returncode:
        raise RuntimeError(f"finews export exited {child.returncode}: {err_text.strip()[-500:]}")
    counts = re.search(r"(\d+) articles? and (\d+) stock mentions?", out_text)
    assert counts, out_text
    files = [Path(line.strip().rpartition(" (")[0]) for line in out_text.splitlines()[1:]]
    return Run(seconds, peak, int(counts[1]), int(counts[2]), files)


def measure(url: str) -> None:
    started = time.perf_counter()
    rate = fill(url, ARTICLES)
    print(f"   filled at {rate:.0f} articles/s ({time.perf_counter() - started:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in (
            ("parquet, all", ["--format", "parquet"]),
            ("parquet, a tenth", ["--format", "parquet", "--until", tenth_until()]),
            ("csv, all", ["--format", "csv"]),
        ):
            out = Path(tmp) / label.replace(", ", "-").replace(" ", "-")
            run = run_export(url, out, *options)
            size = sum(path.stat().st_size for path in run.files)
            groups = ""
            if options[1] == "parquet":
                count = pq.ParquetFile(run.files[0]).metadata.num_row_groups
                groups = f"{count} row group{'' if count == 1 else 's'}"
            verdict = ""
            if label == "parquet, all":
                verdict = "ok" if run.peak_bytes < TARGET_MB * MB else f"> {TARGET_MB} MB"
            print(
                f"   {label:<18}{run.articles:>9}{run.mentions:>10}{run.seconds:>8.1f}"
                f"{run.articles / run.seconds:>10.0f}{run.peak_bytes / MB:>9.0f}"
                f"{size / MB:>9.1f}  {verdict:<4}{groups}",
                flush=True,
            )


def main() -> None:
    print(
        f"export: {ARTICLES} synthetic articles, finews export in a child process "
        f"(peak memory target < {TARGET_MB} MB for Parquet)"
    )
    print(
        f"   {'export':<18}{'articles':>9}{'mentions':>10}{'seconds':>8}{'art/s':>10}"
        f"{'peak MB':>9}{'file MB':>9}"
    )
    on_each_backend(measure)


if __name__ == "__main__":
    sys.exit(main())
