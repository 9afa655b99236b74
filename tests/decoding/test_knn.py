"""kNN distribution and RRC λ against the formulas of NEST.md §3 on hand-built stores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nest_integrations.decoding.knn import Neighbours, knn_distribution, mixture, rrc_lambda, search
from nest_integrations.store.token_store import ChunkKeys, RequestStore


def _store(keys: list[list[float]], tokens: list[int]) -> RequestStore:
    """One chunk whose entry j has key keys[j] and value tokens[j+1]."""
    k = np.asarray(keys + [[0.0] * len(keys[0])], dtype=np.float16)
    ids = np.asarray(tokens, dtype=np.int32)
    offs = np.stack([np.arange(len(ids)), np.arange(len(ids)) + 1], 1).astype(np.int32)
    return RequestStore([(0, ChunkKeys(ids, offs, k))], ["x" * len(ids)])


def _nb(d2: list[float]) -> Neighbours:
    t = torch.tensor([d2])
    return Neighbours(entries=torch.arange(len(d2))[None], sq_dists=t, count=len(d2))


def test_pknn_matches_formula_and_merges_equal_values():
    store = _store([[0, 0], [1, 0], [0, 2], [3, 0]], [9, 5, 6, 5, 7])  # values 5, 6, 5, 7
    q = torch.tensor([[0.0, 0.0]])
    nb = search(store, q, r=3)
    d2 = torch.tensor([0.0, 1.0, 4.0])  # the three nearest: entries 0, 1, 2
    assert nb.entries[0].tolist() == [0, 1, 2]
    assert torch.allclose(nb.sq_dists[0], d2)
    w = torch.softmax(-d2 / math.sqrt(2), 0)
    p = knn_distribution(store, nb, vocab_size=10, dim=2)[0]
    assert p[5].item() == pytest.approx(float(w[0] + w[2]), abs=1e-6)
    assert p[6].item() == pytest.approx(float(w[1]), abs=1e-6)
    assert p[7].item() == 0.0  # 4th entry is outside r
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_masked_entries_never_appear_and_r_is_clamped():
    store = _store([[0, 0], [1, 0], [0, 2]], [9, 5, 6, 7])
    store.mask[0] = True
    nb = search(store, torch.tensor([[0.0, 0.0]]), r=64)
    assert nb.count == 2
    assert 0 not in nb.entries[0].tolist()
    p = knn_distribution(store, nb, vocab_size=10, dim=2)[0]
    assert p[5].item() == 0.0
    store.mask[:] = True
    nb = search(store, torch.tensor([[0.0, 0.0]]), r=64)
    assert nb.count == 0
    assert rrc_lambda(nb, 0.3, 0.1).tolist() == [1.0]  # no neighbours: λ = 1 exactly


def test_lambda_monotone_half_at_alpha_and_bounded():
    alpha, tau = 0.3, 0.1
    ratios = torch.linspace(0, 1, 101)
    lams = torch.cat([rrc_lambda(_nb([float(r), 1.0]), alpha, tau) for r in ratios])
    assert torch.all(lams[1:] >= lams[:-1])
    assert rrc_lambda(_nb([0.3, 1.0]), alpha, tau).item() == pytest.approx(0.5, abs=1e-6)
    lo, hi = 1 / (1 + math.exp(alpha / tau)), 1 / (1 + math.exp(-(1 - alpha) / tau))
    assert lams.min().item() == pytest.approx(lo, abs=1e-6)
    assert lams.max().item() == pytest.approx(hi, abs=1e-6)
    assert lo == pytest.approx(0.047, abs=1e-3) and hi == pytest.approx(0.999, abs=1e-3)


def test_lambda_guard_for_zero_distances():
    # all r neighbours at distance 0 (duplicate chunks): ratio defined as 1 → upper bound
    lam = rrc_lambda(_nb([0.0, 0.0, 0.0]), 0.3, 0.1).item()
    assert lam == pytest.approx(1 / (1 + math.exp(-0.7 / 0.1)), abs=1e-6)
    assert not math.isnan(lam)


def test_mixture_rows():
    p_lm = torch.tensor([[0.5, 0.5, 0.0]])
    p_knn = torch.tensor([[0.0, 0.0, 1.0]])
    out = mixture(p_lm, p_knn, torch.tensor([0.25]))
    assert torch.allclose(out, torch.tensor([[0.125, 0.125, 0.75]]))
