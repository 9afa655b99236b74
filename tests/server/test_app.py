"""The OpenAI-compatible app in process (FastAPI TestClient), over a tiny random model: request validation,
JSON errors, auth, limits, the stream == non-stream contract, citations' offsets, metrics, sources."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sse_starlette")

from fastapi.testclient import TestClient  # noqa: E402

from nest_integrations import NestConfig, NestEngine  # noqa: E402
from nest_integrations.demo import load_demo_documents  # noqa: E402
from nest_integrations.server import NestService, ServerSettings, create_app  # noqa: E402

QUESTION = "Who performed the national anthem at Super Bowl 50?"


@pytest.fixture(scope="module")
def engine(tiny_lm):
    docs = load_demo_documents()
    # abstention off: the random model's states relate to nothing, and these tests are about the transport
    return NestEngine.from_documents(docs, tiny_lm, NestConfig(method="nest", abstain="off", max_new_tokens=24)), docs


def _client(engine, **settings) -> TestClient:
    eng, docs = engine
    service = NestService(eng, {d.doc_id: d.text for d in docs}, ServerSettings(**settings))
    return TestClient(create_app(service))


@pytest.fixture(scope="module")
def client(engine):
    with _client(engine, api_key=None) as c:
        yield c


def _sse(resp) -> list[tuple[str | None, str]]:
    """(event, data) of each server-sent event."""
    out, event, data = [], None, []
    for line in resp.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line.strip() and data:
            out.append((event, "\n".join(data)))
            event, data = None, []
    if data:
        out.append((event, "\n".join(data)))
    return out


def _check_spans(body_text: str, spans: list[dict], docs: dict[str, str]) -> None:
    for s in spans:
        assert body_text[s["response_start"] : s["response_end"]] == s["text"]
        assert docs[s["doc_id"]][s["doc_start"] : s["doc_end"]] == s["text"]


def test_chat_completion_shape_and_exact_citations(client, engine):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    nest = body["nest"]
    assert nest["decoding"] == "greedy" and nest["finish_reason"] in ("eos", "stop", "sentence", "length", "abstained")
    assert body["choices"][0]["finish_reason"] == ("length" if nest["finish_reason"] == "length" else "stop")
    docs = {d.doc_id: d.text for d in engine[1]}
    _check_spans(msg["content"], nest["spans"], docs)
    # one annotation per span, same offsets, linking to the source page
    anns = msg["annotations"]
    assert [(a["url_citation"]["start_index"], a["url_citation"]["end_index"]) for a in anns] == [
        (s["response_start"], s["response_end"]) for s in nest["spans"]
    ]
    for a, s in zip(anns, nest["spans"], strict=True):
        assert a["type"] == "url_citation" and f"start={s['doc_start']}&end={s['doc_end']}" in a["url_citation"]["url"]
    # sentence labels cover the text
    for sent in nest["sentences"]:
        assert 0 <= sent["response_start"] < sent["response_end"] <= len(msg["content"])
        assert sent["support"] in ("copied", "grounded", "unsupported")


def _stream_chat(client, payload):
    with client.stream("POST", "/v1/chat/completions", json={**payload, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r)
    assert events[-1][1] == "[DONE]"
    return [json.loads(d) for _, d in events[:-1]]


@pytest.mark.parametrize("question", [QUESTION, "Where did Beyonce grow up?"])
def test_chat_stream_concatenates_to_the_non_streamed_answer(client, question):
    payload = {"messages": [{"role": "user", "content": question}], "max_tokens": 24,
               "stream_options": {"include_usage": True}}
    whole = client.post("/v1/chat/completions", json=payload).json()
    chunks = _stream_chat(client, payload)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    spans = [s for c in chunks for s in c.get("nest", {}).get("spans", [])]
    anns = [a for c in chunks if c["choices"] for a in c["choices"][0]["delta"].get("annotations", [])]
    assert text == whole["choices"][0]["message"]["content"]
    assert spans == whole["nest"]["spans"]
    assert anns == whole["choices"][0]["message"]["annotations"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["nest"]["sentences"] == whole["nest"]["sentences"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_responses_api_non_stream_and_stream(client):
    payload = {"input": QUESTION, "instructions": "Answer briefly.", "max_output_tokens": 24}
    whole = client.post("/v1/responses", json=payload)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["object"] == "response" and body["status"] in ("completed", "incomplete")
    part = body["output"][0]["content"][0]
    assert part["type"] == "output_text"
    assert [(a["start_index"], a["end_index"]) for a in part["annotations"]] == [
        (s["response_start"], s["response_end"]) for s in body["nest"]["spans"]
    ]
    with client.stream("POST", "/v1/responses", json={**payload, "stream": True}) as r:
        events = [(e, json.loads(d)) for e, d in _sse(r)]
    kinds = [e for e, _ in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    text = "".join(d["delta"] for e, d in events if e == "response.output_text.delta")
    anns = [d["annotation"] for e, d in events if e == "response.output_text.annotation.added"]
    assert text == part["text"] and anns == part["annotations"]
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == part["text"]


def test_completions_raw_prompt(client):
    r = client.post("/v1/completions", json={"prompt": "Super Bowl 50 was", "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion" and r.json()["usage"]["completion_tokens"] >= 1


def test_temperature_is_accepted_and_said_to_be_ignored(client):
    base = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8}
    cold = client.post("/v1/chat/completions", json=base).json()
    warm = client.post("/v1/chat/completions", json={**base, "temperature": 0.1}).json()
    assert warm["nest"]["sampling_ignored"] is True and cold["nest"]["sampling_ignored"] is False
    assert warm["choices"][0]["message"]["content"] == cold["choices"][0]["message"]["content"]


BAD = [
    ("malformed JSON", b"{not json", 400, "invalid_json"),
    ("missing messages", {"model": "nest"}, 400, None),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, None),
    ("tool message", {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x", "tool_call_id": "1"}]}, 400, "tools_unsupported"),
    ("tools", {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools_unsupported"),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, 400, "unsupported_content"),
    ("n > 1", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, None),
    ("negative max_tokens", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, None),
    ("huge max_tokens", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}, 400, None),
    ("temperature > 2", {"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400, None),
    ("empty user message", {"messages": [{"role": "user", "content": "  "}]}, 400, None),
    ("bad nest.config", {"messages": [{"role": "user", "content": "hi"}], "nest": {"config": {"alpha": 7}}}, 400, None),
    ("unknown nest option", {"messages": [{"role": "user", "content": "hi"}], "nest": {"colour": 1}}, 400, None),
    ("messages not a list", {"messages": "hi"}, 400, None),
]


@pytest.mark.parametrize("name,payload,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(client, name, payload, status, code):
    kw = {"content": payload, "headers": {"content-type": "application/json"}} if isinstance(payload, bytes) else {"json": payload}
    r = client.post("/v1/chat/completions", **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    if code:
        assert err["code"] == code
    # a streamed bad request is refused the same way, before any event
    if not isinstance(payload, bytes):
        s = client.post("/v1/chat/completions", json={**payload, "stream": True})
        assert s.status_code == status and "error" in s.json()
    ok = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200


def test_body_limit_is_413(engine):
    with _client(engine, max_body_bytes=10_000) as c:
        big = {"messages": [{"role": "user", "content": "x" * 20_000}]}
        r = c.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        assert c.get("/health").status_code == 200


def test_api_key(engine):
    with _client(engine, api_key="s3cret") as c:
        payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.post("/v1/chat/completions", json=payload, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200  # liveness stays open
        r = c.post("/v1/chat/completions", json=payload, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200


def test_queue_full_is_429_with_retry_after(engine):
    """One slot, no queue: while a long request runs, another is refused at once with 429; then both work."""
    with _client(engine, max_active=1, max_queue=0) as c:
        long_req = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 200, "nest": {"config": {"stop": []}}}
        results = {}

        def run() -> None:
            results["long"] = c.post("/v1/chat/completions", json=long_req)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 30
        while c.get("/health").json()["active"] < 1 and time.time() < deadline:
            time.sleep(0.01)
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        t.join()
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert results["long"].status_code == 200
        metrics = c.get("/metrics").text
        assert "nest_requests_rejected_total 1" in metrics
        assert c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code == 200


def test_models_health_metrics_openapi(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == "nest"
    assert client.get("/health").json()["status"] == "ok"
    m = client.get("/metrics").text
    for name in ("nest_requests_active", "nest_queue_depth", "nest_completion_tokens_per_second"):
        assert f"\n{name} " in "\n" + m
    schema = client.get("/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/models"} <= set(schema["paths"])
    assert client.get("/nope").json()["error"]["code"] == "not_found"


def test_sources_page_highlights_the_cited_characters(client, engine):
    doc = engine[1][0]
    r = client.get(f"/v1/sources/{doc.doc_id}", params={"start": 10, "end": 30, "format": "json"})
    assert r.json()["text"] == doc.text and (r.json()["start"], r.json()["end"]) == (10, 30)
    page = client.get(f"/v1/sources/{doc.doc_id}", params={"start": 10, "end": 30}).text
    from html import escape

    assert f'<mark id="cited" class="cited">{escape(doc.text[10:30])}</mark>' in page
    assert client.get("/v1/sources/nope").status_code == 404
    assert client.get(f"/v1/sources/{doc.doc_id}", params={"start": 5, "end": 10**7}).status_code == 400


def test_context_mode_cites_documents_in_the_messages(client):
    """A long system message is context: its spans are cited as message-0 with offsets into that message."""
    context = (
        "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research on "
        "radioactivity. She was the first woman to win a Nobel Prize, the first person to win a Nobel Prize twice, "
        "and the only person to win a Nobel Prize in two scientific fields."
    )
    msgs = [{"role": "system", "content": "Answer from the context.\n\n" + context},
            {"role": "user", "content": "Who was Marie Curie?"}]
    body = client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 24,
                                                     "nest": {"config": {"acceptance": "lossless"}}}).json()
    for s in body["nest"]["spans"]:
        assert s["doc_id"] == "message-0"
        assert msgs[0]["content"][s["doc_start"] : s["doc_end"]] == s["text"]
    for a in body["choices"][0]["message"]["annotations"]:
        assert a["url_citation"]["url"].startswith("message:0#")
    store = client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 8, "nest": {"context": "store"}}).json()
    assert all(not s["doc_id"].startswith("message-") for s in store["nest"]["spans"])


def test_html_option_renders_the_answer(client):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16,
                                                  "nest": {"html": True}}).json()
    assert '<div class="nest-view">' in r["nest"]["html"]


def test_page_is_served(client):
    page = client.get("/").text
    assert "<textarea" in page and "/v1/chat/completions" in page


def test_access_log_has_one_json_line_per_request_without_secrets(engine, caplog):
    import logging

    with _client(engine, api_key="s3cret") as c, caplog.at_level(logging.INFO, logger="nest_integrations.server.access"):
        payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert c.post("/v1/chat/completions?x=secret-query", json=payload).status_code == 401
        ok = c.post("/v1/chat/completions", json=payload, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "nest_integrations.server.access"]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("POST", "/v1/chat/completions", 401),
        ("POST", "/v1/chat/completions", 200),
    ]
    assert lines[1]["bytes"] == len(ok.content) and lines[1]["ms"] > 0
    text = caplog.text
    assert "s3cret" not in text and "secret-query" not in text
    assert set(lines[0]) == {"client", "method", "path", "status", "bytes", "ms"}  # no body, no headers


def test_the_service_batches_per_call_and_leaves_the_engine_setting_alone(engine, monkeypatch):
    eng, docs = engine
    assert not eng.batching
    seen: list[object] = []
    real = eng.stream

    def spy(*args, **kwargs):
        seen.append(kwargs.get("batching"))
        return real(*args, **kwargs)

    monkeypatch.setattr(eng, "stream", spy)
    with _client(engine, api_key=None, batching=True) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert seen == [True], "the request decodes batched"
    assert not eng.batching, "the caller's engine keeps its own setting"
