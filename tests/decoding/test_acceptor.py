"""Acceptance rules (NEST.md §3.5): longest prefix, γ monotonicity, lossless."""

from __future__ import annotations

import torch

from nest_integrations.decoding.acceptor import LosslessAcceptor, RelaxedAcceptor


def test_longest_prefix_rule():
    p = torch.tensor([[0.6, 0.4, 0.0], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    draft = torch.tensor([1, 0, 1, 2])
    # γ=0.5: threshold 0.25·max → rows accept: 0.4>0.15 yes, 0.9 yes, 0.8 yes, 0.4 yes
    assert RelaxedAcceptor(0.5).accept_length(p, p, draft) == 4
    # token after a rejection is never accepted even if it would pass
    draft2 = torch.tensor([1, 2, 1, 2])  # row 1: 0.05 > 0.225? no
    assert RelaxedAcceptor(0.5).accept_length(p, p, draft2) == 1
    assert RelaxedAcceptor(2.0).accept_length(p, p, draft) == 0


def test_smaller_gamma_never_shorter():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        p = torch.softmax(torch.randn(8, 20, generator=g) * 3, -1)
        draft = torch.randint(0, 20, (8,), generator=g)
        lens = [RelaxedAcceptor(gm).accept_length(p, p, draft) for gm in (1.5, 0.5, 0.1, 0.01, 0.0)]
        assert lens == sorted(lens)


def test_lossless_accepts_only_greedy_tokens():
    logits = torch.tensor([[0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    p_mix = torch.full((3, 2), 0.5)
    assert LosslessAcceptor().accept_length(p_mix, logits, torch.tensor([1, 0, 0])) == 2
    assert LosslessAcceptor().accept_length(p_mix, logits, torch.tensor([0, 0, 1])) == 0
