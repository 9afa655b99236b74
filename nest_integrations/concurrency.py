"""How requests share one model: a first-come-first-served gate per model, and cancellation.

The concurrency contract (what :class:`~nest_integrations.engine.NestEngine` promises):

* One engine may be shared by any number of threads and asyncio tasks. Requests take turns on the model
  through the gate of :func:`model_gate` (one per model object, so engines that share a model share the
  gate too): a request holds it while it computes (retrieval, keys, each decoding step) and releases it
  before every piece it streams, so a slow or idle consumer never blocks the others, and waiting
  requests are served in arrival order.
* Requests share nothing else that changes: each has its own KV cache, token-store view and decoder,
  the config is frozen, and the token store fills each chunk once. N concurrent requests therefore
  return exactly what the same requests return one by one.
* A request stops within one decoding step once its cancel event is set (its stream was closed, or the
  asyncio task consuming it was cancelled); see :func:`nest_integrations._async.iterate_in_thread`.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["ModelGate", "model_gate"]


class ModelGate:
    """A reentrant lock that hands itself to its waiters in arrival order, with a cancellable acquire.

    ``with gate:`` waits as long as it takes; :meth:`acquire` with a ``cancel`` event gives up (returns
    False) once the event is set. The thread that holds the gate may acquire it again (nested calls).
    """

    def __init__(self, poll_s: float = 0.05) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._waiters: deque[tuple[int, threading.Event]] = deque()
        self._poll_s = poll_s

    def acquire(self, cancel: threading.Event | None = None) -> bool:
        """Wait for the gate; False (not acquired) if ``cancel`` is set first."""
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return True
            if cancel is not None and cancel.is_set():
                return False
            if self._owner is None and not self._waiters:
                self._owner, self._depth = me, 1
                return True
            turn = threading.Event()
            self._waiters.append((me, turn))
        while not turn.wait(self._poll_s if cancel is not None else None):
            assert cancel is not None
            if cancel.is_set():
                with self._mutex:
                    if not turn.is_set():
                        self._waiters.remove((me, turn))
                        return False
                # handed to us just as we gave up: pass it on
                self.release()
                return False
        return True

    def release(self) -> None:
        """Release one level; the last one hands the gate to the longest waiter."""
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a ModelGate this thread does not hold")
            self._depth -= 1
            if self._depth:
                return
            if self._waiters:
                owner, turn = self._waiters.popleft()
                self._owner, self._depth = owner, 1
                turn.set()
            else:
                self._owner = None

    def suspend(self) -> int:
        """Release every level this thread holds (it must hold the gate); returns the depth for :meth:`resume`.

        Used by a request that waits for something other requests need the gate for (its batched forward pass,
        :mod:`nest_integrations.decoding.batching`)."""
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("suspend of a ModelGate this thread does not hold")
            depth, self._depth = self._depth, 1
        self.release()
        return depth

    def resume(self, depth: int) -> None:
        """Take the gate back (in arrival order) at the ``depth`` :meth:`suspend` returned."""
        self.acquire()
        with self._mutex:
            self._depth = depth

    def owned(self) -> bool:
        """Whether the calling thread holds the gate."""
        return self._owner == threading.get_ident()

    @property
    def held(self) -> bool:
        """Whether some thread holds the gate now."""
        return self._owner is not None

    def __enter__(self) -> ModelGate:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


_PER_MODEL: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_PER_MODEL_LOCK = threading.Lock()


def per_model(model: Any, name: str, make: Callable[[], T]) -> T:
    """The one ``name`` object of ``model`` (a torch module), made by ``make()`` on first use; it lives as
    long as the model does. How the gate and the forward batcher stay one per model however many engines."""
    with _PER_MODEL_LOCK:
        slots = _PER_MODEL.setdefault(model, {})
        if name not in slots:
            slots[name] = make()
        return slots[name]


def model_gate(model: Any) -> ModelGate:
    """The gate of ``model`` (a torch module): the same object for every engine that uses that model."""
    return per_model(model, "gate", ModelGate)
