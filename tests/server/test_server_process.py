"""`nest serve` as a real process on a free loopback port, driven by real clients: the ``openai`` SDK (chat
completions and responses, stream and not), LangChain ``ChatOpenAI(use_responses_api=True)`` in an LCEL chain,
LlamaIndex ``OpenAILike`` as ``Settings.llm`` under a query engine, and headless Chromium on the chat page.
Every span is checked against the file re-read from disk and against the response text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sse_starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from nest_integrations.demo import load_demo_documents  # noqa: E402
from tests.server.browser import Browser, find_chromium  # noqa: E402
from tests.server.helpers import start_server, stop_server  # noqa: E402

KEY = "test-key-123"
QUESTION = "Who performed the national anthem at Super Bowl 50?"


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, corpus: Path, log: list[str]) -> None:
        self.proc, self.url, self.corpus, self.log = proc, url, corpus, log

    def client(self):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=KEY, max_retries=0, timeout=300)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        return {k: float(v) for k, v in re.findall(r"^(nest_\w+) (\S+)$", text, flags=re.M)}


@pytest.fixture(scope="module")
def server(default_lm, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("serve-corpus")
    for d in load_demo_documents():
        (corpus / f"{d.doc_id}.txt").write_text(d.text, encoding="utf-8")
    try:
        proc, url, log = start_server(["--docs", str(corpus), "--api-key", KEY, "--dtype", "float32",
                                       "--max-new-tokens", "64"])
    except RuntimeError as e:
        pytest.fail(str(e))
    yield Server(proc, url, corpus, log)
    try:
        code = stop_server(proc)
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not shut down within 30 s of SIGTERM")
    # uvicorn re-raises the SIGTERM it handled once it has shut down, so the status is -SIGTERM or 0
    assert code in (0, -15), "".join(log[-20:])
    assert any("Application shutdown complete" in line for line in log), "".join(log[-20:])


def _check_span(span: dict, text: str) -> None:
    assert text[span["response_start"] : span["response_end"]] == span["text"]
    body = Path(span["source"]).read_text(encoding="utf-8")  # the file on disk, read again
    assert body[span["doc_start"] : span["doc_end"]] == span["text"]


def test_binds_loopback_only(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_openai_sdk_chat_completions(server):
    c = server.client()
    r = c.chat.completions.create(model="nest", messages=[{"role": "user", "content": QUESTION}], max_tokens=64)
    msg = r.choices[0].message
    nest = r.model_extra["nest"]
    assert "Lady Gaga" in msg.content
    assert nest["spans"], "the answer copies from the corpus"
    for s in nest["spans"]:
        _check_span(s, msg.content)
    anns = msg.annotations
    assert [(a.url_citation.start_index, a.url_citation.end_index) for a in anns] == [
        (s["response_start"], s["response_end"]) for s in nest["spans"]
    ]
    # the annotation's url is the source page, which shows the cited characters
    page = httpx.get(anns[0].url_citation.url.replace("?", "?format=json&"), headers={"Authorization": f"Bearer {KEY}"})
    src = page.json()
    assert src["text"][src["start"] : src["end"]] == nest["spans"][0]["text"]
    assert r.usage.completion_tokens > 0

    # stream: the concatenated deltas and spans equal the non-streamed response
    text, spans, final = "", [], None
    for chunk in c.chat.completions.create(
        model="nest", messages=[{"role": "user", "content": QUESTION}], max_tokens=64, stream=True,
        stream_options={"include_usage": True},
    ):
        extra = chunk.model_extra.get("nest") or {}
        spans += extra.get("spans", [])
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                final = extra
        else:
            assert chunk.usage.completion_tokens == r.usage.completion_tokens
    assert text == msg.content and spans == nest["spans"]
    assert final is not None and final["sentences"] == nest["sentences"]


def test_openai_sdk_responses(server):
    c = server.client()
    r = c.responses.create(model="nest", input=QUESTION, max_output_tokens=64)
    assert "Lady Gaga" in r.output_text
    part = r.output[0].content[0]
    nest = r.model_extra["nest"]
    assert [(a.start_index, a.end_index) for a in part.annotations] == [
        (s["response_start"], s["response_end"]) for s in nest["spans"]
    ]
    for s in nest["spans"]:
        _check_span(s, r.output_text)
    deltas, anns, done = [], [], None
    for ev in c.responses.create(model="nest", input=QUESTION, max_output_tokens=64, stream=True):
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        elif ev.type == "response.output_text.annotation.added":
            anns.append(ev.annotation)
        elif ev.type in ("response.completed", "response.incomplete"):
            done = ev.response
    assert "".join(deltas) == r.output_text == done.output_text
    assert [(a["start_index"], a["end_index"]) for a in anns] == [(a.start_index, a.end_index) for a in part.annotations]


def test_langchain_chat_openai_responses_api_in_an_lcel_chain(server):
    pytest.importorskip("langchain_openai")
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key=KEY, model="nest", use_responses_api=True,
                     max_tokens=64, max_retries=0)
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    msg = (prompt | llm).invoke({"question": QUESTION})
    blocks = [b for b in msg.content if isinstance(b, dict) and b.get("type") == "text"]
    text = "".join(b["text"] for b in blocks)
    anns = [a for b in blocks for a in b.get("annotations", [])]
    assert "Lady Gaga" in text and anns
    for a in anns:
        assert a["type"] == "url_citation"
        cited = text[a["start_index"] : a["end_index"]]
        src = httpx.get(a["url"].replace("?", "?format=json&"), headers={"Authorization": f"Bearer {KEY}"}).json()
        assert src["text"][src["start"] : src["end"]] == cited
        path = server.corpus / a["title"]
        assert path.read_text(encoding="utf-8")[src["start"] : src["end"]] == cited
    # the same chain with a string output parser still works (the text of the blocks)
    assert "Lady Gaga" in (prompt | llm | StrOutputParser()).invoke({"question": QUESTION})


def test_litellm_keeps_the_citations(server, monkeypatch):
    """litellm's ``openai/`` route (what a litellm proxy or app uses for an OpenAI-compatible server): the
    annotations and the ``nest`` extension survive, streamed and not, and the spans are exact."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no fetch of the cost map
    litellm = pytest.importorskip("litellm")
    kw = {"model": "openai/nest", "api_base": f"{server.url}/v1", "api_key": KEY, "max_tokens": 64}
    messages = [{"role": "user", "content": QUESTION}]
    r = litellm.completion(messages=messages, **kw)
    msg = r.choices[0].message
    nest = r.model_dump()["nest"]
    assert "Lady Gaga" in msg.content and nest["spans"]
    for s in nest["spans"]:
        _check_span(s, msg.content)
    assert [(a["url_citation"]["start_index"], a["url_citation"]["end_index"]) for a in msg.annotations] == [
        (s["response_start"], s["response_end"]) for s in nest["spans"]
    ]
    text, anns = "", []
    for chunk in litellm.completion(messages=messages, stream=True, **kw):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            anns += getattr(chunk.choices[0].delta, "annotations", None) or []
    assert text == msg.content
    assert [(a["url_citation"]["start_index"], a["url_citation"]["end_index"]) for a in anns] == [
        (a["url_citation"]["start_index"], a["url_citation"]["end_index"]) for a in msg.annotations
    ]


def test_llama_index_openai_like_under_a_query_engine(server):
    pytest.importorskip("llama_index.llms.openai_like")
    from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.llms.openai_like import OpenAILike

    from nest_integrations.llama_index import MiniLMEmbedding

    seen: list = []

    class Capture(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:
            if isinstance(event, LLMChatEndEvent):
                seen.append(event)

    handler = Capture()
    get_dispatcher().add_event_handler(handler)
    docs = SimpleDirectoryReader(str(server.corpus), filename_as_id=True).load_data()
    for d in docs:  # the temporary folder's random name must not move the embeddings (the prompt keeps it)
        d.excluded_embed_metadata_keys = list(d.metadata)
    idx = VectorStoreIndex.from_documents(
        docs, transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=0)], embed_model=MiniLMEmbedding()
    )
    old = Settings._llm
    Settings.llm = OpenAILike(model="nest", api_base=f"{server.url}/v1", api_key=KEY, is_chat_model=True,
                              max_tokens=64, context_window=8192, max_retries=0, timeout=300)
    try:
        response = idx.as_query_engine(similarity_top_k=2).query(QUESTION)
    finally:
        Settings._llm = old
        get_dispatcher().event_handlers.remove(handler)
    assert "Lady Gaga" in str(response)
    assert seen
    event = seen[-1]
    raw = event.response.raw
    nest = raw["nest"] if isinstance(raw, dict) else raw.model_extra["nest"]
    messages = [m.content for m in event.messages]
    assert nest["spans"], "context mode copies from the nodes in the prompt"
    for s in nest["spans"]:
        i = int(s["doc_id"].split("-")[1])
        assert messages[i][s["doc_start"] : s["doc_end"]] == s["text"]
        # and in the file: the node that holds the span, at its start_char_idx
        for node in response.source_nodes:
            pos = messages[i].find(node.node.get_content())
            if pos >= 0 and pos <= s["doc_start"] and s["doc_end"] <= pos + len(node.node.get_content()):
                path = Path(node.node.metadata["file_path"])
                start = node.node.start_char_idx + s["doc_start"] - pos
                assert path.read_text(encoding="utf-8")[start : start + len(s["text"])] == s["text"]
                break


def test_client_that_disconnects_mid_stream_cancels_its_generation(server):
    before = server.metrics()
    with httpx.stream(
        "POST", f"{server.url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
        json={"prompt": "The history of the city of Warsaw begins", "max_tokens": 600, "stream": True},
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:") and json.loads(line[5:]).get("choices"):
                break  # one piece received: hang up
    deadline = time.time() + 30
    while time.time() < deadline:
        m = server.metrics()
        if m["nest_requests_active"] == 0 and m["nest_requests_cancelled_total"] > before["nest_requests_cancelled_total"]:
            break
        time.sleep(0.2)
    m = server.metrics()
    assert m["nest_requests_active"] == 0, "the generation stopped"
    assert m["nest_requests_cancelled_total"] == before["nest_requests_cancelled_total"] + 1
    # far fewer tokens than the 600 asked for were generated
    assert m["nest_completion_tokens_total"] == before["nest_completion_tokens_total"]
    # and the server keeps serving
    r2 = server.client().chat.completions.create(model="nest", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert r2.choices[0].message.content is not None


def test_bad_requests_over_the_wire(server):
    """Each bad request is a 4xx JSON error and the server keeps serving; counted."""
    from tests.server.test_app import BAD

    h = {"Authorization": f"Bearer {KEY}"}
    url = f"{server.url}/v1/chat/completions"
    tried = passed = 0
    cases = [(name, payload, status) for name, payload, status, _ in BAD]
    cases += [("10 MB body", {"messages": [{"role": "user", "content": "x" * 10_000_000}]}, 413),
              ("wrong API key", {"messages": [{"role": "user", "content": "hi"}]}, 401)]
    for name, payload, status in cases:
        tried += 1
        headers = {"Authorization": "Bearer nope"} if name == "wrong API key" else h
        kw = {"content": payload, "headers": {**headers, "content-type": "application/json"}} if isinstance(payload, bytes) else {"json": payload, "headers": headers}
        r = httpx.post(url, timeout=60, **kw)
        ok = r.status_code == status and set(r.json()["error"]) >= {"message", "type", "code"}
        passed += ok
        assert ok, (name, r.status_code, r.text[:200])
    assert (tried, passed) == (len(cases), len(cases))
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_web_page_in_headless_chromium(server):
    browser = find_chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (Debian package `chromium`)")
    pytest.importorskip("websockets")
    from urllib.parse import quote

    # /?q= asks on load; #key= gives the page the API key (a fragment is not sent to the server)
    with Browser(browser) as page:
        page.open(f"{server.url}/?q={quote(QUESTION)}#key={KEY}")
        assert page.wait_for("document.body.dataset.answers === '1'"), page.evaluate("document.body.innerText")
        html = page.html()
        if os.environ.get("NEST_WRITE_SCREENSHOT"):
            page.screenshot(Path(__file__).resolve().parents[2] / "docs" / "serve-page.png")
    assert '<mark class="span"' in html and "Lady Gaga" in html
    link = re.search(r'<a class="open-source" href="(/v1/sources/[^"]+\?start=(\d+)&amp;end=(\d+))"', html)
    assert link, html[-3000:]
    # the link opens the cited passage, highlighted in its document
    src = httpx.get(server.url + link.group(1).replace("&amp;", "&"), headers={"Authorization": f"Bearer {KEY}"})
    assert src.status_code == 200 and '<mark id="cited" class="cited">' in src.text


def test_eight_concurrent_requests_return_their_single_request_output(server):
    """Continuous batching through the server (float32): 8 requests at once each answer what they answer alone."""
    from concurrent.futures import ThreadPoolExecutor

    from nest_integrations.demo import load_sample_questions

    questions = [q["question"] for q in load_sample_questions()[:8]]
    c = server.client()

    def ask(q: str):
        r = c.chat.completions.create(model="nest", messages=[{"role": "user", "content": q}], max_tokens=48)
        return r.choices[0].message.content, r.model_extra["nest"]["spans"]

    alone = [ask(q) for q in questions]
    before = server.metrics()
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, questions))
    after = server.metrics()
    assert after["nest_batched_forwards_total"] > before["nest_batched_forwards_total"], "forwards were shared"
    assert after["nest_batch_size_max"] >= 2
    diverged = [q for q, a, b in zip(questions, alone, together, strict=True) if a != b]
    assert not diverged, f"{len(diverged)} of 8 differ from their single-request output: {diverged}"


def test_sigterm_lets_requests_in_flight_finish(default_lm, tmp_path):
    """SIGTERM stops taking connections, lets the requests in flight (one streamed, one not) finish whole within
    the graceful-shutdown period, then exits."""
    doc = next(d for d in load_demo_documents() if "Warsaw" in d.text)
    (tmp_path / "warsaw.txt").write_text(doc.text, encoding="utf-8")
    try:
        proc, url, log = start_server(["--docs", str(tmp_path), "--dtype", "float32", "--max-new-tokens", "48",
                                       "--graceful-shutdown", "240"])
    except RuntimeError as e:
        pytest.fail(str(e))
    body = {"prompt": "The history of the city of Warsaw begins", "max_tokens": 24}
    out: dict = {}

    def plain() -> None:
        out["plain"] = httpx.post(f"{url}/v1/completions", json=body, timeout=120)

    def streamed() -> None:
        lines = []
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=120) as r:
            out["stream_status"] = r.status_code
            lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
        out["stream"] = lines

    import threading

    threads = [threading.Thread(target=plain), threading.Thread(target=streamed)]
    try:
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while time.time() < deadline:  # both requests admitted and decoding
            m = dict(re.findall(r"^(nest_\w+) (\S+)$", httpx.get(f"{url}/metrics").text, flags=re.M))
            if float(m.get("nest_requests_active", 0)) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the two requests never ran at the same time")
        proc.terminate()
        for t in threads:
            t.join(120)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code in (0, -15), "".join(log[-20:])
    r = out["plain"]
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and choice["text"]
    assert out["stream_status"] == 200
    assert out["stream"][-1] == "data: [DONE]", out["stream"][-3:]
    finals = [json.loads(ln[5:]) for ln in out["stream"][:-1]]
    assert any(c.get("finish_reason") for f in finals for c in f.get("choices", [])), "the stream ended whole"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=5)
