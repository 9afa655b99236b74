"""Span rules: where a copied run may start and end so that citations cannot splice (NEST.md §10).

The decoding loop asks a :class:`SpanRules` object, for one request:

* :meth:`SpanRules.can_start` — may a copy start at chunk token ``pos``? Only on a word boundary of
  the chunk *and* of the response (never "utin Tesla"), and, within one output sentence, only from the
  chunk (or document) the sentence first copied from (no splicing of several sources);
* :meth:`SpanRules.ends_word` — may a copied run end after chunk token ``pos``? Only on a word
  boundary of the chunk; drafts are trimmed to end there (:meth:`trim_draft`) and accepted prefixes
  are cut back to one (:meth:`cut_accepted`);
* :meth:`SpanRules.glue_mask` — after a copied run that ends in a visible character (a letter, a digit,
  or punctuation such as "Ph.D."), the vocabulary entries that would glue a letter or digit onto it (so
  the run also ends on a boundary of the response).

All checks use :func:`nest_integrations.sentences.is_word_char` and
:func:`nest_integrations.sentences.split_sentences`, the same functions ``nest eval`` counts with.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch

from nest_integrations.decoding.detokenize import IncrementalDetokenizer
from nest_integrations.sentences import SentenceScanner, is_word_char
from nest_integrations.store.token_store import RequestStore

__all__ = ["SpanRules", "glue_table"]

_GLUE_CACHE: dict[int, torch.Tensor] = {}


def glue_table(tokenizer, vocab_size: int) -> torch.Tensor:
    """(V,) bool: True for token ids whose text starts with a letter or digit (no leading space).

    Computed once per tokenizer. SentencePiece (``▁``) and byte-level BPE (``Ġ``) word-start markers
    count as a leading space. Ids past the tokenizer's vocabulary are False.
    """
    key = id(tokenizer)
    table = _GLUE_CACHE.get(key)
    if table is not None and table.shape[0] == vocab_size:
        return table
    n = min(vocab_size, len(tokenizer))
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    flags = np.zeros(vocab_size, dtype=bool)
    for i, (piece, text) in enumerate(zip(pieces, texts, strict=True)):
        if piece is None or piece.startswith(("▁", "Ġ")):
            continue
        flags[i] = bool(text) and text[0].isalnum()
    table = torch.from_numpy(flags)
    _GLUE_CACHE[key] = table
    return table


class SpanRules:
    """Word-boundary and one-source-per-sentence rules for one request.

    Args:
        tokenizer: the LM's tokenizer (decodes the response so far).
        store: the request's token store (chunk texts and token offsets).
        chunk_docs: document id of each request chunk (for ``sentence_source="document"``).
        word_boundaries: enforce word boundaries.
        sentence_source: ``chunk`` | ``document`` | ``any``.
        vocab_size: size of the LM's output layer (for :meth:`glue_mask`).
    """

    def __init__(
        self,
        tokenizer,
        store: RequestStore,
        chunk_docs: Sequence[str],
        *,
        word_boundaries: bool = True,
        sentence_source: str = "chunk",
        vocab_size: int,
    ) -> None:
        self.tok = tokenizer
        self.store = store
        self.chunk_docs = list(chunk_docs)
        self.word_boundaries = word_boundaries
        self.sentence_source = sentence_source
        self.vocab_size = vocab_size
        self._starts: dict[int, np.ndarray] = {}
        self._ends: dict[int, np.ndarray] = {}
        self._glue_end: dict[int, np.ndarray] = {}
        # the response so far, kept up to date at a constant cost per token (streaming stays linear)
        self._detok = IncrementalDetokenizer(tokenizer)
        self._text = ""
        self._sentences = SentenceScanner()
        # per committed token: its source (None = generated) and where its text starts in the response
        self.sources: list[tuple[int, int] | None] = []
        self.starts: list[int] = []
        self._copied: list[int] = []  # indices of the copied tokens, in order
        self._copied_starts: list[int] = []  # and where their text starts (non-decreasing)

    # ---- per-chunk boundary tables ---------------------------------------------------------------
    def _tables(self, chunk: int) -> None:
        text = self.store.texts[chunk]
        offs = self.store.chunks[chunk][1].offsets
        n = len(offs)
        starts = np.zeros(n, dtype=bool)
        ends = np.zeros(n, dtype=bool)
        glue_end = np.zeros(n, dtype=bool)
        for p in range(n):
            a, b = int(offs[p][0]), int(offs[p][1])
            s = a
            while s < len(text) and text[s].isspace():
                s += 1
            starts[p] = not is_word_char(text, s - 1)
            e = b
            while e > a and text[e - 1].isspace():
                e -= 1
            split_char = p + 1 < n and int(offs[p + 1][0]) < b  # next token shares a character (bytes)
            ends[p] = not split_char and not is_word_char(text, e)
            # the token ends in a visible character ("Tesla", "Ph.D.", "1,"): a token starting with a letter
            # or digit right after it would make the response's next character a word character
            glue_end[p] = b > a and not text[b - 1].isspace()
        self._starts[chunk], self._ends[chunk], self._glue_end[chunk] = starts, ends, glue_end

    def starts_word(self, chunk: int, pos: int) -> bool:
        """A copy may start at chunk token ``pos`` (source side)."""
        if not self.word_boundaries:
            return True
        if chunk not in self._starts:
            self._tables(chunk)
        return bool(self._starts[chunk][pos])

    def ends_word(self, chunk: int, pos: int) -> bool:
        """A copied run may end after chunk token ``pos`` (source side)."""
        if not self.word_boundaries:
            return True
        if chunk not in self._ends:
            self._tables(chunk)
        return bool(self._ends[chunk][pos])

    # ---- response state --------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The response so far (a character still cut between tokens is left out until it is whole)."""
        return self._text

    @property
    def ids(self) -> list[int]:
        """The committed tokens."""
        return self._detok.ids

    def observe(self, token: int, source: tuple[int, int] | None) -> int:
        """Record one committed token (in order); returns its index."""
        before = len(self._text)
        self._text += self._detok.push(token)
        text = self._text
        s = before
        while s < len(text) and text[s].isspace():
            s += 1
        self._sentences.feed(text)
        index = len(self.sources)
        self.sources.append(source)
        self.starts.append(s)
        if source is not None:
            self._copied.append(index)
            self._copied_starts.append(s)
        return index

    def revoke(self, index: int) -> None:
        """Token ``index`` turned out not to be a copy (its run was too short or cut a word)."""
        if self.sources[index] is not None:
            k = bisect.bisect_left(self._copied, index)  # a recent token: near the end
            del self._copied[k], self._copied_starts[k]
        self.sources[index] = None

    @property
    def last_source(self) -> tuple[int, int] | None:
        return self.sources[-1] if self.sources else None

    def _first_chunk_from(self, sent_start: int) -> int | None:
        """The chunk of the first copied token whose text starts at or after ``sent_start``."""
        k = bisect.bisect_left(self._copied_starts, sent_start)
        if k == len(self._copied):
            return None
        src = self.sources[self._copied[k]]
        assert src is not None
        return src[0]

    def sentence_lock(self) -> torch.Tensor | None:
        """(M,) bool entries the mixture may use in the current sentence, or None (no restriction).

        Once a sentence has copied from a chunk, its kNN distribution comes from that chunk (or its
        document) only, so its generated tokens are not driven by other sources either.
        """
        if self.sentence_source == "any":
            return None
        text = self._text
        e = len(text)
        while e > 0 and text[e - 1].isspace():
            e -= 1
        if not e or text[e - 1] in ".!?" or text[e - 1] in "\"')]»”’" and e > 1 and text[e - 2] in ".!?":
            return None  # the next token may start a new sentence
        first = self._first_chunk_from(self._sentences.last_start(text))
        if first is None:
            return None
        if self.sentence_source == "document":
            doc = self.chunk_docs[first]
            ok = torch.tensor([d == doc for d in self.chunk_docs], dtype=torch.bool)
            return ok[self.store.entry_chunk].to(self.store.mask.device)
        return (self.store.entry_chunk == first).to(self.store.mask.device)

    # ---- the rules -------------------------------------------------------------------------------
    def can_start(self, chunk: int, pos: int, token: int) -> bool:
        """May the response copy chunk token ``pos`` (= ``token``) as the start of a new run?"""
        if not self.starts_word(chunk, pos):
            return False
        if not self.word_boundaries and self.sentence_source == "any":
            return True
        before = self._text
        extra = self._detok.peek(token)  # what the response would be: before + extra
        j = 0
        while j < len(extra) and extra[j].isspace():
            j += 1
        s = len(before) + j
        if self.word_boundaries and j < len(extra):
            context = before[-2:]  # is_word_char looks one character either side
            if is_word_char(context + extra, len(context) + j - 1):
                return False
        if self.sentence_source == "any":
            return True
        first = self._first_chunk_from(self._sentences.last_start(before, extra, upto=s))
        if first is None:
            return True
        if self.sentence_source == "document":
            return self.chunk_docs[first] == self.chunk_docs[chunk]
        return first == chunk

    def trim_draft(self, chunk: int, positions: list[int], limit: int) -> list[int]:
        """Make a draft end on a word boundary: cut it back, or extend it up to position ``limit`` (excl.)."""
        if not self.word_boundaries or not positions:
            return positions
        if self.ends_word(chunk, positions[-1]):
            return positions
        p = positions[-1] + 1
        n_tok = len(self.store.chunk_tokens(chunk))
        while p < min(limit, n_tok):
            if self.ends_word(chunk, p):
                return positions + list(range(positions[-1] + 1, p + 1))
            p += 1
        for i in range(len(positions) - 1, -1, -1):
            if self.ends_word(chunk, positions[i]):
                return positions[: i + 1]
        return []

    def cut_accepted(self, chunk: int, positions: Sequence[int], k: int) -> int:
        """The largest k' ≤ k such that ``positions[:k']`` ends on a word boundary (0 if none)."""
        if not self.word_boundaries:
            return k
        while k > 0 and not self.ends_word(chunk, positions[k - 1]):
            k -= 1
        return k

    def run_words(self, chunk: int, first: int, last: int) -> int:
        """Whole words in chunk tokens ``first..last`` (inclusive)."""
        from nest_integrations.sentences import count_words

        offs = self.store.chunks[chunk][1].offsets
        return count_words(self.store.texts[chunk][int(offs[first][0]) : int(offs[last][1])])

    def glue_mask(self) -> torch.Tensor | None:
        """(V,) bool or None: tokens that may not follow the last committed token. When it was copied and
        ends in a visible character, every token that starts with a letter or digit (it would glue a word
        character onto the copied run: "Tesla" + "n", "Ph.D." + "s")."""
        src = self.last_source
        if not self.word_boundaries or src is None:
            return None
        chunk, pos = src
        if chunk not in self._glue_end:
            self._tables(chunk)
        if not self._glue_end[chunk][pos]:
            return None
        return glue_table(self.tok, self.vocab_size)
