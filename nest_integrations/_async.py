"""Run blocking engine calls in worker threads from asyncio, cancellably.

Shared by the LangChain and LlamaIndex adapters (their async calls over the CPU-bound engine). Each
worker gets a :class:`threading.Event` to hand to the engine (``cancel=``): it is set when the asyncio
side gives up (the task is cancelled, or the async stream is closed or left early), and the engine
then stops decoding within one step.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["call_in_thread", "iterate_in_thread"]

T = TypeVar("T")


async def call_in_thread(fn: Callable[[threading.Event], T]) -> T:
    """``fn(cancel)`` in the default executor (context variables copied, as ``asyncio.to_thread`` does).

    If the awaiting task is cancelled, ``cancel`` is set (the engine stops within one step) and the
    cancellation propagates at once; whatever the worker raises afterwards is discarded.
    """
    loop = asyncio.get_running_loop()
    cancel = threading.Event()
    ctx = contextvars.copy_context()
    fut = loop.run_in_executor(None, functools.partial(ctx.run, fn, cancel))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel.set()
        fut.add_done_callback(_discard)
        raise


def _discard(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" warning


async def iterate_in_thread(make_iterator: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
    """Yield the items of ``make_iterator(cancel)``, which runs in the default executor.

    Exceptions raised by the iterator are re-raised here. When the consumer stops early (breaks out,
    closes this generator, or its task is cancelled), ``cancel`` is set, the worker closes the iterator
    after the item in hand, and the worker is awaited before this generator returns, so no decoding
    outlives the stream by more than one step.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()
    cancel = threading.Event()

    def post(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            cancel.set()

    def produce() -> None:
        it = make_iterator(cancel)
        try:
            for item in it:
                if cancel.is_set():
                    break
                post(item)
        except BaseException as e:  # handed to the consumer
            if not cancel.is_set():
                post(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            post(done)

    ctx = contextvars.copy_context()
    task = loop.run_in_executor(None, functools.partial(ctx.run, produce))
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        await asyncio.shield(task)
