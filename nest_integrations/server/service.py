"""The server's side of the engine: which engine answers a request, admission control and metrics.

:class:`NestService` turns a :class:`~nest_integrations.server.schemas.NormalizedRequest` into a stream of
:class:`~nest_integrations.results.NestDelta` — over the documents inside the messages (context mode, the
drop-in path of :mod:`nest_integrations.context`) when they hold context, else over the server's datastore /
corpus engine — and keeps the counts ``/metrics`` reports. :class:`Admission` bounds the work: at most
``max_active`` requests decode at once (taking turns on the model step by step, see
:mod:`nest_integrations.concurrency`), at most ``max_queue`` more wait, and a request beyond that is refused at
once (429 with ``Retry-After``) instead of queueing without bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nest_integrations.config import NestConfig
from nest_integrations.context import DEFAULT_MIN_CONTEXT_CHARS, find_context_segments, stream_over_context
from nest_integrations.errors import ConfigError, NestError
from nest_integrations.results import NestDelta
from nest_integrations.server.schemas import NormalizedRequest, RequestError

__all__ = ["Admission", "QueueFullError", "NestService", "ServerSettings"]


@dataclass(frozen=True)
class ServerSettings:
    """Limits and identity of one server.

    Attributes:
        model_name: the id ``/v1/models`` lists and responses carry.
        api_key: when set, every ``/v1`` request needs ``Authorization: Bearer <api_key>``.
        max_active: requests decoding at once (they take turns on the model step by step).
        max_queue: requests waiting for a slot; one more gets 429.
        max_tokens_limit: the largest ``max_tokens`` accepted.
        default_max_tokens: ``max_tokens`` when a request gives none.
        max_body_bytes: the largest request body (413 above).
        request_timeout_s: a request still running after this long is cancelled (504, or an error event).
        context_min_chars: from this length a system / user message is context to copy from.
        batching: continuous batching — concurrent requests share forward passes
            (:mod:`nest_integrations.decoding.batching`).
        graceful_shutdown_s: on SIGINT / SIGTERM, how long the requests in flight (streams included) get to
            finish before they are cut.
    """

    model_name: str = "nest"
    api_key: str | None = None
    max_active: int = 8
    max_queue: int = 32
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0
    context_min_chars: int = DEFAULT_MIN_CONTEXT_CHARS
    batching: bool = True
    graceful_shutdown_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_active", "max_tokens_limit", "default_max_tokens", "max_body_bytes", "context_min_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive (got {getattr(self, name)})")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0 (got {self.max_queue})")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError("default_max_tokens must not exceed max_tokens_limit")
        if self.graceful_shutdown_s < 0:
            raise ConfigError("graceful_shutdown_s must be >= 0")
        if self.request_timeout_s <= 0:
            raise ConfigError("request_timeout_s must be positive")


class QueueFullError(NestError):
    """Every slot is busy and the queue is full: answered with 429 and ``Retry-After``."""


class Admission:
    """At most ``max_active`` holders at once and ``max_queue`` waiters; :meth:`enter` refuses beyond that."""

    def __init__(self, max_active: int, max_queue: int) -> None:
        self.max_active, self.max_queue = max_active, max_queue
        self._cond = threading.Condition()
        self.active = 0
        self.waiting = 0

    def enter(self, cancel: threading.Event | None = None) -> None:
        """Take a slot, waiting in the queue if need be (raises :class:`QueueFullError` when it is full).

        Returns early without a slot (raising :class:`~nest_integrations.errors.RequestCancelledError`) when
        ``cancel`` is set while waiting.
        """
        from nest_integrations.errors import RequestCancelledError

        with self._cond:
            if self.active >= self.max_active:
                if self.waiting >= self.max_queue:
                    raise QueueFullError(
                        f"the server is busy ({self.active} requests running, {self.waiting} waiting); retry later"
                    )
                self.waiting += 1
                try:
                    while self.active >= self.max_active:
                        self._cond.wait(0.05)
                        if cancel is not None and cancel.is_set():
                            raise RequestCancelledError("the request was cancelled while it waited in the queue")
                finally:
                    self.waiting -= 1
            self.active += 1

    def leave(self) -> None:
        """Give the slot back."""
        with self._cond:
            self.active -= 1
            self._cond.notify()

    def check(self) -> None:
        """Raise :class:`QueueFullError` now if :meth:`enter` would (so a stream can answer 429 before it starts)."""
        with self._cond:
            if self.active >= self.max_active and self.waiting >= self.max_queue:
                raise QueueFullError(
                    f"the server is busy ({self.active} requests running, {self.waiting} waiting); retry later"
                )


class NestService:
    """One engine (or the drop-in context mode) behind the HTTP endpoints.

    Args:
        engine: the :class:`~nest_integrations.engine.NestEngine` over the server's corpus or datastore.
        documents: doc_id → text of that corpus (for ``/v1/sources``).
        settings: limits (see :class:`ServerSettings`).
        titles: doc_id → the title annotations carry (default: the document's source, else its id).
    """

    def __init__(
        self,
        engine: Any,
        documents: dict[str, str],
        settings: ServerSettings | None = None,
        titles: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.document_titles = dict(titles or {})
        self.lm = engine.lm
        self.documents = documents
        self.settings = settings or ServerSettings()
        self.admission = Admission(self.settings.max_active, self.settings.max_queue)
        self.started = time.time()
        self._lock = threading.Lock()
        self.requests_total = 0
        self.requests_failed = 0
        self.requests_rejected = 0
        self.requests_cancelled = 0
        self.completion_tokens_total = 0
        self.prompt_tokens_total = 0
        self._recent: deque[tuple[float, int]] = deque()

    # ---- decoding ----------------------------------------------------------------------
    def uses_context(self, req: NormalizedRequest) -> bool:
        """Whether ``req`` is answered from the documents inside its messages (context mode)."""
        if req.raw or req.nest.context == "store":
            return False
        if req.nest.context == "messages":
            return True
        return bool(find_context_segments(req.messages, req.nest.documents, self.settings.context_min_chars))

    def overrides(self, req: NormalizedRequest) -> dict[str, Any]:
        """The :class:`NestConfig` fields of this request: its ``nest.config``, then its limits and stops."""
        over = dict(req.nest.config)
        over["max_new_tokens"] = req.max_tokens
        if req.stop:
            over["stop"] = tuple(req.stop)
        try:
            self.engine.config.replace(**over)
        except ConfigError as e:
            raise RequestError(f"nest.config: {e}", "nest.config") from None
        except (TypeError, ValueError) as e:
            raise RequestError(f"nest.config: {e}", "nest.config") from None
        return over

    def stream(self, req: NormalizedRequest, cancel: threading.Event) -> Iterator[NestDelta]:
        """The answer to ``req`` as deltas (the last carries the result), holding an admission slot throughout."""
        over = self.overrides(req)
        self.admission.enter(cancel)
        with self._lock:
            self.requests_total += 1
        try:
            if self.uses_context(req):
                cfg: NestConfig = self.engine.config
                it = stream_over_context(
                    self.lm,
                    req.messages,
                    cfg,
                    documents=req.nest.documents,
                    min_chars=self.settings.context_min_chars,
                    cancel=cancel,
                    batching=self.settings.batching,
                    **over,
                )
            else:
                # per call, not by setting engine.batching: the engine may be the caller's own object
                it = self.engine.stream(
                    req.messages if not req.raw else req.messages[0]["content"],
                    raw=req.raw,
                    cancel=cancel,
                    batching=self.settings.batching,
                    **over,
                )
            try:
                for delta in it:
                    if delta.result is not None:
                        self._count(delta.result)
                    yield delta
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        finally:
            self.admission.leave()

    def _count(self, result: Any) -> None:
        now = time.time()
        n = len(result.token_ids)
        with self._lock:
            self.completion_tokens_total += n
            self.prompt_tokens_total += result.stats.prompt_tokens
            self._recent.append((now, n))

    def count_failure(self, cancelled: bool = False, rejected: bool = False) -> None:
        """Count a request that ended in an error, a cancellation or a 429."""
        with self._lock:
            if rejected:
                self.requests_rejected += 1
            elif cancelled:
                self.requests_cancelled += 1
            else:
                self.requests_failed += 1

    # ---- metrics -----------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Gauges and counters for ``/metrics`` (tokens/s over the last 60 s)."""
        now = time.time()
        with self._lock:
            while self._recent and self._recent[0][0] < now - 60:
                self._recent.popleft()
            recent = sum(n for _, n in self._recent)
            window = min(60.0, max(1e-9, now - self.started))
            from nest_integrations.decoding.batching import forward_batcher

            bs = forward_batcher(self.lm.model).stats
            return {
                "nest_batched_forwards_total": bs.batches,
                "nest_batched_requests_total": bs.jobs,
                "nest_unbatched_forwards_total": bs.solo,
                "nest_batch_size_max": bs.max_batch,
                "nest_requests_active": self.admission.active,
                "nest_queue_depth": self.admission.waiting,
                "nest_requests_total": self.requests_total,
                "nest_requests_failed_total": self.requests_failed,
                "nest_requests_rejected_total": self.requests_rejected,
                "nest_requests_cancelled_total": self.requests_cancelled,
                "nest_prompt_tokens_total": self.prompt_tokens_total,
                "nest_completion_tokens_total": self.completion_tokens_total,
                "nest_completion_tokens_per_second": recent / window,
                "nest_uptime_seconds": now - self.started,
            }
