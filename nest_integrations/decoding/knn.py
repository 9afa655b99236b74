"""kNN distribution, Relative Retrieval Confidence and the NEST mixture (NEST.md §3.1–3.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nest_integrations.store.token_store import RequestStore

__all__ = ["Neighbours", "search", "knn_distribution", "rrc_lambda", "mixture"]


@dataclass
class Neighbours:
    """The r nearest valid entries for each query position.

    Attributes:
        entries: (P, r) long entry indices into the request store, nearest first (-1 = none).
        sq_dists: (P, r) float32 squared L2 distances (+inf where there is no entry).
        count: number of valid neighbours per row (same for every row: min(r, unmasked entries)).
    """

    entries: torch.Tensor
    sq_dists: torch.Tensor
    count: int


def search(store: RequestStore, queries: torch.Tensor, r: int, allowed: torch.Tensor | None = None) -> Neighbours:
    """Exact squared-L2 search of ``queries`` (P, D) float32 among the store's unmasked entries.

    ``allowed`` (M,) bool restricts the search to some entries (e.g. one chunk's, NEST.md §10).
    """
    invalid = store.mask if allowed is None else (store.mask | ~allowed)
    n_valid = int((~invalid).sum()) if len(store) else 0
    k = min(r, n_valid)
    p = queries.shape[0]
    if k == 0:
        return Neighbours(
            entries=torch.full((p, 0), -1, dtype=torch.long, device=queries.device),
            sq_dists=torch.empty((p, 0), device=queries.device),
            count=0,
        )
    q = queries.float().to(store.keys.device)
    d2 = (q * q).sum(-1, keepdim=True) + store.sq_norms[None, :] - 2.0 * (q @ store.keys.T)
    d2 = d2.clamp_min_(0.0)
    if bool(invalid.any()):
        d2[:, invalid] = float("inf")
    dists, idx = torch.topk(d2, k, dim=-1, largest=False, sorted=True)
    return Neighbours(entries=idx, sq_dists=dists, count=k)


def knn_distribution(
    store: RequestStore, nb: Neighbours, vocab_size: int, dim: int, temperature: float = 1.0
) -> torch.Tensor:
    """p_kNN (P, V): p(w) = Σ_{i: value_i = w} softmax_i(−d²_i / (T·√D)) over each row's neighbours.

    ``temperature`` T = 1 is the paper's; a larger T flattens the distribution over the neighbours.

    Rows with no neighbours are all zeros (λ = 1 makes them irrelevant).
    """
    p = nb.entries.shape[0]
    out = torch.zeros((p, vocab_size), dtype=torch.float32, device=nb.sq_dists.device)
    if nb.count == 0:
        return out
    weights = torch.softmax(-nb.sq_dists / (temperature * math.sqrt(dim)), dim=-1)
    vals = store.values[nb.entries]
    out.scatter_add_(1, vals, weights)
    return out


def rrc_lambda(nb: Neighbours, alpha: float, tau: float) -> torch.Tensor:
    """λ (P,), the LM's weight: sigmoid((d²_min / d²_r − α) / τ).

    Guards: no neighbours → λ = 1 exactly. d²_r = 0 (the r nearest are all exact duplicates of the
    query) → ratio defined as 1 (a flat neighbourhood: nothing singles out one neighbour), so λ is
    its upper bound σ((1−α)/τ).
    """
    p = nb.entries.shape[0]
    if nb.count == 0:
        return torch.ones(p, device=nb.sq_dists.device)
    dmin = nb.sq_dists[:, 0]
    dr = nb.sq_dists[:, nb.count - 1]
    ratio = torch.where(dr > 0, dmin / torch.where(dr > 0, dr, torch.ones_like(dr)), torch.ones_like(dr))
    return torch.sigmoid((ratio - alpha) / tau)


def mixture(p_lm: torch.Tensor, p_knn: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """p_M = λ · p_LM + (1 − λ) · p_kNN, row-wise; shapes (P, V), (P, V), (P,)."""
    lam = lam[:, None]
    return lam * p_lm + (1.0 - lam) * p_knn
