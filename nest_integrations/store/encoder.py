"""Encode chunks into token keys with the LM itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from nest_integrations.errors import PromptTooLongError
from nest_integrations.key_layer import tap_for
from nest_integrations.models import LoadedModel
from nest_integrations.store.token_store import ChunkKeys

__all__ = ["KeyEncoder"]


class KeyEncoder:
    """Turns chunk texts into :class:`ChunkKeys` using the SAME LM that decodes.

    Each chunk is encoded alone (no special tokens, no prompt): key j = hidden state of layer
    ``key_layer`` at token j, shape (L, D), stored as float16. Chunks are batched by length with
    right padding, which leaves every real position's hidden state unchanged under a causal mask.
    Only the decoder stack runs (no LM head).
    """

    def __init__(self, lm: LoadedModel, key_layer: int = -2, batch_tokens: int = 4096) -> None:
        self.lm = lm
        self.key_layer = key_layer
        self.batch_tokens = batch_tokens
        n_states = lm.model.config.num_hidden_layers + 1
        if not -n_states <= key_layer < n_states:
            raise ValueError(f"key_layer {key_layer} out of range for a model with {n_states} hidden states")

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (L,) int32 and character offsets (L, 2) int32 of ``text`` alone."""
        enc = self.lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int32)
        offs = np.asarray(enc["offset_mapping"], dtype=np.int32).reshape(-1, 2)
        return ids, offs

    def encode(
        self,
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[ChunkKeys]:
        """Encode ``texts``; returns one :class:`ChunkKeys` per text, in order.

        ``progress`` is called with the number of tokens encoded after each batch.
        """
        toks = [self.tokenize(t) for t in texts]
        limit = self.lm.context_window
        for i, (ids, _) in enumerate(toks):
            if len(ids) > limit:
                raise PromptTooLongError(
                    f"chunk {i} has {len(ids)} tokens, more than the model's context window ({limit}); "
                    "split documents into smaller chunks"
                )
        results: list[ChunkKeys | None] = [None] * len(texts)
        for batch in self.batches(toks):
            self._run(batch, toks, results, progress)
        return [r for r in results if r is not None]

    def batches(self, toks: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[list[int]]:
        """Group tokenized chunks by length into batches of at most ``batch_tokens`` padded tokens."""
        order = sorted(range(len(toks)), key=lambda i: len(toks[i][0]))
        out: list[list[int]] = []
        batch: list[int] = []
        max_len = 0
        for i in order:
            n = max(1, len(toks[i][0]))
            if batch and max(max_len, n) * (len(batch) + 1) > self.batch_tokens:
                out.append(batch)
                batch, max_len = [], 0
            batch.append(i)
            max_len = max(max_len, n)
        if batch:
            out.append(batch)
        return out

    def padded_batch(self, batch: Sequence[int], toks: Sequence[tuple[np.ndarray, np.ndarray]]):
        """(input_ids, attention_mask), each (B, T) long, right-padded, for the chunks in ``batch``."""
        lens = [len(toks[i][0]) for i in batch]
        width = max(max(lens), 1)
        pad = self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            ids = toks[i][0]
            input_ids[r, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
            mask[r, : len(ids)] = 1
        return input_ids, mask

    @property
    def body(self) -> torch.nn.Module:
        """The decoder stack without the LM head."""
        m = self.lm.model
        return m.get_decoder() if hasattr(m, "get_decoder") else m.model

    @torch.inference_mode()
    def encode_batch(self, batch: Sequence[int], toks: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Keys of the tokenized chunks ``batch`` (indices into ``toks``): one (L_i, D) float16 array each."""
        input_ids, mask = self.padded_batch(batch, toks)
        device = self.lm.device
        _, states = tap_for(self.body, self.key_layer, self.lm.model).forward(
            input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False
        )
        hs = states.to(torch.float16).cpu().numpy()
        return [np.ascontiguousarray(hs[r, : len(toks[i][0])]) for r, i in enumerate(batch)]

    def _run(self, batch, toks, results, progress) -> None:
        for i, keys in zip(batch, self.encode_batch(batch, toks), strict=True):
            ids, offs = toks[i]
            results[i] = ChunkKeys(token_ids=ids, offsets=offs, keys=keys)
        if progress is not None:
            progress(sum(len(toks[i][0]) for i in batch))
