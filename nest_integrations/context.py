"""Context mode (issue 13): NEST whose token store is the context already inside the prompt.

Most RAG apps retrieve documents themselves and stuff them into the prompt (LangChain
``create_stuff_documents_chain`` / ``create_retrieval_chain``, LlamaIndex response synthesizers). In context
mode NEST copies from those documents, with no datastore: the **context segments** of the messages — the
documents the caller names (found verbatim in the messages); else the blocks between two rules of dashes
(``---------------------``, how LlamaIndex's QA / refine / summarize templates and many hand-written RAG prompts
delimit their context); else every system / user message whose text is at least ``min_chars`` long — are split
into chunks, and the request's token store is all of them; there is
no passage retrieval. Their keys come from the prompt's own prefill (``NestConfig.context_keys="prefill"``, the
default: the prompt is run through the model once, and the states at the chunks' tokens are their keys, so the
context costs no second forward pass) or from encoding each chunk alone (``"encode"``, a datastore's key mode,
NEST.md §2). The prompt is the caller's messages unchanged (their context is already in it), so the method is
``nest`` (an ``ra-nest`` / ``ra`` config is run as ``nest`` / ``base``: adding passages again would change the
caller's prompt).

A copied span's ``doc_id`` is ``message-<i>`` (``i`` = the message's index) and its ``doc_start`` /
``doc_end`` are offsets into that message's content, so ``messages[i]["content"][doc_start:doc_end] ==
span.text``; :func:`map_to_documents` turns them into offsets into the documents the caller stuffed
(``page_content`` / node text) and, where those documents record where they start in a file that still holds
them, into that file.

A prompt with no context segment is answered by the plain LM (no citations, no error).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from nest_integrations.chunks import Chunk, Document, chunks_from_documents
from nest_integrations.config import NestConfig
from nest_integrations.errors import ConfigError
from nest_integrations.models import LoadedModel
from nest_integrations.prompts import Message, last_user_text, to_messages
from nest_integrations.results import CopiedSpan, NestDelta, NestResult
from nest_integrations.retrieval.base import ScoredChunk, check_query, clamp_k
from nest_integrations.sentences import split_sentences
from nest_integrations.store import ChunkKeys

__all__ = [
    "DEFAULT_MIN_CONTEXT_CHARS",
    "ContextSegment",
    "CitedDocument",
    "find_context_segments",
    "delimited_segments",
    "find_question",
    "prompt_question",
    "context_chunks",
    "prefill_keys",
    "stream_over_context",
    "generate_over_context",
    "map_to_documents",
]

DEFAULT_MIN_CONTEXT_CHARS = 200
"""A system / user message of at least this many characters holds context (when no documents are named)."""

_METHOD_IN_CONTEXT = {"ra-nest": "nest", "ra": "base", "ra-pld": "base"}


@dataclass(frozen=True)
class ContextSegment:
    """A piece of the prompt that holds a document: ``messages[message_index]["content"][start:end]``."""

    message_index: int
    start: int
    end: int
    label: str | None = None


@dataclass(frozen=True)
class CitedDocument:
    """A copied span located in one of the caller's documents.

    Attributes:
        document: index of the document in the list given to :func:`map_to_documents`.
        start, end: offsets of ``text`` in that document's text (``doc_text[start:end] == text``).
        source: the document's source (file path) when it records one.
        source_start, source_end: offsets in the source file, when the document records where it starts
            (``start_index``) and the file re-read from disk holds the text there; else None.
        span: the span as the engine reported it (offsets into the message).
    """

    document: int
    text: str
    start: int
    end: int
    source: str | None
    source_start: int | None
    source_end: int | None
    span: CopiedSpan


def _locate(messages: Sequence[Message], documents: Sequence[str]) -> list[tuple[int, int, int]]:
    """(message index, offset, document index) of each document found verbatim in a system / user message:
    its first occurrence after the previous document's in that message (documents stuffed in order map to
    their own place), else its first occurrence; documents not in the messages are left out."""
    contents = [(i, str(m["content"])) for i, m in enumerate(messages) if m["role"] in ("system", "user")]
    cursor: dict[int, int] = {}
    out: list[tuple[int, int, int]] = []
    for k, doc in enumerate(documents):
        if not doc.strip():
            continue
        for i, text in contents:
            p = text.find(doc, cursor.get(i, 0))
            if p < 0:
                p = text.find(doc)
            if p >= 0:
                out.append((i, p, k))
                cursor[i] = p + len(doc)
                break
    return out


def find_context_segments(
    messages: Sequence[Message],
    documents: Sequence[str] | None = None,
    min_chars: int = DEFAULT_MIN_CONTEXT_CHARS,
) -> list[ContextSegment]:
    """The segments of ``messages`` that hold context.

    With ``documents`` (texts the caller put in the prompt, e.g. a chain's retrieved documents), each one found
    verbatim in a system / user message is a segment (its first occurrence after the previous document's, so
    documents stuffed in order map to their own place; a document not in the messages is skipped). Without,
    the :func:`delimited_segments` when the prompt has any; else every system / user message of at least
    ``min_chars`` characters is one segment (so a short last user message, the question, is not).
    """
    if min_chars < 1:
        raise ConfigError(f"min_chars must be positive (got {min_chars})")
    out: list[ContextSegment] = []
    contents = [(i, str(m["content"])) for i, m in enumerate(messages) if m["role"] in ("system", "user")]
    if documents is not None:
        for i, p, k in _locate(messages, documents):
            out.append(ContextSegment(i, p, p + len(documents[k]), f"document-{k}"))
        return out
    delimited = delimited_segments(messages)
    if delimited:
        return delimited
    for i, text in contents:
        if len(text.strip()) >= min_chars:
            out.append(ContextSegment(i, 0, len(text)))
    return out


# a line of 8+ dashes: LlamaIndex's templates (and many hand-written RAG prompts) put the context between two
_RULE = re.compile(r"^-{8,}[ \t]*$", re.MULTILINE)
# LlamaIndex's refine template: the answer so far, a source too (what it copied keeps its citations)
_EXISTING = re.compile(r"existing answer:[ \t]*(.+?)\n(?=We have the opportunity)", re.DOTALL)
_QUESTION = re.compile(
    r"^\s*(?:Question|Query|Q|The original query is as follows)\s*:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE
)


def delimited_segments(messages: Sequence[Message]) -> list[ContextSegment]:
    """In each system / user message, the text between its first two lines of dashes (``--------``), and in a
    refine prompt the ``existing answer`` before them; ``[]`` when no message has such a block."""
    out: list[ContextSegment] = []
    for i, m in enumerate(messages):
        if m["role"] not in ("system", "user"):
            continue
        content = str(m["content"])
        rules = list(_RULE.finditer(content))
        if len(rules) < 2:
            continue
        a, b = rules[0].end() + 1, rules[1].start()
        if b > a and content[a:b].strip():
            out.append(ContextSegment(i, a, b, "delimited-context"))
        hit = _EXISTING.search(content, 0, rules[0].start())
        if hit and hit.group(1).strip():
            out.append(ContextSegment(i, hit.start(1), hit.end(1), "existing-answer"))
    return out


def prompt_question(prompt: str) -> str:
    """The question of a prompt's text: its last ``Question:`` / ``Query:`` / ``Q:`` line (or LlamaIndex's
    ``The original query is as follows:``), else its last non-empty line."""
    hits = _QUESTION.findall(prompt)
    if hits:
        return hits[-1]
    lines = [x.strip() for x in prompt.splitlines() if x.strip()]
    return lines[-1] if lines else prompt


def find_question(messages: Sequence[Message]) -> str:
    """The question of a chat prompt, what abstention and the answer proposer compare the context with: the
    last user message's last ``Question:`` / ``Query:`` line when it has one (a RAG template), else that
    message's whole text."""
    text = last_user_text(messages)
    hits = _QUESTION.findall(text)
    return hits[-1] if hits else text


def context_chunks(
    messages: Sequence[Message], segments: Sequence[ContextSegment], chunk_size: int = 800
) -> list[Chunk]:
    """Chunks of the segments, each with ``doc_id = "message-<i>"`` and its offset in that message's content."""
    out: list[Chunk] = []
    by_message: dict[int, list[ContextSegment]] = {}
    for s in segments:
        by_message.setdefault(s.message_index, []).append(s)
    for i, segs in sorted(by_message.items()):
        content = str(messages[i]["content"])
        for k, seg in enumerate(sorted(segs, key=lambda s: s.start)):
            piece = content[seg.start : seg.end]
            if not piece.strip():
                continue
            doc = Document(f"message-{i}.{k}", piece)
            for c in chunks_from_documents([doc], chunk_size=chunk_size):
                out.append(
                    Chunk(
                        text=c.text,
                        chunk_id=f"message-{i}#{seg.start + c.doc_offset}",
                        doc_id=f"message-{i}",
                        doc_offset=seg.start + c.doc_offset,
                        metadata={"message_index": i, **({"segment": seg.label} if seg.label else {})},
                    )
                )
    return out


class _AllChunks:
    """The passage stage of context mode: every chunk, in prompt order (the caller already retrieved)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        check_query(query)
        return [ScoredChunk(i, 1.0) for i in range(clamp_k(k, self.n))]

    def __len__(self) -> int:
        return self.n


def prefill_keys(lm: LoadedModel, messages: Sequence[Message], chunks: Sequence[Chunk]):
    """The ``prompt_keys`` function of :class:`~nest_integrations.engine.NestEngine` for context chunks.

    Given the prompt's token ids and its prefill's key-layer states ``hidden`` (P, D), it aligns the prompt's
    tokens with the rendered chat template (the tokenizer's offsets) and each chunk with its place in its
    message, and returns, per chunk, the prompt tokens that lie wholly inside it (ids, offsets in the chunk text)
    with their states as keys. It returns nothing — every chunk is then encoded alone — when the template's
    text does not tokenize to exactly the prompt's ids, or a message's content is not found in it verbatim.
    """
    import numpy as np

    def keys_from(prompt_ids: Sequence[int], hidden: Any) -> dict[int, ChunkKeys]:
        tok = lm.tokenizer
        try:
            text = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        except Exception:  # no chat template, or a slow tokenizer without offsets: encode the chunks
            return {}
        if not isinstance(text, str) or list(enc["input_ids"]) != list(prompt_ids):
            return {}
        offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        starts: dict[int, int] = {}
        pos = 0
        for i, m in enumerate(messages):
            p = text.find(str(m["content"]), pos)
            if p < 0:
                return {}
            starts[i] = p
            pos = p + len(str(m["content"]))
        out: dict[int, ChunkKeys] = {}
        ids = np.asarray(list(prompt_ids), dtype=np.int64)
        for ci, c in enumerate(chunks):
            i = int(c.metadata["message_index"])
            a = starts[i] + c.doc_offset
            b = a + len(c.text)
            inside = np.nonzero((offs[:, 0] >= a) & (offs[:, 1] <= b) & (offs[:, 1] > offs[:, 0]))[0]
            if len(inside) < 2 or int(inside[-1]) - int(inside[0]) + 1 != len(inside):
                continue
            p, q = int(inside[0]), int(inside[-1]) + 1
            out[ci] = ChunkKeys(
                token_ids=ids[p:q].astype(np.int32),
                offsets=(offs[p:q] - a).astype(np.int32),
                keys=hidden[p:q].float().cpu().numpy(),
            )
        return out

    return keys_from


def _context_config(config: NestConfig, n_chunks: int) -> NestConfig:
    method = _METHOD_IN_CONTEXT.get(config.method, config.method)
    return config.replace(method=method, passages=max(1, n_chunks), ra_passages=max(1, n_chunks))


def stream_over_context(
    lm: LoadedModel,
    messages: str | Sequence[Message],
    config: NestConfig | None = None,
    *,
    documents: Sequence[str] | None = None,
    segments: Sequence[ContextSegment] | None = None,
    min_chars: int = DEFAULT_MIN_CONTEXT_CHARS,
    retrieval_query: str | None = None,
    cancel: threading.Event | None = None,
    batching: bool = False,
    **overrides: Any,
) -> Iterator[NestDelta]:
    """Stream NEST's answer to ``messages`` copying from the context inside them; the last delta has the result.

    Args:
        lm: the model.
        messages: chat messages (role / content dicts) or one user message.
        config: hyperparameters (default ``NestConfig()``); ``overrides`` apply to this call.
        documents: the texts stuffed into the prompt, when known (see :func:`find_context_segments`).
        segments: the context segments themselves (overrides ``documents``).
        min_chars: when neither is given, the length from which a system / user message is context.
        retrieval_query: the question the answer proposer and abstention compare the context with (default:
            :func:`find_question`).
        cancel: an event that stops the request when set (see :meth:`NestEngine.stream`).
        batching: share forward passes with concurrent requests on the same model (continuous batching,
            :mod:`nest_integrations.decoding.batching`).
    """
    from nest_integrations.engine import NestEngine

    msgs = to_messages(messages)
    cfg = (config or NestConfig()).replace(**overrides) if overrides else (config or NestConfig())
    segs = list(segments) if segments is not None else find_context_segments(msgs, documents, min_chars)
    chunks = context_chunks(msgs, segs) if segs else []
    if not chunks:
        # no context: the plain LM (NEST with an empty store is greedy decoding), no citations
        cfg = cfg.replace(method="base", abstain="off", answer_draft="none")
        chunks = [Chunk(text="(no context)", chunk_id="none", doc_id="none")]
    else:
        cfg = _context_config(cfg, len(chunks))
    # the question's words are weighted by how many of the context's SENTENCES hold them: over a handful of
    # chunks a chunk-level document frequency says nothing (every word is in one chunk or two)
    sentences = [c.text[a:b] for c in chunks for a, b in split_sentences(c.text)] or [c.text for c in chunks]
    prompt_keys = prefill_keys(lm, msgs, chunks) if segs and cfg.context_keys == "prefill" else None
    engine = NestEngine(
        lm, chunks, cfg, retriever=_AllChunks(len(chunks)), idf_texts=sentences, prompt_keys=prompt_keys,
        batching=batching,
    )
    query = retrieval_query if retrieval_query is not None else find_question(msgs)
    yield from engine.stream(msgs, retrieval_query=query, cancel=cancel)


def generate_over_context(
    lm: LoadedModel,
    messages: str | Sequence[Message],
    config: NestConfig | None = None,
    **kwargs: Any,
) -> NestResult:
    """:func:`stream_over_context`, collected: the :class:`~nest_integrations.results.NestResult`."""
    result = None
    for delta in stream_over_context(lm, messages, config, **kwargs):
        result = delta.result or result
    assert result is not None
    return result


def _read_source(source: str) -> str | None:
    from pathlib import Path

    try:
        p = Path(source)
        if p.is_file():
            return p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return None


def map_to_documents(
    spans: Sequence[CopiedSpan],
    messages: Sequence[Message],
    documents: Sequence[tuple[str, dict[str, Any]]],
) -> list[CitedDocument]:
    """Locate context-mode spans in the caller's documents: ``(text, metadata)`` pairs, in prompt order.

    A span is matched to the document whose text holds it at the span's place in the message (documents are
    found in the message as :func:`find_context_segments` does); one that lies in no document (e.g. copied
    from the instructions around the context) is left out. Source offsets are given when the metadata has
    ``source`` and ``start_index`` and the file read now holds the text at ``start_index + start``.
    """
    places = _locate(to_messages(messages), [text for text, _ in documents])
    files: dict[str, str | None] = {}
    out: list[CitedDocument] = []
    for s in spans:
        if not s.doc_id.startswith("message-"):
            continue
        i = int(s.doc_id.split("-", 1)[1])
        for mi, p, k in places:
            text, meta = documents[k]
            if mi != i or not (p <= s.doc_start and s.doc_end <= p + len(text)):
                continue
            start, end = s.doc_start - p, s.doc_end - p
            assert text[start:end] == s.text
            source = meta.get("source")
            s_start = s_end = None
            base = meta.get("start_index")
            if source is not None and isinstance(base, int) and base >= 0:
                src = str(source)
                if src not in files:
                    files[src] = _read_source(src)
                body = files[src]
                if body is not None and body[base + start : base + end] == s.text:
                    s_start, s_end = base + start, base + end
            out.append(CitedDocument(k, s.text, start, end, None if source is None else str(source), s_start, s_end, s))
            break
    return out
