"""Continuous batching of decoding steps: the forward passes of concurrent requests share one padded batch.

Each request keeps its own decoding loop (:class:`~nest_integrations.decoding.loop.NestDecoder`) and its own
KV cache; what they share is the model call. When batching is on, a decoder's forward pass (the pending token
of a decision step, or the pending tokens plus a draft to verify) is handed to the model's
:class:`ForwardBatcher` instead of being run at once. The first request to hand one in leads the round: it waits
until every request in the middle of a step has handed its own in (or none came for ``max_wait_s``), then runs them
as ONE forward pass — inputs right-padded to the longest, each request's cached keys and values left-padded to
the longest past, a 2-D attention mask that hides both paddings, explicit position ids — and gives every
request back its own logits (T_b, V), key-layer states (T_b, D) and the new positions appended to its cache.
Requests join and leave between any two steps (a new request's first step simply lands in the next round),
which is what continuous batching means here: no request waits for another to finish.

What it keeps: each request's output is what it computes alone, up to float rounding of the batched kernels
(in float32 a different argmax can only happen at a near-tie of p_M; the server test counts them). What it
costs: building the padded past copies each request's cache once per batched step (O(B · L) per layer).
A job longer than ``solo_tokens`` (a prefill) and caches that are not plain full-attention ``DynamicCache``
layers (sliding windows, recurrent state) are run alone, as without batching.

The batched call runs with the model's gate held (:mod:`nest_integrations.concurrency`); requests wait for
their round without holding it, so the others can prepare their steps meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nest_integrations.concurrency import ModelGate

__all__ = ["ForwardBatcher", "BatchStats", "forward_batcher"]

Forward = Callable[[], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class BatchStats:
    """Counters of one batcher: forward passes run, requests' forwards they carried, and batch sizes seen."""

    batches: int = 0
    jobs: int = 0
    solo: int = 0
    max_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    @property
    def mean_batch(self) -> float:
        """Mean number of requests' forwards per batched forward pass."""
        return (self.jobs / self.batches) if self.batches else 0.0


@dataclass
class _Job:
    ids: list[int]
    cache: Any
    tap: Any
    cache_kw: str
    device: Any
    solo: Forward
    done: threading.Event = field(default_factory=threading.Event)
    out: tuple[torch.Tensor, torch.Tensor] | None = None
    error: BaseException | None = None


class ForwardBatcher:
    """Coalesces the forward passes of the requests decoding on one model (see the module docstring).

    Args:
        model: the causal LM.
        gate: the model's gate (held while a batch runs).
        max_batch: most requests' forwards in one pass.
        max_wait_s: how long a round's leader waits for the next of the requests still preparing their step
            (the wait ends at once when every request mid-step has handed its forward in).
        max_round_s: the longest a round's leader waits in all.
        solo_tokens: a forward of more new tokens than this runs alone (prefills).
    """

    def __init__(
        self,
        model: Any,
        gate: ModelGate,
        *,
        max_batch: int = 16,
        max_wait_s: float = 0.01,
        max_round_s: float = 0.1,
        solo_tokens: int = 48,
    ) -> None:
        self.model = model
        self.gate = gate
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_round_s = max_round_s
        self.solo_tokens = solo_tokens
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._leading = False
        self._busy = 0
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        self._pad = int(pad) if isinstance(pad, int) else 0

    # ---- which requests are mid-step -------------------------------------------------------
    def enter_step(self) -> None:
        """A request starts computing a step (it may hand in a forward before :meth:`leave_step`)."""
        with self._cond:
            self._busy += 1

    def leave_step(self) -> None:
        """The request's step is over (it will hand in nothing until its next :meth:`enter_step`)."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    # ---- the forward pass ------------------------------------------------------------------
    def forward(self, ids: list[int], cache: Any, tap: Any, cache_kw: str, device: Any, solo: Forward):
        """Logits (T, V) and key-layer states (T, D) of ``ids`` fed after ``cache``, computed in a batch.

        ``cache`` gets the new positions appended, exactly as the unbatched call would; ``solo()`` is that
        unbatched call, used when this job cannot share a batch.
        """
        job = _Job(list(ids), cache, tap, cache_kw, device, solo)
        depth = self.gate.suspend() if self.gate.owned() else 0
        try:
            with self._cond:
                self._jobs.append(job)
                self._cond.notify_all()
                lead = not self._leading
                if lead:
                    self._leading = True
            if lead:
                self._lead()
            job.done.wait()
        finally:
            if depth:
                self.gate.resume(depth)
        if job.error is not None:
            raise job.error
        assert job.out is not None
        return job.out

    def _lead(self) -> None:
        """Collect a round, run it; go on while jobs are left (their threads wait for someone to lead)."""
        first = True
        while True:
            with self._cond:
                if first:
                    # wait while the others mid-step keep handing theirs in (they prepare their steps one by
                    # one, holding the gate): until all have, or none came for max_wait_s, or max_round_s
                    start = last = time.monotonic()
                    seen = len(self._jobs)
                    while len(self._jobs) < min(self._busy, self.max_batch):
                        now = time.monotonic()
                        if len(self._jobs) != seen:
                            seen, last = len(self._jobs), now
                        left = min(last + self.max_wait_s, start + self.max_round_s) - now
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    first = False
                if not self._jobs:
                    self._leading = False
                    return
                batch, self._jobs = self._jobs[: self.max_batch], self._jobs[self.max_batch :]
            self._run(batch)

    def _run(self, jobs: list[_Job]) -> None:
        together = [j for j in jobs if len(j.ids) <= self.solo_tokens and _plain(j.cache)]
        groups: dict[tuple[int, str], list[_Job]] = {}
        for j in together:
            groups.setdefault((id(j.tap), j.cache_kw), []).append(j)
        alone = [j for j in jobs if j not in together] + [g[0] for g in groups.values() if len(g) == 1]
        with self.gate:
            for j in alone:
                self._finish([j], lambda j=j: [j.solo()])
                self.stats.solo += 1
            for g in groups.values():
                if len(g) > 1:
                    self._finish(g, lambda g=g: self._batched(g))
                    self.stats.batches += 1
                    self.stats.jobs += len(g)
                    self.stats.max_batch = max(self.stats.max_batch, len(g))
                    self.stats.sizes[len(g)] = self.stats.sizes.get(len(g), 0) + 1

    @staticmethod
    def _finish(jobs: list[_Job], compute: Callable[[], list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        try:
            outs = compute()
            for j, o in zip(jobs, outs, strict=True):
                j.out = o
        except BaseException as e:  # noqa: BLE001 - handed to each waiting request
            for j in jobs:
                j.error = e
        finally:
            for j in jobs:
                j.done.set()

    def _batched(self, jobs: list[_Job]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One padded forward over ``jobs``; appends each job's new keys / values to its own cache."""
        from nest_integrations.decoding.cache import new_cache

        dev = jobs[0].device
        past = [int(j.cache.get_seq_length()) for j in jobs]
        lens = [len(j.ids) for j in jobs]
        b, p_max, t_max = len(jobs), max(past), max(lens)
        ids = torch.full((b, t_max), self._pad, dtype=torch.long, device=dev)
        mask = torch.zeros((b, p_max + t_max), dtype=torch.long, device=dev)
        pos = torch.zeros((b, t_max), dtype=torch.long, device=dev)
        for i, j in enumerate(jobs):
            ids[i, : lens[i]] = torch.tensor(j.ids, dtype=torch.long, device=dev)
            mask[i, p_max - past[i] : p_max + lens[i]] = 1
            pos[i] = torch.arange(past[i], past[i] + t_max, device=dev)
        batch_cache = new_cache(self.model)
        n_layers = len(jobs[0].cache.layers)
        for layer in range(n_layers):
            ref = jobs[0].cache.layers[layer].keys
            h, d = ref.shape[1], ref.shape[3]
            vd = jobs[0].cache.layers[layer].values.shape[3]
            keys = ref.new_zeros((b, h, p_max, d))
            values = ref.new_zeros((b, h, p_max, vd))
            for i, j in enumerate(jobs):
                if past[i]:
                    keys[i, :, p_max - past[i] :] = j.cache.layers[layer].keys[0]
                    values[i, :, p_max - past[i] :] = j.cache.layers[layer].values[0]
            batch_cache.update(keys, values, layer)
        out, states = jobs[0].tap.forward(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{jobs[0].cache_kw: batch_cache}
        )
        results = []
        for i, j in enumerate(jobs):
            for layer in range(n_layers):
                lay = batch_cache.layers[layer]
                j.cache.update(
                    lay.keys[i : i + 1, :, p_max : p_max + lens[i]], lay.values[i : i + 1, :, p_max : p_max + lens[i]], layer
                )
            results.append((out.logits[i, : lens[i]].float().to(dev), states[i, : lens[i]].float().to(dev)))
        return results


def _plain(cache: Any) -> bool:
    """A cache every layer of which is a full-attention ``DynamicLayer`` holding a batch of one."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    for lay in layers:
        if type(lay) is not DynamicLayer or not getattr(lay, "is_initialized", False):
            return False
        if lay.keys is None or lay.keys.dim() != 4 or lay.keys.shape[0] != 1:
            return False
    return True


def forward_batcher(model: Any) -> ForwardBatcher:
    """The batcher of ``model`` (one per model object, like its gate)."""
    from nest_integrations.concurrency import model_gate, per_model

    gate = model_gate(model)
    return per_model(model, "forward_batcher", lambda: ForwardBatcher(model, gate))
