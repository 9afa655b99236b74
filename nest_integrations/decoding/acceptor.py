"""Acceptors: how many draft tokens to keep after one verification pass (NEST.md §3.5)."""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["Acceptor", "RelaxedAcceptor", "LosslessAcceptor", "make_acceptor"]


class Acceptor(Protocol):
    """Decides the longest acceptable prefix of a draft.

    ``accept_length(p_mix, lm_logits, draft)``: ``p_mix`` (P, V) is the mixture at the positions that
    predict each draft token, ``lm_logits`` (P, V) the LM's own logits there, ``draft`` (P,) the
    tokens. Returns k in [0, P]: draft[:k] is accepted.
    """

    def accept_length(self, p_mix: torch.Tensor, lm_logits: torch.Tensor, draft: torch.Tensor) -> int: ...


def _prefix_len(ok: torch.Tensor) -> int:
    bad = (~ok).nonzero()
    return int(bad[0, 0]) if len(bad) else int(ok.shape[0])


class RelaxedAcceptor:
    """The paper's relaxed rule: accept g_j iff p_M(g_j) > (γ/2) · max p_M; keep the longest prefix.

    γ = 0 accepts any token with non-zero mass; larger γ is stricter (γ ≥ 2 accepts nothing but
    ties with the maximum can never pass, so γ = 2 rejects everything).
    """

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def accept_length(self, p_mix: torch.Tensor, lm_logits: torch.Tensor, draft: torch.Tensor) -> int:
        if draft.numel() == 0:
            return 0
        chosen = p_mix.gather(1, draft[:, None])[:, 0]
        ok = chosen > (self.gamma / 2.0) * p_mix.max(dim=-1).values
        return _prefix_len(ok)


class LosslessAcceptor:
    """Accept a draft token only if it is the LM's own greedy choice (output = plain greedy decoding)."""

    def accept_length(self, p_mix: torch.Tensor, lm_logits: torch.Tensor, draft: torch.Tensor) -> int:
        if draft.numel() == 0:
            return 0
        return _prefix_len(lm_logits.argmax(dim=-1) == draft)


def make_acceptor(kind: str, gamma: float) -> Acceptor:
    if kind == "lossless":
        return LosslessAcceptor()
    return RelaxedAcceptor(gamma)
