"""Framework-free helpers shared by the LangChain and LlamaIndex adapters.

The adapters turn a framework's documents and splits (nodes) into :class:`~nest_integrations.chunks.Chunk`
objects with exact offsets, and map a framework retriever's hits back to positions in the datastore's
chunk list. The parts that do not depend on either framework live here, so that both adapters behave
the same way:

- :func:`place_pieces` places the pieces (splits, nodes) of one document, checking every proposed
  offset and choosing among the copies of a repeated text the ones that keep the pieces in order and
  cover the document; :func:`build_chunks` does it for every document's :class:`Piece` s and makes the
  chunks, reporting the pieces whose text is not in their document;
- :class:`ChunkLookup` finds a chunk's position in a (growing) chunk list by id, by
  ``(doc_id, doc_offset)`` or by exact text, indexing the list lazily;
- :func:`collect_hits` turns matched retrieval results into :class:`ScoredChunk` s, calling the
  ``on_unmatched`` callback or warning about results that match no chunk;
- :func:`conversation_retrieval_query` picks the retrieval query of a conversation (the engine's
  condensed query by default) and :func:`answer_labels` gives the support labels, abstention and
  finish fields of a :class:`~nest_integrations.engine.NestResult` in the shape both adapters put in
  their response metadata.

Nothing here imports LangChain or LlamaIndex.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nest_integrations.chunks import Chunk
from nest_integrations.errors import DuplicateIdError
from nest_integrations.retrieval.base import ScoredChunk

__all__ = [
    "ChunkLookup",
    "Piece",
    "RetrievedItem",
    "UnmatchedCallback",
    "check_unique",
    "build_chunks",
    "collect_hits",
    "answer_labels",
    "conversation_retrieval_query",
    "CONVERSATION_QUERY_ALIASES",
    "place_pieces",
    "preview",
]

#: ``on_unmatched(text, metadata) -> index | None``: called for a retrieved document that matches no chunk;
#: it may add a chunk to the datastore and return its position in the chunk list (``None`` skips the hit).
UnmatchedCallback = Callable[[str, dict[str, Any]], int | None]


def preview(text: str, width: int = 60) -> str:
    """``repr`` of ``text`` shortened to about ``width`` characters, for messages."""
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def check_unique(ids: Iterable[str], what: str, hint: str = "") -> None:
    """Raise :class:`DuplicateIdError` naming the first id that occurs twice in ``ids``."""
    seen: set[str] = set()
    for ident in ids:
        if ident in seen:
            raise DuplicateIdError(f"two {what} have the same id {ident!r}{'; ' + hint if hint else ''}")
        seen.add(ident)


_DP_BUDGET = 2_000_000  # candidate pairs examined by place_pieces for one document, at most (about)


def _fits(text: str, piece: str, start: Any) -> bool:
    """Whether ``start`` is an int at which ``text`` holds ``piece``."""
    return (
        isinstance(start, int)
        and not isinstance(start, bool)
        and 0 <= start <= len(text) - len(piece)
        and text.startswith(piece, start)
    )


def place_pieces(
    text: str,
    pieces: Sequence[tuple[str, Any]],
    overlap: int | None = None,
    *,
    max_candidates: int = 32,
) -> list[int | None]:
    """Exact start offsets in ``text`` of a document's pieces (splits, nodes), given in splitter order.

    Each piece is ``(piece_text, proposed_start)``; the proposal (LangChain's ``start_index``,
    LlamaIndex's ``start_char_idx``) may be missing or wrong. Frameworks compute it with ``str.find``
    from an estimated position, which lands on the wrong copy of a text that occurs several times
    (repeated paragraphs), so a proposal is only trusted as a tie-breaker. Every piece whose text occurs
    in ``text`` gets one of its occurrences, chosen for the whole document at once (dynamic programming
    over the candidate occurrences), minimising in this order:

    1. order violations: a piece starting at or before the previous piece, or (``overlap`` = the
       splitter's maximal overlap in characters, when known) before the previous piece's end minus
       ``overlap``;
    2. non-whitespace characters of ``text`` covered by no piece (a splitter keeps all the text;
       counted between consecutive pieces, so exact for pieces in order);
    3. pieces not at their proposed offset;
    4. the sum of the offsets (earliest placement).

    The candidates of a piece are its first ``max_candidates`` occurrences (fewer for documents with
    thousands of pieces) from the earliest place an in-order splitter could put it, plus its proposal when that is right. When simply taking each
    proposal that is in order, else the next occurrence, keeps the pieces in order and covers the text
    (the usual case), that placement is returned without the search. A piece whose text does not occur
    in ``text`` gets ``None``: the caller reports it, never cites it.
    """
    if overlap is not None and overlap < 0:
        overlap = None
    n_pieces = len(pieces)

    def lower_bound(prev: tuple[int, int] | None) -> int:
        if prev is None:
            return 0
        lo = prev[0] + 1
        return max(lo, prev[1] - overlap) if overlap is not None else lo

    # fast path: each piece at its proposal when that is in order, else at the next occurrence; kept when
    # it is in order and leaves no text uncovered (the usual case: nothing better to find)
    quick: list[int | None] = []
    last: tuple[int, int] | None = None
    frontier = 0  # end of the text covered so far
    ok = True
    for piece, proposed in pieces:
        start = -1
        if piece:
            lo = lower_bound(last)
            start = proposed if _fits(text, piece, proposed) and proposed >= lo else text.find(piece, lo)
            if start < 0:
                ok = False
                start = text.find(piece)
        if start < 0:
            quick.append(None)
            continue
        if start > frontier and not text[frontier:start].isspace():
            ok = False
        quick.append(start)
        last = (start, start + len(piece))
        frontier = max(frontier, last[1])
    if frontier < len(text) and not text[frontier:].isspace():
        ok = False
    if ok:
        return quick

    # earliest placement in splitter order: a lower bound of the true offsets of in-order pieces;
    # fewer candidates per piece for documents with very many pieces (bounded work: pieces × candidates²)
    max_candidates = max(2, min(max_candidates, math.isqrt(_DP_BUDGET // max(1, n_pieces))))
    cands: list[list[int]] = []
    prev: tuple[int, int] | None = None
    for piece, proposed in pieces:
        options: list[int] = []
        if piece:
            start = text.find(piece, lower_bound(prev))
            if start < 0:
                start = text.find(piece)
            while start >= 0 and len(options) < max_candidates:
                options.append(start)
                start = text.find(piece, start + 1)
            if _fits(text, piece, proposed) and proposed not in options:
                options.append(proposed)
            if options:
                prev = (options[0], options[0] + len(piece))
        cands.append(options)

    placed = [i for i in range(n_pieces) if cands[i]]
    out: list[int | None] = [None] * n_pieces
    if not placed:
        return out

    nonws = [0]
    for ch in text:
        nonws.append(nonws[-1] + (not ch.isspace()))

    def uncovered(a: int, b: int) -> int:
        return nonws[b] - nonws[a] if b > a else 0

    Cost = tuple[int, int, int, int]
    # best[j][c]: cost of the best placement of placed[:j+1] with placed[j] at cands[placed[j]][c]
    best: list[list[Cost]] = []
    back: list[list[int]] = []
    for j, i in enumerate(placed):
        piece, proposed = pieces[i]
        row: list[Cost] = []
        links: list[int] = []
        for s in cands[i]:
            miss = int(s != proposed)
            if j == 0:
                row.append((0, uncovered(0, s), miss, s))
                links.append(-1)
                continue
            p = placed[j - 1]
            plen = len(pieces[p][0])
            choice: Cost | None = None
            link = -1
            for c, ps in enumerate(cands[p]):
                prev_cost = best[j - 1][c]
                viol = int(s < lower_bound((ps, ps + plen)))
                cost = (prev_cost[0] + viol, prev_cost[1] + uncovered(ps + plen, s), prev_cost[2] + miss, prev_cost[3] + s)
                if choice is None or cost < choice:
                    choice, link = cost, c
            assert choice is not None
            row.append(choice)
            links.append(link)
        best.append(row)
        back.append(links)
    tail = placed[-1]
    finals = [
        (cost[0], cost[1] + uncovered(s + len(pieces[tail][0]), len(text)), cost[2], cost[3])
        for cost, s in zip(best[-1], cands[tail], strict=True)
    ]
    c = min(range(len(finals)), key=finals.__getitem__)
    for j in range(len(placed) - 1, -1, -1):
        out[placed[j]] = cands[placed[j]][c]
        c = back[j][c]
    return out


@dataclass(frozen=True)
class Piece:
    """A split / node assigned to its document, before it is placed.

    Attributes:
        chunk_id: the id the chunk will have.
        doc_id: id of the document it comes from.
        text: its text (verbatim, it is hoped).
        proposed: the framework's start offset for it (may be missing or wrong).
        metadata: metadata for the chunk; its ``offset_key`` entry, if present, is set to the verified offset.
        offset_key: metadata key of the framework's start offset (e.g. ``"start_index"``), if any.
    """

    chunk_id: str
    doc_id: str
    text: str
    proposed: Any
    metadata: Mapping[str, Any]
    offset_key: str | None = None


def build_chunks(
    pieces: Sequence[Piece],
    texts: Mapping[str, str],
    overlap: int | None = None,
    *,
    what: str = "split",
) -> tuple[list[Chunk], list[str]]:
    """Place each document's pieces (:func:`place_pieces`) and make chunks, in the order of ``pieces``.

    Returns:
        ``(chunks, problems)``: one chunk per piece whose text occurs in its document, with the exact
        offset; one message per piece that does not (it is dropped, never given a wrong offset).

    Raises:
        DuplicateIdError: two pieces have the same chunk id.
    """
    check_unique((p.chunk_id for p in pieces), "chunks")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pieces):
        groups.setdefault(p.doc_id, []).append(i)
    starts: list[int | None] = [None] * len(pieces)
    for doc_id, members in groups.items():
        offsets = place_pieces(texts[doc_id], [(pieces[i].text, pieces[i].proposed) for i in members], overlap)
        for i, start in zip(members, offsets, strict=True):
            starts[i] = start
    chunks: list[Chunk] = []
    problems: list[str] = []
    for p, start in zip(pieces, starts, strict=True):
        if start is None:
            problems.append(
                f"{p.chunk_id}: {what} text {preview(p.text)} does not occur in document {p.doc_id!r}; dropped, "
                f"not cited (use a {what} maker that returns verbatim pieces of the text)"
            )
            continue
        metadata = dict(p.metadata)
        if p.offset_key is not None and p.offset_key in metadata:
            metadata[p.offset_key] = start
        chunk = Chunk(text=p.text, chunk_id=p.chunk_id, doc_id=p.doc_id, doc_offset=start, metadata=metadata)
        chunk.check_offset(texts[p.doc_id])
        chunks.append(chunk)
    return chunks, problems


class ChunkLookup:
    """Finds chunks in a chunk list by id, by position in their document, or by exact text.

    The list may be a live one that the datastore appends to: each lookup first indexes the chunks
    added since the previous one (and re-indexes everything if the list got shorter). The text index
    is only built when a text lookup is first needed. When several chunks share a key, the first wins.
    """

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        """Index ``chunks`` (lazily)."""
        self.chunks = chunks
        self._seen = 0
        self._by_id: dict[str, int] = {}
        self._by_pos: dict[tuple[str, int], int] = {}
        self._by_text: dict[str, int] | None = None

    def _sync(self) -> None:
        n = len(self.chunks)
        if n < self._seen:  # the list was replaced or shrank: start over
            self._seen = 0
            self._by_id.clear()
            self._by_pos.clear()
            if self._by_text is not None:
                self._by_text = {}
        for i in range(self._seen, n):
            ch = self.chunks[i]
            self._by_id.setdefault(ch.chunk_id, i)
            self._by_pos.setdefault((ch.doc_id, ch.doc_offset), i)
            if self._by_text is not None:
                self._by_text.setdefault(ch.text, i)
        self._seen = n

    def by_id(self, chunk_id: Any) -> int | None:
        """Position of the chunk with id ``chunk_id``."""
        if not isinstance(chunk_id, str) or not chunk_id:
            return None
        self._sync()
        return self._by_id.get(chunk_id)

    def by_position(self, doc_id: Any, offset: Any, text: str) -> int | None:
        """Position of the chunk of document ``doc_id`` at ``offset``, provided its text is ``text``."""
        if not isinstance(doc_id, str) or not isinstance(offset, int) or isinstance(offset, bool):
            return None
        self._sync()
        i = self._by_pos.get((doc_id, offset))
        return i if i is not None and self.chunks[i].text == text else None

    def by_text(self, text: str) -> int | None:
        """Position of the first chunk whose text is exactly ``text``."""
        if not text:
            return None
        if self._by_text is None:
            self._by_text = {}
            for i in range(self._seen):
                self._by_text.setdefault(self.chunks[i].text, i)
        self._sync()
        return self._by_text.get(text)


@dataclass(frozen=True)
class RetrievedItem:
    """One result of a framework retriever, before it becomes a :class:`ScoredChunk`.

    Attributes:
        index: matching position in the chunk list, or ``None`` when no chunk matches.
        text: the result's text (passed to ``on_unmatched``).
        metadata: the result's metadata (passed to ``on_unmatched``).
        score: the framework's relevance score, or ``None`` when it gives none.
    """

    index: int | None
    text: str
    metadata: Mapping[str, Any]
    score: float | None = None


def collect_hits(
    items: Sequence[RetrievedItem],
    k: int,
    n_chunks: Callable[[], int],
    on_unmatched: UnmatchedCallback | None,
    framework: str,
) -> list[ScoredChunk]:
    """Turn a framework retriever's results (best first) into at most ``k`` hits, best first.

    Scores are the framework's when it gives one for every result, else ``1 / (rank + 1)`` (``rank``
    = position in the framework's result list). A result matching no chunk goes to ``on_unmatched``
    when given (its return value, a position in the chunk list, becomes the hit; ``None`` skips it);
    without a callback such results are skipped with a single warning naming how many there were.
    A chunk retrieved twice counts once (at its best rank).

    Raises:
        ValueError: ``on_unmatched`` returned a position outside the chunk list.
    """
    use_scores = bool(items) and all(it.score is not None for it in items)
    hits: list[ScoredChunk] = []
    taken: set[int] = set()
    skipped = 0
    for rank, item in enumerate(items):
        if len(hits) >= k:
            break
        index = item.index
        if index is None and on_unmatched is not None:
            index = on_unmatched(item.text, dict(item.metadata))
            if index is not None:
                n = n_chunks()
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                    raise ValueError(
                        f"on_unmatched returned {index!r}, which is not a position in the chunk list "
                        f"(0 .. {n - 1}); it must return the index of the chunk it added, or None"
                    )
            else:
                continue
        if index is None:
            skipped += 1
            continue
        if index in taken:
            continue
        taken.add(index)
        score = float(item.score) if use_scores and item.score is not None else 1.0 / (rank + 1)
        hits.append(ScoredChunk(index=index, score=score))
    if skipped:
        warnings.warn(
            f"{skipped} document(s) returned by the {framework} retriever match no chunk of the datastore "
            "and were skipped; index the datastore's chunks (keeping their ids) or pass on_unmatched",
            UserWarning,
            stacklevel=3,
        )
    return hits


#: Older adapter names of the conversation query modes → :attr:`NestConfig.conversation_query` values.
CONVERSATION_QUERY_ALIASES: Mapping[str, str] = {
    "last_user_message": "last_user",
    "all_user_messages": "all_user",
}


def conversation_retrieval_query(
    messages: Sequence[Mapping[str, Any]], mode: str | None, default_mode: str = "condensed"
) -> str:
    """The passage-retrieval query of a chat request, as both adapters compute it.

    ``mode`` is ``condensed`` (the default: :func:`~nest_integrations.prompts.condensed_query`, a
    follow-up such as "Who was her father?" is extended with the previous user turns), ``last_user`` or
    ``all_user`` (the old adapter names ``last_user_message`` / ``all_user_messages`` are accepted);
    ``None`` means ``default_mode`` (the effective config's ``conversation_query``).

    Raises:
        EmptyQuestionError: no user message, or the last one is empty.
        ValueError: an unknown mode.
    """
    from nest_integrations.prompts import retrieval_query_of

    chosen = default_mode if mode is None else mode
    chosen = CONVERSATION_QUERY_ALIASES.get(chosen, chosen)
    if chosen not in ("condensed", "last_user", "all_user"):
        raise ValueError(f"unknown conversation query mode {mode!r} (condensed, last_user or all_user)")
    return retrieval_query_of(messages, chosen)


def answer_labels(result: Any) -> dict[str, Any]:
    """What an answer says about itself, as plain JSON values (NEST.md §10).

    ``sentences``: one dict per sentence (``response_start``, ``response_end``, ``support`` in
    copied / grounded / unsupported, ``chunk_ids``); ``abstained``; ``abstain_reason`` (``retrieval``:
    no passage close enough to the question, ``support``: the first sentence was unsupported, or
    ``None``); ``truncated`` (cut by the token limit); ``finish_reason`` (eos, stop, sentence, length
    or abstained); ``relevance`` (the question-passage similarity the abstention threshold applies
    to, or ``None``). Lists hold dicts without an ``index`` key, so LangChain's chunk merging
    concatenates them.
    """
    return {
        "sentences": [s.to_dict() for s in result.sentences],
        "abstained": bool(result.abstained),
        "abstain_reason": getattr(result, "abstain_reason", None),
        "truncated": bool(result.truncated),
        "finish_reason": result.finish_reason,
        "relevance": None if result.relevance is None else float(result.relevance),
    }
