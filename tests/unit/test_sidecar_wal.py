"""The persistent queue's write-ahead log (``sidecar.wal``) on real files: append and read back,
group commit, torn tails, segment deletion after delivery, ``max_bytes`` and a write the OS refuses."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_logbert.sidecar import wal as wal_module
from otel_logbert.sidecar.wal import PersistenceFull, WriteAheadLog, read_segment, ticket

MiB = 1024 * 1024


def body(n: int, size: int = 100) -> bytes:
    return (f"request-{n}-".encode() * size)[:size]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def opened(directory: Path, max_bytes: int = 64 * MiB, segment_bytes: int = 4 * MiB) -> WriteAheadLog:
    wal = WriteAheadLog(directory, max_bytes, segment_bytes)
    wal.open()
    return wal


def reopen(directory: Path, **kwargs: int) -> tuple[WriteAheadLog, list[wal_module.Backlog]]:
    wal = WriteAheadLog(directory, kwargs.get("max_bytes", 64 * MiB), kwargs.get("segment_bytes", 4 * MiB))
    return wal, wal.open()


def test_appended_entries_come_back_after_reopen_minus_what_was_settled(tmp_path: Path) -> None:
    async def run() -> None:
        wal = opened(tmp_path)
        seqs = [await wal.append(body(i), records=3) for i in range(4)]
        wal.settled([ticket(seqs[0], i) for i in range(3)])  # entry 0 delivered in full
        wal.settled([ticket(seqs[1], 1)])  # entry 1 in part
        await wal.sending([ticket(seqs[2], 0), ticket(seqs[2], 2)])  # entry 2 sent, never acknowledged
        await wal.close()

    asyncio.run(run())
    wal, backlog = reopen(tmp_path)
    assert [(e.seq, e.read(), e.settled, e.sent) for e in backlog] == [
        (2, body(1), {1}, set()),
        (3, body(2), set(), {0, 2}),
        (4, body(3), set(), set()),
    ]
    assert wal.entries == 3

    async def more() -> int:
        seq = await wal.append(body(9), 1)
        await wal.close()
        return seq

    assert asyncio.run(more()) == 5  # sequence numbers continue


def test_append_returns_only_after_its_frame_is_written_and_one_fsync_covers_waiting_requests(
    tmp_path: Path,
) -> None:
    """Requests arriving while a commit runs share the next one: 1 + 1 commits for 1 + 20 appends."""
    release = threading.Event()
    writes: list[int] = []

    class HeldWriter(wal_module._SegmentWriter):  # the real writer, held at the first commit
        def write(self, frames: list[tuple[Path, bytes]], deletions: list[Path]) -> None:
            writes.append(len(frames))
            if len(writes) == 1:
                release.wait(10)
            super().write(frames, deletions)

    async def run() -> None:
        wal = opened(tmp_path)
        wal._writer = HeldWriter()
        first = asyncio.create_task(wal.append(body(0), 1))
        await asyncio.sleep(0.05)
        assert not first.done() and segments(tmp_path) == []  # not acknowledged before it is on disk
        later = [asyncio.create_task(wal.append(body(i), 1)) for i in range(1, 21)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in later)
        release.set()
        assert await first == 1
        assert sorted(await asyncio.gather(*later)) == list(range(2, 22))
        assert wal.commits == 2 and writes == [1, 20]
        await wal.close()

    asyncio.run(run())
    assert len(read_segment(segments(tmp_path)[0])) == 21


@pytest.mark.parametrize("damage", ["cut", "flip", "garbage"])
def test_a_torn_or_corrupt_tail_is_cut_off_and_never_misread(tmp_path: Path, damage: str) -> None:
    async def run() -> None:
        wal = opened(tmp_path)
        for i in range(3):
            await wal.append(body(i, 1000), 10)
        await wal.close()

    asyncio.run(run())
    (path,) = segments(tmp_path)
    data = path.read_bytes()
    frame = len(data) // 3
    if damage == "cut":  # the last frame half written
        path.write_bytes(data[: 2 * frame + frame // 2])
    elif damage == "flip":  # one byte of the last frame's body changed
        flipped = bytearray(data)
        flipped[-10] ^= 0xFF
        path.write_bytes(bytes(flipped))
    else:  # a partial header after the last frame
        path.write_bytes(data + b"\x07\x00")
    _, backlog = reopen(tmp_path)
    if damage == "garbage":
        assert [e.read() for e in backlog] == [body(i, 1000) for i in range(3)]
        assert path.stat().st_size == len(data)
    else:
        assert [e.read() for e in backlog] == [body(0, 1000), body(1, 1000)]
        assert path.stat().st_size == 2 * frame  # truncated to the good frames


def test_a_segment_is_deleted_once_every_record_in_it_is_settled(tmp_path: Path) -> None:
    async def run() -> None:
        wal = opened(tmp_path, segment_bytes=10_000)
        seqs = [await wal.append(body(i, 3000), 2) for i in range(9)]  # three frames per segment
        assert len(segments(tmp_path)) == 3
        wal.settled([ticket(seqs[0], 0), ticket(seqs[0], 1), ticket(seqs[1], 0), ticket(seqs[1], 1)])
        wal.settled([ticket(seqs[2], 1)])  # the first segment still holds one undelivered record
        await wal.append(body(99, 3000), 1)  # rolls to a fourth segment
        assert len(segments(tmp_path)) == 4
        wal.settled([ticket(seqs[2], 0)])
        await wal.append(body(100, 10), 1)  # the deletion rides on the next commit
        assert [p.name for p in segments(tmp_path)] == [
            "wal-000000000002.log", "wal-000000000003.log", "wal-000000000004.log"]
        assert wal.bytes == sum(p.stat().st_size for p in segments(tmp_path))
        for seq in seqs[3:]:
            wal.settled([ticket(seq, 0), ticket(seq, 1)])
        await wal.close()

    asyncio.run(run())
    assert [p.name for p in segments(tmp_path)] == ["wal-000000000004.log"]  # the active one
    wal, backlog = reopen(tmp_path, segment_bytes=10_000)
    assert [e.read() for e in backlog] == [body(99, 3000), body(100, 10)]
    assert wal.entries == 2


def test_max_bytes_refuses_an_entry_without_writing_it_and_room_comes_back_after_delivery(tmp_path: Path) -> None:
    async def run() -> None:
        wal = opened(tmp_path, max_bytes=20_000, segment_bytes=10_000)
        seqs = []
        with pytest.raises(PersistenceFull, match="persistent queue full"):
            for i in range(100):
                seqs.append(await wal.append(body(i, 3000), 1))
        assert len(seqs) == 6
        size = sum(p.stat().st_size for p in segments(tmp_path))
        with pytest.raises(PersistenceFull):
            await wal.append(body(7, 3000), 1)
        assert sum(p.stat().st_size for p in segments(tmp_path)) == size == wal.bytes
        wal.settled([ticket(s, 0) for s in seqs[:3]])
        await wal.append(body(8, 3000), 1)
        await wal.close()

    asyncio.run(run())
    _, backlog = reopen(tmp_path)
    assert [e.read() for e in backlog] == [body(i, 3000) for i in (3, 4, 5, 8)]


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """A real write failure: the kernel refuses writes past ``limit`` bytes (EFBIG, as ENOSPC would)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_write_the_disk_refuses_is_back_pressure_and_leaves_the_log_readable(tmp_path: Path) -> None:
    async def run() -> None:
        wal = opened(tmp_path)
        await wal.append(body(0, 5000), 1)
        with file_size_limit(8000), pytest.raises(PersistenceFull, match="cannot write"):
            await wal.append(body(1, 5000), 1)
        assert wal.entries == 1
        await wal.append(body(2, 5000), 1)  # the disk has room again: writing goes on (a new segment)
        await wal.close()

    asyncio.run(run())
    assert [len(read_segment(p)) for p in segments(tmp_path)] == [1, 1]
    _, backlog = reopen(tmp_path)
    assert [e.read() for e in backlog] == [body(0, 5000), body(2, 5000)]


def test_two_logs_never_share_a_directory(tmp_path: Path) -> None:
    first = opened(tmp_path)
    with pytest.raises(BlockingIOError):
        WriteAheadLog(tmp_path, MiB * 64, MiB).open()
    asyncio.run(first.close())
    asyncio.run(opened(tmp_path).close())
