"""Parser state persistence (parsing.persistence): saved only when the parser changed, written off the
event loop, atomic, and a restarted parser continues the same keys. Real files throughout."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.persistence import FilePersistence, ParserPersister, PersistenceHandler, load_parser
from otel_logbert.sessions.learn import LearnWriter, parser_state_path

MESSAGES = [
    "Receiving block blk_1 src: /10.0.0.1:5000 dest: /10.0.0.2:50010",
    "PacketResponder 1 for block blk_5 terminating",
    "Verification succeeded for blk_3",
]


def written(path: Path) -> tuple[int, int]:
    """Identity of the file's current version: every atomic save replaces the file (a new inode)."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_saves_only_when_the_parser_changed(tmp_path: Path) -> None:
    parser = LogParser("hdfs")
    path = tmp_path / "state" / "drain3.json"
    persister = ParserPersister(parser, (FilePersistence(path),))
    assert persister.changed and persister.save()  # a new handler is written once, even unchanged
    first = written(path)
    assert not persister.changed and not persister.save() and written(path) == first

    parser.parse(MESSAGES[0])  # a new cluster
    assert persister.changed and persister.save()
    second = written(path)
    assert second != first and LogParser.load(path).cluster_count == 1

    parser.parse("Receiving block blk_-9 src: /10.0.0.7:6000 dest: /10.0.0.8:50010")  # same shape
    assert not persister.changed and not persister.save() and written(path) == second

    generalising = LogParser("default", sim_th=0.5)
    other = tmp_path / "other.json"
    persister = ParserPersister(generalising, (FilePersistence(other),))
    generalising.parse("user alice logged in from office")
    persister.save()
    generalising.parse("user bob logged in from office")  # same cluster, template gains a <*>
    assert persister.changed and persister.save()
    assert LogParser.load(other).templates() == {"1": "user <*> logged in from office"}


def test_survives_a_restart_with_the_same_keys(tmp_path: Path) -> None:
    handler = FilePersistence(tmp_path / "drain3.json")
    assert load_parser(handler) is None  # nothing stored yet
    parser = LogParser("hdfs")
    keys = [parser.parse(m).key for m in MESSAGES]
    ParserPersister(parser, (handler,)).save()

    restarted = load_parser(handler)
    assert restarted is not None and restarted.to_json() == parser.to_json()
    assert [restarted.parse(m).key for m in reversed(MESSAGES)] == list(reversed(keys))
    new_key = restarted.parse("a message of another shape entirely").key
    assert int(new_key) == max(int(k) for k in keys) + 1  # ids continue after the saved ones


def test_broken_state_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "drain3.json"
    path.write_bytes(b"{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_parser(FilePersistence(path))
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="drain-state"):
        load_parser(FilePersistence(path))


class GatedFile(FilePersistence):
    """A file backend whose write waits until the test opens a gate (to see where it runs)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.threads: list[int] = []

    def save_state(self, state: bytes) -> None:
        self.threads.append(threading.get_ident())
        if not self.gate.wait(10):
            raise TimeoutError("gate never opened")
        super().save_state(state)


def test_save_async_writes_off_the_event_loop(tmp_path: Path) -> None:
    parser = LogParser("hdfs")
    parser.parse(MESSAGES[0])
    handler = GatedFile(tmp_path / "drain3.json")
    persister = ParserPersister(parser, (handler,))

    async def scenario() -> int:
        saving = asyncio.create_task(persister.save_async())
        await asyncio.sleep(0)  # the save took its copy and is writing in a thread...
        parser.parse(MESSAGES[1])  # ...while the loop goes on parsing
        # the write is blocked until the loop itself opens the gate: had it run on the loop, this
        # coroutine could never have got here and the save would have timed out
        handler.gate.set()
        assert await asyncio.wait_for(saving, 10)
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert handler.threads and loop_thread not in handler.threads
    saved = LogParser.load(handler.path)
    assert saved.cluster_count == 1  # the copy taken before the second parse: consistent
    assert persister.changed and persister.save() and LogParser.load(handler.path).cluster_count == 2


def test_an_older_copy_never_replaces_a_newer_one(tmp_path: Path) -> None:
    parser = LogParser("hdfs")
    parser.parse(MESSAGES[0])
    handler = GatedFile(tmp_path / "drain3.json")
    persister = ParserPersister(parser, (handler,))

    async def scenario() -> None:
        older = asyncio.create_task(persister.save_async())  # takes the 1-cluster copy, waits at the gate
        await asyncio.sleep(0.05)
        parser.parse(MESSAGES[1])
        newer = asyncio.create_task(persister.save_async())  # the 2-cluster copy, queued behind it
        await asyncio.sleep(0.05)
        handler.gate.set()
        await asyncio.wait_for(asyncio.gather(older, newer), 10)

    asyncio.run(scenario())
    assert LogParser.load(handler.path).cluster_count == 2
    assert not persister.changed


class FailingOnce(PersistenceHandler):
    """A backend that fails its first write (as a full disk would), then stores in memory."""

    def __init__(self) -> None:
        self.state: bytes | None = None
        self.failures = 1

    def save_state(self, state: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.state = state

    def load_state(self) -> bytes | None:
        return self.state

    def describe(self) -> str:
        return "memory"


def test_a_failing_handler_does_not_stop_the_others_and_is_retried(tmp_path: Path) -> None:
    parser = LogParser("hdfs")
    parser.parse(MESSAGES[0])
    failing, path = FailingOnce(), tmp_path / "drain3.json"
    persister = ParserPersister(parser, (failing, FilePersistence(path)))
    with pytest.raises(OSError, match="disk full"):
        persister.save()
    assert LogParser.load(path).cluster_count == 1  # the file handler was still written
    assert persister.changed and persister.save()  # the failed one is retried at the next save
    restored = load_parser(failing)
    assert restored is not None and restored.cluster_count == 1


def test_learn_writer_state_is_one_more_handler_of_the_lane_persister(tmp_path: Path) -> None:
    parser = LogParser("hdfs")
    state_file = tmp_path / "drain3.json"
    persister = ParserPersister(parser, (FilePersistence(state_file),))
    output = tmp_path / "learned" / "sessions.txt"
    writer = LearnWriter(output, persister)
    keys = [parser.parse(m).key for m in MESSAGES]
    writer.write(keys)
    writer.close()
    assert persister.save()
    assert output.read_text() == " ".join(keys) + "\n"
    for path in (state_file, parser_state_path(output)):
        assert LogParser.load(path).to_json() == parser.to_json()
    assert not persister.save()  # both hold the current state: nothing more to write
