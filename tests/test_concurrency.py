"""The concurrency contract: one engine shared by threads and asyncio tasks, cancellation, the token store.

Concurrent requests over one engine (threads, ``ChatNest.ainvoke``, ``NestQueryEngine.aquery``) return
exactly their one-by-one results (float32: the same tokens); a cancelled or abandoned stream stops
decoding within one step (forward passes counted with a hook); the token store fills a chunk once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nest_integrations import Document, NestConfig, NestEngine, RequestCancelledError
from nest_integrations.chunks import chunks_from_documents
from nest_integrations.concurrency import ModelGate, model_gate
from nest_integrations.store import ChunkKeys, TokenStore

DOCS = {
    "zurich": (
        "Zürich is the largest city in Switzerland and the capital of the canton of Zürich. "
        "It is located in north-central Switzerland, at the northwestern tip of Lake Zürich. "
        "The Café Odeon opened in 1911 and became a meeting place for artists, writers and exiles."
    ),
    "malmo": (
        "Malmö is the largest city in the Swedish county of Skåne and the third-largest city in Sweden. "
        "The Øresund Bridge, opened on 1 July 2000, connects Malmö with Copenhagen in Denmark. "
        "The Turning Torso, a twisted skyscraper designed by Santiago Calatrava, was completed in 2005."
    ),
    "tesla": (
        "Nikola Tesla was a Serbian-American inventor, electrical engineer and futurist. He was born in "
        "Smiljan, in the Austrian Empire, in 1856. Tesla is best known for his contributions to the design "
        "of the modern alternating current electricity supply system."
    ),
    "amazon": (
        "The Amazon rainforest is a moist broadleaf forest that covers most of the Amazon basin of South "
        "America. The basin covers seven million square kilometres, of which five and a half million are "
        "covered by the rainforest. The majority of the forest is contained within Brazil."
    ),
}
QUESTIONS = [
    "What is Zürich?",
    "Where is Zürich located?",
    "When did the Café Odeon open?",
    "What does the Øresund Bridge connect?",
    "Who designed the Turning Torso?",
    "Where was Nikola Tesla born?",
    "What is Tesla best known for?",
    "What is the Amazon rainforest?",
]
# long answers that do not stop by themselves, so an early stop is the cancellation's doing
LONG = dict(method="base", max_new_tokens=64)


@pytest.fixture(scope="module")
def engine(default_lm) -> NestEngine:
    docs = [Document(k, v) for k, v in DOCS.items()]
    chunks = chunks_from_documents(docs, chunk_size=200)
    return NestEngine(
        default_lm, chunks, NestConfig(method="nest", max_new_tokens=24, passages=2), precompute_keys=True
    )


@pytest.fixture(scope="module")
def sequential(engine):
    """Each question answered alone, one after the other: the reference."""
    return {q: engine.generate(q) for q in QUESTIONS}


class ForwardLog:
    """Counts the LM's forward passes (and which thread ran each) with a forward hook."""

    def __init__(self, model) -> None:
        self.threads: list[int] = []
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.threads.append(threading.get_ident())

    @property
    def count(self) -> int:
        return len(self.threads)

    def switches(self) -> int:
        """How often consecutive forwards came from different threads (interleaved requests)."""
        return sum(1 for a, b in zip(self.threads, self.threads[1:], strict=False) if a != b)

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture
def forwards(engine) -> Iterator[ForwardLog]:
    log = ForwardLog(engine.lm.model)
    yield log
    log.close()


def _same(result, ref) -> None:
    assert result.text == ref.text
    assert result.token_ids == ref.token_ids
    assert result.spans == ref.spans
    assert result.finish_reason == ref.finish_reason


def _settle(engine, log: ForwardLog, timeout: float = 60.0) -> int:
    """Wait until no request holds the model and no forward pass has run for a while; the count then."""
    deadline = time.monotonic() + timeout
    last, quiet_since = log.count, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if log.count != last or engine._gate.held:
            last, quiet_since = log.count, time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return last
    raise AssertionError("decoding did not stop")


# ---- (a) concurrent requests return their one-by-one results -------------------------------------------
def test_eight_threads_over_one_engine(engine, sequential, forwards) -> None:
    assert sum(len(r.spans) for r in sequential.values()) > 0  # citations are compared, not only text
    barrier = threading.Barrier(len(QUESTIONS))

    def ask(i: int):
        barrier.wait()
        if i % 2:  # half stream, half generate: both interleave on the model
            text, spans, result = "", [], None
            for d in engine.stream(QUESTIONS[i]):
                text += d.text
                spans += d.spans
                result = d.result or result
            assert text == result.text and spans == result.spans
            return result
        return engine.generate(QUESTIONS[i])

    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        results = list(pool.map(ask, range(len(QUESTIONS))))
    for q, r in zip(QUESTIONS, results, strict=True):
        _same(r, sequential[q])
    assert len(set(forwards.threads)) > 1 and forwards.switches() >= len(QUESTIONS)  # they really interleaved
    assert not engine._gate.held


def test_eight_asyncio_tasks_through_chat_nest(engine, sequential) -> None:
    from nest_integrations.langchain import ChatNest
    from nest_integrations.langchain.chat_models import citation_dict

    chat = ChatNest(engine=engine)

    async def main():
        return await asyncio.gather(*(chat.ainvoke(q) for q in QUESTIONS))

    for q, msg in zip(QUESTIONS, asyncio.run(main()), strict=True):
        ref = sequential[q]
        assert msg.text == ref.text
        assert msg.response_metadata["citations"] == [citation_dict(s) for s in ref.spans]
        assert msg.usage_metadata["output_tokens"] == len(ref.token_ids)


def test_eight_asyncio_tasks_through_the_llama_index_query_engine(engine, sequential) -> None:
    pytest.importorskip("llama_index.core")
    from nest_integrations.llama_index import NestQueryEngine

    qe = NestQueryEngine(engine=engine)

    async def main():
        return await asyncio.gather(*(qe.aquery(q) for q in QUESTIONS))

    for q, response in zip(QUESTIONS, asyncio.run(main()), strict=True):
        ref = sequential[q]
        assert str(response) == ref.text
        assert [n.node.text for n in response.source_nodes] == [s.text for s in ref.spans]
        assert response.metadata["finish_reason"] == ref.finish_reason


# ---- (b, c) cancellation stops decoding within one step ------------------------------------------------
def test_cancelled_astream_stops_within_one_step(engine, forwards) -> None:
    from nest_integrations.langchain import ChatNest

    chat = ChatNest(engine=engine, method="base", max_tokens=LONG["max_new_tokens"])

    async def main() -> tuple[int, int, int]:
        first = asyncio.Event()
        n_chunks = 0

        async def consume() -> None:
            nonlocal n_chunks
            async for _ in chat.astream(QUESTIONS[0]):
                n_chunks += 1
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 300)
        at_cancel = forwards.count
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = forwards.count  # the worker has ended: iterate_in_thread waits for it
        await asyncio.sleep(0.5)
        return at_cancel, after, n_chunks

    at_cancel, after, n_chunks = asyncio.run(main())
    settled = _settle(engine, forwards)
    assert settled == after
    assert settled - at_cancel <= 1, (at_cancel, settled)
    assert settled < 1 + LONG["max_new_tokens"] // 2  # far from the 64 tokens it would have decoded
    assert n_chunks >= 1
    assert chat.invoke(QUESTIONS[1], max_tokens=4).text  # the engine serves the next request


def test_closed_sync_stream_stops_decoding(engine, forwards) -> None:
    from nest_integrations.langchain import ChatNest

    stream = engine.stream(QUESTIONS[0], **LONG)
    first = next(stream)
    assert first.text and first.result is None
    assert not engine._gate.held  # a suspended stream holds no lock
    n = forwards.count
    stream.close()
    assert forwards.count == n and _settle(engine, forwards) == n
    # the LangChain stream likewise: its chunks are yielded with no lock held, and closing it stops decoding
    chat = ChatNest(engine=engine, method="base", max_tokens=LONG["max_new_tokens"])
    it = chat.stream(QUESTIONS[1])
    next(it)
    assert not engine._gate.held
    n = forwards.count
    it.close()
    assert _settle(engine, forwards) == n
    assert forwards.count < 2 * (1 + LONG["max_new_tokens"] // 2)


def test_llama_index_astream_chat_left_early_stops_decoding(engine, forwards) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    from nest_integrations.llama_index import NestLLM

    llm = NestLLM(engine=engine, nest_config=engine.config.replace(**LONG))

    async def main() -> int:
        gen = await llm.astream_chat([ChatMessage(role=MessageRole.USER, content=QUESTIONS[2])])
        async for _ in gen:
            break
        at_leave = forwards.count
        await gen.aclose()
        for _ in range(50):  # the inner stream is closed by the event loop's async-generator finaliser
            await asyncio.sleep(0.1)
        return at_leave

    at_leave = asyncio.run(main())
    assert _settle(engine, forwards) - at_leave <= 1
    assert forwards.count < 1 + LONG["max_new_tokens"] // 2


def test_cancel_event_stops_a_request_from_another_thread(engine, forwards) -> None:
    cancel = threading.Event()
    seen = []

    def run() -> None:
        try:
            for d in engine.stream(QUESTIONS[3], cancel=cancel, **LONG):
                seen.append(d.text)
                if len(seen) == 1:
                    cancel.set()
        except RequestCancelledError as e:
            seen.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(300)
    assert not t.is_alive() and isinstance(seen[-1], RequestCancelledError)
    assert forwards.count < 1 + LONG["max_new_tokens"] // 2
    with pytest.raises(RequestCancelledError):  # set before it starts: nothing runs
        engine.generate(QUESTIONS[3], cancel=cancel)


# ---- the gate and the token store --------------------------------------------------------------------
def test_model_gate_is_fifo_reentrant_and_cancellable() -> None:
    gate = ModelGate(poll_s=0.01)
    order: list[int] = []
    with gate:
        with gate:  # reentrant
            assert gate.held
        threads = []
        for i in range(4):
            t = threading.Thread(target=lambda i=i: (gate.acquire(), order.append(i), gate.release()))
            t.start()
            threads.append(t)
            while len(gate._waiters) < i + 1:  # queued in this order
                time.sleep(0.001)
        cancel = threading.Event()
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(gate.acquire(cancel)))
        waiter.start()
        cancel.set()
        waiter.join(5)
        assert got == [False]
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3] and not gate.held
    with pytest.raises(RuntimeError):
        gate.release()


def test_engines_on_one_model_share_its_gate(engine) -> None:
    other = NestEngine(engine.lm, engine.chunks, engine.config, token_store=engine.token_store)
    assert other._gate is engine._gate is model_gate(engine.lm.model)


def test_token_store_fills_each_chunk_once_under_eight_threads() -> None:
    calls: list[list[int]] = []
    lock = threading.Lock()

    def encode(indices):
        with lock:
            calls.append(list(indices))
        time.sleep(0.05)  # a slow encoder: the window in which a check-then-encode store encodes twice
        return [ChunkKeys(np.array([i, i], np.int32), np.zeros((2, 2), np.int32), np.zeros((2, 4), np.float16))
                for i in indices]  # fmt: skip

    store = TokenStore(6, encode)
    barrier = threading.Barrier(8)

    def ensure(t: int) -> int:
        barrier.wait()
        return store.ensure([0, 1, 2, 3] if t % 2 else [2, 3, 4, 5])

    with ThreadPoolExecutor(8) as pool:
        encoded = list(pool.map(ensure, range(8)))
    flat = sorted(i for c in calls for i in c)
    assert flat == [0, 1, 2, 3, 4, 5]  # every chunk encoded exactly once
    assert sum(encoded) == 6
    assert all(int(store.get(i).token_ids[0]) == i for i in range(6))
