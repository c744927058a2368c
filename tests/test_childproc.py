"""The frames helper processes exchange survive short reads and short writes."""

from __future__ import annotations

import io

import pytest

from crawler.childproc import frame, read_frame, write_all


class Trickle(io.RawIOBase):
    """A raw pipe end that moves at most 3 bytes per call, as a busy pipe may."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.written = bytearray()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = bytes(self.data[: min(size, 3)])
        del self.data[: len(chunk)]
        return chunk

    def write(self, data) -> int:  # type: ignore[override]
        self.written += bytes(data[:3])
        return min(len(data), 3)


def test_frames_cross_a_pipe_that_moves_a_few_bytes_at_a_time():
    payloads = [b"", b"x" * 5, bytes(range(256)) * 40]
    sink = Trickle()
    for payload in payloads:
        write_all(sink, frame(payload))
    source = Trickle(bytes(sink.written))
    assert [read_frame(source) for _ in payloads] == payloads
    with pytest.raises(EOFError):
        read_frame(source)


def test_a_frame_cut_short_is_an_end_not_a_short_message():
    with pytest.raises(EOFError):
        read_frame(Trickle(frame(b"abcdef")[:-2]))
