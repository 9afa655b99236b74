"""Placing pieces of documents (splits, nodes) at verified character offsets.

Every splitter-to-chunks path of nest-integrations ends here: the built-in one
(:func:`~nest_integrations.chunks.chunks_from_documents`, any LangChain text splitter) and the LangChain /
LlamaIndex adapters (splits and nodes made by the frameworks). A framework's proposed offset
(LangChain's ``start_index``, LlamaIndex's ``start_char_idx``) is computed with ``str.find`` from an
estimated position and can point at the wrong copy of a repeated text, so it is only trusted as a
tie-breaker: :func:`place_pieces` chooses, for the whole document at once, occurrences that keep the
pieces in order and cover the text, and :func:`build_chunks` makes the chunks, reporting the pieces whose
text is not in their document (they are dropped, never given a wrong offset).

Nothing here imports LangChain or LlamaIndex.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nest_integrations.chunks import Chunk, check_unique

__all__ = ["Piece", "build_chunks", "char_overlap", "place_pieces", "preview"]


def preview(text: str, width: int = 60) -> str:
    """``repr`` of ``text`` shortened to about ``width`` characters, for messages."""
    return repr(text if len(text) <= width else text[: width - 3] + "...")


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


def char_overlap(splitter: Any) -> int | None:
    """A text splitter's overlap in characters when it measures length in characters (``len``); else ``None``.

    Works for LangChain ``TextSplitter`` s (``_length_function``, ``_chunk_overlap``); ``None`` (unknown)
    makes :func:`place_pieces` assume nothing about how far consecutive pieces may overlap.
    """
    if splitter is None or getattr(splitter, "_length_function", None) is not len:
        return None
    overlap = getattr(splitter, "_chunk_overlap", None)
    return overlap if isinstance(overlap, int) and not isinstance(overlap, bool) and overlap >= 0 else None
