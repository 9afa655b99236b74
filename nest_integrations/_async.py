"""Run a blocking generator in a worker thread and consume it from asyncio without blocking the event loop.

Shared by the LangChain and LlamaIndex adapters (their async streaming over the CPU-bound engine).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["iterate_in_thread"]

T = TypeVar("T")


async def iterate_in_thread(make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Yield the items of ``make_iterator()``, which runs in the default executor.

    Exceptions raised by the iterator are re-raised here; the worker is awaited before returning.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    def produce() -> None:
        try:
            for item in make_iterator():
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as e:  # handed to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, e)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    task = loop.run_in_executor(None, produce)
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        await task
