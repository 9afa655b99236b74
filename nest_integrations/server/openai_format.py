"""NEST results as OpenAI API objects: chat completions, Responses API objects and events, completions.

Citations travel two ways (INTEGRATIONS.md): OpenAI-style ``annotations`` (``url_citation`` with
``start_index`` / ``end_index`` into the response text and the ``url`` / ``title`` of the source), which the
``openai`` SDK and LangChain's Responses path read, and a ``nest`` extension object with the NEST.md §8 span
fields (``spans``), the §10 sentence labels (``sentences``), ``abstained``, NEST's own ``finish_reason`` and
how it decoded (``decoding: "greedy"``: sampling parameters are accepted and not used). No field is named
``citations`` (other OpenAI-compatible APIs use that for lists of URLs).

In a stream, a span is sent in the chunk / event where it completes, and the concatenated stream equals the
non-streamed response, spans included.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from nest_integrations.results import CopiedSpan, NestResult

__all__ = [
    "SourceLinks",
    "annotation",
    "chat_completion",
    "chat_chunk",
    "completion",
    "completion_chunk",
    "finish_reason",
    "nest_extension",
    "new_id",
    "response_object",
    "usage_chat",
]


def new_id(prefix: str) -> str:
    """A fresh id with OpenAI's prefix style (``chatcmpl-…``, ``resp_…``, ``msg_…``)."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class SourceLinks:
    """The ``url`` and ``title`` of a span's source: the server's ``/v1/sources`` page for a corpus document
    (the passage highlighted in context), ``message:<i>`` for a document sent inside the messages."""

    def __init__(self, base_url: str, titles: Callable[[str], str | None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.titles = titles

    def __call__(self, span: CopiedSpan) -> tuple[str, str]:
        frag = f"#{span.doc_start}-{span.doc_end}"
        if span.doc_id.startswith("message-"):
            return f"message:{span.doc_id.split('-', 1)[1]}{frag}", span.doc_id.replace("-", " ")
        url = f"{self.base_url}/v1/sources/{quote(span.doc_id, safe='')}?start={span.doc_start}&end={span.doc_end}"
        title = (self.titles(span.doc_id) if self.titles else None) or span.source or span.doc_id
        return url, title


def annotation(span: CopiedSpan, links: SourceLinks, nested: bool) -> dict[str, Any]:
    """One ``url_citation`` annotation (``nested``: chat completions' ``{"url_citation": {...}}`` shape)."""
    url, title = links(span)
    body = {"start_index": span.response_start, "end_index": span.response_end, "url": url, "title": title}
    if nested:
        return {"type": "url_citation", "url_citation": body}
    return {"type": "url_citation", **body}


def finish_reason(result: NestResult) -> str:
    """OpenAI's finish reason: ``length`` when cut by ``max_tokens``, else ``stop`` (NEST's own is in ``nest``)."""
    return "length" if result.finish_reason == "length" else "stop"


def nest_extension(result: NestResult | None, spans: list[CopiedSpan], sampling_ignored: bool) -> dict[str, Any]:
    """The ``nest`` object: spans (§8 fields), and with the result the labels, abstention and statistics."""
    out: dict[str, Any] = {"spans": [s.to_dict() for s in spans]}
    if result is not None:
        st = result.stats
        out.update(
            sentences=[s.to_dict() for s in result.sentences],
            abstained=bool(result.abstained),
            abstain_reason=result.abstain_reason,
            finish_reason=result.finish_reason,
            truncated=bool(result.truncated),
            method=result.method,
            decoding="greedy",
            sampling_ignored=sampling_ignored,
            stats={
                "forward_passes": st.forward_passes,
                "output_tokens": st.output_tokens,
                "copied_tokens": st.copied_tokens,
                "attribution_ratio": st.attribution_ratio,
                "first_token_s": st.first_token_s,
                "total_s": st.total_s,
            },
        )
    return out


def usage_chat(result: NestResult) -> dict[str, int]:
    """``usage`` of chat completions / completions."""
    p, c = int(result.stats.prompt_tokens), len(result.token_ids)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def usage_responses(result: NestResult) -> dict[str, Any]:
    """``usage`` of the Responses API."""
    p, c = int(result.stats.prompt_tokens), len(result.token_ids)
    return {
        "input_tokens": p,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": c,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": p + c,
    }


def chat_completion(
    cid: str, model: str, result: NestResult, links: SourceLinks, sampling_ignored: bool
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": result.text,
                    "refusal": None,
                    "annotations": [annotation(s, links, nested=True) for s in result.spans],
                },
                "logprobs": None,
                "finish_reason": finish_reason(result),
            }
        ],
        "usage": usage_chat(result),
        "nest": nest_extension(result, result.spans, sampling_ignored),
    }


def chat_chunk(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    *,
    finish: str | None = None,
    nest: dict[str, Any] | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` (``choices=False``: the usage-only last chunk of ``include_usage``)."""
    out: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
    }
    if usage is not None or not choices:
        out["usage"] = usage
    if nest is not None:
        out["nest"] = nest
    return out


def completion(cid: str, model: str, result: NestResult, sampling_ignored: bool) -> dict[str, Any]:
    """A ``text_completion`` object (spans in ``nest``; the legacy API has no annotations)."""
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": result.text, "logprobs": None, "finish_reason": finish_reason(result)}],
        "usage": usage_chat(result),
        "nest": nest_extension(result, result.spans, sampling_ignored),
    }


def completion_chunk(
    cid: str, model: str, created: int, text: str, finish: str | None, nest: dict[str, Any] | None
) -> dict[str, Any]:
    """A streamed ``text_completion`` piece."""
    out: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    if nest is not None:
        out["nest"] = nest
    return out


def output_message(mid: str, text: str, annotations: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """The assistant message item of a Responses API output."""
    return {
        "type": "message",
        "id": mid,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}],
    }


def response_object(
    rid: str,
    mid: str,
    model: str,
    created: int,
    result: NestResult | None,
    links: SourceLinks,
    sampling_ignored: bool,
    status: str = "completed",
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses API ``response`` object (``result=None``: the in-progress one a stream starts with)."""
    output = []
    if result is not None:
        anns = [annotation(s, links, nested=False) for s in result.spans]
        output.append(output_message(mid, result.text, anns, "completed"))
        if result.finish_reason == "length" and status == "completed":
            status = "incomplete"
    out: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": model,
        "output": output,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": False,
        "temperature": None,
        "top_p": None,
        "tool_choice": "none",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "usage": usage_responses(result) if result is not None else None,
    }
    if result is not None:
        out["nest"] = nest_extension(result, result.spans, sampling_ignored)
    return out
