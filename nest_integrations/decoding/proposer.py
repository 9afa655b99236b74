"""Span proposer: picks the anchor neighbour and drafts the continuation of its chunk (NEST.md §3.4, §3.6)."""

from __future__ import annotations

import torch

from nest_integrations.store.token_store import RequestStore

__all__ = ["HISTORY", "HistoryProposer", "NgramProposer", "SpanProposer"]

#: the "chunk" of a draft taken from the text itself (:class:`HistoryProposer`): it carries no citation
HISTORY = -2


class SpanProposer:
    """Chooses where a copied span starts and which chunk tokens to draft.

    Args:
        anchor_rule: ``nearest`` (paper: the nearest neighbour whose value is the chosen token) or
            ``lm_preferred`` (official code: the neighbour whose value the LM rates highest).
        draft_length: n, the most tokens per draft.
    """

    def __init__(self, anchor_rule: str = "nearest", draft_length: int = 16) -> None:
        self.anchor_rule = anchor_rule
        self.draft_length = draft_length

    def anchor(
        self, store: RequestStore, entries: torch.Tensor, token: int, p_lm: torch.Tensor
    ) -> tuple[int, int] | None:
        """(request chunk, token position of the anchor's value) or None.

        ``entries`` (r,) are one query's neighbours, nearest first; ``p_lm`` (V,) the LM distribution.
        """
        if entries.numel() == 0:
            return None
        vals = store.values[entries]
        if self.anchor_rule == "nearest":
            hit = (vals == token).nonzero()
            if len(hit) == 0:
                return None
            e = int(entries[int(hit[0, 0])])
        else:
            e = int(entries[int(torch.argmax(p_lm[vals]))])
        return int(store.entry_chunk[e]), int(store.entry_pos[e]) + 1

    def draft(self, store: RequestStore, chunk: int, pos: int, budget: int) -> list[int]:
        """Token positions of the draft: up to n tokens of ``chunk`` from ``pos``, never past its end."""
        n_tok = len(store.chunk_tokens(chunk))
        end = min(n_tok, pos + self.draft_length, pos + max(budget, 0))
        return list(range(pos, end))


class NgramProposer:
    """Exact n-gram matches of the response's last tokens in the request's chunks (prompt lookup / REST idea).

    Built once per request from the chunks' token ids. :meth:`match` takes the response's last tokens (the
    token just chosen last) and returns where that n-gram occurs in a chunk, longest n first, so the copy
    continues the occurrence the LM is actually following — where the kNN anchor may sit at another
    occurrence of the same token. A match carries the same exact attribution as a kNN anchor: (request
    chunk, position of the matched last token), its continuation starting right after.

    Args:
        store: the request's token store (its chunks' ``token_ids``).
        max_n: longest n-gram matched.
        min_n: shortest n-gram that counts as a match (1 would match any occurrence of the last token,
            which the kNN anchor places better).
    """

    def __init__(self, store: RequestStore, max_n: int = 3, min_n: int = 2) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n (got {min_n}, {max_n})")
        self.max_n = max_n
        self.min_n = min_n
        # n-gram (tuple of n token ids) -> [(chunk, position of its last token)], in store order; only
        # occurrences that have a continuation (a next token in the chunk)
        self._index: list[dict[tuple[int, ...], list[tuple[int, int]]]] = [{} for _ in range(max_n + 1)]
        for c in range(len(store.chunks)):
            toks = [int(t) for t in store.chunk_tokens(c)]
            for n in range(min_n, max_n + 1):
                table = self._index[n]
                for q in range(n - 1, len(toks) - 1):
                    table.setdefault(tuple(toks[q - n + 1 : q + 1]), []).append((c, q))

    def match(self, history: list[int], accept=None) -> tuple[int, int] | None:
        """(request chunk, position) of the longest n-gram ending ``history`` that occurs in a chunk, or None.

        ``history``: token ids of the text so far, the last one the token just chosen. ``accept(chunk, pos)``,
        if given, filters occurrences (span rules, masked entries); the first one it accepts is returned.
        """
        for n in range(min(self.max_n, len(history)), self.min_n - 1, -1):
            hits = self._index[n].get(tuple(history[-n:]))
            if not hits:
                continue
            for chunk, pos in hits:
                if accept is None or accept(chunk, pos):
                    return chunk, pos
        return None


class HistoryProposer:
    """Exact n-gram matches of the text's last tokens earlier in the text itself — the prompt and the response
    so far, transformers' prompt lookup (Saxena, 2023) — for drafts that carry no citation.

    The decoding loop asks it where no chunk n-gram matches: the model often repeats its instructions, the
    question or its own words, which are no source to cite but verify like any draft. Matches are the most
    recent occurrence, longest n first; the draft is what followed that occurrence.

    Args:
        tokens: the prompt's token ids; the loop :meth:`append` s every committed token.
        max_n: longest n-gram matched.
        min_n: shortest n-gram that counts as a match.
    """

    def __init__(self, tokens: list[int], max_n: int = 3, min_n: int = 2) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n (got {min_n}, {max_n})")
        self.max_n = max_n
        self.min_n = min_n
        self.tokens: list[int] = []
        # n-gram -> positions of its last token, in text order
        self._index: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(max_n + 1)]
        for t in tokens:
            self.append(int(t))

    def append(self, token: int) -> None:
        """Add the next token of the text (indexes the n-grams it ends)."""
        self.tokens.append(token)
        q = len(self.tokens) - 1
        for n in range(self.min_n, min(self.max_n, q + 1) + 1):
            self._index[n].setdefault(tuple(self.tokens[q - n + 1 : q + 1]), []).append(q)

    def match(self, extra: int | None = None) -> int | None:
        """Position of the token after the latest earlier occurrence of the text's last n-gram, or None.

        The text is :attr:`tokens` plus ``extra`` (a token chosen but not appended yet), when given. The
        returned position ``p`` satisfies ``p < len(tokens)`` when ``extra`` is None and ``p <= len(tokens)``
        otherwise (``p == len(tokens)`` is ``extra`` itself, whose place the draft starts from).
        """
        toks = self.tokens
        size = len(toks) + (extra is not None)
        last = size - 1
        for n in range(min(self.max_n, size - 1), self.min_n - 1, -1):
            key = tuple(toks[len(toks) - n + 1 :]) + (extra,) if extra is not None else tuple(toks[-n:])
            hits = self._index[n].get(key)
            if not hits:
                continue
            for q in reversed(hits):
                if q < last:  # not the suffix itself
                    return q + 1
        return None
