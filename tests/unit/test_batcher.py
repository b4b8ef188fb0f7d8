"""otel_logbert.batcher: what ``pending`` counts (back-pressure is decided on it)."""

from __future__ import annotations

import asyncio

from otel_logbert.batcher import Batcher


def test_pending_releases_what_was_counted_even_when_the_handler_changes_the_items() -> None:
    """The scoring loop's handler empties each session (its records go on to the forwarder); the
    weight released is the one counted, so ``pending`` returns to 0."""
    handled: list[int] = []

    async def handle(batch: list[list[int]]) -> None:
        for item in batch:
            handled.append(len(item))
            item.clear()

    async def scenario() -> tuple[int, int]:
        batcher: Batcher[list[int]] = Batcher(handle, max_batch=2, max_in_flight=1, weight=len)
        task = asyncio.create_task(batcher.run())
        batcher.put([[1, 2, 3], [4], [5, 6]])
        counted = batcher.pending
        assert await batcher.drain(5)
        task.cancel()
        return counted, batcher.pending

    assert asyncio.run(scenario()) == (6, 0)
    assert handled == [3, 1, 2]


def test_pending_is_released_when_the_handler_raises() -> None:
    async def handle(batch: list[str]) -> None:
        raise RuntimeError("handler bug")

    async def scenario() -> int:
        batcher: Batcher[str] = Batcher(handle, max_batch=8, max_in_flight=2)
        task = asyncio.create_task(batcher.run())
        batcher.put(["a", "b", "c"])
        assert await batcher.drain(5)
        task.cancel()
        return batcher.pending

    assert asyncio.run(scenario()) == 0
