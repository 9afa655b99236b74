"""Request bodies of the OpenAI-compatible endpoints, validated (pydantic) into one normalised request.

The server accepts what OpenAI clients send (the ``openai`` SDK, LangChain ``ChatOpenAI``, LlamaIndex
``OpenAILike``, litellm) and refuses, with a 400 naming the field, what NEST cannot honour: tools and tool
messages, image / audio parts, ``n > 1``, ``max_tokens`` outside ``1..limit``. Sampling parameters
(``temperature``, ``top_p``, ``seed`` …) are accepted and ignored: NEST decodes greedily from its mixture, and
every response says so (``nest.decoding``). Unknown fields are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "ResponsesRequest",
    "NestOptions",
    "NormalizedRequest",
    "RequestError",
    "normalize_chat",
    "normalize_completion",
    "normalize_responses",
]

_ROLES = ("system", "developer", "user", "assistant")


class RequestError(ValueError):
    """A request the server cannot honour: becomes a 4xx JSON error naming ``param``."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request", status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


class NestOptions(BaseModel):
    """The ``nest`` extension object of a request (all optional).

    ``context``: where copies come from — ``auto`` (the documents inside the messages when a system / user
    message is long enough to hold context, else the server's datastore), ``messages`` (the messages only),
    ``store`` (the datastore only). ``documents``: the texts stuffed into the messages, when the caller knows
    them (they are found verbatim; spans are then cited by document). ``config``: :class:`NestConfig` fields for
    this request (e.g. ``{"acceptance": "lossless"}``). ``html``: add the answer rendered by the HTML view
    (spans highlighted and numbered, sources in context, unsupported sentences marked) as ``nest.html``.
    """

    model_config = ConfigDict(extra="forbid")
    context: Literal["auto", "messages", "store"] = "auto"
    documents: list[str] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    html: bool = False


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    nest: NestOptions | None = None


class ChatCompletionRequest(_Base):
    """``POST /v1/chat/completions``."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None


class ResponsesRequest(_Base):
    """``POST /v1/responses`` (the Responses API: ``input`` + ``instructions``)."""

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    previous_response_id: str | None = None
    text: dict[str, Any] | None = None
    store: bool | None = None


class CompletionRequest(_Base):
    """``POST /v1/completions`` (a raw prompt, no chat template)."""

    prompt: str | list[str]
    max_tokens: int | None = None
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None


@dataclass(frozen=True)
class NormalizedRequest:
    """What every endpoint asks the service for: messages (or a raw prompt), limits and NEST options."""

    messages: list[dict[str, str]]
    max_tokens: int
    stop: tuple[str, ...] = ()
    raw: bool = False
    stream: bool = False
    include_usage: bool = False
    model: str | None = None
    sampling_ignored: bool = False
    nest: NestOptions = field(default_factory=NestOptions)


def _text_of(content: Any, param: str, allowed: tuple[str, ...]) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{param} must be a string or a list of text parts", param)
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise RequestError(f"{param}[{j}] must be an object", f"{param}[{j}]")
        kind = part.get("type")
        if kind in allowed and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind in ("image_url", "input_image", "image", "input_audio", "audio", "file", "input_file"):
            raise RequestError(
                f"{param}[{j}] is a {kind} part: this model reads text only", f"{param}[{j}].type", "unsupported_content"
            )
        else:
            raise RequestError(f"{param}[{j}] has unsupported type {kind!r} (expected {', '.join(allowed)})", param)
    return "".join(out)


def _messages(raw: list[dict[str, Any]], param: str, text_types: tuple[str, ...]) -> list[dict[str, str]]:
    if not raw:
        raise RequestError(f"{param} must hold at least one message", param)
    msgs = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise RequestError(f"{param}[{i}] must be an object", f"{param}[{i}]")
        if m.get("type") not in (None, "message"):
            raise RequestError(
                f"{param}[{i}] is a {m.get('type')!r} item: only messages are supported", f"{param}[{i}].type"
            )
        role = m.get("role")
        if role in ("tool", "function"):
            raise RequestError(
                f"{param}[{i}] has role {role!r}: tools are not supported by this server", f"{param}[{i}].role",
                "tools_unsupported",
            )
        if role not in _ROLES:
            raise RequestError(
                f"{param}[{i}].role must be one of {', '.join(_ROLES)}, got {role!r}", f"{param}[{i}].role"
            )
        if m.get("tool_calls") or m.get("function_call"):
            raise RequestError(f"{param}[{i}] holds tool calls: tools are not supported", f"{param}[{i}]", "tools_unsupported")
        text = _text_of(m.get("content"), f"{param}[{i}].content", text_types)
        msgs.append({"role": "system" if role == "developer" else role, "content": text})
    if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
        raise RequestError(f"{param} holds no non-empty user message to answer", param)
    return msgs


def _common(req: _Base, max_tokens: int | None, limit: int, default: int, param: str) -> dict[str, Any]:
    if req.n not in (None, 1):
        raise RequestError("n must be 1: one answer per request", "n")
    if max_tokens is None:
        max_tokens = default
    if max_tokens < 1 or max_tokens > limit:
        raise RequestError(f"{param} must be between 1 and {limit}, got {max_tokens}", param)
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > 4 or any(not s for s in stop):
        raise RequestError("stop must be up to 4 non-empty strings", "stop")
    if getattr(req, "tools", None):
        raise RequestError("tools are not supported by this server", "tools", "tools_unsupported")
    ignored = bool(req.temperature) or (req.top_p not in (None, 1.0))
    return dict(
        max_tokens=max_tokens,
        stop=stop,
        stream=req.stream,
        model=req.model,
        sampling_ignored=ignored,
        nest=req.nest or NestOptions(),
    )


def normalize_chat(req: ChatCompletionRequest, limit: int, default: int) -> NormalizedRequest:
    """Validate a chat completions request (raises :class:`RequestError`)."""
    if req.functions:
        raise RequestError("functions are not supported by this server", "functions", "tools_unsupported")
    if req.response_format and req.response_format.get("type") not in (None, "text"):
        raise RequestError("response_format must be text", "response_format")
    msgs = _messages(req.messages, "messages", ("text",))
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    mt = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    usage = bool((req.stream_options or {}).get("include_usage"))
    return NormalizedRequest(messages=msgs, include_usage=usage, **_common(req, mt, limit, default, param))


def normalize_responses(req: ResponsesRequest, limit: int, default: int) -> NormalizedRequest:
    """Validate a Responses API request (raises :class:`RequestError`)."""
    if req.previous_response_id:
        raise RequestError(
            "previous_response_id is not supported: this server keeps no state, send the conversation in input",
            "previous_response_id",
        )
    if isinstance(req.input, str):
        if not req.input.strip():
            raise RequestError("input is empty", "input")
        msgs = [{"role": "user", "content": req.input}]
    else:
        msgs = _messages(req.input, "input", ("input_text", "output_text", "text"))
    if req.instructions:
        msgs.insert(0, {"role": "system", "content": req.instructions})
    return NormalizedRequest(messages=msgs, **_common(req, req.max_output_tokens, limit, default, "max_output_tokens"))


def normalize_completion(req: CompletionRequest, limit: int, default: int) -> NormalizedRequest:
    """Validate a (legacy) completions request (raises :class:`RequestError`)."""
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise RequestError("prompt must be one string (batches of prompts are not supported)", "prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("prompt is empty", "prompt")
    if req.echo or req.suffix or req.logprobs or req.best_of not in (None, 1):
        raise RequestError("echo, suffix, logprobs and best_of are not supported", "echo")
    return NormalizedRequest(
        messages=[{"role": "user", "content": prompt}], raw=True, **_common(req, req.max_tokens, limit, default, "max_tokens")
    )
