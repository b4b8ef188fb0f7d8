"""One asyncio batching primitive: a queue consumed in batches by a bounded number of concurrent
handlers. The scoring loop (closed sessions -> scorer) and the forwarder (records -> downstream) are
both a ``Batcher`` with their own handler.

    batcher = Batcher(handle, max_batch=256, max_in_flight=4, linger_s=0.02, weight=len)
    batcher.put(items)              # never blocks, never refuses
    task = asyncio.create_task(batcher.run())
    ...
    done = await batcher.drain(timeout_s=10)   # start what is queued, wait for it (shutdown)
    await batcher.cancel()          # stop handlers still running (they see CancelledError)

Policy: a batch starts as soon as a handler slot is free. While every slot is idle it takes what is
queued at once (low latency at low load); while a batch is in flight it waits up to ``linger_s`` after
the first queued item for ``max_batch`` items to gather (large batches at high load). Items are taken
in ``put`` order. ``pending`` counts the ``weight`` of items queued or being handled, released when
their handler returns (or raises): the number back-pressure is decided on. An item's weight is read
when it is put and when its batch starts, and must not change in between; the handler may change it
(the scoring loop hands a session's records on, emptying it): what is released is what was counted
when the batch started.

Not thread-safe: every call comes from the event loop that runs ``run``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Batcher(Generic[T]):
    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int,
        max_in_flight: int,
        linger_s: float = 0.0,
        weight: Callable[[T], int] | None = None,
    ) -> None:
        """``handle(batch)`` processes one batch; an exception it raises is logged (one bad batch
        never stops the loop; handlers are expected to deal with their own failures). Raises
        ``ValueError`` for ``max_batch`` or ``max_in_flight`` below 1 or a negative ``linger_s``."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if linger_s < 0:
            raise ValueError(f"linger_s must not be negative, got {linger_s}")
        self._handle = handle
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._weight = weight
        self._queue: deque[T] = deque()
        self._first_at = 0.0  # when the oldest queued item arrived
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: set[asyncio.Task[None]] = set()
        self.pending = 0  # weight of the items queued or being handled

    def put(self, items: Iterable[T]) -> None:
        """Queue items (never blocks, never refuses)."""
        added = list(items)
        if not added:
            return
        if not self._queue:
            self._first_at = time.monotonic()
        self._queue.extend(added)
        self.pending += self._total(added)
        self._wakeup.set()

    async def run(self) -> None:
        """Start batches forever (until cancelled)."""
        while True:
            await self._wakeup.wait()
            if self._in_flight and len(self._queue) < self.max_batch and self.linger_s:
                delay = self._first_at + self.linger_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._slots.acquire()
            if not self._queue:
                self._slots.release()
                self._wakeup.clear()
                continue
            self._start()
            if not self._queue:
                self._wakeup.clear()

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Start batches for everything queued and wait for every batch in flight, for at most
        ``timeout_s`` (None: no limit). Returns True when nothing is left queued or in flight."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._slots.acquire(), left)
            except asyncio.TimeoutError:
                return False
            self._start()
        if self._in_flight:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait(set(self._in_flight), timeout=left)
        return not self._queue and not self._in_flight

    async def cancel(self) -> None:
        """Cancel the handlers still running and wait until they have finished."""
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self) -> None:
        """Hand the next batch to a handler (a slot is held)."""
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
        if queue:
            self._first_at = time.monotonic()
        task = asyncio.create_task(self._run_handler(batch, self._total(batch)))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _run_handler(self, batch: list[T], weight: int) -> None:
        try:
            await self._handle(batch)
        except Exception:  # a handler's own failure must not stop the loop or leak the slot
            log.exception("batch handler failed", extra={"items": len(batch)})
        finally:
            self.pending -= weight  # as counted at the start: the handler may have changed the items
            self._slots.release()

    def _total(self, items: list[T]) -> int:
        return len(items) if self._weight is None else sum(map(self._weight, items))
