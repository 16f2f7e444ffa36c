"""Reading instances' output pipes must never close a file descriptor twice: under uvloop (the daemon's
loop) libuv closes the pipe's fd and then the transport closed the file object too, and in between another
thread - the builder unpacking an archive, the spawner passing fds to bubblewrap - could have been given
that very number: it lost its file ("[Errno 9] Bad file descriptor", 1 of 150 concurrent agent builds).

The stress test reads many pipes to their end the way the daemon does (``instances.pipe_file`` +
``connect_read_pipe``) while threads keep opening, checking and closing files; none may see EBADF. With
the old reader (``os.fdopen(os.dup(fd))``) the same loop lost another thread's fd after 876 and after 9,089
pipes on the loaded development machine - a race, so it does not fail every run; the contract test below
it (who closes the fd under which loop) is deterministic."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
import uvloop

from hks_runtime.instances import pipe_file

PIPES = 5000


class _UntilClosed(asyncio.Protocol):
    def __init__(self, done: asyncio.Future):
        self.done = done

    def connection_lost(self, exc):
        self.done.set_result(None)


def _churn(stop: threading.Event, lost: list) -> None:
    """Another thread's ordinary file use; a foreign close(2) of its fd shows as EBADF here."""
    while not stop.is_set():
        fd = os.open("/dev/null", os.O_RDONLY)
        try:
            for _ in range(3):
                os.fstat(fd)
            os.close(fd)
        except OSError as exc:
            lost.append(exc)
            return


async def _read_pipes(count: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(count):
        read_end, write_end = os.pipe()
        reader = pipe_file(loop, os.dup(read_end))  # as lifecycle._attach does with a sandbox's pipe
        os.close(read_end)
        done = loop.create_future()
        await loop.connect_read_pipe(lambda done=done: _UntilClosed(done), reader)
        os.write(write_end, b"a line\n")
        os.close(write_end)
        await done


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_reading_pipes_under_uvloop_never_closes_another_threads_fd():
    stop, lost = threading.Event(), []
    threads = [threading.Thread(target=_churn, args=(stop, lost), daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        uvloop.run(_read_pipes(PIPES))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert lost == []


def test_under_uvloop_only_libuv_closes_the_fd():
    async def closefd() -> bool:
        read_end, write_end = os.pipe()
        reader = pipe_file(asyncio.get_running_loop(), read_end)
        owns = reader.closefd
        reader.close()
        for fd in (write_end,) if owns else (read_end, write_end):
            os.close(fd)
        return owns

    assert uvloop.run(closefd()) is False  # libuv closes the fd; the file object must not close it again
    assert asyncio.run(closefd()) is True  # asyncio's transport closes it through the file object


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_every_pipe_is_closed_once_the_transport_ends(run):
    before = _open_fds()
    run(_read_pipes(200))
    assert _open_fds() <= before + 2  # no fd per pipe left behind (a loop may keep one or two of its own)
