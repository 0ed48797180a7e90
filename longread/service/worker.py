"""One thread owns the model: every preparation and every question runs on it, in order, so
concurrent requests can neither corrupt each other's reads nor run the machine out of memory
together. Requests wait for their job asynchronously (the event loop stays free)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from ..errors import ServiceBusyError


class ModelWorker:
    def __init__(self, max_pending: int):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="longread-model")
        self._pending = 0
        self._lock = threading.Lock()
        self.max_pending = max_pending

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, fn: Callable, *args) -> Future:
        """Queue ``fn(*args)``; ServiceBusyError when ``max_pending`` jobs already wait."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise ServiceBusyError(f"{self._pending} jobs are already waiting for the model; retry shortly")
            self._pending += 1
        future = self._pool.submit(self._run, fn, args)
        return future

    def _run(self, fn, args):
        try:
            try:
                return fn(*args)
            except MemoryError as exc:
                raise ServiceBusyError("the model ran out of memory on this request; retry with a shorter "
                                       "document or fewer questions") from exc
        finally:
            with self._lock:
                self._pending -= 1

    async def run(self, fn: Callable, *args, timeout: float):
        """``fn(*args)`` on the model thread, awaited up to ``timeout`` seconds (then 503; a job
        that has not started yet is cancelled)."""
        future = self.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            future.cancel()
            raise ServiceBusyError(f"no answer within {timeout:g} s; the service is busy, retry later") from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
