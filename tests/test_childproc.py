"""Helper processes: their frames survive short reads and writes; a pool of them answers
as its handler would in the crawl process, whatever happens to a worker."""

from __future__ import annotations

import asyncio
import io

import pytest

from crawler.childproc import WorkerPool, frame, read_frame, write_all


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


# -- WorkerPool ----------------------------------------------------------------------------------


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not picklable")


def arithmetic(offset: int):
    """A pool target: jobs are numbers; some fail on purpose."""

    def answer(job: int) -> int:
        if job == 13:
            raise ValueError("thirteen")
        if job == 7:
            raise Unpicklable("seven")
        return job + offset

    return answer


async def ask_all(pool: WorkerPool, jobs: list[int], kill_after: int | None = None) -> list:
    pool.start()
    try:
        futures = []
        for n, job in enumerate(jobs):
            futures.append(pool.submit(job))
            if n == kill_after:
                await asyncio.sleep(0)  # the first jobs go out
                pool._workers[0].process.kill()
        await asyncio.wait_for(asyncio.wait(futures), timeout=60)
        return [outcome(f) for f in futures]
    finally:
        pool.close()


def outcome(future: asyncio.Future) -> object:
    """The answer, or "raised <type>: <message>" for an exception raised by the future."""
    error = future.exception()
    return future.result() if error is None else f"raised {type(error).__name__}: {error}"


@pytest.mark.parametrize("size", [0, 1, 2])
def test_a_pool_answers_as_its_handler_would_here(size):
    jobs = list(range(40))
    pool = WorkerPool("tests.test_childproc:arithmetic", 100, size, name="t", batch=4, in_flight=2)
    answers = asyncio.run(ask_all(pool, jobs))
    assert answers[:7] == [100, 101, 102, 103, 104, 105, 106]
    assert answers[13] == "raised ValueError: thirteen"  # where the answer is awaited
    # A worker's exception that cannot be pickled still arrives, as a RuntimeError.
    unpicklable = "Unpicklable: seven" if size == 0 else "RuntimeError: Unpicklable: seven"
    assert answers[7] == f"raised {unpicklable}"
    assert answers[39] == 139 and pool.workers == 0 and pool.inline == 0


def test_a_dead_worker_hands_its_jobs_on():
    jobs = list(range(100, 300))
    pool = WorkerPool("tests.test_childproc:arithmetic", 1, 2, name="t", batch=8, in_flight=2)
    answers = asyncio.run(ask_all(pool, jobs, kill_after=20))
    assert answers == [job + 1 for job in jobs]


def test_close_with_drop_cancels_what_is_not_answered():
    async def run() -> list[asyncio.Future]:
        pool = WorkerPool("tests.test_childproc:arithmetic", 0, 1, name="t", batch=2, in_flight=1)
        pool.start()
        futures = [pool.submit(n) for n in range(20, 40)]
        await asyncio.sleep(0)
        pool.close(drop=True)
        await asyncio.sleep(0)
        return futures

    futures = asyncio.run(run())
    assert all(f.cancelled() for f in futures)
