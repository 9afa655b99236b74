"""The ASGI app of ``nest serve``: OpenAI-compatible endpoints with citations, a web page, operations.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/responses``, ``POST /v1/completions`` (stream and not),
``GET /v1/models``, ``GET /v1/sources/{doc_id}`` (a corpus document with a span highlighted: the ``url`` of
every annotation), ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /`` (the chat page) and the
OpenAPI schema (``/openapi.json``, ``/docs``).

Errors are JSON ``{"error": {"message", "type", "code", "param"}}`` with a 4xx status for what the client got
wrong (400 bad request, 401 API key, 404, 413 body too large, 429 queue full with ``Retry-After``) and 5xx for
the server's own failures (500, 504 timeout); the server keeps serving. A client that disconnects — from a
stream or while it waits for a non-streamed answer — cancels its generation at the next decoding step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from html import escape
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nest_integrations._async import iterate_in_thread
from nest_integrations.errors import (
    ConfigError,
    EmptyQuestionError,
    NestError,
    PromptTooLongError,
    RequestCancelledError,
)
from nest_integrations.results import NestDelta, NestResult
from nest_integrations.server import openai_format as fmt
from nest_integrations.server.page import PAGE_HTML
from nest_integrations.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    NormalizedRequest,
    RequestError,
    ResponsesRequest,
    normalize_chat,
    normalize_completion,
    normalize_responses,
)
from nest_integrations.server.service import NestService, QueueFullError

__all__ = ["create_app"]

log = logging.getLogger("nest_integrations.server")
_RETRY_AFTER_S = 2


class _Timeout(NestError):
    """The request ran past the server's per-request timeout."""


class _ClientGone(NestError):
    """The client disconnected before the answer was complete."""


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def _error_response(exc: BaseException) -> JSONResponse:
    """A JSON error response for any exception a request can end with."""
    if isinstance(exc, RequestError):
        return JSONResponse(error_body(exc.message, "invalid_request_error", exc.code, exc.param), exc.status)
    if isinstance(exc, QueueFullError):
        return JSONResponse(
            error_body(str(exc), "rate_limit_error", "queue_full"), 429, headers={"Retry-After": str(_RETRY_AFTER_S)}
        )
    if isinstance(exc, PromptTooLongError):
        return JSONResponse(error_body(str(exc), "invalid_request_error", "context_length_exceeded", "messages"), 400)
    if isinstance(exc, (ConfigError, EmptyQuestionError)):
        return JSONResponse(error_body(str(exc), "invalid_request_error", "invalid_request"), 400)
    if isinstance(exc, _Timeout):
        return JSONResponse(error_body(str(exc), "timeout_error", "timeout"), 504)
    log.exception("request failed", exc_info=exc)
    return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", "internal_error"), 500)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            error_body(f"the request body is larger than {self.limit} bytes", "invalid_request_error", "body_too_large"),
            413,
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.limit:
                        await too_large(scope, receive, send)
                        return
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ApiKey:
    """ASGI middleware: ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer <key>`` (compared in constant
    time); anything else answers 401. ``/health``, ``/`` and the OpenAPI pages stay open."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/v1/") or path == "/metrics":
            header = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    header = value
            scheme, _, token = header.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                resp = JSONResponse(
                    error_body("invalid or missing API key (Authorization: Bearer <key>)", "authentication_error",
                               "invalid_api_key"),
                    401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


access_log = logging.getLogger("nest_integrations.server.access")


class AccessLog:
    """ASGI middleware: one JSON line per request on the ``nest_integrations.server.access`` logger, written when
    the response has been sent (for a stream: when it ends), so ``ms`` is the whole request.

    Fields: ``client`` (host:port), ``method``, ``path`` (no query string), ``status``, ``bytes`` (response body),
    ``ms`` — never the body, the query string or the ``Authorization`` header. Outermost, so refused requests (401, 413) are logged too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state: dict[str, Any] = {"status": None, "bytes": 0}

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    json.dumps(
                        {
                            "client": f"{client[0]}:{client[1]}" if client else None,
                            "method": scope.get("method"),
                            "path": scope.get("path"),
                            "status": state["status"],  # None: the client left before a response started
                            "bytes": state["bytes"],
                            "ms": round((time.perf_counter() - t0) * 1000.0, 1),
                        },
                        separators=(",", ":"),
                    )
                )


def create_app(service: NestService) -> FastAPI:
    """The FastAPI app serving ``service`` (see the module docstring for the endpoints)."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # one worker thread per request that may be admitted (running + queued), so none waits for a thread
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(settings.max_active + settings.max_queue + 4, thread_name_prefix="nest")
        loop.set_default_executor(pool)
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="nest-integrations",
        summary="OpenAI-compatible API whose answers carry exact citations (NEST)",
        version=_version(),
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # type: ignore[arg-type]
    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key)  # type: ignore[arg-type]  # checked first
    app.add_middleware(AccessLog)  # type: ignore[arg-type]  # outermost: every request is logged, refused ones too

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("the request body is not valid JSON", "invalid_request_error", "invalid_json"), 400)
        where = ".".join(loc) or "body"
        msg = f"{where}: {first.get('msg', 'invalid value')}"
        return JSONResponse(error_body(msg, "invalid_request_error", "invalid_request", where), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", code), exc.status_code)

    def links(request: Request) -> fmt.SourceLinks:
        return fmt.SourceLinks(str(request.base_url), lambda d: _title(service, d))

    def model_name(req: NormalizedRequest) -> str:
        return settings.model_name

    # ---- generation plumbing -------------------------------------------------------------
    async def run_to_end(request: Request, req: NormalizedRequest) -> NestResult:
        """The whole answer; cancelled when the client disconnects or the timeout passes."""
        service.admission.check()

        async def collect() -> NestResult:
            result = None
            it = iterate_in_thread(lambda cancel: service.stream(req, cancel))
            try:
                async for delta in it:
                    result = delta.result or result
            finally:
                await it.aclose()  # type: ignore[attr-defined]  # cancelled: the engine stops within one step
            assert result is not None
            return result

        task = asyncio.ensure_future(collect())
        deadline = time.monotonic() + settings.request_timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    raise _ClientGone("the client disconnected")
                if time.monotonic() > deadline:
                    raise _Timeout(f"the request ran past the server's timeout of {settings.request_timeout_s:g} s")
        finally:
            if not task.done():
                task.cancel()  # iterate_in_thread sets the engine's cancel event: decoding stops within one step
                try:
                    await task
                except BaseException:  # noqa: BLE001 - the request is over either way
                    pass

    class Deltas:
        """A request's deltas: the first already computed (errors before it become HTTP errors), the rest with a
        deadline; :meth:`close` stops the generation (idempotent), as leaving the stream early does."""

        def __init__(self, it: AsyncIterator[NestDelta], first: NestDelta, deadline: float) -> None:
            self.it, self.first, self.deadline = it, first, deadline

        async def __aiter__(self) -> AsyncIterator[NestDelta]:
            yield self.first
            if self.first.result is not None:
                return
            while True:
                try:
                    d = await _next(self.it, self.deadline)
                except StopAsyncIteration:
                    return
                yield d
                if d.result is not None:
                    return

        async def close(self) -> None:
            if getattr(self.it, "ag_running", False):
                # an __anext__ is still in flight, in the task of a wait_for that was cancelled with the stream:
                # the cancellation is inside the generator already, whose ``finally`` stops the decoding
                return
            await self.it.aclose()  # type: ignore[attr-defined]

    async def _next(it: AsyncIterator[NestDelta], deadline: float) -> NestDelta:
        left = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(it.__anext__(), max(0.001, left))
        except asyncio.TimeoutError:
            raise _Timeout(f"the request ran past the server's timeout of {settings.request_timeout_s:g} s") from None

    async def deltas(req: NormalizedRequest) -> Deltas:
        """Start ``req``: its first delta is awaited here, so a failure before it is an HTTP error."""
        service.admission.check()
        it = iterate_in_thread(lambda cancel: service.stream(req, cancel))
        deadline = time.monotonic() + settings.request_timeout_s
        try:
            first = await _next(it, deadline)
        except BaseException:
            await it.aclose()
            raise
        return Deltas(it, first, deadline)

    async def guarded(make: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await make()
        except _ClientGone:
            service.count_failure(cancelled=True)
            return JSONResponse(error_body("client disconnected", "invalid_request_error", "client_closed"), 499)
        except RequestCancelledError:
            service.count_failure(cancelled=True)
            return JSONResponse(error_body("the request was cancelled", "invalid_request_error", "cancelled"), 499)
        except QueueFullError as e:
            service.count_failure(rejected=True)
            return _error_response(e)
        except Exception as e:  # noqa: BLE001 - every failure becomes a JSON error
            if not isinstance(e, (RequestError, ConfigError, EmptyQuestionError, PromptTooLongError)):
                service.count_failure()
            return _error_response(e)

    def sse(events: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
        return EventSourceResponse(
            events,
            ping=15,
            # a shutdown lets a stream in flight finish (sse-starlette cuts it at once by default)
            shutdown_grace_period=settings.graceful_shutdown_s,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def html_of(result: NestResult, req: NormalizedRequest) -> str:
        from nest_integrations.html import render_fragment

        docs = dict(service.documents)
        docs.update({f"message-{i}": m["content"] for i, m in enumerate(req.messages)})
        return render_fragment(result, docs, style=False, threshold=service.engine.config.abstain_threshold)

    def final_nest(result: NestResult, spans: list, req: NormalizedRequest) -> dict[str, Any]:
        out = fmt.nest_extension(result, spans, req.sampling_ignored)
        if req.nest.html:
            out["html"] = html_of(result, req)
        return out

    # ---- endpoints -------------------------------------------------------------------------
    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions; citations in ``message.annotations`` and ``nest``."""

        async def make() -> Response:
            req = normalize_chat(body, settings.max_tokens_limit, settings.default_max_tokens)
            service.overrides(req)
            cid, model = fmt.new_id("chatcmpl-"), model_name(req)
            lk = links(request)
            if not req.stream:
                result = await run_to_end(request, req)
                out = fmt.chat_completion(cid, model, result, lk, req.sampling_ignored)
                if req.nest.html:
                    out["nest"]["html"] = html_of(result, req)
                return JSONResponse(out)
            run = await deltas(req)
            created = int(time.time())

            async def events() -> AsyncIterator[dict[str, Any]]:
                yield {"data": json.dumps(fmt.chat_chunk(cid, model, created, {"role": "assistant", "content": ""}))}
                async for d in run:
                    delta: dict[str, Any] = {"content": d.text} if d.text else {}
                    if d.spans:
                        delta["annotations"] = [fmt.annotation(s, lk, nested=True) for s in d.spans]
                    if d.result is None:
                        if delta:
                            chunk = fmt.chat_chunk(cid, model, created, delta, nest={"spans": [s.to_dict() for s in d.spans]})
                            yield {"data": json.dumps(chunk)}
                        continue
                    r = d.result
                    chunk = fmt.chat_chunk(
                        cid, model, created, delta, finish=fmt.finish_reason(r), nest=final_nest(r, d.spans, req),
                        usage=None,
                    )
                    chunk.pop("usage", None)
                    yield {"data": json.dumps(chunk)}
                    if req.include_usage:
                        yield {"data": json.dumps(fmt.chat_chunk(cid, model, created, {}, usage=fmt.usage_chat(r), choices=False))}
                yield {"data": "[DONE]"}

            return sse(_stream_errors(events(), service, run.close))

        return await guarded(make)

    @app.post("/v1/responses", response_model=None)
    async def responses(body: ResponsesRequest, request: Request) -> Response:
        """The Responses API; citations as ``url_citation`` annotations of the output text and in ``nest``."""

        async def make() -> Response:
            req = normalize_responses(body, settings.max_tokens_limit, settings.default_max_tokens)
            service.overrides(req)
            rid, mid, model = fmt.new_id("resp_"), fmt.new_id("msg_"), model_name(req)
            lk = links(request)
            created = int(time.time())
            if not req.stream:
                result = await run_to_end(request, req)
                out = fmt.response_object(rid, mid, model, created, result, lk, req.sampling_ignored)
                if req.nest.html:
                    out["nest"]["html"] = html_of(result, req)
                return JSONResponse(out)
            run = await deltas(req)

            async def events() -> AsyncIterator[dict[str, Any]]:
                seq = 0

                def ev(kind: str, **fields: Any) -> dict[str, Any]:
                    nonlocal seq
                    seq += 1
                    return {"event": kind, "data": json.dumps({"type": kind, "sequence_number": seq - 1, **fields})}

                start = fmt.response_object(rid, mid, model, created, None, lk, req.sampling_ignored, "in_progress")
                yield ev("response.created", response=start)
                yield ev("response.in_progress", response=start)
                item = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []}
                yield ev("response.output_item.added", output_index=0, item=item)
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                yield ev("response.content_part.added", item_id=mid, output_index=0, content_index=0, part=part)
                n_ann = 0
                loc = {"item_id": mid, "output_index": 0, "content_index": 0}
                async for d in run:
                    if d.text:
                        yield ev("response.output_text.delta", **loc, delta=d.text, logprobs=[])
                    for s in d.spans:
                        yield ev(
                            "response.output_text.annotation.added", **loc, annotation_index=n_ann,
                            annotation=fmt.annotation(s, lk, nested=False), nest={"span": s.to_dict()},
                        )
                        n_ann += 1
                    if d.result is not None:
                        r = d.result
                        final = fmt.response_object(rid, mid, model, created, r, lk, req.sampling_ignored)
                        if req.nest.html:
                            final["nest"]["html"] = html_of(r, req)
                        done_part = final["output"][0]["content"][0]
                        yield ev("response.output_text.done", **loc, text=r.text, logprobs=[])
                        yield ev("response.content_part.done", **loc, part=done_part)
                        yield ev("response.output_item.done", output_index=0, item=final["output"][0])
                        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
                        yield ev(kind, response=final)

            return sse(_stream_errors(events(), service, run.close, responses_api=True))

        return await guarded(make)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Legacy completions (the raw prompt, no chat template); spans in ``nest``."""

        async def make() -> Response:
            req = normalize_completion(body, settings.max_tokens_limit, settings.default_max_tokens)
            service.overrides(req)
            cid, model = fmt.new_id("cmpl-"), model_name(req)
            if not req.stream:
                result = await run_to_end(request, req)
                return JSONResponse(fmt.completion(cid, model, result, req.sampling_ignored))
            run = await deltas(req)
            created = int(time.time())

            async def events() -> AsyncIterator[dict[str, Any]]:
                async for d in run:
                    if d.result is None:
                        if d.text or d.spans:
                            nest = {"spans": [s.to_dict() for s in d.spans]}
                            yield {"data": json.dumps(fmt.completion_chunk(cid, model, created, d.text, None, nest))}
                        continue
                    r = d.result
                    chunk = fmt.completion_chunk(cid, model, created, d.text, fmt.finish_reason(r), final_nest(r, d.spans, req))
                    yield {"data": json.dumps(chunk)}
                yield {"data": "[DONE]"}

            return sse(_stream_errors(events(), service, run.close))

        return await guarded(make)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The one model this server answers with."""
        return {
            "object": "list",
            "data": [{"id": settings.model_name, "object": "model", "created": int(service.started), "owned_by": "nest"}],
        }

    @app.get("/v1/sources/{doc_id:path}", response_model=None)
    async def source(doc_id: str, start: int | None = None, end: int | None = None, format: str = "html") -> Response:
        """A corpus document, the cited characters ``start..end`` highlighted (``format=json``: the text)."""
        text = service.documents.get(doc_id)
        if text is None:
            return JSONResponse(error_body(f"no document {doc_id!r}", "invalid_request_error", "not_found", "doc_id"), 404)
        if start is not None or end is not None:
            s, e = start or 0, len(text) if end is None else end
            if not (0 <= s <= e <= len(text)):
                return JSONResponse(
                    error_body(f"start/end must satisfy 0 <= start <= end <= {len(text)}", "invalid_request_error",
                               "invalid_range", "start"),
                    400,
                )
        else:
            s = e = 0
        if format == "json":
            return JSONResponse({"doc_id": doc_id, "title": _title(service, doc_id), "text": text, "start": s, "end": e})
        title = escape(_title(service, doc_id) or doc_id)
        body = f"{escape(text[:s])}<mark id=\"cited\" class=\"cited\">{escape(text[s:e])}</mark>{escape(text[e:])}"
        page = (
            f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>"
            "body{font:16px/1.55 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}"
            "pre{white-space:pre-wrap;font:inherit}mark.cited{background:#ffe58a}</style></head><body>"
            f"<h1>{title}</h1><pre>{body}</pre><script>var m=document.getElementById('cited');"
            "if(m&&m.textContent)m.scrollIntoView({block:'center'});</script></body></html>"
        )
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the model is loaded and the server answers."""
        return {"status": "ok", "model": settings.model_name, "active": service.admission.active}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        """Prometheus text: requests active / queued / done / failed, tokens and tokens per second."""
        lines = []
        for name, value in service.metrics().items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        """The chat page: streamed answers, copied spans highlighted and linked to their sources."""
        return PAGE_HTML

    return app


async def _stream_errors(
    events: AsyncIterator[dict[str, Any]],
    service: NestService,
    close: Callable[[], Awaitable[None]],
    responses_api: bool = False,
) -> AsyncIterator[dict[str, Any]]:
    """Pass ``events`` through; a failure after the stream began is sent as an error event, then the stream ends.
    ``close`` (stop the generation) runs however the stream ends: complete, failed, or the client gone."""
    try:
        async for e in events:
            yield e
    except (asyncio.CancelledError, GeneratorExit):
        service.count_failure(cancelled=True)  # the client went away: iterate_in_thread cancels the decoding
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream
        resp = _error_response(exc)
        err = json.loads(bytes(resp.body))
        if not isinstance(exc, (_Timeout,)):
            service.count_failure()
        if responses_api:
            yield {"event": "error", "data": json.dumps({"type": "error", **err["error"]})}
        else:
            yield {"data": json.dumps(err)}
            yield {"data": "[DONE]"}
    finally:
        await close()


def _title(service: NestService, doc_id: str) -> str | None:
    doc = getattr(service, "document_titles", {}).get(doc_id)
    return doc or doc_id


def _version() -> str:
    from nest_integrations import __version__

    return __version__
