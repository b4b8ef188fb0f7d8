"""The persistent queue: a write-ahead log of every accepted request until its records are delivered.

    wal = WriteAheadLog(directory, max_bytes, segment_bytes)
    backlog = wal.open()                    # at start: torn tails cut off, what is still undelivered
    seq = await wal.append(body, count)     # before the OTLP response; raises PersistenceFull
    await wal.sending(tickets)              # before a forwarded request goes out
    wal.settled(tickets)                    # delivered (or dropped for good): no replay needed
    await wal.close()

A record's *ticket* is ``seq << 32 | index``: the request's sequence number and the record's position
in it (resource_logs, scope_logs, log_records order). With persistence off every ticket is 0.

On disk: segment files ``wal-<number>.log`` in ``directory`` (plus a ``LOCK`` file held with
``flock`` so two sidecars never share one). A segment is a run of frames
``<u32 length><u32 crc32(body)><body>``, little-endian; the body's first byte is its kind:

- ``ENTRY`` (1): ``<u64 seq><u32 records>`` then the serialized ``ExportLogsServiceRequest`` exactly
  as accepted;
- ``SENDING`` (2) / ``SETTLED`` (3): runs of ``<u64 seq><u32 n><n x u32 index>``: records handed to
  the downstream, and records delivered (or dropped for good, counted as such).

Group commit: frames queue in memory and one writer (a worker thread, one commit at a time) writes
everything queued and fsyncs once, so a commit covers every request that arrived while the previous
fsync ran. ``append`` and ``sending`` return once their frame is on disk; ``settled`` does not wait
(a settled mark lost in a crash only means a duplicate). New entries go to the newest segment; a
segment is rolled at ``segment_bytes`` and deleted once every entry in it is settled.

Reading back (``open``): a frame whose length runs past the end of its file or whose CRC does not
match ends the segment: the file is truncated there (a torn tail after a crash), never misread. Every
segment that was there is then read-only; new frames go to a fresh one.

Full: an entry that would take the log past ``max_bytes``, or a write the disk refuses (ENOSPC, EIO),
raises ``PersistenceFull``: the request is not acknowledged (the pipeline answers with back-pressure)
and the log stays as it was (a failed write is truncated away and writing moves to a new segment).
Marks (``SENDING``/``SETTLED``) are never refused for ``max_bytes``: they are small and let segments
go. Not thread-safe: call from the event loop that ``open`` ran for; only the writer thread does IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

ENTRY, SENDING, SETTLED = 1, 2, 3
HEADER = struct.Struct("<II")  # body length, crc32 of the body
ENTRY_HEAD = struct.Struct("<BQI")  # kind, seq, records
RUN_HEAD = struct.Struct("<QI")  # seq, count of indices that follow
INDEX_BITS = 32
INDEX_MASK = (1 << INDEX_BITS) - 1
SEGMENT_GLOB = "wal-*.log"


class PersistenceFull(Exception):
    """The log cannot take this entry now (``max_bytes`` or the disk); nothing was written."""


def ticket(seq: int, index: int) -> int:
    return seq << INDEX_BITS | index


@dataclass
class Backlog:
    """One entry read back by ``open`` with records not yet settled. ``settled``: indices settled
    (not to be replayed); ``sent``: indices that had been handed to the downstream without being
    settled (delivered or not: each is a possible duplicate). The request stays on disk until
    ``read`` (so a replay holds one request in memory at a time, not the whole log)."""

    seq: int
    records: int
    path: Path
    offset: int  # of the serialized request in ``path``
    length: int
    settled: set[int] = field(default_factory=set)
    sent: set[int] = field(default_factory=set)

    def read(self) -> bytes:
        """The serialized ``ExportLogsServiceRequest`` as accepted (CRC-checked when ``open`` read it)."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.length)


@dataclass
class _Segment:
    number: int
    path: Path
    bytes: int = 0
    live: int = 0  # entries in it with records not yet settled
    sealed: bool = False  # no new frames go to it


@dataclass
class _Pending:
    """A frame waiting for the next commit."""

    segment: _Segment
    frame: bytes
    seq: int = 0  # an entry's seq (0 for marks)


class WriteAheadLog:
    def __init__(self, directory: str | Path, max_bytes: int, segment_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.bytes = 0  # on disk plus queued for the next commit
        self.commits = 0
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._entries: dict[int, list[int]] = {}  # seq -> [records not yet settled, segment number]
        self._next_seq = 1
        self._queue: list[_Pending] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._deletions: list[Path] = []
        self._committing: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._writer = _SegmentWriter()

    # --- start: read back -------------------------------------------------------------------------

    def open(self) -> list[Backlog]:
        """Lock the directory (creating it), read every segment back (truncating torn tails), and
        return the entries with records not yet settled, oldest first. Blocking: call it before
        serving (or in a thread). Raises ``OSError`` when the directory cannot be used, and
        ``BlockingIOError`` when another process holds its lock."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        entries: dict[int, Backlog] = {}
        segment_of: dict[int, _Segment] = {}
        settled: dict[int, set[int]] = {}
        sent: dict[int, set[int]] = {}
        number = 0
        for path in sorted(self.directory.glob(SEGMENT_GLOB), key=_segment_number):
            number = _segment_number(path)
            segment = self._segments[number] = _Segment(number, path, sealed=True)
            for offset, body in read_segment(path):
                kind = body[0]
                if kind == ENTRY:
                    _, seq, records = ENTRY_HEAD.unpack_from(body)
                    entries[seq] = Backlog(seq, records, path, offset + ENTRY_HEAD.size, len(body) - ENTRY_HEAD.size)
                    segment_of[seq] = segment
                    self._next_seq = max(self._next_seq, seq + 1)
                elif kind in (SENDING, SETTLED):
                    target = settled if kind == SETTLED else sent
                    for seq, indices in _read_runs(body):
                        target.setdefault(seq, set()).update(indices)
            segment.bytes = path.stat().st_size
            self.bytes += segment.bytes
        backlog = []
        for seq, entry in entries.items():
            entry.settled = settled.get(seq, set())
            entry.sent = sent.get(seq, set()) - entry.settled
            left = entry.records - len(entry.settled)
            if left > 0:
                segment = segment_of[seq]
                segment.live += 1
                self._entries[seq] = [left, segment.number]
                backlog.append(entry)
        for segment in list(self._segments.values()):
            if not segment.live:
                self._drop(segment)
        self._active = self._new_segment(number + 1)
        return backlog

    # --- writing ------------------------------------------------------------------------------------

    async def append(self, request: bytes, records: int) -> int:
        """Write one accepted request holding ``records`` records; returns its seq once the frame is
        on disk (fsynced). Raises ``PersistenceFull`` (nothing kept) when it does not fit under
        ``max_bytes`` or the disk refuses the write."""
        seq = self._next_seq
        frame = _frame(ENTRY_HEAD.pack(ENTRY, seq, records) + request)
        if self.bytes + len(frame) > self.max_bytes:
            raise PersistenceFull(
                f"persistent queue full ({self.bytes} of {self.max_bytes} bytes in "
                f"{self.directory} waiting for delivery); retry later"
            )
        self._next_seq += 1
        segment = self._enqueue(frame, seq)
        segment.live += 1
        self._entries[seq] = [records, segment.number]
        await self._commit_wait()
        return seq

    async def sending(self, tickets: Iterable[int]) -> None:
        """Mark records as handed to the downstream (returns once on disk; a failed write is only
        logged: the mark serves counting possible duplicates after a crash)."""
        body = _runs(SENDING, tickets)
        if body is None:
            return
        self._enqueue(_frame(body))
        try:
            await self._commit_wait()
        except PersistenceFull as exc:
            log.warning("persistent queue: cannot record records being sent", extra={"error": str(exc)})

    def settled(self, tickets: Iterable[int]) -> None:
        """Records delivered downstream, or dropped for good: never replayed once the mark is on disk
        (written with the next commit, not waited for). A segment whose entries are all settled is
        deleted."""
        groups = _group(tickets)
        if not groups:
            return
        self._enqueue(_frame(_encode_runs(SETTLED, groups)))
        for seq, indices in groups.items():
            entry = self._entries.get(seq)
            if entry is None:
                continue
            entry[0] -= len(indices)
            if entry[0] <= 0:
                del self._entries[seq]
                segment = self._segments[entry[1]]
                segment.live -= 1
                if not segment.live and segment.sealed:
                    self._drop(segment)
        self._kick()

    async def close(self) -> None:
        """Write what is queued (marks), close the files, release the lock."""
        while self._committing is not None or self._queue:
            if self._committing is None:
                self._kick()
            task = self._committing
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        self._writer.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def entries(self) -> int:
        """Requests with records not yet settled."""
        return len(self._entries)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # --- internals ------------------------------------------------------------------------------

    def _enqueue(self, frame: bytes, seq: int = 0) -> _Segment:
        active = self._active
        assert active is not None, "WriteAheadLog.open() first"
        if active.bytes and active.bytes + len(frame) > self.segment_bytes:
            active.sealed = True
            if not active.live:
                self._drop(active)
            active = self._active = self._new_segment(active.number + 1)
        active.bytes += len(frame)
        self.bytes += len(frame)
        self._queue.append(_Pending(active, frame, seq))
        return active

    def _new_segment(self, number: int) -> _Segment:
        segment = _Segment(number, self.directory / f"wal-{number:012d}.log")
        self._segments[number] = segment
        return segment

    def _drop(self, segment: _Segment) -> None:
        """Forget a segment; its file is deleted by the next commit (after anything queued for it)."""
        del self._segments[segment.number]
        self.bytes -= segment.bytes
        self._deletions.append(segment.path)

    async def _commit_wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick()
        await waiter

    def _kick(self) -> None:
        """Start a commit unless one is running (it starts the next itself when it ends)."""
        if self._committing is None and (self._queue or self._deletions):
            self._committing = asyncio.get_running_loop().create_task(self._commit())

    async def _commit(self) -> None:
        pending, self._queue = self._queue, []
        waiters, self._waiters = self._waiters, []
        deletions, self._deletions = self._deletions, []
        error: OSError | None = None
        try:
            await asyncio.to_thread(self._writer.write, [(p.segment.path, p.frame) for p in pending], deletions)
            self.commits += 1
        except OSError as exc:
            error = exc
            self._undo(pending)
        finally:
            self._committing = None
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(PersistenceFull(f"persistent queue: cannot write to {self.directory} ({error})"))
        if error is not None:
            log.error("persistent queue write failed; requests refused", extra={"error": str(error)})
        self._kick()

    def _undo(self, pending: list[_Pending]) -> None:
        """A commit failed (its bytes were truncated away): forget its entries, move to a new segment."""
        for p in pending:
            p.segment.bytes -= len(p.frame)
            if p.segment.number in self._segments:  # a dropped segment's bytes were taken off already
                self.bytes -= len(p.frame)
            if p.seq and self._entries.pop(p.seq, None) is not None:
                p.segment.live -= 1
        active = self._active
        assert active is not None
        active.sealed = True
        self._active = self._new_segment(active.number + 1)
        for segment in list(self._segments.values()):
            if segment.sealed and not segment.live:
                self._drop(segment)


class _SegmentWriter:
    """The file side, used from one worker thread at a time: appends frames, fsyncs, deletes."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._file: BinaryIO | None = None

    def write(self, frames: list[tuple[Path, bytes]], deletions: list[Path]) -> None:
        """Append ``frames`` (in order, each to its segment) and fsync them; then delete ``deletions``.
        On an ``OSError`` every file written is truncated back to where this call found it, and the
        error is raised."""
        started: dict[Path, int] = {}
        try:
            for path, frame in frames:
                handle = self._open(path, started)
                handle.write(frame)
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError:
            self._rewind(started)
            raise
        for path in deletions:
            if path == self._path:
                self.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _open(self, path: Path, started: dict[Path, int]) -> BinaryIO:
        if path != self._path:
            if self._file is not None:  # the segment was rolled: make it durable, then move on
                self._file.flush()
                os.fsync(self._file.fileno())
                self.close()
            created = not path.exists()
            self._file = open(path, "ab")  # noqa: SIM115 - kept open across commits
            self._path = path
            if created:
                _fsync_directory(path.parent)
        assert self._file is not None
        started.setdefault(path, self._file.tell())
        return self._file

    def _rewind(self, started: dict[Path, int]) -> None:
        self.close()
        for path, size in started.items():
            try:
                os.truncate(path, size)
            except OSError as exc:  # the tail then fails its CRC when read back: cut there, never misread
                log.error("persistent queue: cannot truncate a failed write", extra={"path": str(path),
                                                                                     "error": str(exc)})

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None
        self._path = None


# --- format ---------------------------------------------------------------------------------------


def _frame(body: bytes) -> bytes:
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def read_segment(path: Path) -> list[tuple[int, bytes]]:
    """The frame bodies of one segment with their offsets in the file, in order. At the first frame
    that is cut short or fails its CRC the file is truncated to the frames before it (logged)."""
    data = path.read_bytes()
    bodies: list[tuple[int, bytes]] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if length == 0 or end > len(data) or zlib.crc32(data[start:end]) != crc:
            break
        bodies.append((start, data[start:end]))
        offset = end
    if offset != len(data):
        log.warning(
            "persistent queue: torn or corrupt tail cut off",
            extra={"path": str(path), "kept_bytes": offset, "dropped_bytes": len(data) - offset},
        )
        os.truncate(path, offset)
    return bodies


def _group(tickets: Iterable[int]) -> dict[int, array[int]]:
    groups: dict[int, array[int]] = {}
    for t in tickets:
        if not t:
            continue
        seq = t >> INDEX_BITS
        indices = groups.get(seq)
        if indices is None:
            indices = groups[seq] = array("I")
        indices.append(t & INDEX_MASK)
    return groups


def _runs(kind: int, tickets: Iterable[int]) -> bytes | None:
    groups = _group(tickets)
    return _encode_runs(kind, groups) if groups else None


def _encode_runs(kind: int, groups: dict[int, array[int]]) -> bytes:
    parts = [bytes((kind,))]
    for seq, indices in groups.items():
        parts.append(RUN_HEAD.pack(seq, len(indices)))
        parts.append(indices.tobytes() if _LITTLE else _swapped(indices))
    return b"".join(parts)


def _read_runs(body: bytes) -> Iterable[tuple[int, array[int]]]:
    offset = 1
    while offset < len(body):
        seq, n = RUN_HEAD.unpack_from(body, offset)
        offset += RUN_HEAD.size
        indices = array("I")
        indices.frombytes(body[offset:offset + 4 * n])
        if not _LITTLE:
            indices.byteswap()
        offset += 4 * n
        yield seq, indices


_LITTLE = struct.pack("=I", 1) == struct.pack("<I", 1)
assert array("I").itemsize == 4


def _swapped(indices: array[int]) -> bytes:
    copy = array("I", indices)
    copy.byteswap()
    return copy.tobytes()


def _segment_number(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
