"""Copied spans: which output characters came verbatim from which characters of which document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nest_integrations.chunks import Chunk
from nest_integrations.results import CopiedSpan
from nest_integrations.sentences import count_words

__all__ = ["CopiedSpan", "RunTracker", "find_spans", "find_runs", "citations_of"]


def find_spans(
    token_sources: Sequence[tuple[int, int] | None],
    token_ends: Sequence[int],
    response: str,
    chunks: Sequence[Chunk],
    chunk_offsets: Sequence[Any],
    closed_upto: int | None = None,
    min_words: int = 1,
) -> list[CopiedSpan]:
    """The citations of a response: copied runs of ≥ 2 tokens and ≥ ``min_words`` whole words.

    Shorter copies are plain generated text (NEST.md §8, §10). Arguments as in :func:`find_runs`.
    """
    runs = find_runs(token_sources, token_ends, response, chunks, chunk_offsets, closed_upto, min_tokens=2)
    return citations_of(runs, min_words)


def citations_of(runs: Sequence[CopiedSpan], min_words: int = 1) -> list[CopiedSpan]:
    """The runs that are citations: ≥ 2 tokens and ≥ ``min_words`` whole words (NEST.md §8, §10)."""
    return [r for r in runs if r.n_tokens >= 2 and count_words(r.text) >= min_words]


def find_runs(
    token_sources: Sequence[tuple[int, int] | None],
    token_ends: Sequence[int],
    response: str,
    chunks: Sequence[Chunk],
    chunk_offsets: Sequence[Any],
    closed_upto: int | None = None,
    min_tokens: int = 1,
) -> list[CopiedSpan]:
    """Turn per-token provenance into :class:`CopiedSpan` objects, one per maximal copied run.

    With ``min_tokens=1`` every token copied from a chunk is in some run (what ``nest eval`` counts word
    boundary violations and spliced sentences over, before any citation filter).

    Args:
        token_sources: per output token, (request chunk, token position) if copied, else None.
        token_ends: per output token, the length of the response decoded up to and including it.
        response: the response text (possibly cut at a stop string).
        chunks: request chunk → :class:`Chunk`; chunk_offsets: request chunk → (L, 2) char offsets.
        closed_upto: only runs that end before this token index count as complete (streaming);
            None = all runs are complete.

    Runs whose text cannot be located exactly in the response (a multi-byte character split across a
    boundary, a stop string cutting the run) are trimmed to their exact part or dropped: a span is
    never reported with offsets that do not hold.
    """
    spans: list[CopiedSpan] = []
    n = len(token_sources)
    i = 0
    while i < n:
        src = token_sources[i]
        if src is None:
            i += 1
            continue
        j = i
        while j + 1 < n:
            nxt = token_sources[j + 1]
            if nxt is None or nxt[0] != src[0] or nxt[1] != token_sources[j][1] + 1:
                break
            j += 1
        if j - i + 1 >= min_tokens and (closed_upto is None or j + 1 < closed_upto):
            span = _make_span(i, j, token_sources, token_ends, response, chunks, chunk_offsets)
            if span is not None:
                spans.append(span)
        i = j + 1
    return spans


class RunTracker:
    """Copied runs of a response that grows one token at a time, each made into a span once.

    The streaming counterpart of :func:`find_spans`: :meth:`push` looks only at the open run (the run
    the last token belongs to), and when a token does not continue it, that run is closed and, if it
    is a citation (≥ 2 tokens and ≥ ``min_words`` whole words), its span is made once and appended to
    :attr:`citations`. :attr:`citations` in order then equal ``find_spans(..., closed_upto=n)`` over
    the first ``n`` tokens, and adding :meth:`open_citation` gives ``find_spans`` without ``closed_upto``.

    Args:
        chunks: request chunk → :class:`Chunk`; chunk_offsets: request chunk → (L, 2) char offsets.
        min_words: the citation minimum (``min_citation_words``).
    """

    def __init__(self, chunks: Sequence[Chunk], chunk_offsets: Sequence[Any], min_words: int = 1) -> None:
        self.chunks = chunks
        self.chunk_offsets = chunk_offsets
        self.min_words = min_words
        self.sources: list[tuple[int, int] | None] = []
        self.ends: list[int] = []
        self.citations: list[CopiedSpan] = []
        self.citation_ends: list[int] = []  # response_end of each citation (for bisection)
        self.any_copied = False
        self._open: int | None = None  # index of the open run's first token

    def push(self, source: tuple[int, int] | None, end: int, response: str) -> None:
        """Add one token: its source (or None), the response length up to and including it, the response."""
        n = len(self.sources)
        if self._open is not None:
            last = self.sources[n - 1]
            assert last is not None
            if source is None or source[0] != last[0] or source[1] != last[1] + 1:
                self._close(self._open, n - 1, response)
                self._open = None
        self.sources.append(source)
        self.ends.append(end)
        if source is not None:
            self.any_copied = True
            if self._open is None:
                self._open = n

    def _citation(self, i: int, j: int, response: str) -> CopiedSpan | None:
        if j - i + 1 < 2:
            return None
        span = _make_span(i, j, self.sources, self.ends, response, self.chunks, self.chunk_offsets)
        if span is None or count_words(span.text) < self.min_words:
            return None
        return span

    def _close(self, i: int, j: int, response: str) -> None:
        span = self._citation(i, j, response)
        if span is not None:
            self.citations.append(span)
            self.citation_ends.append(span.response_end)

    def open_citation(self, response: str) -> CopiedSpan | None:
        """The span of the open run as it stands, if it is a citation (recomputed: O(run length))."""
        if self._open is None:
            return None
        return self._citation(self._open, len(self.sources) - 1, response)


def _make_span(i, j, token_sources, token_ends, response, chunks, chunk_offsets) -> CopiedSpan | None:
    c, p0 = token_sources[i]
    p1 = token_sources[j][1]
    chunk = chunks[c]
    offs = chunk_offsets[c]
    cs, ce = int(offs[p0][0]), int(offs[p1][1])
    text = chunk.text[cs:ce]
    r0 = token_ends[i - 1] if i > 0 else 0
    r1 = token_ends[j]
    if r0 >= len(response):
        return None
    r1 = min(r1, len(response))
    segment = response[r0:r1]
    n_tokens = j - i + 1
    idx = segment.find(text)
    if idx < 0:
        # trim the run to the longest exact piece shared by the response segment and the chunk
        lead = len(segment) - len(segment.lstrip())
        core = segment.strip()
        found = chunk.text.find(core, max(0, cs - 4), ce + 4) if core else -1
        if not core or found < 0:
            return None
        text, cs, idx = core, found, lead
        ce = cs + len(core)
    rs = r0 + idx
    re_ = rs + len(text)
    if len(text.strip()) == 0 or response[rs:re_] != text or chunk.text[cs:ce] != text:
        return None
    meta = dict(chunk.metadata)
    return CopiedSpan(
        text=text,
        doc_id=chunk.doc_id,
        chunk_id=chunk.chunk_id,
        source=chunk.source,
        doc_start=chunk.doc_offset + cs,
        doc_end=chunk.doc_offset + ce,
        response_start=rs,
        response_end=re_,
        n_tokens=n_tokens,
        metadata=meta,
    )
