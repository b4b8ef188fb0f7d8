"""Masking off the event loop: ``Masker`` matches the parser, ``MaskingWorker`` (real child processes)
matches ``Masker``, ``Lane.parse_many`` through a worker gives what ``Lane.parse`` gives, and a worker
that dies costs speed, never records."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal

import pytest

from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.masker import Masker
from otel_logbert.parsing.masking import DATA_SIZE, DATETIME_WITH_SPACES, PROXY_LIFETIME, GatedMaskingInstruction
from otel_logbert.parsing.worker import MaskingWorker, WorkerUnavailable
from otel_logbert.sidecar.lanes import Lane
from tests.unit.test_parsing_drain import hdfs_messages, needs_hdfs

MIXED = [
    "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
    "Sun Jul 24 02:38:22 2005 sshd[123]: session opened for user root",
    "2017-05-16 00:00:00.008 wrote 2034 bytes (1.98 KB) to /var/log/x",
    "proxy.cse.cuhk.edu.hk:5070 close, 0 bytes sent, lifetime <1 sec",
    "json,fields,with,commas id=42",
    "",
    "   ",
    "caf\u00e9 \ud800 surrogate",
    b"bytes body \xff invalid utf-8 blk_7",
    "x" * 50,
]


@pytest.mark.parametrize(("rule", "example"), [
    (DATETIME_WITH_SPACES, "at Sun Jul 24 02:38:22 2005"), (DATA_SIZE, "wrote 9.2 KB"),
    (PROXY_LIFETIME, "close, lifetime 00:39"),
])
def test_gated_rules_mask_exactly_like_their_plain_regex(rule: GatedMaskingInstruction, example: str) -> None:
    from drain3.masking import MaskingInstruction

    plain = MaskingInstruction(rule.regex.pattern, rule.mask_with)
    texts = [t for t in MIXED if isinstance(t, str)] + [
        "Jul  1 09:01:05 host", "at 12:30 only", "9.2 KB", "67108864 bytes", "B 12", "lifetime 00:39"]
    for text in texts:
        assert rule.mask(text, "<", ">") == plain.mask(text, "<", ">"), text
    assert rule.mask(example, "<", ">") == plain.mask(example, "<", ">") != example


@pytest.mark.parametrize("masking", ["hdfs", "kubernetes", "proxifier", "linux"])
def test_masker_from_a_pickled_spec_matches_the_parser(masking: str) -> None:
    parser = LogParser(masking, max_line_chars=40)
    masker = Masker(pickle.loads(pickle.dumps(parser.mask_spec())))
    assert pickle.loads(pickle.dumps(parser.mask_spec())) == parser.mask_spec()
    for text in MIXED:
        masked, truncated = masker.masked(text)
        assert masked == parser.mask(text if isinstance(text, str) else text.decode("utf-8", "replace"))
        assert truncated == (len(text) > 40)


def test_parse_masked_is_parse() -> None:
    mined, split = LogParser("hdfs"), LogParser("hdfs")
    for text in MIXED * 2:
        assert split.parse_masked(*split.masker.masked(text)) == mined.parse(text)
    assert split.to_json() == mined.to_json()


async def started(worker: MaskingWorker | None, batch: int) -> MaskingWorker:
    """``worker`` once it offloads a batch of ``batch`` texts (its first ``offloads`` starts the process,
    which answers after it has spawned); fails after 30 s."""
    assert worker is not None
    for _ in range(600):
        if worker.offloads(batch):
            return worker
        await asyncio.sleep(0.05)
    raise AssertionError(f"the masking worker did not start within 30 s (failed: {worker.failed})")


def test_worker_masks_like_the_masker_in_order() -> None:
    parser = LogParser("hdfs")
    texts = [f"{t} {i}" if isinstance(t, str) else t for i in range(10) for t in MIXED]
    worker = MaskingWorker(1, min_batch=8)

    async def scenario() -> list:
        assert not worker.offloads(len(texts))  # starts the process; masked here until it answered
        await started(worker, len(texts))
        assert not worker.offloads(7)  # too small a batch
        return await worker.masked_many(parser.mask_spec(), texts)

    try:
        assert asyncio.run(scenario()) == Masker(parser.mask_spec()).masked_many(texts)
        assert worker.batches == 1
    finally:
        worker.close()


@needs_hdfs
def test_lane_parse_many_through_the_worker_equals_parse() -> None:
    messages = hdfs_messages("HDFS_2k.log")
    batches = [messages[i : i + 128] for i in range(0, len(messages), 128)]
    by_worker = Lane(0, "default", LogParser("hdfs"), "log.record.template",
                     masking_worker=MaskingWorker(1, min_batch=16))
    here = Lane(0, "default", LogParser("hdfs"), "log.record.template")

    async def scenario() -> list:
        await started(by_worker.masking_worker, 999)
        return [await by_worker.parse_many(batch) for batch in batches]

    try:
        assert asyncio.run(scenario()) == [[here.parse(m) for m in batch] for batch in batches]
        assert by_worker.masking_worker.batches > 0
        assert by_worker.parser.to_json() == here.parser.to_json()  # one Drain state, same as in-process
    finally:
        by_worker.masking_worker.close()


def test_a_killed_worker_falls_back_to_parsing_here() -> None:
    parser = LogParser("hdfs")
    lane = Lane(0, "default", parser, "log.record.template", masking_worker=MaskingWorker(1, min_batch=4))
    texts = [f"Verification succeeded for blk_{i}" for i in range(32)]

    async def scenario() -> list:
        worker = await started(lane.masking_worker, 99)
        pool = worker._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        with pytest.raises(WorkerUnavailable):
            await worker.masked_many(parser.mask_spec(), texts)
        assert worker.failed and not worker.offloads(99)
        return await lane.parse_many(texts)

    try:
        keys = asyncio.run(scenario())
    finally:
        lane.masking_worker.close()
    assert len(keys) == 32 and len({key for key, _ in keys}) == 1
