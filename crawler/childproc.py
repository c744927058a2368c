"""Helper processes that talk pickled frames over stdin and stdout.

The page workers (``crawler.pagepool``), the backfill's parsers (``crawler.postpool``) and
the store's writer (``pipelines.writer``) are new interpreters, never forks or
multiprocessing "spawn" children: nothing of the crawl's state is copied, a user's script
without a ``__main__`` guard is not run again, and Scrapy need not be loaded there.

- ``child_env()``: the environment that finds the project even in a plain checkout;
- ``start(boot, *args)``: ``python -c boot args`` with pipes on stdin and stdout;
- ``child_streams()``: in the child, ignore Ctrl-C (the crawl process decides when to
  stop) and keep stdout for frames only (whatever prints goes to stderr);
- ``frame``/``unframe``/``read_frame``: the framing ``multiprocessing.Connection`` uses.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

# Prefix for a child's ``-c`` code: itemadapter imports Scrapy when it can (for scrapy.Item);
# helpers handle dataclasses only and need ~35 MB instead of ~65 MB without it.
NO_SCRAPY = "import sys; sys.modules.setdefault('scrapy', None); "


def child_env() -> dict[str, str]:
    """os.environ with the project on PYTHONPATH, so a child imports it installed or not."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def start(boot: str, *args: str) -> subprocess.Popen[bytes]:
    """``python -c boot args``, its stdin and stdout unbuffered pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", boot, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
        bufsize=0,
    )


def child_streams() -> tuple[BinaryIO, BinaryIO]:
    """In a child: (frames in, frames out); Ctrl-C ignored, prints sent to stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    return sys.stdin.buffer, out


def frame(payload: bytes) -> bytes:
    """``payload`` framed as ``multiprocessing.Connection.send_bytes`` frames it."""
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload


def unframe(buffer: bytearray) -> list[bytes]:
    """Take every complete frame off the front of ``buffer``."""
    messages = []
    while len(buffer) >= 4:
        (size,) = struct.unpack_from("!i", buffer)
        start = 4
        if size == -1:
            if len(buffer) < 12:
                break
            (size,) = struct.unpack_from("!Q", buffer, 4)
            start = 12
        if len(buffer) < start + size:
            break
        messages.append(bytes(buffer[start : start + size]))
        del buffer[: start + size]
    return messages


def read_frame(source: Any) -> bytes:
    """One frame's payload from a blocking binary stream (buffered or raw); EOFError at its
    end."""

    def exactly(size: int) -> bytes:
        chunks = []
        while size:
            chunk = source.read(size)
            if not chunk:
                raise EOFError("the stream ended")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    (size,) = struct.unpack("!i", exactly(4))
    if size == -1:
        (size,) = struct.unpack("!Q", exactly(8))
    return exactly(size)


def write_all(sink: Any, data: bytes) -> None:
    """All of ``data`` to a blocking stream, raw (partial writes) or buffered."""
    view = memoryview(data)
    while view:
        view = view[sink.write(view) :]
