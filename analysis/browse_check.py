"""``make browse-check``: headless Chromium's screenshot of ``finews browse`` searching 茅台.

1. Debian's ``chromium`` and a CJK font (``fonts-wqy-zenhei``: without one, Chinese
   renders as empty boxes) are installed with apt-get when missing, if this runs as root;
   otherwise it prints the command to run and stops.
2. The database is ``data/finews.db`` when it exists, else a demo database built by
   ``scrapy demo`` (the bundled articles and 500 synthetic ones) in a temporary directory.
3. ``finews browse`` serves it on a free port; the search's JSON must list hits for 茅台.
4. Chromium saves the search page as ``docs/img/browse-search.png`` (1280×900), checked to
   be a PNG of that size with something on it, and the script says where it is.

Not part of ``make test``: it installs packages and runs a browser.

    python -m analysis.browse_check
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "img" / "browse-search.png"
DEFAULT_DATABASE = ROOT / "data" / "finews.db"
QUERY = "茅台"
WIDTH, HEIGHT = 1280, 900
PACKAGES = ("chromium", "fonts-wqy-zenhei")
BROWSERS = ("chromium", "chromium-browser")
START_TIMEOUT = 30.0  # seconds for finews browse to answer
BROWSER_TIMEOUT = 120  # seconds for Chromium to render and save the page
# A blank 1280×900 page compresses to a few kB; Datasette's page with a table of hits to
# well over this.
MIN_PNG_BYTES = 30_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CheckFailed(Exception):
    """The check could not be done or found something wrong; the message says which."""


def main() -> int:
    try:
        browser = ensure_packages()
        with tempfile.TemporaryDirectory(prefix="finews-browse-check-") as tmp:
            work = Path(tmp)
            database = demo_database(work)
            with browse(database, work) as base:
                hits = search_hits(base)
                url = f"{base}/search?{urlencode({'q': QUERY})}"
                screenshot(browser, url, work)
    except CheckFailed as exc:
        print(f"browse-check: {exc}", file=sys.stderr)
        return 1
    size = SCREENSHOT.stat().st_size
    print(
        f"browse-check: {SCREENSHOT.relative_to(ROOT)} ({WIDTH}×{HEIGHT}, {size // 1024} kB): "
        f"the search for {QUERY} in {database}, {len(hits)} hits ({url})"
    )
    return 0


def ensure_packages() -> str:
    """The Chromium to run, after installing what is missing (as root)."""
    missing = [name for name in PACKAGES if not installed(name)]
    if missing:
        command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if os.geteuid() != 0:
            raise CheckFailed(f"needs {', '.join(missing)}: run `sudo {' '.join(command)}`")
        print(f"browse-check: installing {', '.join(missing)} (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(command, env=env).returncode != 0:
            # Package lists may be missing or stale: fetch them once, then try again.
            subprocess.run(["apt-get", "update"], env=env, check=False)
            if subprocess.run(command, env=env).returncode != 0:
                raise CheckFailed(f"`{' '.join(command)}` failed")
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True)
    if not fonts.stdout.strip():
        raise CheckFailed("fontconfig knows no Chinese font (fc-list :lang=zh), so none renders")
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise CheckFailed(f"no Chromium found ({', '.join(BROWSERS)}) after installing chromium")


def installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return result.returncode == 0 and result.stdout.endswith(" installed")


def demo_database(work: Path) -> Path:
    """data/finews.db if there is one, else a demo database built in ``work``."""
    if DEFAULT_DATABASE.is_file():
        return DEFAULT_DATABASE
    path = work / "finews.db"
    print(f"browse-check: no {DEFAULT_DATABASE}; building a demo database in {path}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "demo", "--site", str(work / "site"),
         "-s", f"FINEWS_DATABASE_URL=sqlite:///{path}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise CheckFailed(f"scrapy demo failed (exit {result.returncode}):\n{result.stderr}")
    return path


@contextmanager
def browse(database: Path, work: Path) -> Iterator[str]:
    """``finews browse`` on ``database`` on a free port, stopped (Ctrl-C) on leaving the
    ``with`` block; yields the database's base URL once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "analysis.cli", "browse"]
    command += ["--url", f"sqlite:///{database}", "--port", str(port)]
    log = work / "browse.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}/{quote(database.stem)}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise CheckFailed(f"finews browse exited {process.returncode}:\n{tail(log)}")
            try:
                fetch(f"{base}.json")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise CheckFailed(
                        f"finews browse did not answer in {START_TIMEOUT:.0f} s:\n{tail(log)}"
                    ) from None
                time.sleep(0.2)
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def search_hits(base: str) -> list[dict[str, str]]:
    """The search's rows for QUERY, which must be there and hold it."""
    hits = json.loads(fetch(f"{base}/search.json?{urlencode({'q': QUERY, '_shape': 'array'})}"))
    if not hits:
        raise CheckFailed(f"the search for {QUERY} found nothing in the database")
    for hit in hits:
        if QUERY not in (hit["title"] or "") + hit["snippet"]:
            raise CheckFailed(f"a hit without {QUERY}: {hit}")
    return hits


def screenshot(browser: str, url: str, work: Path) -> None:
    """Chromium's screenshot of ``url`` into SCREENSHOT, checked."""
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--user-data-dir={work / 'chromium'}",  # not the user's profile
        f"--screenshot={SCREENSHOT}", f"--window-size={WIDTH},{HEIGHT}", url,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"Chromium took more than {BROWSER_TIMEOUT} s") from None
    if result.returncode != 0 or not SCREENSHOT.is_file():
        raise CheckFailed(f"Chromium saved no screenshot (exit {result.returncode}):\n"
                          f"{result.stderr[-3000:]}")  # fmt: skip
    check_png(SCREENSHOT)


def check_png(path: Path) -> None:
    """A PNG of WIDTH×HEIGHT, and not a blank one (by its compressed size)."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise CheckFailed(f"{path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    if (width, height) != (WIDTH, HEIGHT):
        raise CheckFailed(f"{path} is {width}×{height}, not {WIDTH}×{HEIGHT}")
    if len(data) < MIN_PNG_BYTES:
        raise CheckFailed(f"{path} has {len(data)} bytes: a blank page? Look at it.")


if __name__ == "__main__":
    sys.exit(main())
