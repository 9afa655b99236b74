"""Continuous batching (decoding/batching.py): concurrent requests share padded forward passes and each still
returns what it returns alone; structure checked on tiny random models, float32."""

from __future__ import annotations

import threading

import pytest
import torch

from nest_integrations import NestConfig, NestEngine
from nest_integrations.decoding.batching import forward_batcher
from nest_integrations.demo import load_demo_documents

QUESTIONS = [
    "Who performed the national anthem at Super Bowl 50?",
    "Where did Beyonce grow up?",
    "When was Nikola Tesla born?",
    "What is a steam engine?",
    "Who was Marie Curie?",
    "Which team won Super Bowl 50?",
    "What did Tesla study?",
    "Where is Warsaw?",
]


def _concurrently(engine: NestEngine, questions: list[str]) -> list:
    out: list = [None] * len(questions)
    barrier = threading.Barrier(len(questions))

    def run(i: int) -> None:
        barrier.wait()
        out[i] = engine.generate(questions[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("acceptance", ["relaxed", "lossless"])
def test_batched_requests_return_their_single_request_output(tiny_lm, acceptance):
    cfg = NestConfig(method="nest", abstain="off", max_new_tokens=20, acceptance=acceptance, answer_draft="none")
    docs = load_demo_documents()
    alone = NestEngine.from_documents(docs, tiny_lm, cfg)
    single = [alone.generate(q) for q in QUESTIONS]
    batched_engine = NestEngine.from_documents(docs, tiny_lm, cfg, batching=True)
    fb = forward_batcher(tiny_lm.model)
    before = fb.stats.jobs
    batched = _concurrently(batched_engine, QUESTIONS)
    assert fb.stats.jobs > before, "some forward passes were shared"
    assert fb.stats.max_batch >= 2
    for a, b in zip(single, batched, strict=True):
        assert b.token_ids == a.token_ids
        assert b.text == a.text
        assert [s.to_dict() for s in b.spans] == [s.to_dict() for s in a.spans]
        assert b.stats.forward_passes == a.stats.forward_passes


def test_batched_forward_equals_forward_alone(tiny_lm):
    """The padded batch gives each request the logits, states and cache it gets alone (left-padded past,
    right-padded new tokens, explicit positions)."""
    from nest_integrations.decoding.cache import cache_kwarg, new_cache
    from nest_integrations.key_layer import tap_for

    model = tiny_lm.model
    tap, kw = tap_for(model, -1), cache_kwarg(model)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34]]
    news = [[40], [41, 42, 43, 44], [45, 46]]

    def prefilled(p):
        c = new_cache(model)
        with torch.inference_mode():
            tap.forward(input_ids=torch.tensor([p]), use_cache=True, **{kw: c})
        return c

    fb = forward_batcher(model)
    from nest_integrations.decoding.batching import _Job

    jobs = [_Job(n, prefilled(p), tap, kw, torch.device("cpu"), lambda: None) for p, n in zip(prompts, news, strict=True)]
    with torch.inference_mode():
        got = fb._batched(jobs)
        for (p, n), job, (logits, states) in zip(zip(prompts, news, strict=True), jobs, got, strict=True):
            ref_cache = prefilled(p)
            out, hs = tap.forward(input_ids=torch.tensor([n]), use_cache=True, **{kw: ref_cache})
            torch.testing.assert_close(logits, out.logits[0].float(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(states, hs[0].float(), atol=1e-5, rtol=1e-5)
            assert job.cache.get_seq_length() == len(p) + len(n)
            for la, lb in zip(job.cache.layers, ref_cache.layers, strict=True):
                torch.testing.assert_close(la.keys, lb.keys, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(la.values, lb.values, atol=1e-5, rtol=1e-5)


def test_cancel_while_batched(tiny_lm):
    """A cancelled request leaves its round; the others finish with their single-request output."""
    from nest_integrations.errors import RequestCancelledError

    cfg = NestConfig(method="nest", abstain="off", max_new_tokens=30, answer_draft="none")
    docs = load_demo_documents()
    ref = NestEngine.from_documents(docs, tiny_lm, cfg).generate(QUESTIONS[1])
    eng = NestEngine.from_documents(docs, tiny_lm, cfg, batching=True)
    cancel = threading.Event()
    errors: list = []
    res: dict = {}

    def victim() -> None:
        try:
            for i, _ in enumerate(eng.stream(QUESTIONS[0], cancel=cancel)):
                if i == 2:
                    cancel.set()
        except RequestCancelledError as e:
            errors.append(e)

    def other() -> None:
        res["r"] = eng.generate(QUESTIONS[1])

    ts = [threading.Thread(target=victim), threading.Thread(target=other)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert errors and res["r"].token_ids == ref.token_ids


def test_generate_many_equals_generate_in_order(tiny_lm):
    """generate_many answers every prompt as generate does alone, in the prompts' order, sharing forwards
    even on an engine built without batching, with fewer threads than prompts (requests admitted as others
    finish)."""
    cfg = NestConfig(method="nest", abstain="off", max_new_tokens=16, answer_draft="none")
    engine = NestEngine.from_documents(load_demo_documents(), tiny_lm, cfg)
    single = [engine.generate(q) for q in QUESTIONS]
    fb = forward_batcher(tiny_lm.model)
    before = fb.stats.jobs
    many = engine.generate_many(QUESTIONS, max_concurrency=3)
    assert fb.stats.jobs > before, "generate_many shares forward passes"
    assert fb.stats.max_batch <= 16
    assert [r.token_ids for r in many] == [r.token_ids for r in single]
    assert [[s.to_dict() for s in r.spans] for r in many] == [[s.to_dict() for s in r.spans] for r in single]
    assert not engine.batching, "the engine's own setting is untouched"
    assert engine.generate_many([]) == []


def test_generate_many_bad_input(tiny_lm):
    from nest_integrations.errors import ConfigError

    engine = NestEngine.from_documents(load_demo_documents(), tiny_lm, NestConfig(method="nest", abstain="off"))
    with pytest.raises(ConfigError, match="max_concurrency"):
        engine.generate_many(QUESTIONS, max_concurrency=0)
    with pytest.raises(ConfigError, match="list of prompts"):
        engine.generate_many("Who was Marie Curie?")
    with pytest.raises(ConfigError):
        engine.generate_many(QUESTIONS, max_new_tokens=-3)


def test_generate_many_cancel(tiny_lm):
    """Setting ``cancel`` while the requests decode stops all of them: generate_many raises."""
    from nest_integrations.errors import RequestCancelledError

    engine = NestEngine.from_documents(
        load_demo_documents(), tiny_lm, NestConfig(method="nest", abstain="off", max_new_tokens=200, answer_draft="none")
    )
    fb = forward_batcher(tiny_lm.model)
    before = fb.stats.batches
    stop = threading.Event()

    def cancel_once_batching() -> None:  # set cancel once shared forwards have started, i.e. mid-decoding
        for _ in range(6000):
            if fb.stats.batches > before + 2:
                break
            threading.Event().wait(0.005)
        stop.set()

    watcher = threading.Thread(target=cancel_once_batching)
    watcher.start()
    with pytest.raises(RequestCancelledError):
        engine.generate_many(QUESTIONS * 2, max_concurrency=4, cancel=stop)
    watcher.join()
    assert fb.stats.batches > before + 2
