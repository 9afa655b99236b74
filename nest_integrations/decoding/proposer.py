"""Span proposer: picks the anchor neighbour and drafts the continuation of its chunk (NEST.md §3.4, §3.6)."""

from __future__ import annotations

import torch

from nest_integrations.store.token_store import RequestStore

__all__ = ["SpanProposer"]


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
